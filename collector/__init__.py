"""collector: records real-time crypto market data into crash-safe Parquet files."""

import os

__version__ = "0.1.0"

# Arrow's default allocator (mimalloc) keeps memory freed after a flush or a finalize in
# its pools; the system allocator returns it, which lowers peak RSS at the same CPU (the
# bench's mixed scenario, docs/performance.md). Arrow reads this once, when pyarrow is first
# imported, so it is set here, before any module of ours imports pyarrow. An explicit
# setting in the environment wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
