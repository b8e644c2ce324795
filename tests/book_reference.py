"""Reference order books for the proof tests, built straight from a venue's frames.

Independent of ``collector``: plain dicts fed with the decoded JSON of the venue's own
frames, by the rules the venue documents, so that the book the collector's files give back
can be compared with a book nothing of the collector's code has touched.

Bybit v5 ``orderbook.{depth}``: :class:`BybitBook`; Deribit ``book.*``: :class:`DeribitBook`.

Binance diff depth (spot: https://developers.binance.com/docs/binance-spot-api-docs/
web-socket-streams#how-to-manage-a-local-order-book-correctly; USD-M: "How to manage a local
order book correctly" in the derivatives docs): take a REST snapshot (``lastUpdateId``),
drop every event with ``u <= lastUpdateId``, the first event applied must have
``U <= lastUpdateId + 1`` (spot) or ``U <= lastUpdateId`` (futures; or ``pu`` equal to it:
futures ids are shared by all symbols, so a symbol's ids skip) and ``u`` past it; then
each event must follow the last (spot ``U`` = previous ``u`` + 1, futures ``pu`` = previous
``u``). Quantities are absolute; 0 removes the level.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

Level = tuple[float, float]
BookState = tuple[tuple[Level, ...], tuple[Level, ...]]  # bids best first, asks best first


class ReferenceBookError(AssertionError):
    """The frames do not follow the venue's rules (the recording itself is broken)."""


def _side(levels: Iterable[Sequence[str]]) -> dict[float, float]:
    return {float(price): float(size) for price, size in levels if float(size) != 0.0}


class BinanceDiffBook:
    """One symbol's book from a REST depth snapshot and ``depthUpdate`` events."""

    def __init__(self, *, futures: bool) -> None:
        self.futures = futures
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.last_id: int | None = None  # None: no snapshot yet
        self.snapshot_id: int | None = None  # set until the first event past it is applied

    def snapshot(self, body: dict[str, Any]) -> None:
        """Start over from a REST depth snapshot (decoded JSON)."""
        self.bids = _side(body["bids"])
        self.asks = _side(body["asks"])
        self.last_id = self.snapshot_id = int(body["lastUpdateId"])

    def apply(self, event: dict[str, Any]) -> bool:
        """Apply one ``depthUpdate`` event (the ``data`` of the frame); whether it changed
        the book (False: no snapshot yet, or already in the snapshot)."""
        if self.last_id is None:
            return False
        first, last = int(event["U"]), int(event["u"])
        if last <= self.last_id:
            return False
        if self.snapshot_id is not None:
            limit = self.snapshot_id if self.futures else self.snapshot_id + 1
            # Futures ids are shared by every symbol, so a symbol's next event may start
            # past lastUpdateId + 1 and still continue it: its pu is lastUpdateId.
            continues = self.futures and int(event["pu"]) == self.snapshot_id
            if first > limit and not continues:
                raise ReferenceBookError(f"first event {first}..{last} misses {self.snapshot_id}")
            self.snapshot_id = None
        elif self.futures and int(event["pu"]) != self.last_id:
            raise ReferenceBookError(f"pu {event['pu']} after u {self.last_id}")
        elif not self.futures and first != self.last_id + 1:
            raise ReferenceBookError(f"U {first} after u {self.last_id}")
        for book, levels in ((self.bids, event["b"]), (self.asks, event["a"])):
            for price_text, size_text in levels:
                price, size = float(price_text), float(size_text)
                if size == 0.0:
                    book.pop(price, None)
                else:
                    book[price] = size
        self.last_id = last
        return True

    def state(self) -> BookState:
        """The whole book: bids highest first, asks lowest first."""
        return (
            tuple(sorted(self.bids.items(), reverse=True)),
            tuple(sorted(self.asks.items())),
        )


class BybitBook:
    """One symbol's ``orderbook.{depth}`` book (Bybit v5, "Orderbook" in the public
    WebSocket docs): a ``snapshot`` replaces the book; a ``delta`` sets the sizes of its
    levels, 0 deleting one; ``u`` grows by 1 from one message to the next (``u`` = 1: the
    venue restarted and the message is a snapshot)."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.last_id: int | None = None

    def apply(self, message: dict[str, Any]) -> None:
        """Apply one push (the decoded frame: ``type`` and ``data``)."""
        data = message["data"]
        update_id = int(data["u"])
        if message["type"] == "snapshot":
            self.bids, self.asks = _side(data["b"]), _side(data["a"])
        else:
            if self.last_id is None or update_id != self.last_id + 1:
                raise ReferenceBookError(f"u {update_id} after {self.last_id}")
            for book, levels in ((self.bids, data["b"]), (self.asks, data["a"])):
                for price_text, size_text in levels:
                    price, size = float(price_text), float(size_text)
                    if size == 0.0:
                        book.pop(price, None)
                    else:
                        book[price] = size
        self.last_id = update_id

    def state(self) -> BookState:
        return (
            tuple(sorted(self.bids.items(), reverse=True)),
            tuple(sorted(self.asks.items())),
        )


class DeribitBook:
    """One instrument's ``book.{instrument}.{interval}`` book (Deribit JSON-RPC v2,
    "book.{instrument_name}.{interval}" in the subscription docs): a ``snapshot`` lists
    every level as ``new``; a ``change`` carries ``prev_change_id``, which is the previous
    message's ``change_id``, and levels ``[action, price, amount]`` with action ``new``,
    ``change`` (set the amount) or ``delete``."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.last_id: int | None = None

    def apply(self, data: dict[str, Any]) -> None:
        """Apply one notification's ``data``."""
        if data["type"] == "snapshot":
            self.bids, self.asks = {}, {}
        elif data.get("prev_change_id") != self.last_id:
            raise ReferenceBookError(f"prev_change_id {data.get('prev_change_id')}")
        for book, levels in ((self.bids, data["bids"]), (self.asks, data["asks"])):
            for action, price, amount in levels:
                if action == "delete":
                    book.pop(float(price), None)
                else:
                    book[float(price)] = float(amount)
        self.last_id = int(data["change_id"])

    def state(self) -> BookState:
        return (
            tuple(sorted(self.bids.items(), reverse=True)),
            tuple(sorted(self.asks.items())),
        )
