"""Sharding: ``I/N`` specs, and a deterministic, balanced, order-free split of the pairs."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from collector.config import ConfigError, Settings
from collector.planning import plan_service
from collector.settings_check import parse_settings
from collector.sharding import (
    ENV_SHARD,
    Assignment,
    Pair,
    Shard,
    ShardError,
    apply_shard,
    assign_pairs,
    assignment,
    configured_pairs,
    describe_shard,
    describe_shard_lines,
    parse_shard,
    resolve_shard,
    shard_pairs,
    shard_settings,
)

BINANCE = [f"{base}usdt" for base in ("btc", "eth", "sol", "bnb", "xrp", "doge", "ada", "trx")]
OKX = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "BTC-USDT-SWAP", "ETH-USDT-SWAP"]
BYBIT = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]


def markets(order: int = 0) -> list[dict[str, Any]]:
    """Three exchanges' markets; ``order`` shuffles markets and symbols reproducibly."""
    result: list[dict[str, Any]] = [
        {"exchange": "binance", "symbols": list(BINANCE), "feeds": ["trades", "ticker"]},
        {"exchange": "okx", "symbols": list(OKX)},
        {"exchange": "bybit", "symbols": list(BYBIT), "feeds": ["trades"], "category": "spot"},
    ]
    if order:
        rng = random.Random(order)
        rng.shuffle(result)
        for market in result:
            rng.shuffle(market["symbols"])
    return result


def settings(market_list: list[dict[str, Any]] | None = None, **aws: Any) -> Settings:
    raw: dict[str, Any] = {"markets": market_list if market_list is not None else markets()}
    if aws:
        raw["aws"] = aws
    return parse_settings(raw)


def all_pairs() -> list[Pair]:
    return sorted(
        [("binance", s.upper()) for s in BINANCE]
        + [("okx", s) for s in OKX]
        + [("bybit", s) for s in BYBIT]
    )


def owners(shards: list[list[Pair]]) -> dict[Pair, int]:
    return {pair: index for index, pairs in enumerate(shards) for pair in pairs}


def planned_pairs(cfg: Settings) -> set[Pair]:
    """The (exchange, symbol) pairs the connections of ``cfg`` carry."""
    return {
        (connection.exchange, symbol)
        for connection in plan_service(cfg).connections
        for symbol in connection.symbols
    }


# --------------------------------------------------------------------------- specs


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0/1", Shard(0, 1)), ("0/3", Shard(0, 3)), ("2/3", Shard(2, 3)), (" 1 / 4 ", Shard(1, 4))],
)
def test_parse_shard(text: str, expected: Shard) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3/3", "out of range"),
        ("0/0", "at least 1"),
        ("-1/3", "expected I/N"),
        ("1", "expected I/N"),
        ("a/b", "expected I/N"),
        ("1/3/5", "expected I/N"),
        ("", "expected I/N"),
    ],
)
def test_parse_shard_rejects_bad_specs(text: str, message: str) -> None:
    with pytest.raises(ShardError, match=message):
        parse_shard(text)


def test_shard_errors_are_settings_errors() -> None:
    """The CLI reports them like any bad setting: one line, exit status 2."""
    assert issubclass(ShardError, ConfigError)


def test_auto_takes_the_index_from_the_statefulset_pod_name() -> None:
    assert parse_shard("auto/3", hostname="collector-0") == Shard(0, 3)
    assert parse_shard("auto/3", hostname="market-data-collector-2") == Shard(2, 3)
    with pytest.raises(ShardError, match="does not end in -<number>"):
        parse_shard("auto/3", hostname="collector")
    with pytest.raises(ShardError, match="out of range"):
        parse_shard("auto/3", hostname="collector-3")


def test_shard_names() -> None:
    assert str(Shard(1, 3)) == "1/3"


