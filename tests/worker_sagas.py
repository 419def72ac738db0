"""The saga the worker processes of tests/test_workers.py run: `worker_sagas:saga`.

Its steps record their effects in the ledger named by $STATESAGA_TEST_LEDGER (the store).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ledger import build_machine

from statesaga import SagaStateMachine

saga = build_machine("worker")


async def _hold(ctx: Any) -> None:
    await asyncio.sleep(float(ctx.data.get("hold", 20)))  # a long call to a slow service


async def _nothing(ctx: Any) -> None:
    return None


slow = SagaStateMachine("slow")
slow.step("first", _nothing, compensation=_nothing)
slow.step("hold", _hold, compensation=_nothing)
slow.step("last", _nothing)
