"""``python -m collector.healthcheck [URL]``: exit 0 if the service answers 200, else 1.

The container's HEALTHCHECK (the image has no curl). Standard library only, so it starts
fast and does not import the service. The URL is, in order: the argument,
``$COLLECTOR_HEALTHCHECK_URL``, or ``http://127.0.0.1:<port>/health`` where ``<port>`` is
``$COLLECTOR__COLLECTOR__METRICS_PORT`` or 8000. Use ``.../ready`` to check readiness
instead (503 until every connection has subscribed).
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Final

ENV_URL: Final = "COLLECTOR_HEALTHCHECK_URL"
ENV_PORT: Final = "COLLECTOR__COLLECTOR__METRICS_PORT"
DEFAULT_PORT: Final = 8000
DEFAULT_TIMEOUT_SECS: Final = 5.0

EXIT_HEALTHY: Final = 0
EXIT_UNHEALTHY: Final = 1


def default_url(env: Mapping[str, str]) -> str:
    if env.get(ENV_URL):
        return env[ENV_URL]
    port = env.get(ENV_PORT, "").strip() or str(DEFAULT_PORT)
    return f"http://127.0.0.1:{port}/health"


def check(url: str, timeout: float = DEFAULT_TIMEOUT_SECS) -> tuple[bool, str]:
    """(healthy, one line saying why): healthy means HTTP 200 within ``timeout``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = int(response.status)
            body = response.read(512)
    except urllib.error.HTTPError as exc:
        return False, f"{url}: HTTP {exc.code}"
    except (OSError, ValueError) as exc:  # refused, timed out, DNS, malformed URL
        return False, f"{url}: {exc}"
    if status != 200:
        return False, f"{url}: HTTP {status}"
    return True, f"{url}: HTTP 200 {body.decode('utf-8', 'replace')[:200]}"


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="python -m collector.healthcheck",
        description="Exit 0 if the collector's health endpoint answers HTTP 200, else 1.",
    )
    parser.add_argument(
        "url", nargs="?", help=f"URL to check (default: ${ENV_URL} or {default_url({})})"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECS,
        metavar="SECS",
        help=f"give up after this long (default: {DEFAULT_TIMEOUT_SECS:g})",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing")
    args = parser.parse_args(argv)
    healthy, detail = check(args.url or default_url(env), args.timeout)
    if not args.quiet:
        print(detail, file=sys.stdout if healthy else sys.stderr)
    return EXIT_HEALTHY if healthy else EXIT_UNHEALTHY


if __name__ == "__main__":
    raise SystemExit(main())
