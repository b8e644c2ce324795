"""Command line: ``python -m collector COMMAND ...`` (run, check-config, upload, symbols,
test, bench, book, holes, export-binary, reparse).

Exit status: 0 success; 1 runtime failure: a start-up failure the environment may clear
(data directory not writable, HTTP port in use), a shutdown that ran past its deadline or
was cut short by a second signal, a venue that cannot be reached, a bug; 2 a failure that
a restart will not clear: bad settings or usage, or the data directory held by another
service. Every failure before the service runs is one ``collector: error: ...`` line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from collector import __version__
from collector.config import ConfigError, Settings, resolve_path, settings_as_dict

if TYPE_CHECKING:
    from collector.control.listings import Listings
    from collector.control.reload import Reload
    from collector.planning import ServicePlan
    from collector.sharding import Shard

EXIT_CONFIG = 2

log = logging.getLogger("collector")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m collector",
        description="Record real-time crypto market data from exchange WebSockets into Parquet.",
        epilog=(
            "Settings come from --config, else $CONFIG_PATH, else ./settings.toml, else the "
            "embedded default; COLLECTOR__<SECTION>__<KEY> variables override single keys."
        ),
    )
    parser.add_argument("--version", action="version", version=f"collector {__version__}")
    config_help = "settings file (default: $CONFIG_PATH, ./settings.toml, or the embedded default)"
    parser.add_argument("--config", metavar="PATH", help=config_help)
    shard_help = (
        "collect only shard I of N of the (exchange, symbol) pairs, zero-based; auto/N takes I "
        "from the host name's -<number> suffix (default: $COLLECTOR_SHARD, else everything)"
    )
    parser.add_argument("--shard", metavar="I/N", help=shard_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the service (the default command)")
    run.add_argument("--config", metavar="PATH", help=config_help, dest="run_config")
    run.add_argument("--shard", metavar="I/N", help=shard_help, dest="run_shard")
    check = sub.add_parser(
        "check-config", help="validate settings and print the effective values (secrets masked)"
    )
    check.add_argument("path", nargs="?", metavar="PATH", help="settings file to check")
    check.add_argument("--config", metavar="PATH", dest="check_config", help=config_help)
    check.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    check.add_argument("--shard", metavar="I/N", dest="check_shard", help=shard_help)
    check.add_argument(
        "--no-resolve",
        action="store_true",
        help='do not ask the venues for the symbols of symbols = ["*"] markets (no network '
        "I/O; those markets are left out of the connections shown)",
    )
    upload = sub.add_parser(
        "upload", help="upload every finished local file not yet verified in S3, then exit"
    )
    upload.add_argument("--config", metavar="PATH", dest="upload_config", help=config_help)
    from collector.bench.command import add_arguments as add_bench_arguments

    bench = sub.add_parser(
        "bench", help="measure how much this machine can collect (local load generator)"
    )
    add_bench_arguments(bench)
    symbols = sub.add_parser(
        "symbols", help="list an exchange's tradable symbols from its public REST API"
    )
    symbols.add_argument("exchange", metavar="EXCHANGE", help="exchange name, e.g. binance")
    symbols.add_argument("--json", action="store_true", help="print a JSON array")
    symbols.add_argument(
        "--rest-url", metavar="URL", help="REST API base URL (default: the venue's public API)"
    )
    symbols.add_argument(
        "--category",
        metavar="CATEGORY",
        help="the product category to list where the venue has several "
        "(binance: spot, usdm or coinm; bybit: spot, linear, inverse or option; "
        "okx: SPOT, SWAP, FUTURES or OPTION:<family> such as OPTION:BTC-USD; "
        "deribit: future, option, spot, future_combo or option_combo, default all; "
        "bitfinex: exchange or futures (perpetuals), default exchange; "
        "default spot)",
    )
    from collector.smoke import add_arguments as add_test_arguments

    add_test_arguments(
        sub.add_parser(
            "test",
            help="connect to a venue, subscribe one symbol, print what arrives, give a verdict",
        )
    )
    from collector.reader.command import add_book_arguments, add_holes_arguments

    add_book_arguments(
        sub.add_parser("book", help="print a symbol's recorded order book as of a time")
    )
    add_holes_arguments(
        sub.add_parser("holes", help="list the holes in the recorded data (disconnects, gaps...)")
    )
    from collector.binary.export import add_arguments as add_export_arguments

    add_export_arguments(
        sub.add_parser(
            "export-binary", help="write the MD and TRADES binary column files from the Parquet"
        )
    )
    reparse = sub.add_parser(
        "reparse",
        help="rebuild the tables from the raw feed with the current parsers, into --out",
    )
    reparse.add_argument(
        "--config",
        metavar="PATH",
        dest="reparse_config",
        help=config_help + "; must plan the connections of the recording run",
    )
    reparse.add_argument("--shard", metavar="I/N", dest="reparse_shard", help=shard_help)
    reparse.add_argument(
        "--out", metavar="DIR", required=True, help="the new data directory (not the live one)"
    )
    reparse.add_argument(
        "--data",
        metavar="PATH|s3://BUCKET/PREFIX",
        help="where the raw feed is (default: the settings' storage.data_dir)",
    )
    reparse.add_argument("--endpoint-url", metavar="URL", help="S3-compatible endpoint")
    reparse.add_argument("--region", metavar="REGION", help="S3 region (default: AWS_REGION)")
    return parser


def _load(path_arg: str | None) -> tuple[Settings, str]:
    from collector.settings_check import load_settings

    notices: list[str] = []
    loaded = load_settings(resolve_path(path_arg, os.environ), os.environ, notices)
    # Keys of the replaced Rust collector that no longer apply: one line each, then on.
    for notice in notices:
        print(f"collector: notice: {notice}", file=sys.stderr)
    return loaded


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except BrokenPipeError:
        # Output piped into a reader that stopped early (e.g. `| head`): end quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    command = args.command or "run"
    if command == "bench":
        from collector.bench import run_bench_command

        return run_bench_command(args)
    if command in ("book", "holes"):
        from collector.reader.command import run_book_command, run_holes_command

        return (run_book_command if command == "book" else run_holes_command)(args)
    if command == "export-binary":
        from collector.binary.export import run_export_command

        return run_export_command(args)
    if command == "test":
        from collector.smoke import run_test_command

        return run_test_command(args)
    if command == "symbols":
        from collector.symbols import run_symbols_command

        return run_symbols_command(
            args.exchange, rest_url=args.rest_url, as_json=args.json, category=args.category
        )
    # Imported here, not at the top: checking and planning settings loads every venue
    # module and the storage layer, which --help, symbols and bench do without.
    from collector.control.listings import (
        ListingError,
        Listings,
        has_all_symbols,
        resolve_settings,
    )
    from collector.planning import plan_service
    from collector.sharding import apply_shard, assignment, resolve_shard

    listings: Listings | None = None
    try:
        if command == "upload":
            settings, _ = _load(args.upload_config or args.config)
            return _upload(settings)
        if command == "reparse":
            full, _ = _load(args.reparse_config or args.config)
            full = resolve_settings(full)  # "*" markets: the venue's listing now
            settings, shard = apply_shard(full, args.reparse_shard or args.shard, os.environ)
            return _reparse(plan_service(settings, assignment(full, shard)), args)
        if command == "check-config":
            settings, source = _load(args.path or args.check_config or args.config)
            shard = resolve_shard(args.check_shard or args.shard, os.environ)
            return _check_config(
                settings, source, as_json=args.json, shard=shard, resolve=not args.no_resolve
            )
        config_arg = getattr(args, "run_config", None) or args.config
        shard_arg = getattr(args, "run_shard", None) or args.shard
        template, source = _load(config_arg)
        # "*" markets: resolved from the venues' listings before anything starts.
        full = resolve_settings(template)
        settings, shard = apply_shard(full, shard_arg, os.environ)
        # Adapters that cannot start (e.g. bad credentials) fail here.
        plan = plan_service(settings, assignment(full, shard))
        if has_all_symbols(template):
            listings = Listings(template, shard)
            listings.resolved = listings.resolved_pairs(settings)
    except ListingError as exc:
        print(f"collector: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ConfigError as exc:
        print(f"collector: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    def reload() -> tuple[Settings, int]:
        """SIGHUP: the same file, overrides and shard, read again (ConfigError if bad)."""
        template, _ = _load(config_arg)
        full = resolve_settings(template)  # "*" markets: the venues' listings again
        settings, shard = apply_shard(full, shard_arg, os.environ)
        if listings is not None and has_all_symbols(template):
            listings.template = template
            listings.resolved = listings.resolved_pairs(settings)
        return settings, assignment(full, shard).configured

    return _run(plan, source, reload, listings)


def _check_config(
    settings: Settings,
    source: str,
    *,
    as_json: bool,
    shard: Shard | None = None,
    resolve: bool = True,
) -> int:
    """Print the effective settings and the connections they open: the plan ``run`` would
    run. ``symbols = ["*"]`` markets are resolved from the venues' listings (network I/O)
    unless ``resolve`` is false, when they are left out of the plan shown. Every
    ConfigError is raised before any output."""
    from collector.control.listings import resolve_settings
    from collector.planning import describe_connections, describe_exchanges, plan_service
    from collector.settings_check import is_all_symbols
    from collector.sharding import describe_shard, describe_shard_lines, shard_settings

    # The shard's settings, as before; with "*" markets the file's (the resolved symbols,
    # thousands perhaps, are listed apart).
    file_settings = settings
    stars = [i for i, m in enumerate(settings.markets) if is_all_symbols(m)]
    unresolved = [] if resolve else stars
    if resolve:
        settings = resolve_settings(settings)  # may raise ListingError (a ConfigError)
    elif stars:
        kept = tuple(m for m in settings.markets if not is_all_symbols(m))
        settings = msgspec.structs.replace(settings, markets=kept)
    full = settings
    if settings.markets and shard is not None:
        settings = shard_settings(full, shard)  # may raise ShardError (a ConfigError)
    shown = settings_as_dict(file_settings if stars else settings)
    plan = plan_service(settings) if settings.markets else None  # may raise ConfigError
    connections = describe_connections(plan) if plan is not None else []
    exchanges = describe_exchanges(plan) if plan is not None else []
    if as_json:
        document: dict[str, Any] = {"source": source, "settings": shown}
        if shard is not None and full.markets:
            document["shard"] = describe_shard(full, shard)
        if resolve and stars:
            document["resolved_markets"] = [
                {"exchange": m.exchange, "category": m.category, "symbols": list(m.symbols)}
                for m in full.markets
            ]
        document["unresolved_markets"] = unresolved
        document["exchanges"] = exchanges
        document["connections"] = connections
        print(json.dumps(document, indent=2))
        return 0
    print(f"# settings OK: {source}")
    if shard is not None and full.markets:
        print("\n".join(describe_shard_lines(full, shard)))
    print(to_toml(shown))
    for index in unresolved:
        print(f'# markets[{index}]: symbols = ["*"] not resolved (--no-resolve): not shown below')
    print("# connections this configuration opens:")
    for exchange in exchanges:
        print(
            f"#   {exchange['exchange']}: {exchange['symbols']} symbols, "
            f"{exchange['connections']} connections, at most "
            f"{exchange['max_streams_per_connection']} streams per connection"
        )
    for line in connections:
        print(f"#   {line['name']}: {line['url']} ({line['subscriptions']} subscriptions)")
    return 0


def _upload(settings: Settings) -> int:
    from collector.logs import setup_logging
    from collector.upload import run_upload_command

    setup_logging(settings.collector.log_level, settings.collector.log_format)
    return run_upload_command(settings)


def _reparse(plan: ServicePlan, args: argparse.Namespace) -> int:
    from pathlib import Path

    import pyarrow as pa

    from collector.logs import setup_logging
    from collector.reader.errors import ReaderError, UsageError
    from collector.reader.source import open_source
    from collector.reparse import ReparseError, run_reparse

    settings = plan.settings
    setup_logging(settings.collector.log_level, settings.collector.log_format)
    try:
        source = open_source(
            args.data or settings.storage.data_dir,
            endpoint_url=args.endpoint_url,
            region=args.region,
        )
        report = trio.run(run_reparse, plan, source, Path(args.out))
    except (ReparseError, UsageError) as exc:
        print(f"collector: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (ReaderError, OSError, pa.ArrowException) as exc:
        print(f"collector: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(
        f"reparsed {report.frames} frames and {report.bodies} REST bodies of "
        f"{report.attempts} connection attempts into {report.events} rows in {args.out}"
    )
    skipped = {
        "rows of connections these settings do not plan": report.unplanned,
        "REST bodies no session asked for": report.unmatched,
        "rows of a planned reconnect's overlap": report.overlapped,
    }
    for what, count in skipped.items():
        if count:
            print(f"skipped {count} {what}")
    return 0


def _run(
    plan: ServicePlan,
    source: str,
    reload: Reload | None = None,
    listings: Listings | None = None,
) -> int:
    from collector.logs import setup_logging
    from collector.service import ServiceError, run_service, tune_process

    settings = plan.settings
    shard = plan.assignment
    # A sharded instance names its shard on every line (the "shard" field).
    fields = {"shard": str(shard.shard)} if shard.sharded else {}
    setup_logging(settings.collector.log_level, settings.collector.log_format, fields=fields)
    log.info(
        "starting collector %s",
        __version__,
        extra={
            "settings": source,
            "pairs": len(shard.pairs),
            "configured_pairs": shard.configured,
        },
    )
    log.debug("effective settings", extra={"settings": settings_as_dict(settings)})
    tune_process()
    try:
        return trio.run(partial(run_service, plan, reload=reload, listings=listings))
    except ServiceError as exc:
        # The one line, as for bad settings (not a log record as well: it would say the
        # same thing twice in the same stream).
        print(f"collector: error: {exc}", file=sys.stderr)
        return exc.exit_code


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table, e.g. kafka.options (keys quoted: dots)
        return (
            "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(f"cannot show {value!r} as TOML")


def _toml_table(table: dict[str, Any]) -> list[str]:
    lines = []
    for key, value in table.items():
        if value is None:
            lines.append(f"# {key} is not set")
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    return lines


def to_toml(settings: dict[str, Any]) -> str:
    """Render plain settings (sections of scalars and the markets array) as TOML."""
    lines: list[str] = []
    for section, table in settings.items():
        if section == "markets":
            continue
        lines += [f"[{section}]", *_toml_table(table), ""]
    for market in settings.get("markets", []):
        lines += ["[[markets]]", *_toml_table(market), ""]
    return "\n".join(lines).rstrip() + "\n"
