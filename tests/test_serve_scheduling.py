"""The service's parts without HTTP: core budget, fair slots, memory budget."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("fastapi")
pytestmark = pytest.mark.fast  # the plumbing tier: `pytest -m fast`, seconds

from rmcli.serve.scheduler import FairScheduler  # noqa: E402
from rmcli.serve.slots import SlotBudget  # noqa: E402


@pytest.mark.parametrize(
    ("usable", "wanted", "slots", "threads"),
    [(2, 0, 1, 2), (2, 2, 2, 1), (8, 0, 4, 2), (8, 3, 3, 2), (4, 9, 4, 1), (1, 0, 1, 1)],
)
def test_core_budget_never_gives_more_threads_than_cores(usable, wanted, slots, threads):
    budget = SlotBudget.split(usable, wanted)
    assert (budget.slots, budget.threads) == (slots, threads)
    assert budget.slots * budget.threads <= usable


def test_slots_go_round_robin_across_models_and_fifo_within_one():
    async def scenario() -> list[str]:
        scheduler = FairScheduler(1)
        order: list[str] = []
        await scheduler.acquire("a")  # the one slot is taken

        async def request(model: str, n: int) -> None:
            await scheduler.acquire(model)
            order.append(f"{model}{n}")
            await asyncio.sleep(0)
            scheduler.release()

        tasks = [asyncio.create_task(request("a", n)) for n in range(4)]
        await asyncio.sleep(0)
        tasks += [asyncio.create_task(request("b", n)) for n in range(2)]
        await asyncio.sleep(0)
        assert scheduler.waiting == 6
        scheduler.release()
        await asyncio.gather(*tasks)
        assert scheduler.free == 1 and scheduler.waiting == 0
        return order

    # b's requests arrived after all of a's but are served in turn, not after them, and
    # first: a already had the slot
    assert asyncio.run(scenario()) == ["b0", "a0", "b1", "a1", "a2", "a3"]


def _served_in_order(costs: dict[str, float], arrivals: list[str], admit=None) -> list[str]:
    """The order in which a one-slot scheduler with these per-model costs serves requests
    queued in ``arrivals`` order while its slot is held by one more request of the first."""

    async def scenario() -> list[str]:
        scheduler = FairScheduler(1, costs.__getitem__, admit or (lambda key: True))
        order: list[str] = []
        await scheduler.acquire(arrivals[0])

        async def request(model: str) -> None:
            await scheduler.acquire(model)
            order.append(model)
            await asyncio.sleep(0)
            scheduler.release(model)

        tasks = [asyncio.create_task(request(m)) for m in arrivals]
        await asyncio.sleep(0)
        scheduler.release(arrivals[0])
        await asyncio.gather(*tasks)
        return order

    return asyncio.run(scenario())


def test_light_requests_are_not_stuck_behind_heavy_ones_nor_the_heavy_one_starved():
    """Slots go by cost: a model 8x heavier gets one request in per 8 of a light one."""
    arrivals = ["heavy"] * 3 + ["light"] * 20
    order = _served_in_order({"heavy": 8.0, "light": 1.0}, arrivals)
    assert order[0] == "light"  # the heavy model already held the slot
    heavy_at = [i for i, m in enumerate(order) if m == "heavy"]
    assert heavy_at == [8, 17, 22]  # one heavy per 8 light, not 3 heavy first or last
    # by count, round robin would have served the heavy ones at 1, 3 and 5


def test_a_model_that_does_not_fit_in_memory_is_capped_but_not_starved():
    held = {"heavy": 0, "light": 0}
    limit = {"heavy": 1, "light": 5}  # one heavy run fits at a time

    def admit(key: str) -> bool:
        if held[key] >= limit[key]:
            return False
        held[key] += 1
        return True

    async def scenario() -> list[str]:
        scheduler = FairScheduler(2, {"heavy": 1.0, "light": 1.0}.__getitem__, admit)
        order: list[str] = []

        async def request(model: str) -> None:
            await scheduler.acquire(model)
            order.append(model)
            await asyncio.sleep(0.01)
            held[model] -= 1
            scheduler.release(model)

        await asyncio.gather(*(request(m) for m in ["heavy"] * 3 + ["light"] * 3))
        return order

    order = asyncio.run(scenario())
    assert sorted(order) == ["heavy"] * 3 + ["light"] * 3  # every one served
    assert order[:2] == ["heavy", "light"]  # the second slot went to light, not a 2nd heavy


def test_the_deadline_estimate_counts_fair_shares_not_the_whole_queue():
    """A light request behind 8 heavy ones (3 s each) waits about its share, not 24 s."""

    async def scenario() -> tuple[float, float]:
        seconds = {"heavy": 3.0, "light": 0.4}.__getitem__
        scheduler = FairScheduler(1, seconds)
        await scheduler.acquire("heavy")
        waiters = [asyncio.create_task(scheduler.acquire("heavy")) for _ in range(8)]
        await asyncio.sleep(0)
        light = scheduler.expected("light", seconds)
        heavy = scheduler.expected("heavy", seconds)
        for waiter in waiters:
            waiter.cancel()
        return light, heavy

    light, heavy = asyncio.run(scenario())
    assert light == pytest.approx(0.4 + 0.4 + 3.0)  # its own, the heavy share, the running one
    assert heavy == pytest.approx(9 * 3.0 + 3.0)


def test_a_cancelled_waiter_leaves_the_queue_and_never_holds_a_slot():
    async def scenario() -> None:
        scheduler = FairScheduler(1)
        await scheduler.acquire("a")
        gone = asyncio.create_task(scheduler.acquire("a"))
        stays = asyncio.create_task(scheduler.acquire("b"))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        assert scheduler.waiting == 1
        scheduler.release()
        await stays
        scheduler.release()
        assert scheduler.free == 1 and scheduler.waiting == 0

    asyncio.run(scenario())


def test_slots_can_grow_to_serve_waiters_and_shrink_without_revoking_held_ones():
    """A Dask cluster's threads come and go: K follows them."""

    async def scenario() -> None:
        scheduler = FairScheduler(0)  # no worker yet: everybody waits
        waiters = [asyncio.create_task(scheduler.acquire("a")) for _ in range(3)]
        await asyncio.sleep(0)
        assert scheduler.waiting == 3
        scheduler.resize(2)  # a worker with 2 threads joins: two waiters get a slot
        await asyncio.sleep(0)
        assert [w.done() for w in waiters] == [True, True, False]
        scheduler.resize(1)  # it leaves, another with 1 thread joins; both slots still held
        assert scheduler.busy == 2 and scheduler.free == -1
        scheduler.release()  # the slot that no longer exists goes away...
        await asyncio.sleep(0)
        assert not waiters[2].done() and scheduler.free == 0
        scheduler.release()  # ...the next one goes to the waiter
        await asyncio.sleep(0)
        assert waiters[2].done() and scheduler.waiting == 0
        scheduler.release()
        assert scheduler.free == 1 and scheduler.busy == 0

    asyncio.run(scenario())


