"""The contract every venue adapter keeps, checked for all venues at once.

- Every module under ``collector/exchanges/`` is sans-IO: it imports no event loop, socket,
  clock or file API and calls none (the connection layer does I/O and hands frames over).
- Every adapter refuses the market options it declares it does not take, in the standard
  words (with its own note), accepts every value it declares, and plans connections by the
  same rules: markets with another URL or ``raw`` choice never share a connection, a
  symbol's subscriptions stay together, the declared limits hold.
- Every adapter builds its keepalive frame from the ping's number alone, without a session.

What is particular to one venue (its URLs, its notes, its wire names) is tested in that
venue's ``test_<venue>_parse.py``.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from collector.config import MarketSettings
from collector.exchanges import get_adapter_class, known_exchanges
from collector.exchanges.base import ExchangeAdapter

REPO = Path(__file__).resolve().parents[1]
EXCHANGES_DIR = REPO / "collector" / "exchanges"
SOURCES = sorted(EXCHANGES_DIR.glob("*.py"))
MODULES = [
    "collector.exchanges" if path.stem == "__init__" else f"collector.exchanges.{path.stem}"
    for path in SOURCES
]

# Modules (and their submodules) an adapter module must not import: event loops and
# WebSocket clients, sockets, the clock, files and processes. ``json`` too: frames are
# decoded with msgspec's reused decoders, and a second, slower path would drift.
FORBIDDEN_IMPORTS = frozenset(
    {
        "asyncio",
        "trio",
        "trio_websocket",
        "websockets",
        "socket",
        "ssl",
        "select",
        "selectors",
        "http",
        "urllib.request",
        "time",
        "os",
        "io",
        "pathlib",
        "shutil",
        "tempfile",
        "subprocess",
        "logging",
        "json",
    }
)
# Builtins that do I/O, and attributes that read the clock, the environment or files.
FORBIDDEN_CALLS = frozenset({"open", "input", "print", "__import__"})
FORBIDDEN_ATTRIBUTES = frozenset(
    {
        "environ",
        "getenv",
        "now",
        "utcnow",
        "today",
        "monotonic",
        "perf_counter",
        "time_ns",
        "read_text",
        "read_bytes",
        "write_text",
        "write_bytes",
    }
)
# Loaded by importing a module (directly or through what it imports).
FORBIDDEN_LOADED = ("trio", "trio_websocket", "websockets", "asyncio")

# Valid symbols of each venue: a few fixed ones and a generator of many.
SYMBOLS: dict[str, tuple[tuple[str, str, str], Callable[[int], str]]] = {
    "binance": (("BTCUSDT", "ETHUSDT", "BNBUSDT"), lambda i: f"C{i}USDT"),
    "bitfinex": (("tBTCUSD", "tETHUSD", "tLTCUSD"), lambda i: f"tC{i:04d}U"),
    "bybit": (("BTCUSDT", "ETHUSDT", "SOLUSDT"), lambda i: f"C{i}USDT"),
    "coinbase": (("BTC-USD", "ETH-USD", "SOL-USD"), lambda i: f"C{i}-USD"),
    "deribit": (("BTC-PERPETUAL", "ETH-PERPETUAL", "BTC_USDC"), lambda i: f"C{i}-PERPETUAL"),
    "kraken": (("BTC/USD", "ETH/USD", "SOL/USD"), lambda i: f"S{i}/USD"),
    "okx": (("BTC-USDT", "ETH-USDT", "SOL-USDT"), lambda i: f"C{i}-USDT"),
    "upbit": (("KRW-BTC", "KRW-ETH", "BTC-ETH"), lambda i: f"KRW-C{i}"),
}
# A symbol of each category whose symbols are spelled unlike the venue's first ones.
CATEGORY_SYMBOLS: dict[tuple[str, str], str] = {("binance", "coinm"): "BTCUSD_PERP"}
# A symbol with derivatives data, where the venue's first symbol (spot) has none.
DERIVATIVE_SYMBOLS: dict[str, str] = {"okx": "BTC-USDT-SWAP", "bitfinex": "tBTCF0:USTF0"}
ADAPTERS = [get_adapter_class(name) for name in known_exchanges()]
# The default feeds of a market, and every feed a venue may stream.
STREAM_FEEDS = ("trades", "orderbook", "ticker")
ALL_FEEDS = (*STREAM_FEEDS, "derivatives", "liquidations")


def market(adapter: type[ExchangeAdapter], *symbols: str, **options: Any) -> MarketSettings:
    """A market the venue accepts (its first category, if it needs one), plus ``options``."""
    values: dict[str, Any] = {
        "exchange": adapter.name,
        "symbols": symbols or SYMBOLS[adapter.name][0][:1],
    }
    if adapter.categories:
        values["category"] = adapter.categories[0]
    special = CATEGORY_SYMBOLS.get((adapter.name, str(options.get("category"))))
    if not symbols and special is not None:
        values["symbols"] = (special,)
    return MarketSettings(**{**values, **options})


def refusal(adapter: type[ExchangeAdapter], **options: Any) -> str:
    """The message refusing ``options``; every refusal starts with the venue's name."""
    with pytest.raises(ValueError, match=f"^{re.escape(adapter.name)} ") as info:
        adapter.check_market(market(adapter, **options))
    return str(info.value)


