"""Smoke test of ``collector bench``: a few thousand frames through the real service."""

from __future__ import annotations

import json
import random
import time

import pytest

from collector.bench.command import run_bench_command
from collector.bench.frames import TemplateBuilder
from collector.bench.runner import run_scenario
from collector.bench.scenarios import SCENARIOS, first_id, get_scenario
from collector.config import MarketSettings
from collector.events import BookUpdate, Trade
from collector.exchanges.binance import BinanceAdapter


def split_frames(chunk: bytes) -> list[bytes]:
    """Payloads of unmasked server frames (the generator's output)."""
    payloads = []
    pos = 0
    while pos < len(chunk):
        assert chunk[pos] == 0x81  # FIN + text
        length, start = chunk[pos + 1], pos + 2
        if length == 126:
            length, start = int.from_bytes(chunk[pos + 2 : pos + 4], "big"), pos + 4
        elif length == 127:
            length, start = int.from_bytes(chunk[pos + 2 : pos + 10], "big"), pos + 10
        payloads.append(chunk[start : start + length])
        pos = start + length
    assert pos == len(chunk)
    return payloads


@pytest.mark.parametrize("name", SCENARIOS)
def test_generated_frames_parse_with_continuous_sequences(name: str) -> None:
    scenario = get_scenario(name)
    for gi, group in enumerate(scenario.groups):
        builder = TemplateBuilder(group.streams, random.Random(3))
        for i in range(300):
            builder.add(i % len(group.streams))
        template = builder.finish()
        ids = [first_id(gi, i) for i in range(len(group.streams))]
        market = MarketSettings(
            exchange="binance",
            symbols=group.symbols,
            feeds=group.feeds,  # type: ignore[arg-type]
            book_mode=group.book_mode,  # type: ignore[arg-type]
        )
        adapter = BinanceAdapter()
        session = adapter.open_session(adapter.plan_connections([market])[0])
        events = []
        for round_ in range(3):  # three chunks: ids go on across chunks
            now = time.time_ns() // 1000
            payloads = split_frames(template.fill(ids, now))
            assert len(payloads) == template.frames
            for payload in payloads:
                json.loads(payload)
                events += session.parse(payload, now + round_)
        # One event per frame: no gap, no duplicate (the status rows would be extra events).
        assert len(events) == 3 * template.frames
        assert all(isinstance(e, Trade | BookUpdate) or e.DATA_TYPE == "ticker" for e in events)
        assert session.duplicates_dropped == 0


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


def test_mixed_with_book_sync_rows_equal_frames() -> None:
    result = run_scenario("mixed", count=3000, rate=30_000)
    # Diff-depth symbols fetch a REST snapshot each (1/s): one more orderbook row apiece.
    assert 1 <= result.snapshots <= 20
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


def test_command_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_bench_command({"count": 0}) == 2
    assert run_bench_command({"gc_threshold": "1,2"}) == 2
    assert "error" in capsys.readouterr().err