def test_slots_sharing_one_openvino_session_get_a_stream_each(tmp_path):
    """With one stream, two slots' runs on one OpenVINO session would wait for each other."""
    from rmcli.config.settings import resolve

    settings = resolve({"backend": "openvino"}, env={}, path=tmp_path / "none.toml")
    sized = SlotBudget.split(4, 2).slot_settings(settings)
    assert (sized["intra_threads"], sized["openvino_streams"]) == (2, 2)
    assert sized["allow_spinning"] is False
    assert sized.source("openvino_streams") == "serve: one OpenVINO stream per slot"
    chosen = settings.with_values("flag --openvino-streams", openvino_streams=1)
    assert SlotBudget.split(4, 2).slot_settings(chosen)["openvino_streams"] == 1
    assert SlotBudget.split(4, 1).slot_settings(settings)["openvino_streams"] == 1


def _budget(total: int, **costs: tuple[int, int]):
    from rmcli.serve.memory_budget import MemoryBudget, ModelCost

    dropped: list[str] = []
    budget = MemoryBudget(total, "test", dropped.append)
    for name, (session, run) in costs.items():
        budget.costs[name] = ModelCost(session_bytes=session, run_bytes=run, measured=True)
    return budget, dropped


def test_sessions_are_evicted_by_bytes_least_recently_used_first_never_with_work_in_flight():
    budget, dropped = _budget(1000, a=(300, 100), b=(300, 100), c=(300, 100))
    assert budget.reserve("a") and budget.reserve("b")  # 400 + 400
    budget.release("a")
    assert budget.reserve("c")  # 400 more: a (idle, least recently used) goes, b is busy
    assert dropped == ["a"] and set(budget.loaded()) == {"b", "c"}
    assert budget.evictions == {"a": 1}
    assert not budget.reserve("a")  # b and c both have work in flight: a waits
    assert dropped == ["a"]
    budget.release("c")
    assert budget.reserve("a") and dropped == ["a", "c"]


