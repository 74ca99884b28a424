"""Where an output lands when its name is not a plain file: devices, FIFOs, standard output,
symbolic links, 254-byte names; and what reaches stderr, the API's bounds, and the messages
said before a long wait."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import threading
import time

import pytest
from helpers import CAR, rmcli
from PIL import Image

from rmcli.errors import ConfigError, ModelError, RmcliError

PNG_END = b"IEND\xaeB`\x82"


def _photo(tmp_path):
    """A small photo (quick to cut out) in ``tmp_path``."""
    path = tmp_path / "in.jpg"
    with Image.open(CAR) as image:
        image.resize((160, 120)).save(path)
    return path


def _mknod(path, mode: int, device: tuple[int, int]) -> None:
    if os.geteuid() != 0:
        pytest.skip("creating a device node needs root")
    try:
        os.mknod(path, mode | 0o644, os.makedev(*device))
    except PermissionError:
        pytest.skip("this container may not create device nodes (no CAP_MKNOD)")


def _is_png(data: bytes, size=(160, 120)) -> bool:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.format == "PNG" and image.size == size and data.endswith(PNG_END)


@pytest.mark.parametrize("command", [["i", "{in}", "{out}"], ["remove", "{in}", "-o", "{out}"]])
def test_a_character_device_output_is_written_into_and_stays_a_device(
    u2netp_path, tmp_path, command
):
    photo = _photo(tmp_path)
    null = tmp_path / "null"
    _mknod(null, stat.S_IFCHR, (1, 3))  # /dev/null's numbers; never the system's own node
    args = [arg.format(**{"in": photo, "out": null}) for arg in command]
    done = rmcli(*args)
    assert done.returncode == 0, done.stderr
    info = os.lstat(null)
    assert stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(1, 3)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_fifo_output_is_streamed_into_and_stays_a_fifo(u2netp_path, tmp_path):
    photo = _photo(tmp_path)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    done = rmcli("remove", str(photo), "-o", str(fifo))
    reader.join(30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == f"{fifo}\n"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert received and _is_png(received[0])


@pytest.mark.parametrize("command", ["i", "remove"])
def test_dev_stdout_gets_the_cutout_alone(u2netp_path, tmp_path, command):
    photo = _photo(tmp_path)
    stdout = tmp_path / "stdout"
    stdout.symlink_to("/proc/self/fd/1")  # what /dev/stdout is; never the system's own link
    args = [str(photo), str(stdout)] if command == "i" else [str(photo), "-o", str(stdout)]
    done = rmcli(command, *args)
    assert done.returncode == 0, done.stderr
    assert _is_png(done.stdout)  # no written path after the image's last chunk
    assert stdout.is_symlink()


def test_a_block_device_output_is_refused_in_one_line(u2netp_path, tmp_path):
    photo = _photo(tmp_path)
    block = tmp_path / "disk.png"
    _mknod(block, stat.S_IFBLK, (7, 0))
    done = rmcli("remove", str(photo), "-o", str(block))
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert lines[0] == (
        f"{photo}: cannot write {block}: a block device; "
        "rmcli writes only files, character devices (/dev/null) and FIFOs"
    )
    assert stat.S_ISBLK(os.lstat(block).st_mode)


def test_a_symlink_output_replaces_its_target_which_keeps_its_mode(u2netp_path, tmp_path):
    photo = _photo(tmp_path)
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "cut.png"
    target.write_bytes(b"old")
    target.chmod(0o640)
    link = tmp_path / "link.png"
    link.symlink_to(target)
    done = rmcli("remove", str(photo), "-o", str(link))
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert _is_png(target.read_bytes())
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["cut.png"]  # no leftovers


def test_a_dangling_symlink_output_creates_its_target_with_the_umask(u2netp_path, tmp_path):
    photo = _photo(tmp_path)
    target = tmp_path / "new.png"
    link = tmp_path / "link.png"
    link.symlink_to("new.png")  # relative, resolved from the link's folder
    done = subprocess.run(
        f"umask 027 && exec {sys.executable} -m rmcli remove {photo} -o {link}",
        shell=True,
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and _is_png(target.read_bytes())
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_symlink_planted_by_another_user_in_a_sticky_folder_is_not_followed(
    u2netp_path, tmp_path
):
    if os.geteuid() != 0:
        pytest.skip("giving a link to another user needs root")
    photo = _photo(tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    link = shared / "out.png"
    link.symlink_to(victim)
    os.lchown(link, 12345, 12345)
    done = rmcli("remove", str(photo), "-o", str(link))
    assert done.returncode == 1
    assert done.stderr.decode().splitlines()[0] == (
        f"{photo}: cannot write {link}: a symbolic link in a shared sticky folder, "
        "owned by another user; not followed"
    )
    assert victim.read_bytes() == b"precious" and link.is_symlink()


def _animated_gif(tmp_path):
    path = tmp_path / "anim.gif"
    with Image.open(CAR) as car:
        small = car.resize((96, 72))
    frames = [small, small.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=[100, 200])
    return path


def test_a_clip_is_never_renamed_over_a_device_and_goes_through_a_symlink(u2netp_path, tmp_path):
    clip = _animated_gif(tmp_path)
    null = tmp_path / "null.gif"
    _mknod(null, stat.S_IFCHR, (1, 3))
    done = rmcli("remove", str(clip), "-o", str(null))
    assert done.returncode == 1
    assert done.stderr.decode().splitlines()[0] == (
        f"{clip}: cannot write a clip into {null}: clips go to files or folders only, "
        "not devices, FIFOs or standard output"
    )
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / ("b" * 250 + ".gif")  # a 254-byte name, too
    target.write_bytes(b"old")
    link = tmp_path / "link.gif"
    link.symlink_to(target)
    done = rmcli("remove", str(clip), "-o", str(link))
    assert done.returncode == 0, done.stderr
    assert link.is_symlink()
    with Image.open(target) as written:
        assert written.format == "GIF" and written.n_frames == 2
    assert [p.name for p in (tmp_path / "real").iterdir()] == [target.name]


@pytest.mark.parametrize("length", [254, 255])
def test_a_file_name_of_up_to_255_bytes_can_be_written(u2netp_path, tmp_path, length):
    photo = _photo(tmp_path)
    name = "a" * (length - 4) + ".png"
    done = rmcli("remove", str(photo), "-o", str(tmp_path / "out" / name))
    assert done.returncode == 0, done.stderr
    assert _is_png((tmp_path / "out" / name).read_bytes())
    assert [p.name for p in (tmp_path / "out").iterdir()] == [name]


def test_control_characters_in_file_names_never_reach_stderr_raw(u2netp_path, tmp_path):
    bad = "bad\x1b[2J\nname\x9b.jpg"
    (tmp_path / bad).write_bytes(b"not an image")
    done = rmcli("remove", bad, "--model", "u2netp", "-o", "out", cwd=tmp_path)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert not {"\x1b", "\x9b"} & set(err)
    assert err.splitlines() == [
        '"bad\\u001b[2J\\nname\\u009b.jpg: not an image (or a format Pillow cannot read)"',
        "0 written, 1 failed",
    ]
    done = rmcli("i", "missing\x1b[2J\n.jpg", "out.png", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == [
        '"missing\\u001b[2J\\n.jpg: no file matches"',
        "0 written, 1 failed",
    ]
    done = rmcli("remove", str(CAR), "--bg-image", "no\x1b[2J\n.png", cwd=tmp_path)
    assert done.returncode == 2  # an error of the run: the same quoting after its label
    assert done.stderr.decode() == (
        'rmcli: error: "background image no\\u001b[2J\\n.png: no such file"\n'
    )


def test_a_written_path_with_a_c1_control_character_is_escaped_on_stdout(u2netp_path, tmp_path):
    photo = _photo(tmp_path)
    done = rmcli("remove", str(photo), "-o", "out\x9b[2J.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == '"out\\u009b[2J.png"\n'


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("alpha_matting_erode_size", 10**9),
        ("alpha_matting_foreground_threshold", 256),
        ("crop_margin", -1),
        ("crop_margin", 10**9),
        ("matting_max_pixels", 10**12),
    ],
)
def test_the_python_api_holds_options_to_the_settings_bounds(tmp_path, option, value):
    from rmcli import Remover

    remover = Remover(model="u2netp")  # no session is built: the check comes first
    image = Image.new("RGB", (8, 8))
    with pytest.raises(ConfigError, match=rf"^{option}={value} is (above|below) the"):
        remover.remove(image, alpha_matting=True, **{option: value})
    with pytest.raises(ConfigError, match=rf"^{option}={value} is (above|below) the"):
        list(remover.map([str(CAR)], tmp_path, **{option: value}))
    with pytest.raises(ConfigError, match=rf"^{option}={value} is (above|below) the"):
        Remover(model="u2netp", **{option: value})
    assert issubclass(ConfigError, RmcliError)
    assert list(tmp_path.iterdir()) == []


def test_weights_that_cannot_be_fetched_say_how_to_import_them(tmp_path):
    from rmcli.contracts.model import Weights
    from rmcli.engine.weights import WeightsStore

    weights = Weights("w.onnx", urls=("http://127.0.0.1:9/w.onnx",))  # the discard port: closed
    with pytest.raises(ModelError) as raised:
        WeightsStore(tmp_path).ensure(weights, model_name="u2net")
    message = str(raised.value)
    assert message.startswith("cannot get weights w.onnx: http://127.0.0.1:9/w.onnx: ")
    assert message.endswith(
        f"Place the file at {tmp_path / 'w.onnx'}, or run `rmcli models import FILE --as u2net` "
        "to use it."
    )


def test_a_first_alpha_matting_run_says_it_compiles_before_the_wait(u2netp_path, tmp_path):
    pytest.importorskip("pymatting")
    photo = _photo(tmp_path)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}  # empty: nothing compiled
    process = subprocess.Popen(
        [sys.executable, "-m", "rmcli", "remove", str(photo), "-a", "-o", str(tmp_path / "o")],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    watchdog = threading.Timer(120, process.kill)  # never the whole compile
    watchdog.start()
    started = time.monotonic()
    try:
        first = process.stderr.readline().decode()
        waited = time.monotonic() - started
        still_running = process.poll() is None
    finally:
        watchdog.cancel()
        process.kill()
        process.wait()
        process.stderr.close()
    assert first == (
        "rmcli: compiling pymatting's alpha-matting kernels (numba); this happens once per "
        "install and can take a few minutes\n"
    )
    assert still_running and waited < 60
    assert not (tmp_path / "o").exists()