def by_name(adapter: type[ExchangeAdapter]) -> str:
    return adapter.name


# --------------------------------------------------------------------------- sans-IO


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.stem)
def test_the_module_imports_and_calls_no_io(path: Path) -> None:
    imported: set[str] = set()
    calls: set[str] = set()
    attributes: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            calls.add(node.func.id)
        elif isinstance(node, ast.Attribute):
            attributes.add(node.attr)
    forbidden = {
        name
        for name in imported
        if any(name == f or name.startswith(f"{f}.") for f in FORBIDDEN_IMPORTS)
    }
    assert not forbidden
    assert not calls & FORBIDDEN_CALLS
    assert not attributes & FORBIDDEN_ATTRIBUTES


def test_importing_the_modules_loads_no_event_loop_or_websocket_library() -> None:
    """Each module in a fresh interpreter, one after the other: the first that loads a
    forbidden module is named."""
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        f"    loaded = sorted(m for m in {FORBIDDEN_LOADED!r} if m in sys.modules)\n"
        "    if loaded:\n"
        "        print(name, loaded)\n"
        "        break\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout == ""


# --------------------------------------------------------------------------- discovery


def test_every_venue_module_has_one_adapter_named_after_it() -> None:
    assert sorted(SYMBOLS) == known_exchanges()
    for adapter in ADAPTERS:
        assert adapter.__module__ == f"collector.exchanges.{adapter.name}"
        assert set(adapter.stream_feeds) <= set(ALL_FEEDS)
        assert set(STREAM_FEEDS) <= set(adapter.stream_feeds)


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("adapter", ADAPTERS, ids=by_name)
def test_refuses_the_options_it_does_not_take_in_the_standard_words(
    adapter: type[ExchangeAdapter],
) -> None:
    name, notes = adapter.name, adapter.option_notes
    if not adapter.categories:
        message = refusal(adapter, category="spot")
        assert message == f"{name} has no category option{notes.get('category', '')}"
    if not adapter.takes_rest_url:
        message = refusal(adapter, rest_url="https://rest.example")
        assert message == f"{name} has no rest_url option{notes.get('rest_url', '')}"
    if not adapter.book_modes and not adapter.book_depths:
        note = notes.get("book_mode/book_depth", "")
        for options in ({"book_mode": "snapshot"}, {"book_mode": "diff"}, {"book_depth": 10}):
            message = refusal(adapter, **options)
            assert message == f"{name} has no book_mode/book_depth options{note}"
    elif not adapter.book_modes:
        for mode in ("snapshot", "diff"):
            message = refusal(adapter, book_mode=mode)
            assert message == f"{name} has no book_mode option{notes.get('book_mode', '')}"


