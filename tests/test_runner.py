"""The library batch runner, fast: a tiny generated ONNX graph stands in for u2netp here
(what users see is tested on u2netp elsewhere); plumbing is what is under test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from rmcli import Batch, Remover, UsageError
from rmcli.contracts.model import Model

pytestmark = pytest.mark.fast  # the plumbing tier: `pytest -m fast`, seconds


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A 1-node network with u2netp's input and output shapes: the mean of the channels."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 320, 320])
    y = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 320, 320])
    node = helper.make_node("ReduceMean", ["input"], ["mask"], axes=[1], keepdims=1)
    graph = helper.make_graph([node], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture
def remover(tiny_model):
    return Remover(model_path=str(tiny_model), model_family="u2net")


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for i in range(6):
        pixels = rng.integers(0, 255, (24 + i, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"p{i}.png")
    return folder


def test_results_come_in_input_order_with_failures_named(remover, photos, tmp_path):
    (photos / "p3.png").write_bytes(b"not an image")
    inputs = [str(photos), str(tmp_path / "missing.png")]
    batch = Batch(remover, inputs, tmp_path / "out")
    results = list(batch.run())
    labels = [r.job.label for r in results]
    assert labels == [str(photos / f"p{i}.png") for i in range(6)] + [inputs[1]]
    failed = {r.job.label: r.error for r in results if r.error}
    assert set(failed) == {str(photos / "p3.png"), inputs[1]}
    assert all(error.startswith(label + ": ") for label, error in failed.items())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"p{i}.png" for i in (0, 1, 2, 4, 5)
    ]
    summary = batch.summary
    assert (summary.written, summary.failed, summary.interrupted) == (5, 2, False)
    assert summary.line() == "5 written, 2 failed"
    assert batch.stats.report().images == 7


def test_skip_existing_resumes_a_batch(tiny_model, photos, tmp_path):
    remover = Remover(model_path=str(tiny_model), model_family="u2net", skip_existing=True)
    first = Batch(remover, [str(photos)], tmp_path / "out")
    assert len(list(first.run())) == 6
    (tmp_path / "out" / "p2.png").unlink()
    again = Batch(remover, [str(photos)], tmp_path / "out")
    assert [j.label for j in again.jobs] == [str(photos / "p2.png")]
    list(again.run())
    assert again.summary.line() == "1 written, 5 skipped (output exists), 0 failed"


def test_a_stopped_batch_starts_nothing_more_and_says_so(remover, photos, tmp_path):
    batch = Batch(remover, [str(photos)], tmp_path / "out")
    batch.stop.set()  # what the first Ctrl-C or SIGTERM does
    assert list(batch.run()) == []
    summary = batch.summary
    assert summary.interrupted and summary.not_started == 6
    assert summary.line().endswith("6 not started (interrupted)")


@dataclass(frozen=True)
class BrokenOnNarrowImages(Model):
    """A model plugin with a bug: its output handling fails on 25-pixel-high images."""

    def to_mask(self, outputs, size):
        if size[1] == 25:
            raise ZeroDivisionError("division by zero")
        return super().to_mask(outputs, size)


def test_an_unexpected_error_in_one_input_is_that_inputs_failure(remover, photos, tmp_path):
    remover.model = BrokenOnNarrowImages(**vars(remover.model))
    batch = Batch(remover, [str(photos)], tmp_path / "out")
    errors = [r.error for r in batch.run() if r.error]
    assert errors == [
        f"{photos / 'p1.png'}: internal error: ZeroDivisionError: division by zero "
        "(RMCLI_DEBUG=1 shows the traceback)"
    ]
    assert batch.summary.written == 5


def test_map_yields_in_input_order_and_stdout_takes_one_input(remover, photos, tmp_path):
    names = [r.job.label for r in remover.map([photos / "p4.png", photos / "p0.png"], tmp_path)]
    assert names == [str(photos / "p4.png"), str(photos / "p0.png")]
    with pytest.raises(UsageError, match="takes exactly one input"):
        Batch(remover, [str(photos)], "-")
    with pytest.raises(UsageError, match="no input images"):
        Batch(remover, [str(tmp_path / "empty-glob-*.png")][:0], tmp_path)


def test_encoding_threads_come_from_the_layout(remover):
    assert remover.layout.encode_threads == max(
        1, remover.layout.usable_cpus // remover.settings["inflight"]
    )


def test_a_format_a_program_chose_beats_the_output_files_suffix(tiny_model, photos, tmp_path):
    """What counts is the layer a value came from, whatever the text that names it."""
    from rmcli.config.settings import Layer, resolve

    base = resolve(env={}, path=tmp_path / "absent.toml")
    chosen = base.with_values("my program", model_path=str(tiny_model), model_family="u2net")
    for settings, fmt in (
        (chosen.with_values("my program", output_format="png"), "png"),  # chosen: kept
        (chosen.derived("derived by a front end", output_format="png"), "webp"),  # suffix
        (chosen, "webp"),  # the default: the suffix decides
    ):
        assert settings.layer("model_path") is Layer.API
        batch = Batch(Remover(settings=settings), [photos / "p0.png"], tmp_path / "out.webp")
        assert batch.options.fmt == fmt


def test_an_executor_plugin_needs_only_names_from_rmcli(remover, photos, tmp_path):
    import rmcli

    class InOrder(rmcli.Executor):
        name = "in-order"
        in_process = True

        def run(self, remover, jobs, options, stop=None, clock=rmcli.untimed):
            return enumerate(rmcli.run_local(remover, jobs, options, stop, clock))

    options = rmcli.OutputOptions.from_settings(remover.settings)
    sources = sorted(photos.iterdir())
    jobs = [rmcli.Job(p.name, p, tmp_path / f"{p.stem}.png") for p in sources]
    results = list(InOrder().run(remover, jobs, options, rmcli.Stop()))
    assert [(i, r.error) for i, r in results] == [(i, None) for i in range(len(jobs))]
    assert all(job.output.exists() for job in jobs)

    stop = rmcli.Stop()
    stop.abort()  # a second Ctrl-C: started jobs write nothing more
    late = rmcli.Job("late", sources[0], tmp_path / "late.png")
    rmcli.process(remover, rmcli.Job("now", sources[0], tmp_path / "now.png"), options)
    assert (tmp_path / "now.png").exists()
    assert list(InOrder().run(remover, [late], options, stop)) == []
    assert not (tmp_path / "late.png").exists()
