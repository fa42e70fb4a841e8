"""braidflow.idempotency_key(): one key per run, step and item, stable across
retries, resumes and crashes, different for everything else."""

import asyncio
import json
import subprocess
import sys
import textwrap
import time

import pytest

from braidflow import (
    AsyncFlow,
    AsyncNode,
    BatchNode,
    Flow,
    MemoryStore,
    Node,
    NotDurableError,
    SQLiteStore,
    idempotency_key,
)


class Keys(BatchNode):
    """Each item's key, at each attempt; item 2 fails its first attempt, and
    item 3 fails while `down`."""

    down = True

    def prep(self, shared):
        return [1, 2, 3, 4]

    def exec(self, item):
        shared_keys.append((item, self.cur_retry, idempotency_key()))
        if item == 2 and self.cur_retry == 0:
            raise ConnectionError("once")
        if item == 3 and Keys.down:
            raise RuntimeError("down")
        return item

    def post(self, shared, prep_res, exec_res):
        shared["step key"] = idempotency_key()


shared_keys: list = []


@pytest.fixture(autouse=True)
def _fresh():
    shared_keys.clear()
    Keys.down = True


def test_a_key_is_the_same_across_retries_and_a_resume_and_differs_otherwise():
    store = MemoryStore()
    flow = Flow(start=Keys(name="keys", max_retries=2))
    with pytest.raises(RuntimeError):
        flow.run({}, store=store, run_id="r")
    first = {item: key for item, _, key in shared_keys}
    retried = [key for item, _, key in shared_keys if item == 2]
    assert len(retried) == 2
    assert retried[0] == retried[1]  # a retry: the same key
    assert len(set(first.values())) == 3  # items 1, 2, 3: each its own
    assert all(key.startswith("bf-") and len(key) == 43 for key in first.values())
    shared_keys.clear()
    Keys.down = False
    final = flow.resume("r", store=store)
    again = {item: key for item, _, key in shared_keys}
    assert set(again) == {3, 4}  # items 1 and 2 finished before: not run again
    assert again[3] == first[3]  # a resume: the same key
    assert again[4] not in first.values()
    assert final["step key"] not in {*first.values(), *again.values()}  # post: the step's


def test_a_fork_gets_keys_of_its_own():
    store = MemoryStore()
    flow = Flow(start=Keys(name="keys", max_retries=2))
    Keys.down = False
    flow.run({}, store=store, run_id="r")
    original = {item: key for item, _, key in shared_keys}
    shared_keys.clear()
    flow.fork("r", store=store, at=0)
    forked = {item: key for item, _, key in shared_keys}
    assert set(forked) == set(original)
    assert not set(forked.values()) & set(original.values())


def test_each_visit_of_a_loop_is_its_own_step():
    class Again(Node):
        def post(self, shared, prep_res, exec_res):
            shared.setdefault("keys", []).append(idempotency_key())
            return "again" if len(shared["keys"]) < 3 else "done"

    again = Again(name="again")
    again - "again" >> again
    again - "done" >> None
    shared = {}
    Flow(start=again).run(shared, store=MemoryStore())
    assert len(set(shared["keys"])) == 3


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_code_a_step_starts_keeps_that_step_s_key_after_the_step_ends(durability):
    # A task started in one step and still going in the next (as a thread a
    # timeout gave up on would be) does its side effect under the key of the
    # step that started it, not the next one's.
    keys, tasks, go = {}, [], asyncio.Event()

    async def later():
        await go.wait()
        keys["later"] = idempotency_key()

    class Starts(AsyncNode):
        async def exec_async(self, prep_res):
            keys["starts"] = idempotency_key()
            tasks.append(asyncio.create_task(later()))

    class Next(AsyncNode):
        async def exec_async(self, prep_res):
            keys["next"] = idempotency_key()
            go.set()
            await tasks[0]

    first = Starts(name="starts")
    first >> Next(name="next")
    AsyncFlow(start=first).run({}, store=MemoryStore(), durability=durability)
    assert keys["later"] == keys["starts"] != keys["next"]


def test_outside_a_durable_run_there_is_no_key():
    with pytest.raises(NotDurableError, match="names a step of a durable run"):
        idempotency_key()
    with pytest.raises(NotDurableError, match="run the flow with a store"):
        Flow(start=Keys(name="keys")).run({})


KILLED = textwrap.dedent(
    """
    import asyncio, json, sys
    from braidflow import AsyncFlow, AsyncParallelBatchNode, SQLiteStore, idempotency_key

    store_path, log, stop_at = sys.argv[1], sys.argv[2], int(sys.argv[3])

    class Send(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return list(range(40))

        async def exec_async(self, item):
            with open(log, "a") as out:
                out.write(json.dumps([item, idempotency_key()]) + "\\n")
            if item >= stop_at:
                await asyncio.Event().wait()  # the process is killed here
            return item

    flow = AsyncFlow(start=Send(name="send", max_concurrency=8))
    store = SQLiteStore(store_path)
    if sys.argv[4] == "run":
        flow.run({}, store=store, run_id="mail")
    else:
        flow.resume("mail", store=store)
    """
)


def test_keys_of_items_redone_after_a_crash_are_the_ones_they_had(tmp_path):
    store, log = tmp_path / "runs.db", tmp_path / "keys.jsonl"
    child = subprocess.Popen([sys.executable, "-c", KILLED, str(store), str(log), "20", "run"])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # 20 items done, and 8 in flight
            lines = log.read_text().splitlines() if log.exists() else []
            if len(lines) == 28:
                break
            assert child.poll() is None
            time.sleep(0.01)
        assert len(lines) == 28
    finally:
        child.kill()
        child.wait()
    before = dict(json.loads(line) for line in log.read_text().splitlines())
    log.unlink()
    done = subprocess.run(
        [sys.executable, "-c", KILLED, str(store), str(log), "40", "resume"], timeout=60
    )
    assert done.returncode == 0
    after = dict(json.loads(line) for line in log.read_text().splitlines())
    redone = set(before) & set(after)
    assert redone  # the items in flight at the kill ran again...
    assert all(before[item] == after[item] for item in redone)  # ...with their keys
    with SQLiteStore(store) as opened:
        assert opened.get("mail").status == "completed"
