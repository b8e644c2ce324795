"""Trade analytics per symbol over fixed intervals: VWAP, high/low, volumes by aggressor
side and their ratio, trade count and large trades (``[analytics]``).

Where it sees the trades: the writer's router hands every routed batch to
:class:`TradeAnalytics` (a plain call, on the event loop), as it offers them to the live
outlets. Why not an outlet with its own buffer and task: an outlet drops what its buffer
cannot take, and figures computed from a stream with holes in it would be wrong without
saying so; the figures here are exactly those of the stored trades, because they are
computed from the batches the files get. The cost is a few additions per trade on the
router's path (measured in docs/performance.md); with analytics off the router has no
analytics object at all, and its path is the one it had before.

Intervals. Interval ``i`` is ``[i * interval_secs, (i + 1) * interval_secs)`` of the
trades' receive time (``timestamp_collector``, us since the epoch): the clock every row has,
so a reader can recompute each figure from the ``trades`` table. An interval is completed
:data:`CLOSE_DELAY_SECS` after its end by the wall clock (trades received just before the
end may still wait in the event channel), when the router next asks
(:meth:`TradeAnalytics.rows_due`, after every take: at least once per flush interval). A
trade routed after its interval was completed (the event channel held it longer than the
delay: heavy backpressure) counts in the earliest interval not yet completed and in
``collector_analytics_late_trades_total``. The interval the service started in is
incomplete and not reported; the one in progress at shutdown neither.

What a completed interval gives, per configured (exchange, symbol) with the ``trades``
feed, with or without trades in it: the ``collector_analytics_*`` gauges (the last
completed interval) and large-trade counter (:class:`~collector.metrics.AnalyticsMetrics`),
and, with ``analytics.table``, one :class:`~collector.events.IntervalStats` row, routed
like any other row (``analytics`` table). Trades of other pairs are not looked at: the
label sets stay those of the settings. With ``analytics.top_n`` (all-symbols mode: thousands
of pairs) only the N pairs of the largest notional in the last completed interval have
series, re-chosen at each completion; the table rows still cover every pair.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Final

from collector.config import MarketSettings
from collector.events import Event, IntervalStats, Trade
from collector.metrics import AnalyticsMetrics
from collector.settings_check import canonical_pair

# How long after its end an interval is completed (wall clock): trades received before
# the end have this long to pass the event channel.
CLOSE_DELAY_SECS: Final = 1.0
# After a long pause of the wall clock (a suspended host), quiet intervals are reported
# for at most this many of the last intervals; those with trades always are.
MAX_QUIET_INTERVALS: Final = 10

Pair = tuple[str, str]
# The last lookup of the hot path: exchange, symbol, receive time, the figures (None: not
# counted), the threshold, whether late.
_Lookup = tuple[str, str, int, "_Figures | None", float | None, bool]
_NO_LOOKUP: Final[_Lookup] = ("", "", -1, None, None, False)
# A pair the analytics do not cover (its threshold lookup's default).
_NOT_COVERED: Final = -1.0


class _Figures:
    """One pair's running figures in one interval."""

    __slots__ = ("buy", "high", "large", "low", "notional", "sell", "trades", "volume")

    def __init__(self) -> None:
        self.trades = 0
        self.volume = 0.0
        self.notional = 0.0
        self.buy = 0.0
        self.sell = 0.0
        self.high = -math.inf
        self.low = math.inf
        self.large = 0


def large_trade_sizes(markets: Iterable[MarketSettings]) -> dict[Pair, float | None]:
    """The pairs analytics covers (every symbol of the ``markets`` with the ``trades``
    feed, as the rows spell them), each with its large-trade threshold (None: none)."""
    covered: dict[Pair, float | None] = {}
    for market in markets:
        if "trades" not in market.feeds:
            continue
        sizes = market.large_trade_size
        for symbol in market.symbols:
            size = sizes.get(symbol) if isinstance(sizes, dict) else sizes
            covered[canonical_pair(market, symbol)] = size
    return covered