@pytest.mark.parametrize("adapter", ADAPTERS, ids=by_name)
def test_accepts_and_plans_every_value_it_declares(adapter: type[ExchangeAdapter]) -> None:
    accepted: list[dict[str, Any]] = [
        {},
        {"base_url": "wss://ws.example"},
        *({"book_mode": mode} for mode in adapter.book_modes),
        *({"book_depth": depth} for depth in adapter.book_depths),
        *({"category": category} for category in adapter.categories),
    ]
    if adapter.takes_rest_url:
        accepted.append({"rest_url": "https://rest.example"})
    for options in accepted:
        settings = market(adapter, **options)
        adapter.check_market(settings)
        plans = make(adapter).plan_connections([settings])
        # One connection, or one per endpoint where the venue routes feeds (Binance USD-M).
        urls = {make(adapter).feed_url(settings, feed) for feed in adapter.stream_feeds}
        assert len(plans) == len(urls)
        assert make(adapter).connection_url(settings) in urls
        for plan in plans:
            assert plan.exchange == adapter.data_exchange(settings)
            assert {make(adapter).feed_url(settings, s.feed) for s in plan.subscriptions} == {
                plan.url
            }


@pytest.mark.parametrize("adapter", ADAPTERS, ids=by_name)
def test_refuses_values_it_does_not_declare(adapter: type[ExchangeAdapter]) -> None:
    name = adapter.name
    if adapter.book_depths:
        assert "book_depth" in refusal(adapter, book_depth=7)
    if len(adapter.book_modes) == 1:
        other = "diff" if adapter.book_modes[0] == "snapshot" else "snapshot"
        assert refusal(adapter, book_mode=other).startswith(f"{name} book_mode can only be ")
    if adapter.categories:
        if adapter.default_category is None:
            assert refusal(adapter, category=None).startswith(f"{name} needs category ")
        else:
            adapter.check_market(market(adapter, category=None))
            assert adapter.default_category in adapter.categories
        assert "(got 'nope')" in refusal(adapter, category="nope")


@pytest.mark.parametrize("adapter", ADAPTERS, ids=by_name)
def test_feeds_and_url_schemes_are_checked_in_the_same_words(
    adapter: type[ExchangeAdapter],
) -> None:
    name = adapter.name
    offered = ", ".join(adapter.market_feeds(market(adapter)))
    assert refusal(adapter, feeds=("raw",)) == (
        f"{name} feeds: 'raw' keeps the frames of other feeds; add at least one of {offered}"
    )
    assert refusal(adapter, base_url="https://x") == (
        f"{name} base_url must start with ws:// or wss:// (got 'https://x')"
    )
    if adapter.takes_rest_url:
        assert refusal(adapter, rest_url="ftp://x") == (
            f"{name} rest_url must start with http:// or https:// (got 'ftp://x')"
        )


@pytest.mark.parametrize("adapter", ADAPTERS, ids=by_name)
@pytest.mark.parametrize(
    ("feed", "what"),
    [
        ("derivatives", "mark/index price, funding, open interest, option greeks"),
        ("liquidations", "forced liquidations"),
    ],
)
def test_feeds_a_venue_or_category_lacks_are_refused_by_name(
    adapter: type[ExchangeAdapter], feed: str, what: str
) -> None:
    name = adapter.name
    if feed not in adapter.stream_feeds:
        message = refusal(adapter, feeds=("trades", feed))
        assert message == f"{name} has no {feed} feed ({what}){adapter.option_notes.get(feed, '')}"
        return
    lacking = [c for c in adapter.categories if feed in adapter.category_lacks.get(c, ())]
    for category in lacking:
        message = refusal(adapter, category=category, feeds=("trades", feed))
        assert message.startswith(f"{name} category {category!r} has no {feed} feed ({what}); ")
    having: list[str | None] = [c for c in adapter.categories if c not in lacking] or [None]
    for kept in having:
        options: dict[str, Any] = {"feeds": (feed,)}
        if kept is not None:
            options["category"] = kept
        symbols = (DERIVATIVE_SYMBOLS[name],) if name in DERIVATIVE_SYMBOLS else ()
        settings = market(adapter, *symbols, **options)
        adapter.check_market(settings)
        (plan,) = make(adapter).plan_connections([settings])
        assert [s.feed for s in plan.subscriptions] == [feed]


