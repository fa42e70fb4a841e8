"""Raw asyncio: what each workload costs written by hand, the floor for the others."""

import asyncio

LABEL = "raw asyncio"
PACKAGE = None


def chain(n):
    async def step(state):
        return state + 1

    async def run():
        state = 0
        for _ in range(n):
            state = await step(state)
        return state

    return run


def fanout(n):
    async def item(value):
        await asyncio.sleep(0.05)
        return value

    async def run():
        return len(await asyncio.gather(*(item(i) for i in range(n))))

    return run


def items(n):
    async def item(value):
        return value

    async def run():
        return len(await asyncio.gather(*(item(i) for i in range(n))))

    return run


def subflows(n):
    async def sub_flow():
        steps = 1  # a
        await asyncio.sleep(0.02)  # b
        steps += 1
        return steps + 1  # c

    async def run():
        return sum(await asyncio.gather(*(sub_flow() for _ in range(n))))

    return run


def bounded(n):
    async def run():
        # The usual hand-written bound: take a slot before making the task, give
        # it back when the task ends, so the generator is read only as slots free.
        semaphore = asyncio.Semaphore(1000)
        tasks = set()
        done = 0

        async def item(value):
            nonlocal done
            try:
                await asyncio.sleep(0)
                done += 1
            finally:
                semaphore.release()

        for value in (i for i in range(n)):
            await semaphore.acquire()
            task = asyncio.create_task(item(value))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        return done

    return run


def fork(n):
    async def branch(value):
        return value

    async def run():
        count = 0
        for _ in range(n):
            count += len(await asyncio.gather(*(branch(b) for b in range(16))))
        return count

    return run


def checkpointed(n):
    raise NotImplementedError("raw asyncio has no checkpointing")
