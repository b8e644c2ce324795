"""Recorded data for the reader tests, written by the real writer.

:func:`record` runs :func:`collector.storage.run_writer` on a list of events and returns
the finished files; :func:`scenario` is a few hours of one Binance symbol (trades, a
random-walk order book, tickers) with every kind of status row, plus two Coinbase symbols
whose directories collide after sanitizing. :func:`reference_book` rebuilds a book the
plain way (a dict, sorted on every look), to check the replay against.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, cast

import trio

from collector.config import StorageSettings
from collector.events import (
    BookKind,
    BookUpdate,
    Event,
    Status,
    Ticker,
    Trade,
    level_pairs,
    levels_from_pairs,
)
from collector.metrics import Metrics
from collector.storage import run_writer

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def us(iso: str) -> int:
    """Microseconds since the epoch of an ISO time in UTC."""
    return (datetime.fromisoformat(iso).replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)


async def record(
    data_dir: Path, events: list[Event], server: str | None = None, **storage: Any
) -> list[Path]:
    """Write ``events`` through the real writer into ``data_dir`` (under ``server``, a
    ``home_server_name``, if given); the finished files."""
    settings = StorageSettings(data_dir=str(data_dir), **storage)
    latest = max(e.timestamp_collector for e in events)
    send, receive = trio.open_memory_channel[list[Event]](4)
    finished_send, finished = trio.open_memory_channel[Path](100_000)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                run_writer,
                settings,
                receive,
                finished_send,
                Metrics(),
                wall_clock=lambda: latest + 3_600_000_000,
                home_server_name=server,
            )
        )
        async with send:
            await send.send(events)
        paths = [path async for path in finished]
    return sorted(paths)


def status(
    at: int, event: str, *, symbol: str = "BTCUSDT", exchange: str = "binance", **fields: Any
) -> Status:
    return Status(exchange, symbol, None, at, None, cast(Any, event), **fields)


def book(
    at: int,
    kind: str,
    bids: Iterable[tuple[float, float]],
    asks: Iterable[tuple[float, float]],
    sequence: int,
    symbol: str = "BTCUSDT",
) -> BookUpdate:
    return BookUpdate(
        "binance",
        symbol,
        at - 5,
        at,
        sequence,
        cast(BookKind, kind),
        sequence,
        sequence - 1,
        levels_from_pairs(bids),
        levels_from_pairs(asks),
    )


@dataclass
class Scenario:
    events: list[Event] = field(default_factory=list)

    def of(self, kind: type[Event], symbol: str = "BTCUSDT") -> list[Any]:
        return [e for e in self.events if type(e) is kind and e.symbol == symbol]


# The times the scenario's holes happen at.
START = us("2024-05-01T22:00:00")
DISCONNECT = us("2024-05-01T22:40:00")
RECONNECT = us("2024-05-01T22:41:30")
GAP = us("2024-05-01T23:30:00")
RESYNC = us("2024-05-01T23:30:02")
CHECKPOINT = us("2024-05-02T00:00:00.000001")
END = us("2024-05-02T01:00:00")
SILENT = us("2024-05-02T00:20:00")
SILENT_RECONNECT = us("2024-05-02T00:20:01")


def _random_levels(
    rng: random.Random, mid: float, side: int, count: int
) -> list[tuple[float, float]]:
    return [(mid + side * 0.5 * (i + 1), float(rng.randint(1, 9))) for i in range(count)]


def scenario(seed: int = 7) -> Scenario:
    """Three hours over midnight UTC of binance BTCUSDT, one update every ~2 s, and:

    - a disconnect from DISCONNECT to RECONNECT (a snapshot after it);
    - an order book gap at GAP, resync and snapshot at RESYNC (deltas between are written,
      as a venue may still send them: they must not be applied);
    - a collector checkpoint at CHECKPOINT (the head of the new day's file);
    - a silent trades feed at SILENT, reconnected at SILENT_RECONNECT (the book continues
      after a new snapshot);
    - a trades gap, a drop, a refused subscription, discards and a handover (no holes).
    """
    rng = random.Random(seed)
    s = Scenario()
    add = s.events.append
    add(status(START, "connected", detail="wss://example"))
    add(status(START + 1, "subscribed", data_type="orderbook"))
    add(status(START + 1, "subscribe_error", data_type="ticker", detail="refused"))
    add(status(START + 2, "subscribed", data_type="trades"))
    sequence = 1000
    mid = 100.0
    t = START + 1_000_000

    add(book(t, "snapshot", _random_levels(rng, mid, -1, 20), _random_levels(rng, mid, 1, 20), 1))
    trade_id = 0
    while t < END:
        t += rng.randint(500_000, 3_500_000)
        if DISCONNECT <= t < RECONNECT or SILENT <= t < SILENT_RECONNECT:
            continue
        changes: dict[str, list[tuple[float, float]]] = {"bids": [], "asks": []}
        for _ in range(rng.randint(1, 4)):
            name = rng.choice(["bids", "asks"])
            side = -1 if name == "bids" else 1
            price = mid + side * 0.5 * rng.randint(1, 25)
            size = 0.0 if rng.random() < 0.3 else float(rng.randint(1, 9))
            changes[name].append((price, size))
        sequence += 1
        add(book(t, "delta", changes["bids"], changes["asks"], sequence))
        trade_id += 1
        add(Trade("binance", "BTCUSDT", t - 7, t, trade_id, str(trade_id), mid, 0.1, "buy"))
        if trade_id % 50 == 0:
            add(
                Ticker(
                    "binance", "BTCUSDT", t - 3, t, None, mid - 0.5, 1.0, mid + 0.5, 2.0, mid, 9.0
                )
            )
        mid += rng.choice([-0.5, 0.0, 0.5])
    s.events.sort(key=lambda e: e.timestamp_collector)
    # The holes and the rows around them, in write order at equal times.
    extra: list[Event] = [
        status(DISCONNECT, "disconnected", detail="StaleConnection: no data for 30.0s"),
        status(RECONNECT, "connected", detail="wss://example"),
        status(RECONNECT + 1, "subscribed", data_type="orderbook"),
        status(us("2024-05-01T22:10:00"), "gap", data_type="trades", expected_sequence=10,
               received_sequence=13, count=3, detail="trade ids jumped"),
        status(GAP, "gap", data_type="orderbook", expected_sequence=5, received_sequence=9,
               count=4, detail="u is not the previous u + 1"),
        status(RESYNC, "resync", data_type="orderbook", detail="fresh snapshot"),
        status(us("2024-05-01T23:00:00"), "discarded", data_type="trades", count=12,
               detail="duplicate"),
        status(us("2024-05-01T23:15:00"), "handover", detail="a new connection took over"),
        status(SILENT, "silent", data_type="trades",
               detail="no trades data for 60.0s (silence_timeout_secs): reconnecting"),
        status(SILENT + 1, "disconnected", detail="silent"),
        status(SILENT_RECONNECT, "connected", detail="wss://example"),
        status(us("2024-05-02T00:49:58"), "dropped", count=5,
               detail="the writer had stopped: events dropped between "
               f"{us('2024-05-02T00:49:58')} and {us('2024-05-02T00:49:59.5')} (us since epoch)"),
    ]  # fmt: skip
    s.events.extend(extra)
    # The snapshots after the holes, and the checkpoint.
    _snapshot_at(s, rng, RECONNECT + 500_000)
    _snapshot_at(s, rng, RESYNC)
    _snapshot_at(s, rng, CHECKPOINT, "checkpoint")
    _snapshot_at(s, rng, SILENT_RECONNECT + 500_000)
    s.events.sort(key=lambda e: (e.timestamp_collector, type(e) is not Status))
    # Coinbase: two spellings that share a directory after sanitizing.
    for n, symbol in enumerate(["BTC/USD", "BTC_USD"]):
        for i in range(3):
            at = START + 10_000_000 * (i + 1) + n
            s.events.append(
                Trade("coinbase", symbol, at, at, None, f"{symbol}-{i}", 50.0 + n, 1.0, "sell")
            )
    return s


def _snapshot_at(s: Scenario, rng: random.Random, at: int, kind: str = "snapshot") -> None:
    mid = 100.0 + rng.choice([-2.0, 0.0, 2.0])
    s.events.append(
        book(at, kind, _random_levels(rng, mid, -1, 15), _random_levels(rng, mid, 1, 15), 0)
    )


# -------------------------------------------------------------------------- reference book

HOLES_FOR_BOOK = {"disconnected", "gap", "dropped", "silent", "subscribe_error"}


def reference_items(events: list[Event], start: int, end: int, depth: int) -> list[tuple[Any, ...]]:
    """What a replay of binance BTCUSDT over (start, end) must yield, rebuilt plainly:
    ``("view", time, bids, asks)`` and ``("reset", time, event)``. ``events`` in write
    order with status rows first at equal times (as the scenario sorts them)."""
    bids: dict[float, float] | None = None
    asks: dict[float, float] = {}
    last_reset: tuple[Any, ...] = ("reset", start, "no_snapshot")
    out: list[tuple[Any, ...]] = []

    def view(at: int) -> tuple[Any, ...]:
        assert bids is not None
        top_bids = sorted(bids.items(), reverse=True)[:depth]
        top_asks = sorted(asks.items())[:depth]
        return ("view", at, tuple(top_bids), tuple(top_asks))

    started = False
    for event in events:
        if event.symbol != "BTCUSDT" or event.exchange != "binance":
            continue
        at = event.timestamp_collector
        if at >= end:
            break
        if not started and at > start:
            started = True
            out.append(view(start) if bids is not None else last_reset)
        if isinstance(event, Status):
            if event.event in HOLES_FOR_BOOK and event.data_type in (None, "orderbook"):
                bids = None
                last_reset = ("reset", at, event.event)
                if started:
                    out.append(last_reset)
        elif isinstance(event, BookUpdate):
            pairs_b, pairs_a = level_pairs(event.bids), level_pairs(event.asks)
            if event.kind in ("snapshot", "checkpoint"):
                bids = {p: q for p, q in pairs_b if q}
                asks = {p: q for p, q in pairs_a if q}
            elif bids is not None:
                for p, q in pairs_b:
                    bids.pop(p, None) if q == 0 else bids.__setitem__(p, q)
                for p, q in pairs_a:
                    asks.pop(p, None) if q == 0 else asks.__setitem__(p, q)
            else:
                continue
            if started:
                out.append(view(at))
    if not started:
        out.append(view(start) if bids is not None else last_reset)
    return out
