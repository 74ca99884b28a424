"""Remover.stats(): per-session records a service can log or export."""

from __future__ import annotations

import threading

import pytest
from helpers import EXAMPLES
from PIL import Image

from rmcli.engine.remover import Remover
from rmcli.engine.stats import Recorder, percentile


def test_percentile_interpolates_between_ranks():
    assert percentile([], 0.9) == 0.0
    assert percentile([5.0], 0.9) == 5.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == pytest.approx(2.5)
    assert percentile([float(i) for i in range(11)], 0.9) == pytest.approx(9.0)


def test_remover_records_every_mask_and_can_start_afresh(u2netp_path):
    remover = Remover(model="u2netp", backend="cpu-pinned", intra_threads=1)
    empty = remover.stats()
    assert (empty.count, empty.mean_seconds, empty.cpu_seconds) == (0, 0.0, 0.0)

    images = [Image.open(EXAMPLES / name) for name in ("car-1.jpg", "girl-1.jpg", "car-3.jpg")]
    for image in images:
        remover.remove(image)
    stats = remover.stats()
    assert (stats.model, stats.backend, stats.count) == ("u2netp", "cpu-pinned", 3)
    assert 0 < stats.median_seconds <= stats.p90_seconds <= stats.total_seconds
    assert stats.mean_seconds == pytest.approx(stats.total_seconds / 3)
    assert stats.cpu_seconds > 0  # the model really ran in this process
    assert stats.images_per_second == pytest.approx(3 / stats.total_seconds)

    remover.reset_stats()
    remover.mask(images[0])
    assert remover.stats().count == 1


def test_a_failing_call_is_not_recorded():
    recorder = Recorder("m", "b")
    with pytest.raises(ValueError), recorder.measure():
        raise ValueError("bad image")
    assert recorder.snapshot().count == 0


def test_records_from_many_threads_are_all_kept():
    recorder = Recorder("m", "b")

    def work():
        for _ in range(200):
            with recorder.measure():
                pass

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert recorder.snapshot().count == 800
