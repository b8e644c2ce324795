"""The binary column files: row rules, layout, crash truncation, rotation at midnight UTC.

Real files in a temporary directory, explicit receive times (no clock involved).
"""

from __future__ import annotations

import math
import os
from array import array
from pathlib import Path

import pytest

from collector.binary.columns import MD, TRADES, RowBuilder, RowKey, Rows, trade_id_u64
from collector.binary.files import BinaryWriter, FileSet, column_path, day_suffix, table_dir
from collector.config import ConfigError
from collector.events import BookKind, BookUpdate, Event, Side, Ticker, Trade
from collector.settings_check import parse_settings
from tests.binary_read import column_sizes, f32, read_set

# 2024-02-29T23:59:59.5Z: half a second before midnight UTC.
BEFORE_MIDNIGHT_US = 1_709_251_199_500_000
DAY = BEFORE_MIDNIGHT_US // 86_400_000_000


def trade(ts: int, trade_id: str = "7", side: Side | None = "buy", price: float = 100.5) -> Trade:
    return Trade("binance", "BTC/USDT", None, ts, None, trade_id, price, 0.25, side)


def ticker(ts: int, bid: float | None, ask: float | None) -> Ticker:
    return Ticker("binance", "BTC/USDT", None, ts, None, bid, 1.0, ask, 1.0, None, None)


def book(ts: int, kind: BookKind, bids: list[float], asks: list[float]) -> BookUpdate:
    return BookUpdate(
        "binance",
        "BTC/USDT",
        None,
        ts,
        None,
        kind,
        None,
        None,
        array("d", bids),
        array("d", asks),
    )


def write(root: Path, events: list[Event], builder: RowBuilder | None = None) -> None:
    builder = builder or RowBuilder()
    rows: dict[RowKey, Rows] = {}
    builder.add(events, rows)
    writer = BinaryWriter(root)
    writer.write(rows)
    writer.close()


def test_layout_and_names_follow_the_issue(tmp_path: Path) -> None:
    write(tmp_path, [trade(BEFORE_MIDNIGHT_US)])
    md = tmp_path / "binance" / "BTC_USDT" / "MD"
    trades = tmp_path / "binance" / "BTC_USDT" / "TRADES"
    assert sorted(p.name for p in md.iterdir()) == sorted(
        f"{c}.29.02.24.bin"
        for c in ("time", "nanos", "price", "volume", "side", "best_bid", "best_ask")
    )
    assert sorted(p.name for p in trades.iterdir()) == sorted(
        f"{c}.29.02.24.bin"
        for c in (
            "id",
            "time",
            "nanos",
            "price",
            "size",
            "side",
            "maker_order_id",
            "taker_order_id",
        )
    )
    # little-endian fixed width: 4 bytes of time, 8 of id, 16 per order id
    assert (md / "time.29.02.24.bin").read_bytes() == (1_709_251_199).to_bytes(4, "little")
    assert (trades / "id.29.02.24.bin").read_bytes() == (7).to_bytes(8, "little")
    assert (trades / "maker_order_id.29.02.24.bin").read_bytes() == bytes(16)


