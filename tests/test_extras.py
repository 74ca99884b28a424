"""Install hints name the command that works for this installation."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from rmcli.extras import pip_install

pytestmark = pytest.mark.fast


def test_a_checkout_is_told_to_install_the_extra_from_itself():
    from helpers import ROOT

    assert pip_install("serve") == f"pip install -e '{ROOT}[serve]'"
    assert pip_install("serve", "video") == f"pip install -e '{ROOT}[serve,video]'"


def test_an_installed_package_is_told_to_use_the_package_index(tmp_path):
    """The same module outside any checkout (as in site-packages)."""
    package = tmp_path / "site" / "rmcli"
    package.mkdir(parents=True)
    shutil.copy(sys.modules["rmcli.extras"].__file__, package / "extras.py")
    (package / "__init__.py").write_text("")
    done = subprocess.run(
        [sys.executable, "-S", "-c", "from rmcli.extras import pip_install as p; print(p('gpu'))"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pip install 'rmcli[gpu]'"
