"""``python -m collector book`` and ``holes``: output, JSON, exit statuses, one-line errors.

In-process through :func:`collector.cli.main` on data written by the real writer; one case
runs the real ``python -m collector`` to see what a user sees.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from collector.cli import main
from collector.events import BookUpdate, level_pairs
from collector.reader.times import iso
from tests.procs import clean_env
from tests.reader_data import DISCONNECT, GAP, RESYNC, START, Scenario, record, scenario, us

AT = us("2024-05-01T23:12:34")


@pytest.fixture(scope="module")
def data() -> Scenario:
    return scenario()


@pytest.fixture(scope="module")
def recorded(data: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("reader-cli") / "data"
    trio.run(record, directory, data.events)
    return directory


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def reference_top(data: Scenario, at: int, depth: int) -> tuple[list[tuple[float, float]], ...]:
    """The book at ``at`` rebuilt from the events (no hole between the last snapshot and it)."""
    updates = [b for b in data.of(BookUpdate) if b.timestamp_collector <= at]
    last_snapshot = max(i for i, b in enumerate(updates) if b.kind == "snapshot")
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for update in updates[last_snapshot:]:
        if update.kind == "snapshot":
            bids, asks = {}, {}
        for side, levels in ((bids, update.bids), (asks, update.asks)):
            for price, size in level_pairs(levels):
                if size == 0:
                    side.pop(price, None)
                else:
                    side[price] = size
    return sorted(bids.items(), reverse=True)[:depth], sorted(asks.items())[:depth]


def test_book_prints_the_ladder_at_a_time(
    recorded: Path, data: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "book", "binance", "BTCUSDT", "--at", iso(AT), "--depth", "3",
        "--data", str(recorded),
    )  # fmt: skip
    assert (code, err) == (0, "")
    bids, asks = reference_top(data, AT, 3)
    lines = out.splitlines()
    assert lines[0] == f"binance BTCUSDT order book at {iso(AT)}"
    assert lines[1].startswith("last update 2024-05-01T23:12:")
    ladder = [line.split() for line in lines[3:]]
    assert ladder == [
        *[["ask", str(p), str(s)] for p, s in reversed(asks)],
        *[["bid", str(p), str(s)] for p, s in bids],
    ]


def test_book_json_and_epoch_milliseconds(
    recorded: Path, data: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "book", "binance", "BTCUSDT", "--at", str(AT // 1000), "--json",
        "--data", str(recorded),
    )  # fmt: skip
    assert code == 0
    document = json.loads(out)
    at_ms = AT // 1000 * 1000
    bids, asks = reference_top(data, at_ms, 10)
    assert document["time"] == iso(at_ms)
    assert document["bids"] == [list(level) for level in bids]
    assert document["asks"] == [list(level) for level in asks]
    assert (document["exchange"], document["symbol"]) == ("binance", "BTCUSDT")


@pytest.mark.parametrize(
    ("at", "says"),
    [
        pytest.param(DISCONNECT + 1, f"disconnected (StaleConnection: no data for 30.0s) at "
                     f"{iso(DISCONNECT)}", id="in-a-disconnect"),
        pytest.param((GAP + RESYNC) // 2, f"gap (u is not the previous u + 1) at {iso(GAP)}",
                     id="in-a-gap"),
        pytest.param(START, "no_snapshot", id="before-the-first-snapshot"),
    ],
)  # fmt: skip
def test_book_not_known_at_the_time_exits_1_saying_why(
    recorded: Path, at: int, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "book", "binance", "BTCUSDT", "--at", iso(at), "--data",
                         str(recorded))  # fmt: skip
    assert (code, out) == (1, "")
    assert err.startswith(
        f"collector: error: the book of binance BTCUSDT is not known at {iso(at)}: "
    )
    assert says in err
    assert err.count("\n") == 1


def test_book_usage_and_missing_data(recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data", str(recorded)]
    code, _, err = run(capsys, "book", "binance", "BTCUSDT", "--at", "noon", *data)
    assert code == 2
    assert err.startswith("collector: error: not a time: 'noon'")
    code, _, err = run(capsys, "book", "binance", "BTCUSDT", "--at", "2024-05-01", "--depth",
                       "0", *data)  # fmt: skip
    assert (code, err) == (2, "collector: error: --depth must be at least 1, not 0\n")
    code, _, err = run(capsys, "book", "binance", "ETHUSDT", "--at", "2024-05-01", *data)
    assert code == 1
    assert err == f"collector: error: no order book recorded for binance ETHUSDT in {recorded}\n"
    code, _, err = run(capsys, "book", "binance", "BTCUSDT", "--at", "2024-05-01", "--data",
                       str(recorded / "missing"))  # fmt: skip
    assert code == 2
    assert "no data directory" in err


def test_holes_lists_one_line_per_hole(recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "holes", "binance", "--from", iso(DISCONNECT), "--to", iso(RESYNC),
        "--data", str(recorded),
    )  # fmt: skip
    assert (code, err) == (0, "")
    header, *rows = [line.split("\t") for line in out.splitlines()]
    assert header == ["start", "end", "exchange", "symbol", "event", "data_type", "count", "detail"]
    assert [(r[0], r[1], r[4], r[5], r[6]) for r in rows] == [
        (iso(START + 1), "open", "subscribe_error", "ticker", ""),
        (iso(DISCONNECT), iso(us("2024-05-01T22:41:30")), "disconnected", "*", ""),
        (iso(GAP), iso(RESYNC), "gap", "orderbook", "4"),
    ]
    code, out, _ = run(capsys, "holes", "--json", "--data", str(recorded))
    assert code == 0
    events = [h["event"] for h in json.loads(out)]
    assert events.count("disconnected") == 2
    assert "discarded" not in events
    assert "handover" not in events


def test_holes_bad_time_exits_2(recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "holes", "--from", "2024-13-01", "--data", str(recorded))
    assert (code, out) == (2, "")
    assert err.startswith("collector: error: not a time: '2024-13-01'")


def test_real_command_line(recorded: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "collector", "holes", "binance", "BTCUSDT", "--data",
         str(recorded), "--json"],
        capture_output=True, text=True, env=clean_env(), timeout=60, check=False,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
    assert len(json.loads(result.stdout)) == 7