def test_a_models_concurrent_runs_are_capped_by_what_fits():
    budget, _ = _budget(1000, heavy=(400, 250))
    assert budget.reserve("heavy") and budget.reserve("heavy")  # 400 + 2 x 250
    assert not budget.reserve("heavy")  # a third run would need 1150
    budget.release("heavy")
    assert budget.reserve("heavy")  # the arena keeps two runs' memory: the second fits again
    assert budget.held("heavy") == 900


def test_a_model_over_the_budget_is_refused_with_its_need_and_the_budget():
    budget, _ = _budget(500 * 2**20, isnet=(200 * 2**20, 1200 * 2**20))
    reason = budget.too_large("isnet")
    assert reason == (
        "model isnet needs about 1,400 MiB (measured: session 200 MiB + one inference "
        "1,200 MiB), more than the memory budget of 500 MiB (serve_memory_budget, test)"
    )
    assert budget.too_large("unknown") is None  # nothing known: 0 bytes


def test_a_heavy_request_takes_several_slots_and_is_not_starved_by_narrow_ones():
    """With serve_heavy_slots 2 of 2 slots, a heavy request runs alone on both slots' threads;
    light requests arriving behind it wait for it instead of taking each freed slot."""
    width = {"heavy": 2, "light": 1}

    async def scenario() -> tuple[list[str], list[int]]:
        scheduler = FairScheduler(2, lambda key: 1.0, width=width.__getitem__)
        order: list[str] = []
        busy: list[int] = []
        await scheduler.acquire("light")  # one slot busy, one free

        async def request(model: str) -> None:
            await scheduler.acquire(model)
            order.append(model)
            busy.append(scheduler.busy)
            await asyncio.sleep(0.01)
            scheduler.release(model)

        heavy = asyncio.create_task(request("heavy"))
        await asyncio.sleep(0)
        assert order == [] and scheduler.free == 1  # the free slot waits for the heavy one
        lights = [asyncio.create_task(request("light")) for _ in range(3)]
        await asyncio.sleep(0)
        assert order == []  # nor does a later light request take it
        scheduler.release("light")
        await asyncio.gather(heavy, *lights)
        assert scheduler.free == 2 and scheduler.running == {"heavy": 0, "light": 0}
        return order, busy

    order, busy = asyncio.run(scenario())
    assert order[0] == "heavy" and busy[0] == 2  # both slots, alone
    assert sorted(order[1:]) == ["light"] * 3


def test_a_heavy_models_session_gets_the_threads_of_its_slots(monkeypatch):
    from rmcli.config.settings import resolve
    from rmcli.serve import service as service_module
    from rmcli.serve.service import InferenceService

    monkeypatch.setattr(service_module, "usable_cpu_count", lambda: 4)  # the machine: 4 cores

    def threads(model_path: str, family: str, heavy_slots: int) -> int:
        settings = resolve(
            {
                "serve_slots": (2, "test"),
                "serve_heavy_slots": (heavy_slots, "test"),
                "model_path": (model_path, "test"),
                "model_family": (family, "test"),
            }
        )
        service = InferenceService(settings)
        try:
            remover = service.remover(None)
            return remover.settings["intra_threads"], service.width(remover.model.name)
        finally:
            service.infer_pool.shutdown()
            service.codec_pool.shutdown()

    # two slots of two threads (SlotBudget.split(4, 2))
    assert threads("isnet.onnx", "isnet", 1) == (2, 1)
    assert threads("isnet.onnx", "isnet", 2) == (4, 2)  # 1024x1024: both slots' threads
    assert threads("u2netp.onnx", "u2net", 2) == (2, 1)  # 320x320: one slot
