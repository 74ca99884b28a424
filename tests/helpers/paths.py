"""Where the tests find the checkout, their data, the example photos and the weights cache."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
EXAMPLES = ROOT / "examples"
CAR = EXAMPLES / "car-1.jpg"
GIRL = EXAMPLES / "girl-1.jpg"
WEIGHTS_CACHE = ROOT / ".pytest_cache" / "rmcli-models"  # shared by test runs, like a user cache
