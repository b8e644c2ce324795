"""The ``instruments`` feed: the venues' REST instrument listings, at start and periodically.

A market that lists ``instruments`` among its feeds gets one ``instruments`` row per
configured symbol (:class:`~collector.events.Instrument`: kind, assets, contract size and
unit, tick and lot size, expiry, strike), filed like its other rows under the market's
exchange and the symbol. Those rows say what the sizes of the market's trades and books
count (base currency, contracts, USD), which nothing else in the data does.

The adapter knows the venue: which REST GETs describe a market's symbols
(:meth:`~collector.exchanges.base.ExchangeAdapter.instruments_requests`) and how to read
their answers (:meth:`~collector.exchanges.base.ExchangeAdapter.parse_instruments`). This
module only fetches: one task per venue, each request in a worker thread, at most the
venue's ``instrument_requests_per_second``, the rows sent to the writer's event channel as
a connection sends its own.

Rounds: every request at start, then every ``collector.instruments_interval_secs``. A
request that fails (HTTP error, network, an answer the adapter cannot read) gives a
``fetch_error`` status row (``data_type`` ``instruments``, the reason in ``detail``) for
each symbol it covers, a count in ``collector_instrument_fetches_total{outcome="failed"}``
and a warning. A failure that may pass (no answer, HTTP 5xx or 429) is tried again after
``collector.instruments_retry_secs`` (or with the next round, whichever comes first); one
that will not (another HTTP 4xx: an unknown symbol; an answer the adapter cannot read)
waits for the next round, so a misspelt symbol costs one row per round, not one per retry.
A symbol the venue's answer does not describe (delisted, misspelt) gets a ``fetch_error``
row likewise. Nothing here can stop the service.

Markets change while the service runs (:mod:`collector.control`): the controller hands
:meth:`InstrumentListings.follow` the requests of the new markets. A request that describes a symbol
no request did (an added symbol's, or a venue's request whose symbol list grew: Binance asks
for a market's symbols in one request, so its other symbols are read again with it) is
fetched at once, then with every round; one no longer wanted (a removed symbol's) is not
fetched again; a venue that had none gets its task then.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Final, Literal, NoReturn

import attrs
import trio

from collector.clock import WallClock
from collector.config import MarketSettings
from collector.events import Event, Instrument, Status
from collector.exchanges.base import ExchangeAdapter, InstrumentsRequest, ParseError
from collector.metrics import INSTRUMENT_FETCH_OUTCOMES, Metrics
from collector.planning import ServicePlan
from collector.rest import HTTP_GEO_BLOCKED, RestError, fetch

log = logging.getLogger(__name__)

FEED = "instruments"

_Outcome = Literal["done", "retry", "failed"]
_DONE: Final = "done"
_RETRY: Final = "retry"  # failed; try again after the retry delay
_FAILED: Final = "failed"  # failed for good this round: wait for the next
# HTTP statuses of failures that may pass: the venue's rate limit, and server errors.
_TOO_MANY_REQUESTS: Final = 429
_SERVER_ERRORS: Final = 500


def _may_pass(exc: RestError | ParseError) -> bool:
    """Whether a failed request is worth trying again before the next round."""
    if isinstance(exc, ParseError):
        return False
    return exc.status is None or exc.status == _TOO_MANY_REQUESTS or exc.status >= _SERVER_ERRORS


@attrs.frozen
class InstrumentsJob:
    """One venue's listing requests: every request of its markets with the feed."""

    adapter: ExchangeAdapter
    requests: tuple[InstrumentsRequest, ...]


def plan_instruments(plan: ServicePlan) -> list[InstrumentsJob]:
    """The listing requests of ``plan``, one job per venue that has any (settings order)."""
    return instrument_jobs(plan.settings.markets, [e.adapter for e in plan.exchanges])


