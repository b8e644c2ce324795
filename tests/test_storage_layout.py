"""File layout: directories, names, unsafe characters, name collisions, S3 keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.storage import relative_key
from collector.storage.layout import (
    choose_parquet_path,
    journal_path,
    parquet_for_journal,
    safe_component,
    stream_dir,
    temp_path,
    utc_date,
)

START_MS = 1_714_607_999_999  # 2024-05-01T23:59:59.999Z


def test_path_without_server(tmp_path: Path) -> None:
    directory = stream_dir(tmp_path, "binance", "BTCUSDT", "trades", START_MS)
    assert directory == tmp_path / "binance" / "BTCUSDT" / "trades" / "2024-05-01"
    path = choose_parquet_path(directory, START_MS)
    assert path == directory / "1714607999999.parquet"
    assert relative_key(path, tmp_path) == "binance/BTCUSDT/trades/2024-05-01/1714607999999.parquet"


def test_path_with_server(tmp_path: Path) -> None:
    directory = stream_dir(tmp_path, "okx", "BTC-USDT", "orderbook", START_MS + 1, "eu-west-1a")
    assert relative_key(directory / "x.parquet", tmp_path) == (
        "okx/BTC-USDT/orderbook/eu-west-1a/2024-05-02/x.parquet"
    )


def test_unsafe_symbol_makes_one_directory(tmp_path: Path) -> None:
    directory = stream_dir(tmp_path, "kraken", "BTC/USD", "ticker", START_MS, "a/b")
    assert directory == tmp_path / "kraken" / "BTC_USD" / "ticker" / "a_b" / "2024-05-01"


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("BTCUSDT", "BTCUSDT"),
        ("BTC-USDT", "BTC-USDT"),
        ("BTC_USDT.P", "BTC_USDT.P"),
        ("BTC/USD", "BTC_USD"),
        ("a\\b", "a_b"),
        ("..", "_."),
        (".", "_"),
        ("../etc", "_._etc"),
        ("", "_"),
        ("t:BTCUSD", "t_BTCUSD"),
        ("BTC USD*", "BTC_USD_"),
        ("BTC%2F", "BTC_2F"),
        ("ÄÖ", "__"),
        ("x" * 300, "x" * 200),
    ],
)
def test_safe_component(name: str, safe: str) -> None:
    assert safe_component(name) == safe


def test_date_is_utc_date_of_start() -> None:
    assert utc_date(0) == "1970-01-01"
    assert utc_date(START_MS) == "2024-05-01"
    assert utc_date(START_MS + 1) == "2024-05-02"


def test_sibling_names(tmp_path: Path) -> None:
    final = tmp_path / "123.parquet"
    assert journal_path(final) == tmp_path / "123.journal.arrows"
    assert temp_path(final) == tmp_path / ".123.parquet.tmp"
    assert parquet_for_journal(journal_path(final)) == final


def test_taken_names_bump_start_ms(tmp_path: Path) -> None:
    (tmp_path / "100.parquet").write_bytes(b"finished")
    (tmp_path / "101.journal.arrows").write_bytes(b"open")
    (tmp_path / ".102.parquet.tmp").write_bytes(b"finalizing")
    in_use = {tmp_path / "103.parquet"}
    assert choose_parquet_path(tmp_path, 100, in_use) == tmp_path / "104.parquet"
    assert choose_parquet_path(tmp_path, 99, in_use) == tmp_path / "99.parquet"


def test_relative_key_outside_data_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"not in the subpath|does not start with"):
        relative_key(Path("/elsewhere/x.parquet"), tmp_path)
