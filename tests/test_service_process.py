"""The real ``python -m collector`` as a subprocess against the fake Binance server.

Signals, exit codes, crash safety under ``kill -9`` and the data in the finished Parquet
files, checked value by value against the frames the fake sent. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import trio

from collector.storage.journal import open_journal_table
from tests.fakes.binance import FakeBinance, book_ticker_frame, depth20_frame, trade_frame
from tests.procs import (
    ServiceProcess,
    leftovers,
    parquet_files,
    read_journal_batches,
    read_rows,
    service_process,
    write_settings,
)

pytestmark = pytest.mark.slow

# Generous: CI machines are slow and busy. Speed is not what these tests check.
TIMEOUT = 30.0
RECEIVED = "collector_messages_received_total"
BTC, ETH = "btcusdt", "ethusdt"
T0_US = 1_700_000_000_000_000


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeBinance:
    server = FakeBinance()
    await nursery.start(server.run)
    return server


def now_us() -> int:
    return time.time_ns() // 1000


async def start_ready(
    fake: FakeBinance, service: ServiceProcess, *, streams: int = 6
) -> tuple[int, float]:
    """Until the service runs, the fake saw its subscription and the service its ack.

    Returns the HTTP port and ``collector_messages_received_total`` at that point (the
    subscription acknowledgement is a received message too).
    """
    port = await service.wait_started()
    await fake.wait_subscribed()
    await service.wait_ready()
    assert sum(len(c.streams) for c in fake.clients) == streams
    return port, await service.metric(RECEIVED)


# ----------------------------------------------------------------------------- frames


def trade_row(
    symbol: str, trade_id: int, price: str, size: str, t_us: int, maker: bool
) -> dict[str, Any]:
    return {
        "exchange": "binance",
        "symbol": symbol.upper(),
        "timestamp_exchange": t_us,
        "sequence": trade_id,
        "trade_id": str(trade_id),
        "price": float(price),
        "size": float(size),
        "side": "sell" if maker else "buy",
    }


def book_row(
    symbol: str, update_id: int, bids: list[tuple[str, str]], asks: list[tuple[str, str]]
) -> dict[str, Any]:
    return {
        "exchange": "binance",
        "symbol": symbol.upper(),
        "timestamp_exchange": None,
        "sequence": update_id,
        "kind": "snapshot",
        "first_sequence": update_id,
        "prev_sequence": None,
        "bids": [{"price": float(p), "size": float(s)} for p, s in bids],
        "asks": [{"price": float(p), "size": float(s)} for p, s in asks],
    }


def ticker_row(symbol: str, update_id: int, values: tuple[str, str, str, str]) -> dict[str, Any]:
    bid, bid_qty, ask, ask_qty = values
    return {
        "exchange": "binance",
        "symbol": symbol.upper(),
        "timestamp_exchange": None,
        "sequence": update_id,
        "bid_price": float(bid),
        "bid_size": float(bid_qty),
        "ask_price": float(ask),
        "ask_size": float(ask_qty),
        "last_price": None,
        "volume_24h": None,
    }


Expected = dict[tuple[str, str], list[dict[str, Any]]]


def mixed_frames() -> tuple[list[str], Expected]:
    """Trades on both symbols, depth20 snapshots and bookTickers, interleaved.

    Returns the frames in send order and the rows each (SYMBOL, data_type) must hold, in
    order. Prices and sizes are decimal strings, as the venue sends them.
    """
    frames: list[str] = []
    expected: Expected = {}

    def add(frame: str, symbol: str, data_type: str, row: dict[str, Any]) -> None:
        frames.append(frame)
        expected.setdefault((symbol.upper(), data_type), []).append(row)

    for i in range(60):
        for symbol, base_id, base_price in ((BTC, 900_000, 60_000), (ETH, 70_000, 3_000)):
            if symbol == ETH and i % 2:
                continue
            trade_id = base_id + (i // 2 if symbol == ETH else i)  # consecutive: no gap
            price = f"{base_price + i * 0.25:.2f}"
            size = f"0.{i + 1:05d}"
            t_us = T0_US + i * 1_000 + (7 if symbol == ETH else 0)
            maker = i % 3 == 0
            add(
                trade_frame(symbol, trade_id, price, size, t_us, maker),
                symbol,
                "trades",
                trade_row(symbol, trade_id, price, size, t_us, maker),
            )
            if i % 6 == 0:
                update_id = 5_000_000 + i
                bids = [(f"{base_price - k}.5", f"{k + 1}.125") for k in range(3)]
                asks = [(f"{base_price + k}.75", f"{i + k}.5") for k in range(2)]
                add(
                    depth20_frame(symbol, update_id, bids, asks),
                    symbol,
                    "orderbook",
                    book_row(symbol, update_id, bids, asks),
                )
            if i % 4 == 1:
                update_id = 8_000_000 + i
                values = (f"{base_price}.5", f"0.{i:03d}", f"{base_price}.75", f"1.{i:03d}")
                add(
                    book_ticker_frame(symbol, update_id, *values),
                    symbol,
                    "ticker",
                    ticker_row(symbol, update_id, values),
                )
    return frames, expected


def by_stream(data_dir: Path, data_type: str) -> dict[str, list[dict[str, Any]]]:
    """Rows of one data type per SYMBOL, in file order (one symbol's files sort by time)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in read_rows(data_dir, data_type):
        grouped.setdefault(row["symbol"], []).append(row)
    return grouped


def assert_rows_match(
    data_dir: Path, expected: Expected, received_from: int, received_to: int
) -> None:
    """Every stream holds exactly the expected rows, in order, with sane receive times."""
    data_types = {data_type for _, data_type in expected}
    found_streams = {
        (path.relative_to(data_dir).parts[1], path.relative_to(data_dir).parts[2])
        for path in parquet_files(data_dir)
    }
    assert found_streams - {(s, "status") for s in (BTC.upper(), ETH.upper())} == set(expected)
    for data_type in data_types:
        rows = by_stream(data_dir, data_type)
        assert sorted(rows) == sorted(s for s, t in expected if t == data_type)
        for symbol, stream_rows in rows.items():
            want = expected[(symbol, data_type)]
            assert len(stream_rows) == len(want), (symbol, data_type)
            for row in stream_rows:
                assert received_from <= row.pop("timestamp_collector") <= received_to
            assert stream_rows == want, (symbol, data_type)


def assert_status_rows(data_dir: Path) -> None:
    """connected, then subscribed for each feed, then disconnected: for both symbols."""
    status = by_stream(data_dir, "status")
    assert sorted(status) == [BTC.upper(), ETH.upper()]
    for symbol, rows in status.items():
        rows.sort(key=lambda r: r["timestamp_collector"])
        events = [r["event"] for r in rows]
        assert events[0] == "connected", (symbol, events)
        assert events[-1] == "disconnected", (symbol, events)
        assert sorted(r["data_type"] for r in rows if r["event"] == "subscribed") == [
            "orderbook",
            "ticker",
            "trades",
        ]
        assert set(events) == {"connected", "subscribed", "disconnected"}, (symbol, events)
        assert rows[0]["detail"].startswith("ws://127.0.0.1:")


def find_journals(data_dir: Path, data_type: str) -> list[Path]:
    return [
        j
        for j in data_dir.rglob("*.journal.arrows")
        if j.relative_to(data_dir).parts[2] == data_type
    ]


async def wait_journal(data_dir: Path, data_type: str) -> Path:
    """Until the (single) open file of ``data_type`` has a journal on disk; returns it."""
    while True:
        journals = await trio.to_thread.run_sync(find_journals, data_dir, data_type)
        if journals:
            (journal,) = journals
            return journal
        await trio.sleep(0.05)


async def wait_for_flush(data_dir: Path, data_type: str) -> None:
    """Until the journal of ``data_type`` grows (a flush just happened)."""
    journal = trio.Path(await wait_journal(data_dir, data_type))
    size = (await journal.stat()).st_size
    while True:
        await trio.sleep(0.005)
        try:
            if (await journal.stat()).st_size != size:
                return
        except FileNotFoundError:
            return  # rotated at the hour boundary: that was a flush too


# ----------------------------------------------------------------------------- tests


async def test_sigterm_drains_everything_and_exits_0(fake: FakeBinance, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    config = write_settings(tmp_path / "settings.toml", data_dir=data_dir, base_url=fake.url)
    frames, expected = mixed_frames()
    async with service_process(config, tmp_path) as service:
        with trio.fail_after(TIMEOUT):
            _, baseline = await start_ready(fake, service)
            started_us = now_us()
            for frame in frames:
                assert await fake.send(frame) == 1
            await service.wait_metric(RECEIVED, baseline + len(frames))
            assert await service.metric("collector_messages_dropped_total") == 0
            assert await service.metric("collector_parse_errors_total") == 0
            service.send_signal(signal.SIGTERM)
            code = await service.wait_exit()
        stopped_us = now_us()
        assert code == 0
        assert service.logged("shutting down")[0]["reason"] == "SIGTERM"
        assert service.logged("collector stopped")
    assert leftovers(data_dir) == []
    assert_rows_match(data_dir, expected, started_us, stopped_us)
    assert_status_rows(data_dir)


async def test_sigint_behaves_like_sigterm(fake: FakeBinance, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    config = write_settings(tmp_path / "settings.toml", data_dir=data_dir, base_url=fake.url)
    expected: Expected = {(BTC.upper(), "trades"): []}
    async with service_process(config, tmp_path) as service:
        with trio.fail_after(TIMEOUT):
            _, baseline = await start_ready(fake, service)
            started_us = now_us()
            for i in range(10):
                price, size, t_us = f"{100 + i}.5", "0.25", T0_US + i
                await fake.send(trade_frame(BTC, i + 1, price, size, t_us, i % 2 == 0))
                expected[(BTC.upper(), "trades")].append(
                    trade_row(BTC, i + 1, price, size, t_us, i % 2 == 0)
                )
            await service.wait_metric(RECEIVED, baseline + 10)
            service.send_signal(signal.SIGINT)
            code = await service.wait_exit()
        assert code == 0
        assert service.logged("shutting down")[0]["reason"] == "SIGINT"
        assert "Traceback" not in service.log_text()
    assert leftovers(data_dir) == []
    assert_rows_match(data_dir, expected, started_us, now_us())
    assert_status_rows(data_dir)


FLUSH_SECS = 0.5
# Beyond one flush interval: a frame sent at t reaches the service, is routed, waits for
# the next flush tick (at most FLUSH_SECS later), and its flush worker thread must have
# written it before the kill. Process scheduling on a busy 2-core machine adds the rest.
SLACK_SECS = 0.5
RATE = 200  # trades per second
KILL_AFTER = 400  # trades sent before the kill is prepared (2 s)
# The kill comes this long after a flush was seen on disk, i.e. shortly before the next
# one: close to the worst case (without it the kill's phase against the flush ticks would
# be whatever startup made it, typically just after a flush).
KILL_PHASE_SECS = 0.4


async def test_sigkill_loses_at_most_one_flush_interval(
    fake: FakeBinance, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    config = write_settings(
        tmp_path / "settings.toml",
        data_dir=data_dir,
        base_url=fake.url,
        storage={"flush_interval_secs": FLUSH_SECS},
    )
    sent: list[tuple[int, int]] = []  # (trade id, wall time of sending in us), in order
    enough = trio.Event()

    async def send_trades() -> None:
        start = trio.current_time()
        trade_id = 0
        while True:
            trade_id += 1
            await trio.sleep_until(start + trade_id / RATE)
            t_us = now_us()
            price = f"{60_000 + trade_id % 1000}.25"
            await fake.send(trade_frame(BTC, trade_id, price, "0.5", t_us, trade_id % 2 == 0))
            sent.append((trade_id, t_us))
            if len(sent) >= KILL_AFTER:
                enough.set()

    async with service_process(config, tmp_path, name="first") as service:
        with trio.fail_after(TIMEOUT):
            await start_ready(fake, service)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_trades)
                await enough.wait()
                await wait_for_flush(data_dir, "trades")
                await trio.sleep(KILL_PHASE_SECS)
                kill_us = now_us()
                sent_before_kill = len(sent)
                service.send_signal(signal.SIGKILL)
                code = await service.wait_exit()
                nursery.cancel_scope.cancel()
        assert code == -signal.SIGKILL

    # (i) What the killed process left is readable: finished files entirely, journals up
    # to their last complete batch (with plain pyarrow, and with the collector's reader).
    for path in parquet_files(data_dir):
        pq.read_table(path)  # whole and readable (only finished files carry this name)
    finished_ids = [int(r["trade_id"]) for r in read_rows(data_dir, "trades")]
    journals = sorted(data_dir.rglob("*.journal.arrows"))
    trade_journals = [j for j in journals if j.relative_to(data_dir).parts[2] == "trades"]
    assert trade_journals, sorted(data_dir.rglob("*"))
    journal_ids: list[int] = []
    with_rows = 0  # journals with a complete batch (a kill right after a journal's creation
    # can leave only its schema: recovery deletes such a one and does not count it)
    for journal in journals:
        rows = read_journal_batches(journal)
        with_rows += bool(rows)
        with open_journal_table(journal) as table:
            assert (0 if table is None else table.num_rows) == len(rows)
        if journal in trade_journals:
            journal_ids += [int(r["trade_id"]) for r in rows]
    on_disk = sorted(finished_ids + journal_ids)
    assert on_disk, "nothing was flushed before the kill"

    # (ii) A restart on the same data_dir finalizes the leftovers at start.
    async with service_process(config, tmp_path, name="second") as service:
        with trio.fail_after(TIMEOUT):
            await service.wait_started()
            recovered = await service.metric("collector_files_recovered_total")
            assert recovered == with_rows > 0
            assert len(service.logged_prefix("recovered ")) == with_rows
            service.send_signal(signal.SIGTERM)
            assert await service.wait_exit() == 0
    assert leftovers(data_dir) == []

    # (iii) The trades are a gap-free, duplicate-free prefix of what was sent before the
    # kill, and only the last flush interval (plus slack) may be missing.
    ids = [int(r["trade_id"]) for r in read_rows(data_dir, "trades")]
    assert len(ids) == len(set(ids)), "duplicate trades"
    assert sorted(ids) == list(range(1, len(ids) + 1)), "a hole in the stored trades"
    assert sorted(ids) == on_disk, "recovery changed what was on disk"
    kept = len(ids)
    assert kept <= sent_before_kill

    # (iv) The killed run wrote no `disconnected` row; the restart adds one per symbol it
    # recovered files of, at that symbol's last recorded row (before the kill).
    unclean = [
        r
        for r in read_rows(data_dir, "status")
        if r["event"] == "disconnected" and "without a clean shutdown" in (r["detail"] or "")
    ]
    btc_trades = by_stream(data_dir, "trades")[BTC.upper()]
    [btc_stop] = [r for r in unclean if r["symbol"] == BTC.upper()]
    assert max(r["timestamp_collector"] for r in btc_trades) <= btc_stop["timestamp_collector"]
    assert btc_stop["timestamp_collector"] <= kill_us
    must_have = kill_us - int((FLUSH_SECS + SLACK_SECS) * 1e6)
    missing_old = [i for i, t in sent[:sent_before_kill] if t < must_have and i > kept]
    assert not missing_old, f"lost trades older than the bound: {missing_old[:5]}..."
    if kept < sent_before_kill:
        oldest_lost_us = sent[kept][1]
        window = (kill_us - oldest_lost_us) / 1e6
    else:
        window = 0.0
    with capsys.disabled():
        print(
            f"\n[sigkill] sent {sent_before_kill} trades before the kill, kept {kept}, "
            f"lost {sent_before_kill - kept}: loss window {window:.3f}s "
            f"(bound {FLUSH_SECS + SLACK_SECS}s); recovered {recovered:.0f} files"
        )


@contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections (bound, never listening)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


async def test_unreachable_exchange_degraded_not_ready_exits_0(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with closed_port() as port:
        config = write_settings(
            tmp_path / "settings.toml", data_dir=data_dir, base_url=f"ws://127.0.0.1:{port}"
        )
        async with service_process(config, tmp_path) as service:
            with trio.fail_after(TIMEOUT):
                await service.wait_started()
                await service.wait_metric(
                    "collector_websocket_connections_total", 2, {"outcome": "failed"}
                )
                status, body = await service.get("/health")
                health = json.loads(body)
                assert status == 200
                assert health["status"] == "degraded"
                assert health["connections"]["up"] == 0
                assert health["connections"]["total"] == 1
                assert health["connections"]["detail"]["binance-0"]["up"] is False
                assert health["problems"]["binance-0"].startswith("down: ")
                assert "127.0.0.1" in health["connections"]["detail"]["binance-0"]["last_error"]
                status, body = await service.get("/ready")
                assert status == 503
                assert json.loads(body) == {"ready": False, "waiting_for": ["binance-0"]}
                service.send_signal(signal.SIGTERM)
                assert await service.wait_exit() == 0
    assert leftovers(data_dir) == []
    assert read_rows(data_dir, "trades") == []


async def block_finalize(data_dir: Path, data_type: str) -> Path:
    """Make finalizing the open ``data_type`` file fail: its temporary name is taken by a
    directory (works as root too, unlike permissions). Returns the journal."""
    journal = await wait_journal(data_dir, data_type)
    stem = journal.name.removesuffix(".journal.arrows")
    (journal.parent / f".{stem}.parquet.tmp").mkdir()
    return journal


async def start_stuck_shutdown(fake: FakeBinance, service: ServiceProcess, data_dir: Path) -> Path:
    """Send trades, block their finalization, SIGTERM: the drain now retries forever."""
    _, baseline = await start_ready(fake, service)
    for i in range(5):
        await fake.send(trade_frame(BTC, i + 1, "100.5", "1.5", T0_US + i, False))
    await service.wait_metric(RECEIVED, baseline + 5)
    journal = await block_finalize(data_dir, "trades")
    service.send_signal(signal.SIGTERM)
    await service.wait_log("shutting down")
    await service.wait_log("finalize of", prefix=True)
    return journal


async def test_shutdown_deadline_bounds_a_stuck_drain(fake: FakeBinance, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    config = write_settings(
        tmp_path / "settings.toml",
        data_dir=data_dir,
        base_url=fake.url,
        collector={"shutdown_timeout_secs": 2.0},
        storage={"flush_interval_secs": 0.2},
    )
    async with service_process(config, tmp_path) as service:
        with trio.fail_after(TIMEOUT):
            journal = await start_stuck_shutdown(fake, service, data_dir)
            code = await service.wait_exit()
        assert code == 1
        assert service.logged_prefix("shutdown timed out")
    # Left for the next start; nothing half-written was published.
    assert journal.exists()
    assert not journal.with_name(journal.name.replace(".journal.arrows", ".parquet")).exists()


async def test_second_signal_stops_at_once(fake: FakeBinance, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    config = write_settings(
        tmp_path / "settings.toml",
        data_dir=data_dir,
        base_url=fake.url,
        collector={"shutdown_timeout_secs": 60.0},
        storage={"flush_interval_secs": 0.2},
    )
    async with service_process(config, tmp_path) as service:
        with trio.fail_after(TIMEOUT):
            journal = await start_stuck_shutdown(fake, service, data_dir)
            service.send_signal(signal.SIGINT)
            code = await service.wait_exit()
        # Well before the 60 s deadline (fail_after above), and not reported as clean.
        assert code == 1
        assert service.logged("second SIGINT: stopping now without draining")
        assert not service.logged("collector stopped")
    assert journal.exists()


async def test_sighup_applies_the_edited_settings_file(fake: FakeBinance, tmp_path: Path) -> None:
    """The command line's reload: the same file read again, its markets applied without a
    restart; a key that needs a restart is logged, not applied."""
    data_dir = tmp_path / "data"
    config = write_settings(tmp_path / "settings.toml", data_dir=data_dir, base_url=fake.url)
    async with service_process(config, tmp_path) as service:
        with trio.fail_after(TIMEOUT):
            await start_ready(fake, service)
            write_settings(
                config,
                data_dir=data_dir,
                base_url=fake.url,
                symbols=(BTC, "solusdt"),
                storage={"flush_interval_secs": 2.0},
            )
            service.send_signal(signal.SIGHUP)
            await fake.wait_subscribed(["solusdt@trade", "solusdt@bookTicker"])
            await fake.wait_unsubscribed(["ethusdt@trade", "ethusdt@bookTicker"])
            await service.wait_log(
                "settings changed that apply only at a restart (not applied): "
                "storage.flush_interval_secs"
            )
            assert fake.connections == 1  # no reconnect: Binance subscribes live
            service.send_signal(signal.SIGTERM)
            assert await service.wait_exit() == 0
    [changed] = service.logged_prefix("markets changed (SIGHUP)")
    assert changed["added"] == [["binance", "SOLUSDT"]]
    assert changed["removed"] == [["binance", "ETHUSDT"]]
    eth = [r["event"] for r in read_rows(data_dir, "status") if r["symbol"] == "ETHUSDT"]
    assert eth.count("unsubscribed") == 3  # one per feed
    assert "disconnected" not in eth
