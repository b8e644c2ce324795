"""A fake Binance REST API on 127.0.0.1: book snapshots (``GET /api/v3/depth``, and the
futures ``/fapi/v1/depth`` and ``/dapi/v1/depth``), symbols (``GET /api/v3/exchangeInfo``,
``/fapi/v1/exchangeInfo``, ``/dapi/v1/exchangeInfo``) and futures open interest
(``/fapi/v1/openInterest``, ``/dapi/v1/openInterest``), in each API's shape. The spot
exchangeInfo takes ``symbols=["A","B"]`` (an unknown one: HTTP 400, as the venue answers),
and every exchangeInfo lists each symbol's price and lot filters (and COIN-M its
``contractSize``), from which the instruments rows are read.

A tiny HTTP/1.1 server on ``trio.serve_tcp`` (one request per connection), enough for the
collector's snapshot fetcher (urllib). Tests set the book each symbol returns, see every
request, and can make the next requests fail with a status code.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import trio

SERVER_TIME_MS = 1_700_000_000_123
_FILTERS: dict[str, Any] = {
    "filters": [
        {
            "filterType": "PRICE_FILTER",
            "minPrice": "0.01",
            "maxPrice": "1000000",
            "tickSize": "0.01",
        },
        {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "9000", "stepSize": "0.001"},
    ]
}


class FakeBinanceRest:
    def __init__(self) -> None:
        # symbol -> (lastUpdateId, bids, asks)
        self.books: dict[str, tuple[int, list[list[str]], list[list[str]]]] = {}
        # (symbol, status) pairs that exchangeInfo lists: spot, USD-M, COIN-M.
        self.symbols: list[tuple[str, str]] = [("BTCUSDT", "TRADING"), ("ETHUSDT", "TRADING")]
        self.usdm_symbols: list[tuple[str, str]] = [("BTCUSDT", "TRADING")]
        self.coinm_symbols: list[tuple[str, str]] = [("BTCUSD_PERP", "TRADING")]
        # symbol -> (openInterest, time ms) that the openInterest endpoints answer.
        self.open_interest: dict[str, tuple[float, int]] = {}
        self.requests: list[str] = []
        self.request_times: list[float] = []  # Trio time each request arrived
        # Status codes to answer the next requests with, in order (e.g. [429, 500]).
        self.fail_next: list[int] = []
        self.port = 0
        self._changed = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_book(
        self,
        symbol: str,
        last_update_id: int,
        bids: list[tuple[float, float]],
        asks: list[tuple[float, float]],
    ) -> None:
        self.books[symbol.upper()] = (
            last_update_id,
            [[f"{p:.8f}", f"{q:.8f}"] for p, q in bids],
            [[f"{p:.8f}", f"{q:.8f}"] for p, q in asks],
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def wait_requests(self, n: int) -> None:
        while len(self.requests) < n:
            await self._changed.wait()

    async def _handle(self, stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        request_line = data.split(b"\r\n", 1)[0].decode()
        _method, target, _version = request_line.split(" ", 2)
        self.requests.append(target)
        self.request_times.append(trio.current_time())
        self._changed.set()
        self._changed = trio.Event()
        status, body = self._respond(target)
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}.get(
            status, "Error"
        )
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        await stream.send_all(head.encode() + body)
        await stream.aclose()

    def _respond(self, target: str) -> tuple[int, bytes]:
        if self.fail_next:
            return self.fail_next.pop(0), b'{"code":-1003,"msg":"Too many requests."}'
        parts = urlsplit(target)
        if parts.path == "/api/v3/exchangeInfo":
            listed = [
                {"symbol": s, "status": st, "baseAsset": s[:3], "quoteAsset": s[3:]} | _FILTERS
                for s, st in self.symbols
            ]
            asked = parse_qs(parts.query).get("symbols")
            if asked:
                wanted = json.loads(asked[0])
                if not set(wanted) <= {s for s, _ in self.symbols}:
                    return 400, b'{"code":-1121,"msg":"Invalid symbol."}'
                listed = [item for item in listed if item["symbol"] in wanted]
            info = {"timezone": "UTC", "serverTime": SERVER_TIME_MS, "symbols": listed}
            return 200, msgspec.json.encode(info)
        if parts.path == "/fapi/v1/exchangeInfo":
            symbols = [
                {"symbol": s, "pair": s, "contractType": "PERPETUAL", "status": st}
                | {"deliveryDate": 4133404800000, "baseAsset": s[:3], "quoteAsset": s[3:]}
                | {"marginAsset": s[3:]}
                | _FILTERS
                for s, st in self.usdm_symbols
            ]
            return 200, msgspec.json.encode({"timezone": "UTC", "symbols": symbols})
        if parts.path == "/dapi/v1/exchangeInfo":  # COIN-M names the status contractStatus
            symbols = [
                {"symbol": s, "pair": s.split("_")[0], "contractStatus": st}
                | {"contractType": "PERPETUAL", "deliveryDate": 4133404800000}
                | {"contractSize": 100, "baseAsset": s[:3], "quoteAsset": "USD"}
                | {"marginAsset": s[:3]}
                | _FILTERS
                for s, st in self.coinm_symbols
            ]
            return 200, msgspec.json.encode({"timezone": "UTC", "symbols": symbols})
        if parts.path in ("/fapi/v1/openInterest", "/dapi/v1/openInterest"):
            symbol = parse_qs(parts.query).get("symbol", [""])[0]
            if symbol not in self.open_interest:
                return 400, b'{"code":-1121,"msg":"Invalid symbol."}'
            value, time_ms = self.open_interest[symbol]
            doc: dict[str, Any] = {"symbol": symbol, "openInterest": f"{value:.3f}"}
            if parts.path.startswith("/dapi"):
                doc |= {"pair": symbol.split("_")[0], "contractType": "PERPETUAL"}
            doc["time"] = time_ms
            return 200, msgspec.json.encode(doc)
        if parts.path not in ("/api/v3/depth", "/fapi/v1/depth", "/dapi/v1/depth"):
            return 404, b'{"code":-1,"msg":"not found"}'
        query = parse_qs(parts.query)
        symbol = query.get("symbol", [""])[0]
        if symbol not in self.books:
            return 400, b'{"code":-1121,"msg":"Invalid symbol."}'
        last_update_id, bids, asks = self.books[symbol]
        doc = {"lastUpdateId": last_update_id}
        if parts.path != "/api/v3/depth":  # futures: event and transaction times (ms)
            doc |= {"E": 1_700_000_000_000, "T": 1_699_999_999_998}
        if parts.path == "/dapi/v1/depth":
            doc |= {"symbol": symbol, "pair": symbol.split("_")[0]}
        doc |= {"bids": bids, "asks": asks}
        return 200, msgspec.json.encode(doc)
