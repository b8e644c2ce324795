"""The ``instruments`` feed end to end: fake venue REST APIs on loopback serve listings in
the venues' shapes; the listings are fetched at start, retried after a failure, fetched
again each interval (virtual time), and written as Parquet by the service."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import trio
import trio.testing

from collector.clock import trio_wall_clock
from collector.events import Event, Instrument, Status, Trade
from collector.exchanges.bitfinex import BitfinexAdapter
from collector.instruments import plan_instruments, run_instruments
from collector.metrics import Metrics
from collector.planning import plan_service
from collector.settings_check import parse_settings
from collector.storage.columns import to_record_batch
from tests.fakes.binance import FakeBinance
from tests.fakes.binance_rest import SERVER_TIME_MS, FakeBinanceRest
from tests.fakes.kraken import FakeKraken
from tests.fakes.rest import FakeRest, Query
from tests.fakes.spot_rest import (
    bitfinex_futures_info,
    bitfinex_pair_info,
    coinbase_routes,
    kraken_asset_pairs,
    upbit_markets,
)
from tests.real_time import fail_after_real
from tests.venue_helpers import (
    QUIET_WEBSOCKET,
    read_rows,
    run_until_stopped,
    settle_frozen,
    wait_until,
)

EPOCH_US = 1_786_000_000_000_000  # 2026-08-06T00:26:40Z: no hour boundary in the test
INTERVAL = 600.0
RETRY = 60.0
FETCHES = "collector_instrument_fetches_total"


def deribit_answer(query: Query) -> tuple[int, bytes]:
    name = query["instrument_name"][0]
    if name != "BTC-PERPETUAL":  # the venue's answer to an unknown instrument
        error = {"jsonrpc": "2.0", "error": {"code": 13020, "message": "not_found"}}
        return 400, msgspec.json.encode(error)
    result = {
        "instrument_name": name,
        "kind": "future",
        "settlement_period": "perpetual",
        "instrument_type": "reversed",
        "base_currency": "BTC",
        "quote_currency": "USD",
        "settlement_currency": "BTC",
        "contract_size": 10,
        "tick_size": 0.5,
        "min_trade_amount": 10,
        "expiration_timestamp": 32503708800000,
        "is_active": True,
        "state": "open",
    }
    return 200, msgspec.json.encode({"jsonrpc": "2.0", "result": result, "usOut": 1})


def bybit_answer(query: Query) -> tuple[int, bytes]:
    (symbol,) = query["symbol"]
    item = {
        "symbol": symbol,
        "contractType": "InversePerpetual",
        "status": "Trading",
        "baseCoin": "BTC",
        "quoteCoin": "USD",
        "settleCoin": "BTC",
        "deliveryTime": "0",
        "priceFilter": {"tickSize": "0.50"},
        "lotSizeFilter": {"qtyStep": "1", "minOrderQty": "1"},
    }
    result = {"category": query["category"][0], "list": [item]}
    return 200, msgspec.json.encode({"retCode": 0, "retMsg": "OK", "result": result, "time": 1})


def okx_answer(query: Query) -> tuple[int, bytes]:
    (inst_id,) = query["instId"]
    item = {
        "instType": query["instType"][0],
        "instId": inst_id,
        "instFamily": "BTC-USDT",
        "settleCcy": "USDT",
        "ctVal": "0.01",
        "ctMult": "1",
        "ctValCcy": "BTC",
        "ctType": "linear",
        "tickSz": "0.1",
        "lotSz": "0.01",
        "minSz": "0.01",
        "state": "live",
    }
    return 200, msgspec.json.encode({"code": "0", "msg": "", "data": [item]})


def of(events: list[Event], exchange: str, symbol: str) -> list[Event]:
    return [e for e in events if e.exchange == exchange and e.symbol == symbol]


async def test_listings_at_start_a_retry_after_a_failure_and_again_each_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    deribit = FakeRest({"/api/v2/public/get_instrument": deribit_answer})
    bybit = FakeRest({"/v5/market/instruments-info": bybit_answer})
    okx = FakeRest({"/api/v5/public/instruments": okx_answer})
    bybit.fail_next = [503]  # the first listing fails, and may pass: retried
    events: list[Event] = []
    metrics = Metrics()
    async with fail_after_real(20), trio.open_nursery() as nursery:
        for fake in (deribit, bybit, okx):
            await nursery.start(fake.run)
        ws = {"base_url": "ws://127.0.0.1:1", "feeds": ["trades", "instruments"]}
        settings = parse_settings(
            {
                "markets": [
                    {"exchange": "deribit", "symbols": ["BTC-PERPETUAL", "BTC-NOPE"]}
                    | ws
                    | {"rest_url": deribit.url},
                    {"exchange": "bybit", "category": "inverse", "symbols": ["BTCUSD"]}
                    | ws
                    | {"rest_url": bybit.url},
                    {"exchange": "okx", "symbols": ["BTC-USDT-SWAP"]} | ws | {"rest_url": okx.url},
                    # No instruments feed: nothing is fetched for it.
                    {"exchange": "okx", "symbols": ["ETH-USDT"], "base_url": "ws://127.0.0.1:1"},
                ]
            }
        )
        jobs = plan_instruments(plan_service(settings))
        assert [job.adapter.name for job in jobs] == ["deribit", "bybit", "okx"]
        tx, rx = trio.open_memory_channel[list[Event]](1000)
        autojump_clock.autojump_threshold = math.inf  # time moves by the jumps below only
        await nursery.start(
            partial(
                run_instruments,
                jobs,
                tx,
                metrics,
                trio_wall_clock(EPOCH_US),
                interval_secs=INTERVAL,
                retry_secs=RETRY,
            )
        )

        def count(exchange: str, outcome: str) -> float:
            return metrics.sample(FETCHES, {"exchange": exchange, "outcome": outcome})

        def settle(**counts: tuple[float, float]) -> Any:
            def done() -> bool:
                return all(
                    count(exchange.replace("_", "-"), "ok") >= ok
                    and count(exchange.replace("_", "-"), "failed") >= failed
                    for exchange, (ok, failed) in counts.items()
                )

            return settle_frozen(autojump_clock, done)

        # t=0: every venue's first request; Deribit's second waits its 1/s pace.
        await settle(deribit=(1, 0), bybit_inverse=(0, 1), okx=(1, 0))
        autojump_clock.jump(1)
        await settle(deribit=(1, 1))
        # t=61: Bybit's failure (HTTP 503) is retried; Deribit's (HTTP 400) waits.
        autojump_clock.jump(RETRY)
        await settle(bybit_inverse=(1, 1))
        assert len(deribit.requests) == 2
        # t=601: the next round.
        autojump_clock.jump(INTERVAL - RETRY)
        await settle(deribit=(2, 1), bybit_inverse=(2, 1), okx=(2, 0))
        autojump_clock.jump(1)
        await settle(deribit=(2, 2))
        nursery.cancel_scope.cancel()
    while True:
        try:
            events += rx.receive_nowait()
        except trio.EndOfChannel:  # every venue's task has ended
            break

    def seconds(event: Event) -> float:
        return (event.timestamp_collector - EPOCH_US) / 1e6

    # Bybit: the failure, the retry RETRY later, the next round.
    failure, retried, again = of(events, "bybit-inverse", "BTCUSD")
    assert isinstance(failure, Status)
    assert (failure.event, failure.data_type) == ("fetch_error", "instruments")
    assert failure.detail is not None
    assert "HTTP 503" in failure.detail
    assert isinstance(retried, Instrument)
    assert isinstance(again, Instrument)
    assert (retried.kind, retried.size_unit, retried.inverse) == ("perpetual", "usd", True)
    assert [seconds(e) for e in (failure, retried, again)] == [0, 1 + RETRY, 1 + INTERVAL]
    assert metrics.sample(FETCHES, {"exchange": "bybit-inverse", "outcome": "failed"}) == 1

    # Deribit: an unknown instrument fails for good (HTTP 400): once a round, no retry.
    nope = of(events, "deribit", "BTC-NOPE")
    assert [(e.event, seconds(e)) for e in nope if isinstance(e, Status)] == [
        ("fetch_error", 1),
        ("fetch_error", 2 + INTERVAL),
    ]
    assert isinstance(nope[0], Status)
    assert "HTTP 400" in (nope[0].detail or "")
    perpetual, _ = of(events, "deribit", "BTC-PERPETUAL")
    assert isinstance(perpetual, Instrument)
    assert (perpetual.contract_size, perpetual.contract_unit) == (10.0, "USD")
    assert len(deribit.requests) == 4  # two instruments, two rounds

    swap, _ = of(events, "okx", "BTC-USDT-SWAP")
    assert isinstance(swap, Instrument)
    assert (swap.size_unit, swap.contract_size, swap.contract_unit) == ("contracts", 0.01, "BTC")
    assert all("ETH-USDT" not in r for r in okx.requests)


async def test_the_service_writes_the_instruments_at_start_and_after_the_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    autojump_clock.autojump_threshold = math.inf  # frozen while the service starts
    venue, rest = FakeBinance(), FakeBinanceRest()
    settings_doc: dict[str, Any] = {
        "collector": {
            "metrics_host": "127.0.0.1",
            "metrics_port": 0,
            "instruments_interval_secs": INTERVAL,
        },
        "storage": {"data_dir": str(tmp_path)},
        "websocket": QUIET_WEBSOCKET,
    }
    written = {"exchange": "binance", "data_type": "instruments"}
    async with fail_after_real(30), trio.open_nursery() as nursery:
        for fake in (venue, rest):
            await nursery.start(fake.run)
        settings_doc["markets"] = [
            {
                "exchange": "binance",
                "symbols": ["btcusdt", "ethusdt"],
                "feeds": ["trades", "instruments"],
                "base_url": venue.url,
                "rest_url": rest.url,
            }
        ]
        settings = parse_settings(settings_doc)
        handle, stop = await run_until_stopped(
            nursery, settings, wall_clock=trio_wall_clock(EPOCH_US)
        )

        def fetched(n: int) -> bool:
            return handle.metrics.sample(FETCHES, {"exchange": "binance", "outcome": "ok"}) >= n

        def rows_written(n: int) -> bool:
            return handle.metrics.sample("collector_rows_written_total", written) >= n

        await settle_frozen(autojump_clock, lambda: fetched(1))
        autojump_clock.jump(settings.storage.flush_interval_secs)
        await settle_frozen(autojump_clock, lambda: rows_written(2))

        autojump_clock.autojump_threshold = 0  # to the next round, in virtual time
        await trio.sleep(INTERVAL)
        await settle_frozen(autojump_clock, lambda: fetched(2))
        autojump_clock.jump(settings.storage.flush_interval_secs)
        await settle_frozen(autojump_clock, lambda: rows_written(4))
        assert await stop() == 0
        nursery.cancel_scope.cancel()

    exchange_info = [r for r in rest.requests if r.startswith("/api/v3/exchangeInfo")]
    assert exchange_info == ["/api/v3/exchangeInfo?symbols=%5B%22BTCUSDT%22%2C%22ETHUSDT%22%5D"] * 2
    for symbol in ("BTCUSDT", "ETHUSDT"):
        first, second = read_rows(tmp_path, "binance", symbol, "instruments")
        assert (first["exchange"], first["symbol"], first["kind"]) == ("binance", symbol, "spot")
        assert (first["base_asset"], first["quote_asset"]) == (symbol[:3], "USDT")
        assert (first["size_unit"], first["tick_size"], first["lot_size"]) == ("base", 0.01, 0.001)
        assert first["timestamp_exchange"].timestamp() == SERVER_TIME_MS / 1000
        gap = second["timestamp_collector"] - first["timestamp_collector"]
        assert gap.total_seconds() >= INTERVAL


def write_rows(data_dir: Path, events: list[Event]) -> None:
    """Each event as a one-row Parquet file where the service would put it."""
    for n, event in enumerate(events):
        directory = data_dir / event.exchange / event.symbol / event.DATA_TYPE / "2026-08-06"
        directory.mkdir(parents=True, exist_ok=True)
        batch = to_record_batch(event.DATA_TYPE, [event])
        pq.write_table(pa.Table.from_batches([batch]), directory / f"{n}.parquet")


def documented_query(marker: str, end: str, document: str = "docs/schemas.md") -> str:
    """The SQL statement of ``document`` that starts at the comment ``marker``."""
    text = (Path(__file__).parents[1] / document).read_text()
    start = text.index(marker)
    return text[start : text.index(end, start) + len(end)]


def test_the_documented_duckdb_query_turns_sizes_into_base_amounts(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    t0 = EPOCH_US

    def instrument(exchange: str, symbol: str, unit: Any, inverse: bool, size: float) -> Event:
        quote = "USD" if inverse else "USDT"
        return Instrument(
            exchange, symbol, None, t0, None, "perpetual", "BTC", quote, "BTC", inverse, unit,
            contract_size=size, contract_unit=quote if inverse else "BTC",
        )  # fmt: skip

    def trade(exchange: str, symbol: str, price: float, size: float) -> Event:
        return Trade(exchange, symbol, t0 + 5, t0 + 10, 1, "1", price, size, "buy")

    write_rows(
        tmp_path,
        [
            instrument("binance-coinm", "BTCUSD_PERP", "contracts", True, 100.0),
            instrument("okx", "BTC-USDT-SWAP", "contracts", False, 0.01),
            instrument("deribit", "BTC-PERPETUAL", "usd", True, 10.0),
            trade("binance-coinm", "BTCUSD_PERP", 50_000.0, 3.0),  # 300 USD
            trade("okx", "BTC-USDT-SWAP", 50_000.0, 20.0),  # 20 x 0.01 BTC
            trade("deribit", "BTC-PERPETUAL", 40_000.0, 1000.0),  # 1000 USD
        ],
    )
    sql = documented_query(
        "-- Trade sizes as base-currency amounts", "ORDER BY t.timestamp_collector;"
    )
    sql = sql.replace("'data/", f"'{tmp_path}/")
    found = {r[0]: r[6] for r in duckdb.sql(sql).fetchall()}
    assert found == pytest.approx({"binance-coinm": 0.006, "okx": 0.2, "deribit": 0.025})


def test_the_readme_query_turns_sizes_into_base_amounts(tmp_path: Path) -> None:
    """The README's example, on an OKX swap read twice: the latest reading's contract size
    applies (0.01 BTC a contract)."""
    duckdb = pytest.importorskip("duckdb")
    t0 = EPOCH_US

    def reading(at: int, contract_size: float) -> Event:
        return Instrument(
            "okx", "BTC-USDT-SWAP", None, at, None, "perpetual", "BTC", "USDT", "USDT",
            False, "contracts", contract_size=contract_size, contract_unit="BTC",
        )  # fmt: skip

    write_rows(
        tmp_path,
        [
            reading(t0, 0.1),
            reading(t0 + 100, 0.01),
            Trade("okx", "BTC-USDT-SWAP", t0 + 5, t0 + 10, 1, "1", 50_000.0, 20.0, "buy"),
            Trade("okx", "BTC-USDT-SWAP", t0 + 6, t0 + 11, 2, "2", 50_001.0, 3.0, "sell"),
        ],
    )
    sql = documented_query(
        "-- DuckDB: trade sizes as base-currency amounts", "ORDER BY t.timestamp_collector;",
        "README.md",
    )  # fmt: skip
    sql = sql.replace("'data/", f"'{tmp_path}/")
    found = [(r[1], r[2], r[3], r[4]) for r in duckdb.sql(sql).fetchall()]
    assert found == [
        (50_000.0, 20.0, "contracts", pytest.approx(0.2)),
        (50_001.0, 3.0, "contracts", pytest.approx(0.03)),
    ]


def test_the_documented_reader_join_turns_sizes_into_base_amounts(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    from collector.reader import DataReader  # the reader extra (duckdb)

    day_ms = EPOCH_US // 1000
    instrument = Instrument(
        "okx", "BTC-USDT-SWAP", None, EPOCH_US, None, "perpetual", "BTC", "USDT", "USDT",
        False, "contracts", contract_size=0.01, contract_unit="BTC",
    )  # fmt: skip
    trade = Trade("okx", "BTC-USDT-SWAP", None, EPOCH_US + 10**6, 1, "1", 50_000.0, 30.0, "buy")
    for event, start_ms in ((instrument, day_ms), (trade, day_ms + 1000)):
        directory = tmp_path / event.exchange / event.symbol / event.DATA_TYPE / "2026-08-06"
        directory.mkdir(parents=True)
        table = pa.Table.from_batches([to_record_batch(event.DATA_TYPE, [event])])
        pq.write_table(table, directory / f"{start_ms}.parquet")
    text = (Path(__file__).parents[1] / "docs" / "reading.md").read_text()
    start = text.index("    -- trades with base amounts")
    sql = text[start : text.index('""")', start)]

    data = DataReader(str(tmp_path))
    con = duckdb.connect()
    data.relation("trades", connection=con).create_view("trades")
    data.relation("instruments", connection=con).create_view("instruments")
    ((exchange, symbol, _, price, size, unit, base_amount),) = con.sql(sql).fetchall()
    assert (exchange, symbol, price, size, unit) == (
        "okx",
        "BTC-USDT-SWAP",
        50_000.0,
        30.0,
        "contracts",
    )
    assert base_amount == pytest.approx(0.3)


