"""The pacers shared by every connection of one venue budget (virtual time)."""

from __future__ import annotations

from functools import partial
from itertools import count, pairwise

import pytest
import trio
import trio.testing

from collector.config import MarketSettings
from collector.exchanges.base import SnapshotRequest
from collector.exchanges.binance import BinanceAdapter
from collector.ingest import snapshots
from collector.ingest.pacer import Pacer, RestPacers
from collector.ingest.snapshots import FetchedSnapshot, run_snapshot_fetcher
from collector.rest import RestError

EPOCH_US = 1_700_000_000_000_000


async def test_turns_are_spaced_over_every_task_and_a_hold_stops_them_all(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pacer = Pacer(per_second=4.0)
    went: list[tuple[str, float]] = []
    t0 = trio.current_time()

    async def task(name: str, turns: int) -> None:
        for _ in range(turns):
            await pacer.wait_turn()
            went.append((name, round(trio.current_time() - t0, 6)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(task, "a", 3)
        nursery.start_soon(task, "b", 3)
        await trio.sleep(0.6)  # a, b, a at 0, 0.25, 0.5; then every waiting turn is held
        pacer.hold(5.0)
    times = [t for _, t in went]
    assert times[:3] == [0.0, 0.25, 0.5]
    # Nothing went during the hold (0.6 .. 5.6), then the turns resume, spaced again.
    assert times[3] >= 5.6
    assert all(later - earlier >= 0.25 for earlier, later in pairwise(times))
    assert sorted(name for name, _ in went) == ["a"] * 3 + ["b"] * 3


async def test_a_hold_never_shortens_an_earlier_one(autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer(per_second=100.0)
    t0 = trio.current_time()
    pacer.hold(10.0)
    pacer.hold(2.0)
    await pacer.wait_turn()
    assert trio.current_time() - t0 == pytest.approx(10.0)


def test_one_pacer_per_budget() -> None:
    pacers = RestPacers()
    spot = pacers.get("binance-spot", 1.0)
    assert pacers.get("binance-spot", 1.0) is spot
    assert pacers.get("binance-futures", 0.5) is not spot
    with pytest.raises(ValueError, match="binance-spot"):
        pacers.get("binance-spot", 2.0)
    with pytest.raises(ValueError, match="positive"):
        Pacer(0.0)


def test_binance_pooled_connections_share_their_budget() -> None:
    """Spot connections share the spot budget; USD-M and COIN-M share the futures one."""
    adapter = BinanceAdapter()
    spot = adapter.plan_connections(
        [
            MarketSettings(
                exchange="binance",
                symbols=tuple(f"S{i:04d}USDT" for i in range(1100)),
                feeds=("orderbook",),
                book_mode="diff",
            )
        ]
    )
    assert len(spot) == 2  # more streams than one connection takes
    futures = adapter.plan_connections(
        [
            MarketSettings(exchange="binance", symbols=("BTCUSDT",), feeds=("orderbook",),
                           book_mode="diff", category="usdm"),
            MarketSettings(exchange="binance", symbols=("BTCUSD_PERP",), feeds=("orderbook",),
                           book_mode="diff", category="coinm"),
        ]
    )  # fmt: skip
    assert {adapter.snapshot_budget(p) for p in spot} == {"binance-spot"}
    assert {adapter.snapshot_budget(p) for p in futures} == {"binance-futures"}
    pacers = RestPacers()
    shared = {id(pacers.get(adapter.snapshot_budget(p), adapter.snapshot_rate(p))) for p in spot}
    assert len(shared) == 1


async def test_fetchers_of_one_budget_share_its_pace_and_its_retry_after(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two connections' fetchers on one pacer: requests go 1 s apart over both, and a 429
    with Retry-After to one of them holds the other too."""
    asked: list[tuple[str, float]] = []
    refuse = {"B1"}
    t0 = trio.current_time()

    async def get(url: str) -> bytes:
        symbol = url.rpartition("=")[2]
        asked.append((symbol, round(trio.current_time() - t0, 6)))
        await trio.lowlevel.checkpoint()
        if symbol in refuse:
            refuse.discard(symbol)
            raise RestError("HTTP 429 from the venue", retry_after=30.0, status=429)
        return b"{}"

    monkeypatch.setattr(snapshots, "get", get)
    pacer = Pacer(per_second=1.0)
    fetched: list[str] = []

    async def connection(symbols: list[str]) -> None:
        requests_tx, requests_rx = trio.open_memory_channel[SnapshotRequest](len(symbols))
        bodies_tx, bodies_rx = trio.open_memory_channel[FetchedSnapshot](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                run_snapshot_fetcher,
                requests_rx,
                bodies_tx,
                "binance",
                partial(next, count(EPOCH_US)),
                pacer,
            )
            with requests_tx:
                for symbol in symbols:
                    requests_tx.send_nowait(SnapshotRequest(symbol, f"http://x/?symbol={symbol}"))
            fetched.extend([body.request.symbol async for body in bodies_rx])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection, ["A1", "A2", "A3"])
        nursery.start_soon(connection, ["B1", "B2"])
    assert sorted(fetched) == ["A1", "A2", "A3", "B1", "B2"]
    times = [t for _, t in asked]
    # Never two requests within a second, over both connections.
    assert all(later - earlier >= 1.0 for earlier, later in pairwise(times))
    refused_at = next(t for s, t in asked if s == "B1")
    # After the refusal nobody asked for 30 s: the other connection waited too.
    after = [t for t in times if t > refused_at]
    assert after
    assert min(after) >= refused_at + 30.0
    assert [s for s, _ in asked].count("B1") == 2  # refused, then asked again
