"""The admin API on the service's HTTP port: list, add and remove the symbols of a market.

Off unless ``collector.admin_token_env`` names an environment variable holding the token
(read once at start; an unset or empty variable is a start-up error, exit status 2).
Off, its paths answer 404 like any unknown path. On, every request needs
``Authorization: Bearer <token>`` (compared in constant time); without it, or with another
token, the answer is 401. The token is never logged or shown.

- ``GET /admin/markets``: ``{"markets": [{"market": 0, "exchange": "binance",
  "data_exchange": "binance", "category": null, "feeds": [...], "symbols": [...]}, ...]}``;
- ``POST /admin/markets/<exchange>/symbols`` with ``{"symbols": ["solusdt"]}`` (and
  ``"market": <index>`` where ``<exchange>`` has several markets; ``<exchange>`` may be
  the settings' name, ``bybit``, or the rows', ``bybit-linear``): adds them to that market;
- ``DELETE /admin/markets/<exchange>/symbols/<symbol>``: removes the symbol from the
  market that has it.

A change answers 200 with what was done (:meth:`ChangeReport.as_dict
<collector.control.controller.ChangeReport.as_dict>`); a bad body or symbol 400 with
``{"error": ...}``; an exchange or symbol not running 404; a change that cannot be made
(several markets match, the last symbol of the service) 409; before the ingest tasks run or
while stopping, 503. Changes apply like a ``SIGHUP`` reload's and are not written to the
settings file: a restart (or a reload) runs the file's markets again.
"""

from __future__ import annotations

import hmac
from typing import Any

import msgspec
from quart import Response, request
from quart_trio import QuartTrio

from collector.config import Settings
from collector.control.controller import Controller
from collector.control.edits import EditError, apply_edit, with_added, without

ORIGIN = "admin API"

JsonAnswer = tuple[dict[str, Any], int] | tuple[dict[str, Any], int, dict[str, str]]


class AdminApi:
    """The admin API's state: the token and, once the ingest tasks run, the controller
    (None before: requests answer 503)."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the admin token must not be empty")
        self._token = token.encode()
        self.controller: Controller | None = None

    def __repr__(self) -> str:  # never the token
        return "AdminApi(token=***)"

    def authorized(self, header: str | None) -> bool:
        """Whether ``header`` (the request's ``Authorization``) carries the token."""
        scheme, _, given = (header or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), self._token)

    def running(self) -> Controller:
        if self.controller is None:
            raise EditError(503, "the service is starting or stopping")
        return self.controller


def add_admin_routes(app: QuartTrio, admin: AdminApi) -> None:
    """Serve the admin API of ``admin`` on ``app``."""

    def unauthorized() -> JsonAnswer:
        return {"error": "unauthorized"}, 401, {"WWW-Authenticate": 'Bearer realm="collector"'}

    @app.get("/admin/markets")
    async def list_markets() -> JsonAnswer:
        if not admin.authorized(request.headers.get("Authorization")):
            return unauthorized()
        try:
            return {"markets": admin.running().markets()}, 200
        except EditError as exc:
            return {"error": str(exc)}, exc.status

    @app.post("/admin/markets/<exchange>/symbols")
    async def add_symbols(exchange: str) -> JsonAnswer:
        if not admin.authorized(request.headers.get("Authorization")):
            return unauthorized()
        try:
            controller = admin.running()
            body = _body(await request.get_data())
            new = with_added(controller.settings, exchange, body.symbols, body.market)
            return await _apply(controller, new)
        except EditError as exc:
            return {"error": str(exc)}, exc.status

    @app.delete("/admin/markets/<exchange>/symbols/<symbol>")
    async def remove_symbol(exchange: str, symbol: str) -> JsonAnswer:
        if not admin.authorized(request.headers.get("Authorization")):
            return unauthorized()
        try:
            controller = admin.running()
            new = without(controller.settings, exchange, [symbol])
            return await _apply(controller, new)
        except EditError as exc:
            return {"error": str(exc)}, exc.status

    @app.errorhandler(405)
    async def not_allowed(_: Exception) -> Response:
        # Unauthenticated callers learn nothing from a 405 either way; keep it plain.
        return Response('{"error": "method not allowed"}', 405, content_type="application/json")


async def _apply(controller: Controller, new: Settings) -> JsonAnswer:
    report = await apply_edit(controller, new, ORIGIN)
    return report.as_dict(), 200


class _AddBody(msgspec.Struct, forbid_unknown_fields=True):
    symbols: list[str]
    market: int | None = None


def _body(data: str | bytes) -> _AddBody:
    try:
        body = msgspec.json.decode(data, type=_AddBody)
    except msgspec.DecodeError as exc:
        raise EditError(
            400, f'expected {{"symbols": [...], "market": <index, optional>}}: {exc}'
        ) from None
    if not body.symbols or not all(isinstance(s, str) and s for s in body.symbols):
        raise EditError(400, '"symbols" must list at least one symbol')
    return body
