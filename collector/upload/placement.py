"""Where one file goes in S3: its own key, or the next free one; never another file's object.

A file's keys are its own (offset 0) and then ``start_ms`` + 1, + 2 ... (the layout's rule,
:func:`collector.upload.keys.object_key`). In ``s3`` mode the writer cannot see files already
uploaded and deleted, so after a restart a new file may get the name, and the key, of an
earlier one of the same stream. :func:`place` passes by every key that holds another object:

- found by HEAD, for files that may be in S3 already (left from before, or retried): no
  bytes are sent to a taken key;
- found by the conditional put (``If-None-Match: *``) otherwise: S3 answers 412 and writes
  nothing. A 412 on a key that holds these very bytes is this file's own (a PUT that
  botocore sent again after its answer was lost).

Only a key the file itself wrote earlier in this run (its verify then failed) is written
over. Blocking: call it from a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

import attrs

from collector.upload.digest import LocalDigest
from collector.upload.errors import KeyTaken, UploadError
from collector.upload.store import Presence

# The furthest a key's start_ms is bumped past taken keys (each costs a request). Two
# taken keys are already rare; the bound only stops a store that answers 412 to everything.
MAX_KEY_OFFSET: Final = 100


class KeyedStore(Protocol):
    """The two S3 calls placement makes (:class:`~collector.upload.store.S3Store`)."""

    def presence(self, key: str, local: LocalDigest) -> Presence: ...
    def put(self, path: Path, key: str, local: LocalDigest, *, replace: bool = False) -> None: ...


@attrs.frozen
class Placement:
    key: str
    offset: int  # how far past the file's own key
    present: bool  # the bytes were there already: nothing was sent


def place(
    store: KeyedStore,
    path: Path,
    local: LocalDigest,
    key_at: Callable[[int], str],
    *,
    start: int = 0,
    owned: bool = False,
    check_existing: bool = False,
) -> Placement:
    """Get ``path``'s bytes (digest ``local``) to a key of its own.

    ``key_at(offset)`` gives the file's keys; the search starts at ``start``, the offset it
    last wrote (``owned``) or 0. ``check_existing``: HEAD each key before putting. Raises
    ``UploadError`` when a call fails or no key up to ``MAX_KEY_OFFSET`` is free.
    """
    for offset in range(start, MAX_KEY_OFFSET + 1):
        key = key_at(offset)
        own = owned and offset == start
        if check_existing:
            found = store.presence(key, local)
            if found is Presence.SAME:
                return Placement(key, offset, present=True)
            if found is Presence.OTHER and not own:
                continue
        try:
            store.put(path, key, local, replace=own)
        except KeyTaken:
            if store.presence(key, local) is not Presence.SAME:
                continue
        return Placement(key, offset, present=False)
    raise UploadError(f"no free object key: {key_at(0)} and the next {MAX_KEY_OFFSET} are taken")
