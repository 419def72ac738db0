"""A short round of the chaos suite (`make chaos` runs the long one): worker processes on a
shared SQLite file and on PostgreSQL, killed, stalled past their lease, cut off from the
database, one with its clock ahead, sagas with values no store can keep; no invariant
broken. See tests/chaos/harness.py."""

from __future__ import annotations

import os
import random
from pathlib import Path

from chaos.harness import Plan, run_round


async def test_a_short_round_of_chaos_breaks_no_invariant(store_url: str, tmp_path: Path
                                                          ) -> None:
    seed = int(os.environ.get("STATESAGA_CHAOS_SEED", random.randrange(2**32)))
    plan = Plan(sagas=60, start_for=15, seed=seed, kill_every=2.0, stall_every=6.0,
                proxy_every=6.0, hostile=0.1, tail=5.0, bound=90.0)

    figures = await run_round(store_url, plan, tmp_path / "logs")

    print(figures)
    assert [] == figures.problems, f"STATESAGA_CHAOS_SEED={seed}: {figures}"
    assert figures.ok, f"STATESAGA_CHAOS_SEED={seed}: {figures}"
    assert 60 == figures.sagas
    assert figures.kills >= 3
    assert figures.stalls >= 1
