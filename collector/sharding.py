"""Sharding: split the configured (exchange, symbol) pairs over N instances.

A shard is ``I/N`` (``0 <= I < N``, zero-based like StatefulSet pod ordinals). Every instance
reads the same settings and keeps only its own pairs, so N instances on N machines record
every configured pair exactly once:

- **disjoint and complete**: each pair goes to exactly one shard;
- **balanced**: shard sizes differ by at most one pair;
- **deterministic and order-free**: the assignment depends only on the *set* of pairs
  ``(exchange, canonical symbol)`` and on N, never on the order of ``[[markets]]`` or of
  ``symbols``, nor on how a symbol is spelled (``btcusdt`` and ``BTCUSDT`` are one pair);
  hashes are SHA-256 (stable across processes and Python versions, unlike ``hash()``);
- **few moves when settings change**: rendezvous (highest-random-weight) hashing with
  bounded load. Each pair ranks the shards by ``sha256(exchange, symbol, shard)``; pairs,
  in a fixed hash order, take their best-ranked shard that still has room, where shard
  ``i`` has room for ``ceil(P/N)`` pairs if ``i < P mod N``, else ``floor(P/N)``. Adding or
  removing one pair moves only a few others (sorted round-robin would move most of them).

``auto/N`` takes ``I`` from the trailing ``-<digits>`` of the host name: a StatefulSet pod
``collector-2`` is shard ``2/N``.

A shard that would get no pair at all (more shards than pairs) is a settings error: it is
reported like any other bad setting (exit status 2), not run as an idle instance.

Sharding does not move the data: a stream's files have the same path (and S3 key) whatever
shard records it and however many shards there are. The shard is told in the metrics
(:class:`Assignment`, exported by the service), the log lines and each file's metadata,
never in the layout.
"""

from __future__ import annotations

import hashlib
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs
import msgspec

from collector.config import ConfigError, MarketSettings, Settings
from collector.settings_check import canonical_pair

ENV_SHARD: Final = "COLLECTOR_SHARD"
AUTO: Final = "auto"

_SPEC_RE: Final = re.compile(r"^\s*(?P<index>\d+|auto)\s*/\s*(?P<count>\d+)\s*$")
_ORDINAL_RE: Final = re.compile(r"-(?P<ordinal>\d+)$")

Pair = tuple[str, str]  # (exchange, canonical symbol)


class ShardError(ConfigError):
    """A bad shard specification, or a shard with nothing to collect."""


@attrs.frozen
class Shard:
    """Shard ``index`` of ``count`` (zero-based)."""

    index: int
    count: int

    def __attrs_post_init__(self) -> None:
        if self.count < 1:
            raise ShardError(f"shard count must be at least 1 (got {self.count})")
        if not 0 <= self.index < self.count:
            raise ShardError(
                f"shard index {self.index} is out of range for {self.count} shard(s) "
                f"(use 0 to {self.count - 1})"
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str, *, hostname: str | None = None) -> Shard:
    """``"I/N"`` -> ``Shard(I, N)``; ``"auto/N"`` takes ``I`` from the host name's ``-<digits>``
    suffix (``hostname``, default: this machine's). Raises :class:`ShardError`."""
    match = _SPEC_RE.match(text)
    if match is None:
        raise ShardError(f"shard {text!r}: expected I/N (e.g. 0/3) or auto/N")
    count = int(match["count"])
    if match["index"] == AUTO:
        host = hostname if hostname is not None else socket.gethostname()
        ordinal = _ORDINAL_RE.search(host)
        if ordinal is None:
            raise ShardError(
                f"shard {text!r}: host name {host!r} does not end in -<number> "
                "(auto/N is meant for StatefulSet pods such as collector-0)"
            )
        index = int(ordinal["ordinal"])
    else:
        index = int(match["index"])
    try:
        return Shard(index, count)
    except ShardError as exc:
        raise ShardError(f"shard {text!r}: {exc}") from None


def resolve_shard(cli_value: str | None, env: Mapping[str, str]) -> Shard | None:
    """The shard from ``--shard`` if given, else ``$COLLECTOR_SHARD``, else None (no sharding).

    ``auto/N`` reads ``$HOSTNAME`` (set in every container), else the machine's host name.
    """
    spec = cli_value if cli_value else env.get(ENV_SHARD, "").strip()
    if not spec:
        return None
    origin = "--shard" if cli_value else f"${ENV_SHARD}"
    try:
        return parse_shard(spec, hostname=env.get("HOSTNAME") or None)
    except ShardError as exc:
        raise ShardError(f"{origin}: {exc}") from None


# --------------------------------------------------------------------------- assignment


def _digest(*parts: str | int) -> bytes:
    return hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()


def _weight(pair: Pair, shard_index: int) -> int:
    return int.from_bytes(_digest("shard", pair[0], pair[1], shard_index)[:8], "big")


