"""What a batch takes from its arguments: folder scans and globs leave out rmcli's own
outputs, the same file is one job, an odd file name is one quoted output line.
"""

from __future__ import annotations

from helpers import rmcli
from PIL import Image

from rmcli.images.inputs import plan_jobs


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


def test_a_newline_in_a_file_name_is_one_quoted_stdout_line(u2netp_path, tmp_path):
    Image.new("RGB", (40, 30), "red").save(tmp_path / "new\nline.png")
    Image.new("RGB", (40, 30), "red").save(tmp_path / "plain.png")
    done = rmcli("remove", "new\nline.png", "plain.png", "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ['"out/new\\nline.png"', "out/plain.png"]
    assert (tmp_path / "out" / "new\nline.png").is_file()