class TradeAnalytics:
    """The running figures of every covered pair and the completion of intervals.

    Called by the writer's router on the event loop only: :meth:`__call__` with each
    routed batch, :meth:`rows_due` after each take. Never raises for well-formed events;
    holds no lock and does no I/O (the metric updates happen at completions only).
    """

    def __init__(
        self,
        pairs: Mapping[Pair, float | None],
        interval_secs: int,
        metrics: AnalyticsMetrics,
        *,
        table: bool,
        now_us: int,
        top_n: int | None = None,
    ) -> None:
        """``pairs``: the covered pairs and thresholds (:func:`large_trade_sizes`);
        ``now_us``: the wall time at start (us since the epoch); ``table``: whether
        :meth:`rows_due` returns rows (else it only updates the metrics); ``top_n``: export
        the series of only that many pairs (see :meth:`_shown_after`; None: every pair).
        Creates every exported pair's series (with ``top_n``: none until the first
        completed interval)."""
        if interval_secs < 1:
            raise ValueError("interval_secs must be at least 1")
        self.interval_us = interval_secs * 1_000_000
        self.table = table
        self._thresholds = dict(pairs)
        self._metrics = metrics
        # The first complete interval (the current one started before us).
        self._first = now_us // self.interval_us + 1
        # The earliest interval not yet completed.
        self._next = self._first
        self._open: dict[tuple[int, str, str], _Figures] = {}
        self._late: dict[Pair, int] = {}
        self._last: _Lookup = _NO_LOOKUP
        self.top_n = top_n
        # The pairs whose series exist (every covered pair without top_n).
        self._shown: set[Pair] = set()
        if top_n is None:
            for exchange, symbol in sorted(self._thresholds):
                metrics.create(exchange, symbol, now_us / 1e6)
            self._shown.update(self._thresholds)

    def cover(self, pairs: Mapping[Pair, float | None], now_us: int) -> None:
        """Cover ``pairs`` too from now on (symbols added at run time: their thresholds;
        their series are created, as at start). A pair covered already takes the new
        threshold."""
        for (exchange, symbol), threshold in sorted(pairs.items()):
            if (exchange, symbol) not in self._thresholds and self.top_n is None:
                self._metrics.create(exchange, symbol, now_us / 1e6)
                self._shown.add((exchange, symbol))
            self._thresholds[(exchange, symbol)] = threshold
        self._last = _NO_LOOKUP  # its threshold may have changed

    def uncover(self, pairs: Iterable[Pair]) -> None:
        """Stop covering ``pairs`` (symbols removed at run time): no more rows or figures
        for them, and their series go."""
        for pair in pairs:
            self._thresholds.pop(pair, None)
            if pair in self._shown:
                self._shown.discard(pair)
                self._metrics.remove(*pair)
        self._open = {k: v for k, v in self._open.items() if (k[1], k[2]) in self._thresholds}
        self._last = _NO_LOOKUP

    def __call__(self, batch: list[Event]) -> None:
        """Add the trades of ``batch`` (the hot path: a few operations per trade).

        The trades of one read share their symbol and receive time: the interval and the
        running figures are looked up once per such run, not per trade (the last lookup is
        kept across calls until an interval completes).
        """
        thresholds = self._thresholds
        interval_us = self.interval_us
        open_figures = self._open
        last_exchange, last_symbol, last_ts, figures, threshold, late = self._last
        for event in batch:
            if type(event) is not Trade:
                continue
            ts = event.timestamp_collector
            if ts != last_ts or event.symbol != last_symbol or event.exchange != last_exchange:
                # A new run: its pair's threshold, interval and figures (inline: a call
                # here costs as much as the rest of a trade).
                last_ts, last_symbol, last_exchange = ts, event.symbol, event.exchange
                pair = (last_exchange, last_symbol)
                threshold = thresholds.get(pair, _NOT_COVERED)
                index = ts // interval_us
                late = index < self._next
                if threshold is _NOT_COVERED or (late and index < self._first):
                    figures = None  # not configured, or the interval the service started in
                    continue
                if late:
                    index = self._next
                key = (index, last_exchange, last_symbol)
                figures = open_figures.get(key)
                if figures is None:
                    figures = open_figures[key] = _Figures()
            elif figures is None:
                continue
            if late:
                pair = (last_exchange, last_symbol)
                self._late[pair] = self._late.get(pair, 0) + 1
            price = event.price
            size = event.size
            figures.trades += 1
            figures.volume += size
            figures.notional += price * size
            side = event.side
            if side == "buy":
                figures.buy += size
            elif side == "sell":
                figures.sell += size
            if price > figures.high:
                figures.high = price
            if price < figures.low:
                figures.low = price
            if threshold is not None and size >= threshold:
                figures.large += 1
        self._last = (last_exchange, last_symbol, last_ts, figures, threshold, late)

    def rows_due(self, now_us: int) -> list[Event]:
        """Complete every interval that ended at least :data:`CLOSE_DELAY_SECS` before
        ``now_us`` (wall time, us since the epoch): set the metrics and return its rows
        (none without ``table``), one per covered pair, oldest interval first."""
        due = (now_us - round(CLOSE_DELAY_SECS * 1_000_000)) // self.interval_us
        if due <= self._next:
            return []
        with_trades = {key[0] for key in self._open if key[0] < due}
        quiet = range(max(self._next, due - MAX_QUIET_INTERVALS), due)
        rows: list[Event] = []
        for index in sorted(with_trades.union(quiet)):
            rows.extend(self._complete(index, now_us))
        self._next = due
        self._last = _NO_LOOKUP  # its figures may belong to a completed interval
        self._count_late()
        return rows if self.table else []

    def _complete(self, index: int, now_us: int) -> list[IntervalStats]:
        start = index * self.interval_us
        end = start + self.interval_us
        rows = []
        m = self._metrics
        figured: dict[Pair, _Figures] = {}
        for exchange, symbol in sorted(self._thresholds):
            found = self._open.pop((index, exchange, symbol), None)
            figured[(exchange, symbol)] = found or _Figures()
        shown = self._shown_after(figured, now_us)
        for (exchange, symbol), threshold in sorted(self._thresholds.items()):
            figures = figured[(exchange, symbol)]
            row = _row(exchange, symbol, start, end, now_us, figures, threshold)
            rows.append(row)
            labels = (exchange, symbol)
            if labels not in shown:
                continue
            m.vwap.labels(*labels).set(_or_nan(row.vwap))
            m.high.labels(*labels).set(_or_nan(row.high))
            m.low.labels(*labels).set(_or_nan(row.low))
            m.volume.labels(*labels).set(row.volume)
            m.buy_volume.labels(*labels).set(row.buy_volume)
            m.sell_volume.labels(*labels).set(row.sell_volume)
            m.buy_sell_ratio.labels(*labels).set(_or_nan(row.buy_sell_ratio))
            m.trades.labels(*labels).set(row.trades)
            m.interval_end.labels(*labels).set(end / 1e6)
            if row.large_trades:
                m.large_trades.labels(*labels).inc(row.large_trades)
        return rows

    def _shown_after(self, figured: Mapping[Pair, _Figures], now_us: int) -> set[Pair]:
        """The pairs whose series exist after an interval with these figures: every
        covered pair, or with ``top_n`` the N largest by notional (price x size, in each
        pair's quote currency: comparable within one quote), ties by pair; series of
        pairs that leave the top go, those that enter are created (their counters start
        again from 0)."""
        if self.top_n is None:
            return self._shown
        ranked = sorted(figured, key=lambda pair: (-figured[pair].notional, pair))
        top = set(ranked[: self.top_n])
        for pair in sorted(self._shown - top):
            self._metrics.remove(*pair)
        for pair in sorted(top - self._shown):
            self._metrics.create(*pair, now_us / 1e6)
        self._shown = top
        return top

    def _count_late(self) -> None:
        for (exchange, symbol), count in self._late.items():
            if (exchange, symbol) in self._shown:
                self._metrics.late_trades.labels(exchange, symbol).inc(count)
        self._late.clear()


def _row(
    exchange: str,
    symbol: str,
    start: int,
    end: int,
    now_us: int,
    figures: _Figures,
    threshold: float | None,
) -> IntervalStats:
    traded = figures.trades > 0
    return IntervalStats(
        exchange,
        symbol,
        end,
        now_us,
        None,
        start,
        figures.trades,
        figures.volume,
        figures.buy,
        figures.sell,
        figures.buy / figures.sell if figures.sell > 0 else None,
        figures.notional / figures.volume if figures.volume > 0 else None,
        figures.high if traded else None,
        figures.low if traded else None,
        figures.large,
        threshold,
    )


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value