def assign_pairs(pairs: Iterable[Pair], count: int) -> list[list[Pair]]:
    """Split ``pairs`` (duplicates ignored) over ``count`` shards; each list is sorted.

    Shard ``i`` gets ``ceil(P/count)`` pairs if ``i < P % count``, else ``floor(P/count)``.
    """
    if count < 1:
        raise ShardError(f"shard count must be at least 1 (got {count})")
    unique = sorted(set(pairs))
    base, extra = divmod(len(unique), count)
    room = [base + (1 if i < extra else 0) for i in range(count)]
    shards: list[list[Pair]] = [[] for _ in range(count)]
    # A fixed order that does not depend on how the pairs are spelled or listed.
    for pair in sorted(unique, key=lambda p: (_digest("order", p[0], p[1]), p)):
        ranked = sorted(range(count), key=lambda i: (-_weight(pair, i), i))
        chosen = next(i for i in ranked if room[i] > 0)
        room[chosen] -= 1
        shards[chosen].append(pair)
    return [sorted(s) for s in shards]


def configured_pairs(settings: Settings) -> list[Pair]:
    """Every configured (exchange, canonical symbol), sorted: the pairs
    :func:`~collector.settings_check.check_settings` keeps unique, so a pair is one file stream."""
    return sorted({canonical_pair(m, s) for m in settings.markets for s in m.symbols})


def shard_pairs(settings: Settings, shard: Shard) -> list[Pair]:
    """The pairs ``shard`` collects, sorted."""
    return assign_pairs(configured_pairs(settings), shard.count)[shard.index]


def shard_settings(settings: Settings, shard: Shard) -> Settings:
    """``settings`` reduced to the pairs of ``shard``.

    Each market keeps only this shard's symbols (as spelled in the settings); a market left
    without symbols is removed. Nothing else changes: in particular the file layout (and
    ``aws.home_server_name``) is the same for every shard. A single shard (``0/1``)
    changes nothing. Raises :class:`ShardError` if the shard gets no pair at all.
    """
    if shard.count == 1:
        return settings
    mine = set(shard_pairs(settings, shard))
    if not mine:
        total = len(configured_pairs(settings))
        raise ShardError(
            f"shard {shard} has nothing to collect: only {total} (exchange, symbol) pair(s) "
            f"are configured for {shard.count} shards (use at most {total} shards)"
        )
    markets: list[MarketSettings] = []
    for market in settings.markets:
        symbols = tuple(s for s in market.symbols if canonical_pair(market, s) in mine)
        if symbols:
            markets.append(msgspec.structs.replace(market, symbols=symbols))
    return msgspec.structs.replace(settings, markets=tuple(markets))


@attrs.frozen
class Assignment:
    """What one instance collects out of the configured pairs: its ``shard`` (``0/1`` when
    not sharded), its ``pairs`` (sorted) and how many pairs the settings configure in all.

    Every instance exports it (``collector_shard_*`` metrics), so the sum of the
    instances' pairs falling below ``configured`` shows pairs no running instance collects.
    """

    shard: Shard
    pairs: tuple[Pair, ...]
    configured: int

    @property
    def sharded(self) -> bool:
        return self.shard.count > 1


def assignment(settings: Settings, shard: Shard | None) -> Assignment:
    """The :class:`Assignment` of ``shard`` (None: not sharded) out of the full ``settings``."""
    pairs = configured_pairs(settings)
    if shard is None or shard.count == 1:
        return Assignment(Shard(0, 1), tuple(pairs), len(pairs))
    return Assignment(shard, tuple(assign_pairs(pairs, shard.count)[shard.index]), len(pairs))


def apply_shard(
    settings: Settings, cli_value: str | None, env: Mapping[str, str]
) -> tuple[Settings, Shard | None]:
    """:func:`resolve_shard` then :func:`shard_settings` (unchanged settings if no shard)."""
    shard = resolve_shard(cli_value, env)
    if shard is None:
        return settings, None
    return shard_settings(settings, shard), shard


def describe_shard(settings: Settings, shard: Shard) -> dict[str, Any]:
    """What ``shard`` collects out of the full ``settings`` (for ``check-config``)."""
    pairs = shard_pairs(settings, shard)
    return {
        "shard": str(shard),
        "index": shard.index,
        "count": shard.count,
        "pairs": [{"exchange": e, "symbol": s} for e, s in pairs],
        "total_pairs": len(configured_pairs(settings)),
    }


def describe_shard_lines(settings: Settings, shard: Shard) -> Sequence[str]:
    """:func:`describe_shard` as comment lines for the TOML output of ``check-config``."""
    info = describe_shard(settings, shard)
    lines = [
        f"# shard {info['shard']}: {len(info['pairs'])} of "
        f"{info['total_pairs']} (exchange, symbol) pairs"
    ]
    lines += [f"#   {p['exchange']} {p['symbol']}" for p in info["pairs"]]
    return lines
