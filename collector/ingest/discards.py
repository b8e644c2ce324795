"""What a connection's session discarded on purpose: exported at once, written down in summary.

A session skips some received updates on purpose (a duplicate trade, a stale book update,
an update that came while its book was being rebuilt) and reports them in
:attr:`Actions.discarded <collector.exchanges.base.Actions.discarded>`. Those updates are in
no row, so without this record they would vanish silently. The connection's receive loop
hands every report to its :class:`DiscardSummary`, which counts
``collector_messages_discarded_total{exchange, reason}`` at once and, at most once per
:data:`SUMMARY_PERIOD_SECS`, turns the counts into ``discarded`` status rows: one per
(symbol, data_type, reason), with the count.
"""

from __future__ import annotations

from typing import Final

from collector.events import Event, Status
from collector.exchanges.base import DISCARD_REASONS, Discarded, DiscardReason
from collector.metrics import Metrics

# How often at most a connection writes ``discarded`` rows for one (symbol, data_type,
# reason). Fixed rather than the writer's flush interval, which the connection does not know:
# it equals the default ``storage.flush_interval_secs``, so a discard reaches the data about
# as soon as the rows around it, while a steady stream of duplicates costs a row a second,
# not a row per duplicate.
SUMMARY_PERIOD_SECS: Final = 1.0


class DiscardSummary:
    """One connection's discards: counted in the metric as reported, summarized as rows.

    Owned by the connection task: its receive loop calls :meth:`add` with each result's
    ``discarded`` and, while any counts are ``pending``, :meth:`take_due` after each read
    (a time comparison); the connection's ``finally`` calls :meth:`take` once, so counts of
    a connection that ends within a period are still written. Never blocks; holds at most
    one count per (symbol, data_type, reason) of its plan.
    """

    __slots__ = ("_due", "_exchange", "_metric", "pending")

    def __init__(self, exchange: str, metrics: Metrics) -> None:
        self._exchange = exchange
        # Every reason's child is made up front: a rate over the counter then starts at 0.
        self._metric = {
            reason: metrics.messages_discarded.labels(exchange, reason)
            for reason in DISCARD_REASONS
        }
        # (symbol, data_type, reason) -> count not yet written; empty: nothing to write.
        self.pending: dict[tuple[str, str, DiscardReason], int] = {}
        self._due = 0.0

    def add(self, discarded: tuple[Discarded, ...], now: float) -> None:
        """Count one result's discards (``now``: Trio time). The first count since the last
        rows starts a period: rows are due :data:`SUMMARY_PERIOD_SECS` later."""
        if not self.pending:
            self._due = now + SUMMARY_PERIOD_SECS
        pending = self.pending
        for item in discarded:
            self._metric[item.reason].inc(item.count)
            key = (item.symbol, item.data_type, item.reason)
            pending[key] = pending.get(key, 0) + item.count

    def take_due(self, now: float, now_us: int) -> list[Event]:
        """The ``discarded`` rows if a period has passed since the first pending count
        (``now``: Trio time), else none; ``now_us`` stamps the rows."""
        if now < self._due:
            return []
        return self.take(now_us)

    def take(self, now_us: int) -> list[Event]:
        """A ``discarded`` row per pending (symbol, data_type, reason), stamped ``now_us``,
        with its count and the reason as ``detail``; forgets them."""
        rows: list[Event] = [
            Status(
                self._exchange,
                symbol,
                None,
                now_us,
                None,
                "discarded",
                data_type,
                None,
                None,
                count,
                reason,
            )
            for (symbol, data_type, reason), count in sorted(self.pending.items())
        ]
        self.pending.clear()
        return rows
