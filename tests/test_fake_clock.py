"""statesaga.testing.FakeClock: virtual time that jumps when every task is idle."""

from __future__ import annotations

import asyncio

from statesaga.testing import FakeClock


async def test_a_sleep_returns_at_once_in_virtual_time() -> None:
    clock = FakeClock()
    start = clock.time()
    await asyncio.wait_for(clock.sleep(300), 2)
    assert 300 == clock.time() - start


async def test_a_clock_whose_sleepers_are_gone_lets_the_next_clock_jump() -> None:
    old = FakeClock()
    sleeper = asyncio.ensure_future(old.sleep(10))
    await asyncio.sleep(0)
    sleeper.cancel()  # nobody waits on the old clock any more, as after a test ends
    new = FakeClock()
    await asyncio.wait_for(new.sleep(5), 2)  # the two clocks' drivers never starve each other
    assert 5 == new.time() - 1_800_000_000.0
