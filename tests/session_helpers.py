"""Drive an adapter session as its connection task does, for sans-IO parser tests.

:func:`feed` hands the session one frame as one read (``Session.receive``),
:func:`receive_snapshot` a REST snapshot body and :func:`receive_polled` a polled REST body;
each returns the events and raise the first parse
error, as the parser tests expect. What the results asked for is gathered per session in
:func:`asked` (frames to send, snapshots to fetch, a reconnect reason, the discards), so a
test can assert on what several frames asked for together and clear it like a connection
that has done it; :func:`discarded` also collects the discards of frames a test handed to
``parse`` directly. The gathering holds sessions weakly: nothing to reset between tests.
"""

from __future__ import annotations

import weakref

import attrs

from collector.events import Event, Status
from collector.exchanges.base import Actions, BookResync, Session, SnapshotRequest


@attrs.define
class Asked:
    """Everything a session's results asked for so far (a test may clear the lists)."""

    send: list[str] = attrs.Factory(list)
    fetch: list[SnapshotRequest] = attrs.Factory(list)
    reconnect: str | None = None
    statuses: list[Status] = attrs.Factory(list)
    # (symbol, data_type, reason) -> count, summed over the results.
    discarded: dict[tuple[str, str, str], int] = attrs.Factory(dict)
    resyncs: list[BookResync] = attrs.Factory(list)


_ASKED: weakref.WeakKeyDictionary[Session, Asked] = weakref.WeakKeyDictionary()


def asked(session: Session) -> Asked:
    """What ``session``'s results asked for so far."""
    found = _ASKED.get(session)
    if found is None:
        found = _ASKED[session] = Asked()
    return found


def record(session: Session, actions: Actions) -> Actions:
    """Add one result of ``session`` to :func:`asked`; returns it."""
    gathered = asked(session)
    gathered.send += actions.send
    gathered.fetch += actions.fetch
    gathered.statuses += actions.statuses
    gathered.resyncs += actions.resyncs
    for item in actions.discarded:
        key = (item.symbol, item.data_type, item.reason)
        gathered.discarded[key] = gathered.discarded.get(key, 0) + item.count
    if actions.reconnect is not None:
        gathered.reconnect = actions.reconnect
    return actions


def feed(session: Session, payload: bytes | str, received_us: int) -> list[Event]:
    """The events of one frame received as one read; raises its parse error."""
    if isinstance(payload, str):
        payload = payload.encode()
    events: list[Event] = []
    actions = record(session, session.receive((payload,), received_us, events))
    if actions.errors:
        raise actions.errors[0]
    return events


def discarded(session: Session) -> dict[tuple[str, str, str], int]:
    """Every update ``session`` reported discarded, per (symbol, data_type, reason).

    Frames a test handed to ``parse`` directly have no result of their own: an empty read
    (``receive`` of no frames) hands their discards over, as a connection's next read would.
    """
    record(session, session.receive((), 0, []))
    return dict(asked(session).discarded)


def subscribe(session: Session, now_us: int = 0) -> list[str]:
    """The frames the session sends after the handshake."""
    return list(record(session, session.subscribe(now_us)).send)


def receive_snapshot(
    session: Session, request: SnapshotRequest, body: bytes, received_us: int
) -> list[Event]:
    """The events of a fetched REST snapshot body; raises its parse error."""
    events: list[Event] = []
    actions = record(session, session.receive_snapshot(request, body, received_us, events))
    if actions.errors:
        raise actions.errors[0]
    return events


def receive_polled(
    session: Session, request: SnapshotRequest, body: bytes, received_us: int
) -> list[Event]:
    """The events of a polled REST body; raises its parse error."""
    events: list[Event] = []
    actions = record(session, session.receive_polled(request, body, received_us, events))
    if actions.errors:
        raise actions.errors[0]
    return events
