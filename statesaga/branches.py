"""Parallel groups: their branches run at once, each with its own retries and timeouts.

The kernel decides when the group goes on (every branch succeeded) or walks back (one
failed: the others are cancelled, their outcome unknown); here the branches only run, and
commit one at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .kernel import LANE_RUNNING, LANE_UNDOING
from .saga_run import SagaRun


async def run_lanes(run: SagaRun, work: Callable[[str], Awaitable[None]], *,
                    abortable: bool) -> None:
    """Run `work(branch)` for every branch still to run, all at once, until the saga leaves
    its state; the branches still running then are cancelled, never in a commit."""
    home = run.state
    names = [x.name for x in run.pos.lanes if x.status in (LANE_RUNNING, LANE_UNDOING)]
    if not names:  # the kernel moves a group on when its last branch does: never here
        raise RuntimeError(f"saga {run.saga_id!r} is in {home} with no branch left to run")
    run.lock = asyncio.Lock()
    tasks = [asyncio.ensure_future(work(name)) for name in names]
    run.interruptible = abortable
    try:
        pending = set(tasks)
        while pending and run.state == home:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is not None:  # a store failed: the saga stops here
                    raise task.exception()  # type: ignore[misc]
    except asyncio.CancelledError:
        if run.abort is None:
            raise
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()  # an abort: `drive` compensates the group
    finally:
        run.interruptible = False
        async with run.lock:  # no branch is committing now
            for task in tasks:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        run.lock = None