def test_resolve_shard_prefers_the_command_line_then_the_environment() -> None:
    assert resolve_shard(None, {}) is None
    assert resolve_shard(None, {ENV_SHARD: "  "}) is None
    assert resolve_shard(None, {ENV_SHARD: "1/2"}) == Shard(1, 2)
    assert resolve_shard("0/4", {ENV_SHARD: "1/2"}) == Shard(0, 4)
    assert resolve_shard(None, {ENV_SHARD: "auto/4", "HOSTNAME": "collector-3"}) == Shard(3, 4)
    with pytest.raises(ShardError, match=r"^\$COLLECTOR_SHARD: shard 'x'"):
        resolve_shard(None, {ENV_SHARD: "x"})
    with pytest.raises(ShardError, match=r"^--shard: shard '5/2'"):
        resolve_shard("5/2", {})


# --------------------------------------------------------------------------- assignment


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 7, 16, 17, 40])
@pytest.mark.parametrize("size", [0, 1, 2, 3, 10, 17, 100, 257])
def test_shards_are_disjoint_complete_and_balanced(size: int, count: int) -> None:
    pairs = [("binance", f"S{i}") for i in range(size)] + [("okx", f"S{i}") for i in range(size)]
    shards = assign_pairs(pairs, count)
    assert len(shards) == count
    flat = [pair for shard in shards for pair in shard]
    assert len(flat) == len(set(flat)), "a pair is in two shards"
    assert set(flat) == set(pairs), "the union of the shards is not every pair"
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1, sizes


def test_assignment_is_deterministic_across_processes() -> None:
    """SHA-256, not ``hash()``: the same split under any PYTHONHASHSEED, in any process."""
    script = (
        "import json; from collector.sharding import assign_pairs; "
        "pairs = [('binance', f'S{i}') for i in range(40)]; "
        "print(json.dumps(assign_pairs(pairs, 3)))"
    )
    results = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, check=True, text=True
        ).stdout
        results.add(out)
    assert len(results) == 1
    here = assign_pairs([("binance", f"S{i}") for i in range(40)], 3)
    assert json.loads(results.pop()) == [[list(p) for p in shard] for shard in here]


