"""rembg's surfaces against rembg 2.0.86 itself, run in the same test on the same photos.

``rmcli i`` (with and without ``-bgc``, and with a ``u2net_custom`` session), ``rmcli p``,
``rmcli.compat.remove`` (bytes and PIL input) and ``rmcli s``'s ``/api/remove`` must give
rembg's pixels exactly: premultiplied colour, RGBA over an opaque background. rembg runs in
the venv that the benchmarks make (benchmarks/bench_vs_rembg.py ``ensure_rembg``, on rmcli's
ONNX Runtime and Pillow versions, so both tools resample with the same code); CI creates it
(``.ci/run``), elsewhere the tests are skipped when it is missing.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import EXAMPLES, ROOT, WEIGHTS_CACHE, rmcli
from PIL import Image
from serving import LISTENING, Server

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_vs_rembg import DEFAULT_VENV, ensure_rembg  # noqa: E402

PHOTOS = [EXAMPLES / "car-1.jpg", EXAMPLES / "animal-1.jpg"]
CAR = PHOTOS[0]
WHITE = ("255", "255", "255", "255")

# What rembg computes, in one process of its own venv: its commands i and p (through
# click, exactly as `rembg i ...` runs them) and its remove() as its server and users call it.
REMBG_SCRIPT = textwrap.dedent(
    """
    import io, json, sys
    from pathlib import Path
    from click.testing import CliRunner
    from PIL import Image
    from rembg import new_session, remove
    from rembg.commands.i_command import i_command
    from rembg.commands.p_command import p_command

    out, home, car, folder = (Path(a) for a in sys.argv[1:5])
    custom = json.dumps({"model_path": str(home / "u2netp.onnx")})
    runs = {
        "i": (i_command, ["-m", "u2netp", str(car), str(out / "i.png")]),
        "i-bgc": (i_command, ["-m", "u2netp", "-bgc", "255", "255", "255", "255",
                              str(car), str(out / "i-bgc.png")]),
        "i-custom": (i_command, ["-m", "u2net_custom", "-x", custom, str(car),
                                 str(out / "i-custom.png")]),
        "p": (p_command, ["-m", "u2netp", str(folder), str(out / "p")]),
    }
    for name, (command, args) in runs.items():
        done = CliRunner().invoke(command, args)
        assert done.exit_code == 0, (name, done.output, done.exception)
    session = new_session("u2netp")
    data = car.read_bytes()
    (out / "api-bytes.png").write_bytes(remove(data, session=session))
    remove(Image.open(car), session=session, bgcolor=(30, 144, 255, 255)).save(out / "api-pil.png")
    # rembg s: remove(content, session=..., a, af, ab, ae, om, ppm, dc, vm, bgcolor=bgc)
    served = remove(data, session=session, post_process_mask=True, bgcolor=(0, 0, 0, 255))
    (out / "s.png").write_bytes(served)
    # rembg b: each RGB24 frame becomes Image.frombytes(...), then remove(frame, session=...,
    # **its flags), -bgc 0 0 0 0 included (its asyncio stdin does not run under CliRunner)
    frame = Image.frombytes("RGB", (480, 360), Image.open(car).convert("RGB").tobytes())
    flags = dict(alpha_matting=False, alpha_matting_foreground_threshold=240,
                 alpha_matting_background_threshold=10, alpha_matting_erode_size=10,
                 only_mask=False, post_process_mask=False, decontaminate=False,
                 vitmatte=False, bgcolor=(0, 0, 0, 0))
    remove(frame, session=session, **flags).save(out / "b.png", format="PNG")
    # the custom sessions' pre- and post-processing, on a fixed network output (no model run)
    import numpy as np
    from rembg.sessions import sessions_class
    output = np.load(out / "network-output.npy")
    custom = {}
    for cls in sessions_class:
        if cls.name() not in ("u2net_custom", "dis_custom", "ben_custom"):
            continue
        seen = {}
        class Inner:
            def run(self, names, feed):
                return [output]
        session = object.__new__(cls)
        session.inner_session = Inner()
        def normalize(img, mean, std, size, *args, **kwargs):
            seen.update(mean=list(mean), std=list(std), size=list(size))
            return {}
        session.normalize = normalize
        [mask] = session.predict(Image.open(car))
        mask.save(out / f"{cls.name()}.png")
        custom[cls.name()] = seen
    (out / "custom.json").write_text(json.dumps(custom))
    """
)


@pytest.fixture(scope="module")
def rembg_home(tmp_path_factory, u2netp_path) -> Path:
    """A U2NET_HOME with the u2netp weights (rembg's custom sessions must read from there)."""
    home = tmp_path_factory.mktemp("u2net-home")
    shutil.copy(u2netp_path, home / "u2netp.onnx")
    return home


@pytest.fixture(scope="module")
def rembg_out(tmp_path_factory, rembg_home) -> Path:
    """rembg 2.0.86's outputs for every surface, computed now by rembg in its own venv."""
    if not (DEFAULT_VENV / "bin" / "rembg").exists():
        pytest.skip(
            f"rembg 2.0.86 is not installed in {DEFAULT_VENV} (create it with "
            "`python benchmarks/bench_vs_rembg.py --setup`; .ci/run does)"
        )
    ensure_rembg(DEFAULT_VENV)  # aligns its Pillow with this environment's
    out = tmp_path_factory.mktemp("rembg-out")
    folder = tmp_path_factory.mktemp("photos")
    for photo in PHOTOS:
        shutil.copy(photo, folder / photo.name)
    rng = np.random.default_rng(0)  # a network output for the custom sessions' processing
    np.save(out / "network-output.npy", rng.normal(size=(1, 1, 64, 64)).astype(np.float32))
    script = out / "rembg_refs.py"
    script.write_text(REMBG_SCRIPT)
    env = {**os.environ, "U2NET_HOME": str(rembg_home), "OMP_NUM_THREADS": "2"}
    args = [str(DEFAULT_VENV / "bin" / "python"), str(script), str(out), str(rembg_home)]
    done = subprocess.run(
        [*args, str(CAR), str(folder)], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def pixels(source) -> tuple[str, np.ndarray]:
    image = source if isinstance(source, Image.Image) else Image.open(source)
    return image.mode, np.asarray(image)


def assert_same_image(ours, theirs) -> None:
    """Same mode (RGBA, as rembg writes) and every value equal."""
    our_mode, our_pixels = pixels(ours)
    their_mode, their_pixels = pixels(theirs)
    assert our_mode == their_mode == "RGBA"
    assert our_pixels.shape == their_pixels.shape
    diff = np.abs(our_pixels.astype(int) - their_pixels.astype(int))
    assert diff.max() == 0, f"{int((diff > 0).sum())} values differ, by up to {diff.max()}"


def test_i_gives_rembgs_premultiplied_cutout(rembg_out, tmp_path):
    done = rmcli("i", "-m", "u2netp", str(CAR), str(tmp_path / "car.png"))
    assert done.returncode == 0, done.stderr
    assert_same_image(tmp_path / "car.png", rembg_out / "i.png")


def test_i_with_bgc_gives_rembgs_rgba(rembg_out, tmp_path):
    done = rmcli("i", "-m", "u2netp", "-bgc", *WHITE, str(CAR), str(tmp_path / "car.png"))
    assert done.returncode == 0, done.stderr
    assert_same_image(tmp_path / "car.png", rembg_out / "i-bgc.png")


def test_i_with_a_u2net_custom_session(rembg_out, u2netp_path, tmp_path):
    """rembg's custom sessions: the family comes from the session name, the file from -x."""
    extras = json.dumps({"model_path": str(u2netp_path)})
    out = tmp_path / "car.png"
    done = rmcli("i", "-m", "u2net_custom", "-x", extras, str(CAR), str(out))
    assert done.returncode == 0, done.stderr
    assert_same_image(out, rembg_out / "i-custom.png")


@pytest.mark.parametrize("name", ["u2net_custom", "dis_custom", "ben_custom"])
def test_custom_sessions_process_like_rembgs(rembg_out, u2netp_path, name):
    """Each custom session's family gives rembg's input size and normalisation, and the same
    mask from the same network output (the network itself is the user's file)."""
    from rmcli.compat import new_session

    model = new_session(name, model_path=str(u2netp_path)).remover.model
    theirs = json.loads((rembg_out / "custom.json").read_text())[name]
    assert [list(model.mean), list(model.std), list(model.input_size)] == [
        theirs["mean"],
        theirs["std"],
        theirs["size"],
    ]
    output = np.load(rembg_out / "network-output.npy")
    size = Image.open(CAR).size
    ours = np.asarray(model.to_mask([output], size))
    assert np.array_equal(ours, np.asarray(Image.open(rembg_out / f"{name}.png")))


def test_custom_session_needs_its_model_path(tmp_path):
    done = rmcli("i", "-m", "dis_custom", str(CAR), str(tmp_path / "x.png"))
    assert done.returncode == 2
    assert "dis_custom needs -x" in done.stderr.decode()
    assert not (tmp_path / "x.png").exists()


def test_p_gives_rembgs_cutouts(rembg_out, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for photo in PHOTOS:
        shutil.copy(photo, folder / photo.name)
    done = rmcli("p", "-m", "u2netp", str(folder), str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    for photo in PHOTOS:
        assert_same_image(
            tmp_path / "out" / f"{photo.stem}.png", rembg_out / "p" / f"{photo.stem}.png"
        )


def test_b_gives_rembgs_frames(rembg_out, tmp_path):
    frame = Image.open(CAR).convert("RGB")
    assert frame.size == (480, 360)
    pattern = str(tmp_path / "f-%d.png")
    done = rmcli("b", "480", "360", "-m", "u2netp", "-o", pattern, stdin=frame.tobytes())
    assert done.returncode == 0, done.stderr
    assert_same_image(tmp_path / "f-0.png", rembg_out / "b.png")


def test_compat_remove_with_bytes_and_pil(rembg_out):
    from rmcli.compat import new_session, remove

    session = new_session("u2netp")
    data = CAR.read_bytes()
    result = remove(data, session=session)
    assert isinstance(result, bytes)
    assert_same_image(Image.open(io.BytesIO(result)), rembg_out / "api-bytes.png")
    image = remove(Image.open(CAR), session=session, bgcolor=(30, 144, 255, 255))
    assert isinstance(image, Image.Image)
    assert_same_image(image, rembg_out / "api-pil.png")
    array = remove(np.asarray(Image.open(CAR)), session=session)
    assert isinstance(array, np.ndarray)
    assert np.array_equal(array, np.asarray(Image.open(rembg_out / "api-bytes.png")))


def test_compat_refuses_what_it_cannot_honour():
    from rmcli.compat import new_session, remove
    from rmcli.errors import UsageError

    with pytest.raises(UsageError, match="dis_custom needs model_path"):
        new_session("dis_custom")
    with pytest.raises(UsageError, match="sess_opts"):
        new_session("u2netp", sess_opts=object())
    with pytest.raises(UsageError, match="input type str"):
        remove("car-1.jpg")
    with pytest.raises(UsageError, match="decontaminate is rembg-only"):
        remove(b"", decontaminate=True)


def start_s(folder: Path) -> Server:
    """``rmcli s -p 0`` (rembg's server command) with an empty config; waits until ready."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RMCLI_")}
    env.update(
        RMCLI_CONFIG=str(folder / "config.toml"),
        RMCLI_MODELS_DIR=str(WEIGHTS_CACHE),
        RMCLI_MODEL="u2netp",
    )
    log = folder / "server.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "rmcli", "s", "-p", "0", "-h", "127.0.0.1", "-t", "1"],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = Server(process, "", log)
    deadline = time.monotonic() + 120
    while not server.url or httpx.get(server.url + "/readyz").status_code != 200:
        match = LISTENING.search(server.log_text())
        server.url = match[1] if match else ""
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"rmcli s did not start:\n{server.log_text()}")
        time.sleep(0.1)
    return server


def test_s_api_remove_gives_rembgs_png(rembg_out, tmp_path):
    """rembg's form fields, and bgc from the query string even on POST, as rembg reads it."""
    server = start_s(tmp_path)
    try:
        with server.client() as client:
            answer = client.post(
                "/api/remove?bgc=0,0,0,255",
                files={"file": ("car-1.jpg", CAR.read_bytes(), "image/jpeg")},
                data={"model": "u2netp", "ppm": "true"},
            )
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "image/png"
        assert_same_image(Image.open(io.BytesIO(answer.content)), rembg_out / "s.png")
    finally:
        assert server.stop() == 0