def instrument_jobs(
    markets: Sequence[MarketSettings], adapters: Iterable[ExchangeAdapter]
) -> list[InstrumentsJob]:
    """The listing requests of ``markets``, one job per venue of ``adapters`` (in their
    order) that has any."""
    jobs = []
    for adapter in adapters:
        requests = [
            request
            for market in markets
            if market.exchange == adapter.name and FEED in market.feeds
            for request in adapter.instruments_requests(market)
        ]
        if requests:
            jobs.append(InstrumentsJob(adapter, tuple(requests)))
    return jobs


def create_instrument_series(metrics: Metrics, jobs: Sequence[InstrumentsJob]) -> None:
    """Create the series the jobs will count, at 0 (see :mod:`collector.series`)."""
    for exchange in {r.exchange for job in jobs for r in job.requests}:
        for outcome in INSTRUMENT_FETCH_OUTCOMES:
            metrics.instrument_fetches.labels(exchange, outcome)
        for data_type in (Instrument.DATA_TYPE, Status.DATA_TYPE):
            metrics.rows_written.labels(exchange, data_type)
            metrics.files_finished.labels(exchange, data_type)


async def run_instruments(
    jobs: Sequence[InstrumentsJob],
    events: trio.MemorySendChannel[list[Event]],
    metrics: Metrics,
    wall_clock: WallClock,
    *,
    interval_secs: float,
    retry_secs: float,
    task_status: trio.TaskStatus[InstrumentListings] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Fetch every job's listings now and then every ``interval_secs``, until cancelled.

    Owns ``events`` (closes it when cancelled; each venue's task gets a clone) and a
    nursery with one task per venue; starts with the :class:`InstrumentListings` through
    which the controller changes the requests (so it runs, idle, even with no job, for
    markets added later). A failed request is retried ``retry_secs`` later (see the module
    docstring); it never raises for a venue's failure. Cancelled with the ingest tasks at
    shutdown: a fetch in flight is abandoned (its worker thread ends on its own timeout).
    """
    async with trio.open_nursery() as nursery:
        with events:
            listings = InstrumentListings(
                nursery, events, metrics, wall_clock, interval_secs, retry_secs
            )
            listings.follow(jobs)
            task_status.started(listings)
            await trio.sleep_forever()


class InstrumentListings:
    """The running venues' listing tasks (:func:`run_instruments` makes it): one
    :class:`_VenueFetcher` per venue, whose requests :meth:`follow` changes."""

    def __init__(
        self,
        nursery: trio.Nursery,
        events: trio.MemorySendChannel[list[Event]],
        metrics: Metrics,
        wall_clock: WallClock,
        interval_secs: float,
        retry_secs: float,
    ) -> None:
        self._nursery = nursery
        self._events = events
        self._metrics = metrics
        self._wall_clock = wall_clock
        self._interval_secs = interval_secs
        self._retry_secs = retry_secs
        self._fetchers: dict[str, _VenueFetcher] = {}

    def follow(self, jobs: Sequence[InstrumentsJob]) -> None:
        """Fetch ``jobs`` (every venue's requests, as they are now) from now on: requests
        that describe a symbol none did are fetched at once, those gone are dropped, a
        venue without a task gets one (its series created), a venue left out fetches
        nothing more."""
        wanted = {job.adapter.name: job for job in jobs}
        for name, fetcher in self._fetchers.items():
            if name not in wanted:
                fetcher.replace(())
        for name, job in wanted.items():
            running = self._fetchers.get(name)
            if running is not None:
                running.replace(job.requests)
                continue
            create_instrument_series(self._metrics, [job])
            fetcher = _VenueFetcher(job, self._events.clone(), self._metrics, self._wall_clock)
            self._fetchers[name] = fetcher
            self._nursery.start_soon(fetcher.run, self._interval_secs, self._retry_secs)


@attrs.define
class _VenueFetcher:
    """The rounds of one venue's requests (its own task); :meth:`replace` changes them."""

    job: InstrumentsJob
    events: trio.MemorySendChannel[list[Event]]
    metrics: Metrics
    wall_clock: WallClock
    _next_request_at: float = -math.inf
    # Requests new since the last round, to fetch at once; set when there are.
    _added: list[InstrumentsRequest] = attrs.field(factory=list)
    _woken: trio.Event = attrs.field(factory=trio.Event)

    def replace(self, requests: Sequence[InstrumentsRequest]) -> None:
        """Fetch ``requests`` from now on (those new at once, see :meth:`run`)."""
        known = set(self.job.requests)
        covered = {(r.exchange, symbol) for r in known for symbol in r.symbols}
        # New, and describing a symbol no request did (not one whose list only shrank).
        self._added += [
            r
            for r in requests
            if r not in known and any((r.exchange, s) not in covered for s in r.symbols)
        ]
        self.job = InstrumentsJob(self.job.adapter, tuple(requests))
        if self._added:
            self._woken.set()

    async def run(self, interval_secs: float, retry_secs: float) -> None:
        with self.events:
            next_round = trio.current_time()
            retry: list[InstrumentsRequest] = []
            retry_at = math.inf
            while True:
                with trio.move_on_at(min(next_round, retry_at)):
                    await self._woken.wait()
                self._woken = trio.Event()
                wanted = set(self.job.requests)
                if trio.current_time() >= next_round:
                    batch: Sequence[InstrumentsRequest] = self.job.requests
                    next_round = trio.current_time() + interval_secs
                    retry, self._added = [], []
                elif self._added:  # new requests, at once; the retries keep their time
                    batch, self._added = [r for r in self._added if r in wanted], []
                else:
                    batch, retry = [r for r in retry if r in wanted], []
                failed = [request for request in batch if await self._fetch(request) == _RETRY]
                retry += [request for request in failed if request in set(self.job.requests)]
                if not retry:
                    retry_at = math.inf
                elif failed:
                    retry_at = trio.current_time() + retry_secs

    async def _fetch(self, request: InstrumentsRequest) -> _Outcome:
        """Fetch and read one request and send its rows (or its ``fetch_error`` rows)."""
        adapter = self.job.adapter
        await trio.sleep_until(self._next_request_at)
        self._next_request_at = trio.current_time() + 1.0 / adapter.instrument_requests_per_second
        try:
            body = await trio.to_thread.run_sync(fetch, request.url, abandon_on_cancel=True)
            received_us = self.wall_clock()
            rows = adapter.parse_instruments(request, body, received_us)
        except (RestError, ParseError) as exc:
            reason = str(exc)
            if isinstance(exc, RestError) and exc.status == HTTP_GEO_BLOCKED:
                reason = f"{reason}; {adapter.geo_block_advice(request.exchange)}"
            log.warning(
                "instrument listing failed: %s",
                reason,
                extra={"exchange": request.exchange, "symbols": list(request.symbols)},
            )
            self.metrics.instrument_fetches.labels(request.exchange, "failed").inc()
            await self.events.send(self._errors(request, request.symbols, reason))
            return _RETRY if _may_pass(exc) else _FAILED
        self.metrics.instrument_fetches.labels(request.exchange, "ok").inc()
        described = {row.symbol for row in rows}
        missing = [symbol for symbol in request.symbols if symbol not in described]
        if missing:
            log.warning(
                "instrument listing does not describe %s",
                ", ".join(missing),
                extra={"exchange": request.exchange},
            )
        batch: list[Event] = [*rows, *self._errors(request, missing, "not in the venue's listing")]
        if batch:
            await self.events.send(batch)
        return _DONE

    def _errors(
        self, request: InstrumentsRequest, symbols: Sequence[str], detail: str
    ) -> list[Event]:
        now = self.wall_clock()
        return [
            Status(request.exchange, symbol, None, now, None, "fetch_error", FEED, detail=detail)
            for symbol in symbols
        ]