@pytest.mark.parametrize("adapter", ADAPTERS, ids=by_name)
def test_symbols_url_is_the_rest_base_and_the_declared_path(
    adapter: type[ExchangeAdapter],
) -> None:
    assert adapter.default_rest_url is not None
    assert adapter.symbols_path is not None
    assert adapter.symbols_url() == adapter.default_rest_url + adapter.symbols_path
    assert adapter.symbols_url("http://127.0.0.1:9/") == (
        f"http://127.0.0.1:9{adapter.symbols_path}"
    )


# --------------------------------------------------------------------------- planning


def make(adapter: type[ExchangeAdapter]) -> ExchangeAdapter:
    """An adapter without credentials (Coinbase's are optional)."""
    return adapter()


@pytest.mark.parametrize("adapter", ADAPTERS, ids=by_name)
def test_raw_and_base_url_make_their_own_connections(adapter: type[ExchangeAdapter]) -> None:
    first, second, third = SYMBOLS[adapter.name][0]
    markets = [
        market(adapter, first),
        market(adapter, second, feeds=("trades", "raw")),
        market(adapter, third, base_url="ws://127.0.0.1:1/"),
        market(adapter, first.lower()),
    ]
    plans = make(adapter).plan_connections(markets)
    normalize = adapter.normalize_symbol
    assert [(p.raw, p.symbols) for p in plans] == [
        (False, (normalize(first),)),
        (True, (normalize(second),)),
        (False, (normalize(third),)),
    ]
    assert len({p.name for p in plans}) == 3
    assert plans[0].url == plans[1].url == make(adapter).connection_url(markets[0])
    assert plans[2].url.startswith("ws://127.0.0.1:1")
    # A symbol's feeds in settings order, once each (the fourth market repeats the first);
    # "raw" is no subscription.
    assert [s.feed for s in plans[0].subscriptions] == list(STREAM_FEEDS)
    assert [s.feed for s in plans[1].subscriptions] == ["trades"]


@pytest.mark.parametrize("adapter", ADAPTERS, ids=by_name)
def test_plans_keep_within_the_declared_limits_and_symbols_together(
    adapter: type[ExchangeAdapter],
) -> None:
    most_subscriptions = adapter.max_subscriptions_per_connection
    most_symbols = adapter.max_symbols_per_connection
    limits = [most_subscriptions // len(STREAM_FEEDS)] if most_subscriptions else []
    limits += [most_symbols] if most_symbols else []
    assert limits, "every venue declares a per-connection limit"
    generate = SYMBOLS[adapter.name][1]
    symbols = [adapter.normalize_symbol(generate(i)) for i in range(min(limits) + 1)]
    plans = make(adapter).plan_connections([market(adapter, *symbols)])
    assert len(plans) > 1
    for plan in plans:
        assert len(plan.subscriptions) <= (most_subscriptions or len(plan.subscriptions))
        assert len(plan.symbols) <= (most_symbols or len(plan.symbols))
    assert [s for p in plans for s in p.symbols] == symbols  # each on one connection, in order


# --------------------------------------------------------------------------- keepalive


@pytest.mark.parametrize("adapter", ADAPTERS, ids=by_name)
def test_the_keepalive_frame_is_a_pure_function_of_its_number(
    adapter: type[ExchangeAdapter],
) -> None:
    # The connection's keepalive task builds each ping from its own count, through the
    # adapter: no counter behind the frame, and no session involved (a session has one
    # owner, the receive loop).
    made = make(adapter)
    first, second, again = (made.keepalive_frame(n) for n in (1, 2, 1))
    assert (first is None) == (adapter.keepalive_interval_secs is None)
    assert again == first
    assert make(adapter).keepalive_frame(2) == second
    session = made.open_session(made.plan_connections([market(adapter)])[0])
    assert not hasattr(session, "keepalive_frame")


# --------------------------------------------------------------------------- lifetime

# The venues that document the age at which they close every connection, in seconds
# (exchanges.md; the others document none, or only idle timeouts).
DOCUMENTED_LIFETIMES = {"binance": 24 * 3600.0}


@pytest.mark.parametrize("adapter", ADAPTERS, ids=by_name)
def test_a_connection_lifetime_is_declared_only_where_the_venue_documents_one(
    adapter: type[ExchangeAdapter],
) -> None:
    assert adapter.max_connection_lifetime_secs == DOCUMENTED_LIFETIMES.get(adapter.name)
