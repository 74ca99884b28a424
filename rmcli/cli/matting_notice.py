"""Alpha matting on the command line: say so before numba compiles pymatting's kernels.

pymatting's kernels are compiled by numba when the package is first imported (minutes on a
small machine, once per install: numba caches them), so a first ``-a`` run would otherwise be
silent for that long.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("rmcli.cli.matting_notice")
COMPILING = (
    "compiling pymatting's alpha-matting kernels (numba); this happens once per install "
    "and can take a few minutes"
)


def say_if_compiling(options: Any) -> None:
    """With alpha matting on, say that pymatting's kernels will be compiled when numba's cache
    holds none of them (the first matted image then waits for that)."""
    if not options.compose.alpha_matting:
        return
    spec = importlib.util.find_spec("pymatting")
    if spec is None:  # the options check has already said what to install
        return
    if not _kernels_cached(spec.submodule_search_locations or []):
        log.info(COMPILING)


def _kernels_cached(package: list[str]) -> bool:
    """True when numba's cache (where it would look for pymatting) holds compiled kernels."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        places = [Path(os.environ["NUMBA_CACHE_DIR"])]
    else:  # beside the package when writable, else the user's cache folder
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        places = [*map(Path, package), Path(cache) / "numba"]
    found = (next(place.rglob("estimate_foreground_ml.*.nbi"), None) for place in places)
    return any(found)