def test_assignment_is_pinned() -> None:
    """A golden split: changing the hashing moves pairs between running shards, on purpose only."""
    pairs = [("binance", s) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT")]
    assert assign_pairs(pairs, 2) == GOLDEN_2


GOLDEN_2 = [
    [("binance", "BNBUSDT"), ("binance", "BTCUSDT"), ("binance", "XRPUSDT")],
    [("binance", "ETHUSDT"), ("binance", "SOLUSDT")],
]


def test_assignment_ignores_order_and_duplicates() -> None:
    pairs = [("binance", f"S{i}") for i in range(30)]
    shuffled = list(pairs)
    random.Random(7).shuffle(shuffled)
    assert assign_pairs(pairs, 4) == assign_pairs(shuffled, 4)
    assert assign_pairs(pairs + pairs[:5], 4) == assign_pairs(pairs, 4)


def test_one_pair_more_or_less_moves_few_others() -> None:
    """Rendezvous hashing: unlike sorted round-robin, most pairs keep their shard."""
    pairs = [("binance", f"S{i:03d}") for i in range(100)]
    for count in (2, 3, 4, 7):
        before = owners(assign_pairs(pairs, count))
        added = owners(assign_pairs([*pairs, ("okx", "NEW-USDT")], count))
        removed = owners(assign_pairs(pairs[1:], count))
        assert sum(before[p] != added[p] for p in pairs) <= 5
        assert sum(before[p] != removed[p] for p in pairs[1:]) <= 5


def test_one_shard_more_moves_a_fair_share() -> None:
    pairs = [("binance", f"S{i:03d}") for i in range(200)]
    before = owners(assign_pairs(pairs, 4))
    after = owners(assign_pairs(pairs, 5))
    moved = sum(before[p] != after[p] for p in pairs)
    # Ideal: the 40 pairs of the new shard; round-robin would move about 160.
    assert moved <= 80


# --------------------------------------------------------------------------- settings


def test_configured_pairs_are_canonical() -> None:
    assert configured_pairs(settings()) == all_pairs()


@pytest.mark.parametrize("count", [1, 2, 3, 5, 17])
def test_shard_settings_split_the_configured_markets(count: int) -> None:
    full = settings()
    seen: list[Pair] = []
    for index in range(count):
        shard = Shard(index, count)
        part = shard_settings(full, shard)
        mine = planned_pairs(part)
        assert mine == set(shard_pairs(full, shard))
        assert configured_pairs(part) == sorted(mine)
        seen += sorted(mine)
        for market in part.markets:
            assert market.symbols, "a market without symbols was kept"
            original = next(m for m in full.markets if m.exchange == market.exchange)
            assert market.feeds == original.feeds
            assert set(market.symbols) <= set(original.symbols)  # spelled as configured
    assert len(seen) == len(set(seen))
    assert sorted(seen) == all_pairs()
    sizes = [len(shard_pairs(full, Shard(i, count))) for i in range(count)]
    assert max(sizes) - min(sizes) <= 1


def test_one_symbol_in_both_bybit_categories_is_two_pairs() -> None:
    full = settings(
        [
            {"exchange": "bybit", "symbols": ["BTCUSDT"], "category": "spot"},
            {"exchange": "bybit", "symbols": ["btcusdt"], "category": "linear"},
        ]
    )
    assert configured_pairs(full) == [("bybit", "BTCUSDT"), ("bybit-linear", "BTCUSDT")]
    parts = [shard_settings(full, Shard(index, 2)) for index in range(2)]
    assert sorted(pair for part in parts for pair in planned_pairs(part)) == configured_pairs(full)
    assert sorted(m.category or "" for part in parts for m in part.markets) == ["linear", "spot"]


def test_shard_settings_are_stable_when_the_order_of_settings_changes() -> None:
    reference = settings(markets())
    for order in (1, 2, 3):
        shuffled = settings(markets(order))
        for index in range(3):
            shard = Shard(index, 3)
            assert planned_pairs(shard_settings(shuffled, shard)) == planned_pairs(
                shard_settings(reference, shard)
            )


def test_symbol_spelling_does_not_move_a_pair() -> None:
    lower = settings([{"exchange": "binance", "symbols": ["btcusdt", "ethusdt", "solusdt"]}])
    upper = settings([{"exchange": "binance", "symbols": ["SOLUSDT", "ETHUSDT", "BTCUSDT"]}])
    for index in range(2):
        shard = Shard(index, 2)
        assert shard_pairs(lower, shard) == shard_pairs(upper, shard)


def test_a_market_left_without_symbols_is_removed() -> None:
    cfg = settings(
        [
            {"exchange": "binance", "symbols": ["btcusdt"]},
            {"exchange": "bybit", "symbols": ["BTCUSDT"], "category": "spot"},
        ]
    )
    parts = [shard_settings(cfg, Shard(i, 2)) for i in range(2)]
    assert sorted(len(p.markets) for p in parts) == [1, 1]
    assert {p.markets[0].exchange for p in parts} == {"binance", "bybit"}


def test_sharding_leaves_the_layout_alone() -> None:
    """Only the markets change: no server level appears, a configured one stays."""
    cfg = settings()
    for index in range(3):
        part = shard_settings(cfg, Shard(index, 3))
        assert part.aws == cfg.aws
        assert part.aws.home_server_name is None
        assert msgspec.structs.replace(part, markets=cfg.markets) == cfg
    named = settings(home_server_name="tokyo")
    assert shard_settings(named, Shard(1, 3)).aws.home_server_name == "tokyo"


def test_assignment() -> None:
    cfg = settings()
    whole = assignment(cfg, None)
    assert whole == Assignment(Shard(0, 1), tuple(all_pairs()), len(all_pairs()))
    assert not whole.sharded
    assert assignment(cfg, Shard(0, 1)) == whole
    parts = [assignment(cfg, Shard(i, 3)) for i in range(3)]
    assert all(p.sharded and p.configured == len(all_pairs()) for p in parts)
    assert [list(p.pairs) for p in parts] == [shard_pairs(cfg, Shard(i, 3)) for i in range(3)]


def test_a_single_shard_changes_nothing() -> None:
    cfg = settings()
    assert shard_settings(cfg, Shard(0, 1)) is cfg


def test_a_shard_without_pairs_is_a_settings_error() -> None:
    cfg = settings([{"exchange": "binance", "symbols": ["btcusdt", "ethusdt"]}])
    shard_settings(cfg, Shard(1, 2))  # two pairs, two shards: fine
    with pytest.raises(ShardError, match=r"shard 2/3 has nothing to collect: only 2 .* at most 2"):
        shard_settings(cfg, Shard(2, 3))


def test_apply_shard() -> None:
    cfg = settings()
    assert apply_shard(cfg, None, {}) == (cfg, None)
    part, shard = apply_shard(cfg, None, {ENV_SHARD: "auto/2", "HOSTNAME": "collector-1"})
    assert shard == Shard(1, 2)
    assert part == shard_settings(cfg, Shard(1, 2))


def test_describe_shard() -> None:
    cfg = settings()
    info = describe_shard(cfg, Shard(0, 2))
    assert info["shard"] == "0/2"
    assert info["total_pairs"] == len(all_pairs())
    assert [(p["exchange"], p["symbol"]) for p in info["pairs"]] == shard_pairs(cfg, Shard(0, 2))
    lines = describe_shard_lines(cfg, Shard(0, 2))
    assert lines[0].startswith(f"# shard 0/2: {len(info['pairs'])} of ")
    assert len(lines) == 1 + len(info["pairs"])


# --------------------------------------------------------------------------- command line


def write_config(path: Path) -> Path:
    lines = []
    for market in markets():
        lines.append("[[markets]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in market.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def check_config(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR")}
    return subprocess.run(
        [sys.executable, "-m", "collector", "check-config", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**base, **(env or {})},
    )


