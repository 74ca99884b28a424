"""Helpers shared by the tests (fixtures stay in ``tests/conftest.py``).

``from helpers import rmcli, alpha_of, CAR`` (``rmcli_here``: the CLI in this process);
``helpers.httpserve`` serves a folder on loopback, ``helpers.torture`` makes bad and odd
input files.
"""

from helpers.cli import rmcli, rmcli_here
from helpers.paths import CAR, DATA, EXAMPLES, GIRL, ROOT, WEIGHTS_CACHE
from helpers.pixels import alpha_of, phash

__all__ = [
    "CAR",
    "DATA",
    "EXAMPLES",
    "GIRL",
    "ROOT",
    "WEIGHTS_CACHE",
    "alpha_of",
    "phash",
    "rmcli",
    "rmcli_here",
]
