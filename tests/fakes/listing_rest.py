"""A fake of the derivative venues' instrument listings on 127.0.0.1, in each API's shape:
OKX ``GET /api/v5/public/instruments?instType=..[&instFamily=..]``, Bybit ``GET
/v5/market/instruments-info?category=..`` (paged by ``limit`` and ``cursor`` like the venue),
Deribit ``GET /api/v2/public/get_instruments?currency=any&kind=..`` and Bitfinex's conf
lists ``GET /v2/conf/pub:list:pair:exchange|futures``.

The quote of each instrument is derived from its name as the venues name them: OKX
``quoteCcy`` is the second part of a spot instId (empty for derivatives, as its docs say);
Bybit ``quoteCoin`` the symbol's known quote suffix (an option's: USDC).

The HTTP side is :class:`~tests.fakes.binance_rest.FakeBinanceRest`'s (every request
recorded in ``requests``; ``fail_next`` answers the next requests with a status code);
only the answers differ. Tests fill the listings per product.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import msgspec

from tests.fakes.binance_rest import FakeBinanceRest


class FakeListingRest(FakeBinanceRest):
    def __init__(self) -> None:
        super().__init__()
        # OKX: (instType, instFamily or "") -> [(instId, state)].
        self.okx: dict[tuple[str, str], list[tuple[str, str]]] = {}
        # Bybit: category -> [(symbol, status)], paged ``limit`` a page (default 500).
        self.bybit: dict[str, list[tuple[str, str]]] = {}
        # Deribit: kind -> [(instrument_name, is_active)].
        self.deribit: dict[str, list[tuple[str, bool]]] = {}
        # Bitfinex: conf list key (``pub:list:pair:exchange``, ``...:futures``) -> pairs.
        self.bitfinex: dict[str, list[str]] = {}

    def _respond(self, target: str) -> tuple[int, bytes]:
        if self.fail_next:
            return self.fail_next.pop(0), b'{"code":"50011","msg":"Too Many Requests"}'
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/api/v5/public/instruments":
            kind, family = query.get("instType", ""), query.get("instFamily", "")
            if kind == "OPTION" and not family:
                # The venue needs uly or instFamily for options.
                return 200, b'{"code":"51000","msg":"Parameter instFamily error","data":[]}'
            listed = self.okx.get((kind, family), [])
            data = [
                {"instId": i, "instType": kind, "state": st, "quoteCcy": _okx_quote(kind, i)}
                for i, st in listed
            ]
            return 200, msgspec.json.encode({"code": "0", "msg": "", "data": data})
        if parts.path == "/v5/market/instruments-info":
            category = query.get("category", "")
            listed = self.bybit.get(category, [])
            limit = int(query.get("limit", "500"))
            start = int(query.get("cursor", "0") or 0)
            page = listed[start : start + limit]
            cursor = str(start + limit) if start + limit < len(listed) else ""
            result: dict[str, object] = {
                "category": category,
                "list": [
                    {"symbol": s, "status": st, "quoteCoin": _bybit_quote(s)} for s, st in page
                ],
                "nextPageCursor": cursor,
            }
            answer = {"retCode": 0, "retMsg": "OK", "result": result}
            return 200, msgspec.json.encode(answer)
        if parts.path == "/api/v2/public/get_instruments":
            kinds = [query["kind"]] if "kind" in query else list(self.deribit)
            instruments = [
                {"instrument_name": name, "kind": kind, "is_active": active}
                for kind in kinds
                for name, active in self.deribit.get(kind, [])
            ]
            return 200, msgspec.json.encode({"jsonrpc": "2.0", "result": instruments})
        if parts.path.startswith("/v2/conf/"):
            key = parts.path.removeprefix("/v2/conf/")
            if key not in self.bitfinex:  # the venue answers an unknown key with nothing
                return 200, b"[]"
            return 200, msgspec.json.encode([self.bitfinex[key]])
        return 404, b'{"msg":"not found"}'


_BYBIT_QUOTES = ("USDT", "USDC", "USDE", "USD", "EUR", "BTC", "ETH")


def _okx_quote(kind: str, inst_id: str) -> str:
    return inst_id.split("-")[1] if kind == "SPOT" and "-" in inst_id else ""


def _bybit_quote(symbol: str) -> str:
    if "-" in symbol:  # an option (BTC-27DEC24-100000-C): settled in USDC
        return "USDC"
    return next((q for q in _BYBIT_QUOTES if symbol.endswith(q)), "")
