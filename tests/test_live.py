"""Live smoke tests: ``python -m collector test`` against each real venue.

Marked ``live`` and deselected by default (``addopts`` in pyproject.toml), so the ordinary
``pytest`` never touches the internet and does not count them as skipped. Run them with
``pytest -m live`` from a machine the venues serve (some refuse some countries: HTTP 451).
Each runs the real command as a subprocess with the venue's default symbol and feeds, and
passes when market data arrived and no subscription was refused.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from collector.smoke import DEFAULT_SYMBOLS

pytestmark = pytest.mark.live

REPO = Path(__file__).resolve().parent.parent
SECONDS = 10


@pytest.mark.parametrize("exchange", sorted(DEFAULT_SYMBOLS))
def test_venue_sends_market_data(exchange: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR__")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-m", "collector", "test", exchange, "--seconds", str(SECONDS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=SECONDS + 60,
        check=False,
    )
    verdict = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    assert done.returncode == 0, verdict
    assert verdict.startswith(f"OK {exchange} ")
