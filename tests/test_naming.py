"""Where outputs go (rmcli.images.naming): one table of formats and suffixes, every output name
(beside the input, under a folder or URL, one named file, a clip or frame folder), and which
commands take each setting as a flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmcli.config.settings import SETTINGS, takes
from rmcli.contracts.jobs import Job
from rmcli.images import naming

pytestmark = pytest.mark.fast  # the plumbing tier: `pytest -m fast`, seconds


def test_every_output_format_has_one_suffix_and_each_suffix_names_its_format():
    assert set(naming.FORMAT_SUFFIX) == set(SETTINGS["output_format"].choices)
    for fmt, suffix in naming.FORMAT_SUFFIX.items():
        assert naming.SUFFIX_FORMAT[suffix] == fmt
    assert naming.SUFFIX_FORMAT[".jpeg"] == "jpg"
    assert naming.CLIP_ONLY_FORMATS < set(naming.FORMAT_SUFFIX)
    assert naming.FRAME_FOLDER_FORMATS < set(naming.FORMAT_SUFFIX) - naming.CLIP_ONLY_FORMATS


@pytest.mark.parametrize(
    "source, root, out_dir, fmt, expected",
    [
        (Path("in/a/cat.jpg"), None, None, "png", Path("in/a/cat.out.png")),  # beside
        (Path("in/a/cat.jpg"), Path("in"), Path("out"), "webp", Path("out/a/cat.webp")),
        (Path("in/a/cat.jpg"), None, Path("out"), "jpg", Path("out/cat.jpg")),  # named: no tree
        (None, None, Path("out"), "png", Path("out/stdin.png")),  # standard input
        (None, None, None, "png", None),  # standard input to standard output
        ("memory://b/in/cat.jpg", None, None, "png", "memory://b/in/cat.out.png"),
        (Path("in/cat.jpg"), None, "memory://b/out/", "webp", "memory://b/out/cat.webp"),
    ],
)
def test_each_input_has_one_output_name(source, root, out_dir, fmt, expected):
    assert naming.output_for(source, root, out_dir, fmt, to_stdout=False) == expected
    assert naming.output_for(source, root, out_dir, fmt, to_stdout=True) is None


def test_rmclis_own_outputs_are_recognised_by_name():
    for name in ("cat.out.png", "cat.OUT.WEBP", "clip.out.webm"):
        assert naming.OWN_OUTPUT.search(name), name
    for name in ("cat.png", "cat.out.tiff", "about.output.png"):
        assert not naming.OWN_OUTPUT.search(name), name


def test_an_output_file_names_its_format_unless_it_is_a_folder(tmp_path):
    assert naming.output_file_format(str(tmp_path / "cut.JPEG")) == "jpg"
    assert naming.output_file_format("memory://b/cut.webp") == "webp"
    assert naming.output_file_format(str(tmp_path / "cut.tiff")) is None
    assert naming.output_file_format(str(tmp_path / "cut.png") + "/") is None
    (tmp_path / "folder.png").mkdir()
    assert naming.output_file_format(str(tmp_path / "folder.png")) is None
    assert naming.output_file_format(naming.STDIO) is None
    assert naming.output_file_format(None) is None


def test_one_output_file_refuses_to_overwrite_its_input(tmp_path):
    photo = tmp_path / "cat.png"
    job = Job(str(photo), photo, None)
    assert naming.to_file(job, str(tmp_path / "cut.png")).output == tmp_path / "cut.png"
    same = naming.to_file(job, str(photo))
    assert same.error == f"output {photo} would overwrite the input"


def test_a_clip_takes_its_formats_suffix_or_becomes_a_frame_folder(tmp_path):
    out = tmp_path / "out"
    jobs = [
        Job("a.mp4", tmp_path / "a.mp4", out / "a.png"),
        Job("b.gif", tmp_path / "b.gif", out / "b.png"),
        Job("still.jpg", tmp_path / "still.jpg", out / "still.png"),
    ]
    formats = {"a.mp4": "webm", "b.gif": "png", "still.jpg": None}
    planned = naming.clip_outputs(jobs, lambda job: formats[job.label], "png")
    assert [job.output for job in planned] == [out / "a.webm", out / "b", out / "still.png"]
    assert all(job.error is None for job in planned)


def test_clip_outputs_that_clash_or_cannot_be_written_are_errors(tmp_path):
    out = tmp_path / "out"
    jobs = [
        Job("a.mp4", tmp_path / "a.mp4", out / "a.png"),
        Job("a.webm", tmp_path / "x" / "a.webm", out / "a.webm"),  # a still image's name
        Job("c.mp4", tmp_path / "c.mp4", None),  # to standard output
        Job("d.mp4", tmp_path / "d.mp4", "memory://b/d.png"),  # a URL
    ]
    formats = {"a.mp4": "webm", "a.webm": None, "c.mp4": "webm", "d.mp4": "webm"}
    planned = naming.clip_outputs(jobs, lambda job: formats[job.label], "png")
    assert planned[0].error == f"output {out / 'a.webm'} is already the output of another input"
    assert planned[1] == jobs[1]
    assert planned[2].error.startswith("a clip cannot be written to standard output")
    assert planned[3].error == "clips are written to local folders only, not memory://b/d.png"


def test_serve_takes_every_session_setting_and_remove_every_remove_setting():
    for key, setting in SETTINGS.items():
        if setting.session:
            assert takes("serve", key) and takes("remove", key), key
        if setting.command:
            assert takes(setting.command, key), key
    assert takes("serve", "max_pixels") and not takes("serve", "output_format")
    assert not takes("remove", "serve_host")