def test_check_config_shows_what_a_shard_collects(tmp_path: Path) -> None:
    config = write_config(tmp_path / "settings.toml")
    full = settings()
    union: set[Pair] = set()
    for index in range(3):
        result = check_config(str(config), "--json", "--shard", f"{index}/3")
        assert result.returncode == 0, result.stderr
        shown = json.loads(result.stdout)
        expected = shard_pairs(full, Shard(index, 3))
        assert [(p["exchange"], p["symbol"]) for p in shown["shard"]["pairs"]] == expected
        assert shown["settings"]["aws"].get("home_server_name") is None  # no level of its own
        carried = {(c["exchange"], s) for c in shown["connections"] for s in c["symbols"]}
        assert carried == set(expected)
        union |= carried
    assert union == set(all_pairs())

    text = check_config(str(config), "--shard", "1/3")
    assert text.returncode == 0, text.stderr
    assert "# shard 1/3: " in text.stdout
    via_env = check_config(str(config), "--json", env={ENV_SHARD: "1/3"})
    assert (
        json.loads(via_env.stdout)["shard"]["pairs"]
        == json.loads(check_config(str(config), "--json", "--shard", "1/3").stdout)["shard"][
            "pairs"
        ]
    )


def test_bad_or_empty_shards_exit_2(tmp_path: Path) -> None:
    config = write_config(tmp_path / "settings.toml")
    bad = check_config(str(config), "--shard", "3/3")
    assert bad.returncode == 2
    assert bad.stderr.startswith("collector: error: --shard: shard '3/3'")
    empty = check_config(str(config), "--shard", f"40/{len(all_pairs()) + 30}")
    assert empty.returncode == 2
    assert "has nothing to collect" in empty.stderr