def test_md_rows_carry_the_latest_quote_and_trades_their_own_values(tmp_path: Path) -> None:
    t = BEFORE_MIDNIGHT_US - 10_000_000
    events: list[Event] = [
        trade(t, "1", "buy"),  # no quote yet: NaN
        ticker(t + 1, 99.0, 101.0),
        trade(t + 2, "2", "sell"),
        ticker(t + 3, None, 102.0),  # a side left null keeps its value
        trade(t + 4, "3", None),
        book(t + 5, "snapshot", [98.5, 1.0, 98.0, 2.0], [103.5, 1.0]),
        book(t + 6, "delta", [99.9, 1.0], []),  # deltas do not move the quote
        trade(t + 7, "abc-uuid", "buy", price=104.25),
        book(t + 8, "snapshot", [97.0, 1.0], []),  # an empty side: NaN
        trade(t + 9, str(2**64), "sell"),
    ]
    write(tmp_path, events)
    md = read_set(table_dir(tmp_path, "binance", "BTC/USDT", MD), MD, DAY)
    tr = read_set(table_dir(tmp_path, "binance", "BTC/USDT", TRADES), TRADES, DAY)
    quotes = [(r["best_bid"], r["best_ask"]) for r in md]
    assert math.isnan(quotes[0][0])
    assert math.isnan(quotes[0][1])
    assert quotes[1:4] == [(99.0, 101.0), (99.0, 102.0), (98.5, 103.5)]
    assert quotes[4][0] == 97.0
    assert math.isnan(quotes[4][1])
    assert [r["side"] for r in md] == [1, 2, 0, 1, 2] == [r["side"] for r in tr]
    assert [r["time"] for r in md] == [(t + i) // 1_000_000 for i in (0, 2, 4, 7, 9)]
    assert [r["nanos"] for r in tr] == [(t + i) % 1_000_000 * 1000 for i in (0, 2, 4, 7, 9)]
    assert [r["price"] for r in md] == [f32(100.5)] * 3 + [f32(104.25), f32(100.5)]
    assert [r["volume"] for r in md] == [0.25] * 5 == [r["size"] for r in tr]
    assert [r["id"] for r in tr] == [1, 2, 3, 0, 0]  # non-numeric and too large: 0
    assert all(r["maker_order_id"] == r["taker_order_id"] == bytes(16) for r in tr)


def test_trade_id_u64() -> None:
    assert trade_id_u64("18446744073709551615") == 2**64 - 1
    assert trade_id_u64("00042") == 42
    assert [trade_id_u64(s) for s in ("", "-1", "1.5", "\uff11\uff12", "ETH-123")] == [0] * 5


def test_a_new_utc_day_rotates_and_a_late_row_lands_in_its_own_day(tmp_path: Path) -> None:
    builder = RowBuilder()
    writer = BinaryWriter(tmp_path)
    for events in (
        [trade(BEFORE_MIDNIGHT_US, "1"), trade(BEFORE_MIDNIGHT_US + 499_999, "2")],
        [trade(BEFORE_MIDNIGHT_US + 500_000, "3")],  # 00:00:00.000000 on 1 March
        [trade(BEFORE_MIDNIGHT_US + 400_000, "4")],  # late: still 29 February
        [trade(BEFORE_MIDNIGHT_US + 600_000, "5")],
    ):
        rows: dict[RowKey, Rows] = {}
        builder.add(events, rows)
        writer.write(rows)
    writer.close()
    directory = table_dir(tmp_path, "binance", "BTC/USDT", TRADES)
    assert (day_suffix(DAY), day_suffix(DAY + 1)) == ("29.02.24", "01.03.24")
    assert [r["id"] for r in read_set(directory, TRADES, DAY)] == [1, 2, 4]
    assert [r["id"] for r in read_set(directory, TRADES, DAY + 1)] == [3, 5]
    assert read_set(directory, TRADES, DAY + 1)[0]["nanos"] == 0


def test_opening_cuts_every_column_to_the_shortest_whole_rows(tmp_path: Path) -> None:
    """A crash between column writes (or inside one) leaves columns of unequal length; the
    next opening cuts them all to the rows every column has whole, then appends."""
    write(tmp_path, [trade(BEFORE_MIDNIGHT_US - 3 + i, str(i)) for i in range(3)])
    directory = table_dir(tmp_path, "binance", "BTC/USDT", TRADES)
    # The crash: row 4 reached id, time and nanos whole, half of price, none of the rest.
    for name, data in (("id", b"\x09" * 8), ("time", b"\x01" * 4), ("nanos", b"\x02" * 4)):
        with column_path(directory, name, DAY).open("ab") as f:
            f.write(data)
    with column_path(directory, "price", DAY).open("ab") as f:
        f.write(b"\xff\xff")
    sizes = column_sizes(directory, TRADES, DAY)
    assert sizes["id"] == 4
    assert sizes["price"] == 3.5
    assert sizes["size"] == 3

    files = FileSet(directory, TRADES, DAY)
    assert (files.rows, files.cut) == (3, 1)
    files.close()
    assert set(column_sizes(directory, TRADES, DAY).values()) == {3}

    write(tmp_path, [trade(BEFORE_MIDNIGHT_US - 1, "99")])
    assert set(column_sizes(directory, TRADES, DAY).values()) == {4}
    assert [r["id"] for r in read_set(directory, TRADES, DAY)] == [0, 1, 2, 99]


def test_a_missing_column_empties_the_set(tmp_path: Path) -> None:
    """A crash while a set's files were being created: a missing column has no rows, so
    neither has any other column once opened (never one column longer than another)."""
    write(tmp_path, [trade(BEFORE_MIDNIGHT_US, "1")])
    directory = table_dir(tmp_path, "binance", "BTC/USDT", MD)
    column_path(directory, "best_ask", DAY).unlink()
    write(tmp_path, [trade(BEFORE_MIDNIGHT_US, "2")])
    assert set(column_sizes(directory, MD, DAY).values()) == {1}


def test_a_failed_append_cuts_every_column_back(tmp_path: Path) -> None:
    write(tmp_path, [trade(BEFORE_MIDNIGHT_US, "1")])
    directory = table_dir(tmp_path, "binance", "BTC/USDT", TRADES)
    files = FileSet(directory, TRADES, DAY)
    rows: dict[RowKey, Rows] = {}
    RowBuilder().add([trade(BEFORE_MIDNIGHT_US, "2")], rows)
    batch = rows["binance", "BTC/USDT", TRADES, DAY]
    # The fifth column's descriptor fails (as a full disk would) after four were written.
    os.close(files._fds[4])
    files._fds[4] = os.open(column_path(directory, "size", DAY), os.O_RDONLY)
    with pytest.raises(OSError, match=r"Bad file descriptor|Invalid argument"):
        files.append(batch)
    files.close(sync=False)
    assert set(column_sizes(directory, TRADES, DAY).values()) == {1}


def test_settings_refuse_the_parquet_directory_as_the_column_root(tmp_path: Path) -> None:
    markets = [{"exchange": "binance", "symbols": ["btcusdt"]}]
    storage = {"data_dir": str(tmp_path)}
    with pytest.raises(ConfigError, match=r"binary\.dir must not be storage\.data_dir"):
        parse_settings(
            {
                "storage": storage,
                "binary": {"enabled": True, "dir": str(tmp_path)},
                "markets": markets,
            }
        )
    settings = parse_settings({"storage": storage, "binary": {"enabled": True}, "markets": markets})
    assert settings.binary.dir == "./binary"
