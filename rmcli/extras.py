"""How to install an optional extra (``serve``, ``video``...): the pip command for this install.

rmcli installed from a checkout (``pip install -e .``) is told to install the extra from that
checkout, since the package index may not carry rmcli; otherwise ``pip install 'rmcli[...]'``.
"""

from __future__ import annotations

import shlex
from functools import cache
from pathlib import Path


@cache
def _checkout() -> Path | None:
    """The source checkout rmcli runs from, if it runs from one."""
    root = Path(__file__).resolve().parent.parent
    try:
        project = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return root if 'name = "rmcli"' in project else None


def pip_install(*extras: str) -> str:
    """The command that installs ``extras`` into the environment rmcli runs in."""
    names = ",".join(extras)
    root = _checkout()
    if root is None:
        return f"pip install 'rmcli[{names}]'"
    return f"pip install -e {shlex.quote(f'{root}[{names}]')}"
