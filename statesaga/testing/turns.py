"""The order a parallel group's branches finish in, held by the explorer so that every run
of a scenario interleaves the same way.

Branches run at once; which finishes first is up to the services. The explorer bounds
the interleavings it tries to two per group: the branches finishing (their actions, and
in the group's compensation their undos) in the order declared, and in reverse. A branch
does its real work at once, then waits for its turn to report back: it may not return
before every branch ahead of it in the order, still at work, has had its outcome
committed. When a failure moves the group on, the branches still waiting are cancelled
there, their work done but not reported; or, where the scenario says a sibling answers
late, they report back at once, while that failure is being committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from ..records import MIRROR_PREFIX, Kind, Transition

PATIENCE = 2.0  # real seconds a branch waits for its turn before it goes on regardless


class Turns:
    """Who may report back next, per group: registered branches report in `order`."""

    def __init__(self, lanes: Mapping[str, tuple[str, ...]]) -> None:
        self._group = {b: g for g, bs in lanes.items() for b in bs}
        self._lanes = dict(lanes)
        self.reverse = False
        self.answer_late = False  # a group moving on lets the waiting branches report
        self._active: set[tuple[bool, str]] = set()  # (undoing?, branch) still at work
        self._changed = asyncio.Event()
        self.overdue: list[str] = []  # branches that went on without their turn

    def begin(self, reverse: bool, answer_late: bool = False) -> None:
        """A new scenario: nobody is at work, branches finish declared or reversed."""
        self.reverse, self.answer_late = reverse, answer_late
        self._active.clear()
        self._changed = asyncio.Event()
        self.overdue = []

    def order(self, group: str) -> tuple[str, ...]:
        lanes = self._lanes[group]
        return tuple(reversed(lanes)) if self.reverse else lanes

    def arrive(self, branch: str, undoing: bool) -> None:
        """`branch` (its action, or its undo) is at work from now on."""
        if branch in self._group:
            self._active.add((undoing, branch))

    def leave(self, branch: str, undoing: bool) -> None:
        """`branch` stopped without an outcome to commit (it was cancelled)."""
        self._done({(undoing, branch)})

    async def turn(self, branch: str, undoing: bool) -> None:
        """Wait until no branch ahead of `branch` in its group's order is at work."""
        group = self._group.get(branch)
        if group is None:
            return
        order = self.order(group)
        ahead = {(undoing, b) for b in order[: order.index(branch)]}
        for _ in range(5):  # let every sibling started at once arrive first
            await asyncio.sleep(0)
        late: list[str] = []

        def give_up() -> None:  # a plain wait and a timer: `asyncio.wait_for` (3.11) may
            late.append(branch)  # swallow a cancellation that comes as the wait ends
            self._changed.set()

        timer = asyncio.get_running_loop().call_later(PATIENCE, give_up)
        try:
            while ahead & self._active and not late:
                await self._changed.wait()
        finally:
            timer.cancel()
        self.overdue += late

    def committed(self, t: Transition) -> None:
        """The store wrote `t`: the branch it names has its outcome. A move out of a
        group (or its compensation) lets nobody report (those at work are cancelled), or
        with `answer_late`, everyone at once, while it is being committed."""
        undoing = (t.source or "").startswith(MIRROR_PREFIX)
        ended: set[tuple[bool, str]] = set()
        if t.source != t.dest:
            if self.answer_late:
                ended = {x for x in self._active if x[0] == undoing}
        elif t.step is not None and t.kind not in (Kind.RETRY, Kind.IGNORED):
            ended.add((undoing, t.step))
        self._done(ended)

    def _done(self, ended: Iterable[tuple[bool, str]]) -> None:
        ended = set(ended) & self._active
        if ended:
            self._active -= ended
            self._changed.set()
            self._changed = asyncio.Event()
