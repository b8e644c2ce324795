"""Where the live outlets see the stored stream: the writer's router offers them every batch.

Why the router: it is the one place every stored event passes (each connection's batches,
the rows of an unclean stop, the drop rows), in the order of the files, on the event loop
(no locks). It offers each batch it routes to each outlet's :class:`OutletBuffer` without
waiting, so an outlet that cannot keep up never holds up the files: its buffer refuses the
batch and the tap counts the events as dropped for that outlet
(``collector_outlet_dropped_total{outlet, data_type}``) and records them in the data, as
``outlet_overflow`` status rows (one per exchange, symbol and data type, at most once a
second per outlet and data type). With no outlet configured the router has no tap at all:
its hot path is unchanged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Final

import attrs
import trio

from collector.events import Event, Status
from collector.metrics import OutletMetrics
from collector.outlets.buffer import OutletBuffer

# At most one round of overflow rows per outlet and data type per this many seconds.
OVERFLOW_ROW_INTERVAL_SECS: Final = 1.0


@attrs.define
class _Overflow:
    """Drops of one outlet and data type not yet recorded in a status row."""

    counts: Counter[tuple[str, str]] = attrs.field(factory=Counter)  # (exchange, symbol)
    first_us: int = 0
    last_us: int = 0
    last_row_at: float = -float("inf")  # Trio time of the last rows


class OutletTap:
    """Fans each routed batch out to the outlets' buffers; owns the overflow accounting.

    Called by the router on the event loop only. :meth:`close` (the router's end) closes
    every buffer, which lets the outlet tasks drain and stop.
    """

    def __init__(self, buffers: Sequence[OutletBuffer], metrics: OutletMetrics) -> None:
        self.buffers = tuple(buffers)
        self._metrics = metrics
        self._overflow: dict[tuple[str, str], _Overflow] = {}  # (outlet, data_type)

    def __call__(self, batch: list[Event]) -> None:
        """Offer ``batch`` to every outlet; count what a full buffer refuses."""
        for buffer in self.buffers:
            if not buffer.offer(batch):
                self._dropped(buffer, batch)

    def _dropped(self, buffer: OutletBuffer, batch: list[Event]) -> None:
        by_type: Counter[str] = Counter()
        for event in batch:
            data_type = event.DATA_TYPE
            if data_type not in buffer.data_types:
                continue
            by_type[data_type] += 1
            overflow = self._overflow.get((buffer.name, data_type))
            if overflow is None:
                overflow = self._overflow[buffer.name, data_type] = _Overflow()
            if not overflow.counts:
                overflow.first_us = event.timestamp_collector
            overflow.last_us = max(overflow.last_us, event.timestamp_collector)
            overflow.counts[event.exchange, event.symbol] += 1
        for data_type, count in by_type.items():
            self._metrics.dropped.labels(buffer.name, data_type).inc(count)

    @property
    def pending(self) -> bool:
        """Whether drops wait to be recorded (cheap: the router asks once per take)."""
        return any(o.counts for o in self._overflow.values())

    def status_rows(self, now_us: int) -> list[Event]:
        """The ``outlet_overflow`` rows due now (``now_us``: wall time, us since the epoch):
        for each outlet and data type with unrecorded drops whose last rows are at least
        :data:`OVERFLOW_ROW_INTERVAL_SECS` old (Trio time), one row per (exchange, symbol)."""
        now = trio.current_time()
        rows: list[Event] = []
        for (outlet, data_type), overflow in sorted(self._overflow.items()):
            if not overflow.counts or now - overflow.last_row_at < OVERFLOW_ROW_INTERVAL_SECS:
                continue
            detail = (
                f"{outlet} outlet buffer full: events not sent to {outlet} between "
                f"{overflow.first_us} and {overflow.last_us} (us since epoch); the files "
                "have them"
            )
            rows.extend(
                Status(
                    exchange,
                    symbol,
                    None,
                    now_us,
                    None,
                    "outlet_overflow",
                    data_type,
                    None,
                    None,
                    count,
                    detail,
                )
                for (exchange, symbol), count in sorted(overflow.counts.items())
            )
            overflow.counts.clear()
            overflow.last_row_at = now
        return rows

    def close(self) -> None:
        """The stream has ended: every outlet drains its buffer and stops."""
        for buffer in self.buffers:
            buffer.close()