async def test_the_spot_venues_listings_and_their_failures(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Kraken, Coinbase, Bitfinex and Upbit against their fake REST APIs: a row per
    configured symbol the listing describes, a ``fetch_error`` row for one it does not
    (Kraken, Bitfinex, Upbit: absent from the whole listing; Coinbase: HTTP 404)."""
    kraken = FakeRest({"/0/public/AssetPairs": kraken_asset_pairs})
    coinbase = FakeRest(coinbase_routes("BTC-USD", "NOPE-USD"))
    bitfinex = FakeRest(
        {"/v2/conf/pub:info:pair": bitfinex_pair_info,
         "/v2/conf/pub:info:pair:futures": bitfinex_futures_info}
    )  # fmt: skip
    upbit = FakeRest({"/v1/market/all": upbit_markets})
    fakes = {"kraken": kraken, "coinbase": coinbase, "bitfinex": bitfinex, "upbit": upbit}
    symbols = {"kraken": ["BTC/USD", "NOPE/USD"], "coinbase": ["BTC-USD", "NOPE-USD"],
               "bitfinex": ["tBTCUSD", "tBTCF0:USTF0", "tNOPEF0:USTF0"],
               "upbit": ["KRW-BTC", "KRW-NOPE"]}  # fmt: skip
    events: list[Event] = []
    metrics = Metrics()
    async with fail_after_real(20), trio.open_nursery() as nursery:
        for fake in fakes.values():
            await nursery.start(fake.run)
        settings = parse_settings(
            {
                "markets": [
                    {"exchange": name, "symbols": symbols[name], "base_url": "ws://127.0.0.1:1",
                     "feeds": ["trades", "instruments"], "rest_url": fake.url}
                    for name, fake in fakes.items()
                ]
            }
        )  # fmt: skip
        jobs = plan_instruments(plan_service(settings))
        tx, rx = trio.open_memory_channel[list[Event]](1000)
        await nursery.start(
            partial(
                run_instruments,
                jobs,
                tx,
                metrics,
                trio_wall_clock(EPOCH_US),
                interval_secs=INTERVAL,
                retry_secs=RETRY,
            )
        )

        def done(exchange: str, outcome: str, count: int) -> bool:
            return metrics.sample(FETCHES, {"exchange": exchange, "outcome": outcome}) == count

        # t=0: each venue's first request (Bitfinex's second waits for its slow pace).
        await settle_frozen(
            autojump_clock,
            lambda: all(
                done(name, "ok", 1) for name in ("kraken", "coinbase", "bitfinex", "upbit")
            ),
        )
        autojump_clock.jump(1 / BitfinexAdapter.instrument_requests_per_second)
        await settle_frozen(
            autojump_clock, lambda: done("bitfinex", "ok", 2) and done("coinbase", "failed", 1)
        )
        nursery.cancel_scope.cancel()
    while True:
        try:
            events += rx.receive_nowait()
        except trio.EndOfChannel:
            break

    assert kraken.requests == ["/0/public/AssetPairs"]
    assert bitfinex.requests == ["/v2/conf/pub:info:pair", "/v2/conf/pub:info:pair:futures"]
    assert upbit.requests == ["/v1/market/all"]
    assert sorted(coinbase.requests) == [
        "/api/v3/brokerage/market/products/BTC-USD",
        "/api/v3/brokerage/market/products/NOPE-USD",
    ]
    rows = sorted(
        (e.exchange, e.symbol, e.kind, e.base_asset, e.quote_asset, e.size_unit, e.tick_size)
        for e in events
        if isinstance(e, Instrument)
    )
    assert rows == [
        ("bitfinex", "tBTCF0:USTF0", "perpetual", "BTC", "USDT", "base", None),
        ("bitfinex", "tBTCUSD", "spot", "BTC", "USD", "base", None),
        ("coinbase", "BTC-USD", "spot", "BTC", "USD", "base", 0.01),
        ("kraken", "BTC/USD", "spot", "BTC", "USD", "base", 0.1),
        ("upbit", "KRW-BTC", "spot", "BTC", "KRW", "base", None),
    ]
    failures = sorted(
        (e.exchange, e.symbol, e.event, e.data_type) for e in events if isinstance(e, Status)
    )
    assert failures == [
        ("bitfinex", "tNOPEF0:USTF0", "fetch_error", "instruments"),
        ("coinbase", "NOPE-USD", "fetch_error", "instruments"),
        ("kraken", "NOPE/USD", "fetch_error", "instruments"),
        ("upbit", "KRW-NOPE", "fetch_error", "instruments"),
    ]
    (not_found,) = [e for e in events if isinstance(e, Status) and e.exchange == "coinbase"]
    assert "HTTP 404" in (not_found.detail or "")


async def test_the_service_writes_kraken_instruments_beside_its_trades(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """The whole service: a Kraken market with trades and instruments; the AssetPairs
    listing from a fake REST API is written as the symbols' ``instruments`` rows."""
    venue = FakeKraken(heartbeat_interval=None)
    rest = FakeRest({"/0/public/AssetPairs": kraken_asset_pairs})
    for fake in (venue, rest):
        await nursery.start(fake.run)
    settings = parse_settings(
        {
            "collector": {"metrics_host": "127.0.0.1", "metrics_port": 0},
            "storage": {"data_dir": str(tmp_path)},
            "websocket": QUIET_WEBSOCKET,
            "markets": [
                {"exchange": "kraken", "symbols": ["BTC/USD", "DOGE/USD"],
                 "feeds": ["trades", "instruments"], "base_url": venue.url,
                 "rest_url": rest.url},
            ],
        }
    )  # fmt: skip
    with trio.fail_after(15):
        handle, stop = await run_until_stopped(nursery, settings)
        await venue.wait_subscribed("trade", ["BTC/USD", "DOGE/USD"])
        await wait_until(
            lambda: handle.metrics.sample(FETCHES, {"exchange": "kraken", "outcome": "ok"}) == 1
        )
        assert await stop() == 0
    assert rest.requests == ["/0/public/AssetPairs"]
    columns = ("exchange", "symbol", "timestamp_exchange", "sequence", "kind", "base_asset",
               "quote_asset", "settle_asset", "inverse", "size_unit", "contract_size",
               "contract_unit", "tick_size", "lot_size", "min_size", "expiry", "strike",
               "option_kind", "status")  # fmt: skip
    written = {
        symbol: [tuple(r[c] for c in columns) for r in read_rows(
            tmp_path, "kraken", symbol, "instruments")]
        for symbol in ("BTC/USD", "DOGE/USD")
    }  # fmt: skip
    assert written == {
        "BTC/USD": [("kraken", "BTC/USD", None, None, "spot", "BTC", "USD", None, None, "base",
                     None, None, 0.1, 1e-8, 0.00005, None, None, None, "online")],
        "DOGE/USD": [("kraken", "DOGE/USD", None, None, "spot", "DOGE", "USD", None, None,
                      "base", None, None, 1e-7, 1e-8, 13.0, None, None, None, "online")],
    }  # fmt: skip
