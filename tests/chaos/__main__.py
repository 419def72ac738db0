"""`make chaos`: a long round on a shared SQLite file and on PostgreSQL, figures printed.

    PYTHONPATH=tests:. python -m chaos [--sagas 1000] [--seed N] [--only sqlite|postgres]

PostgreSQL from $STATESAGA_TEST_POSTGRES (default postgresql://postgres@127.0.0.1:5432/test),
in a fresh schema, dropped afterwards. Exits 1 if an invariant was broken.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from chaos.harness import Figures, Plan, run_round
from statesaga.testing.plugin import drop_postgres_schema

POSTGRES = os.environ.get("STATESAGA_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos")
    parser.add_argument("--sagas", type=int, default=1000)
    parser.add_argument("--start-for", type=float, default=240.0,
                        help="seconds over which the sagas are started")
    parser.add_argument("--seed", type=int, default=random.randrange(2**32))
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    args = parser.parse_args(argv)
    plan = Plan(sagas=args.sagas, start_for=args.start_for, seed=args.seed)
    print(f"chaos: {plan}", flush=True)
    results: list[Figures] = []
    tmp = Path(tempfile.mkdtemp(prefix="chaos-"))  # kept when a round breaks an invariant
    if args.only in (None, "sqlite"):
        url = f"sqlite:///{tmp / 'sagas.db'}?durability=normal"
        results.append(await run_round(url, plan, tmp / "sqlite"))
        print(results[-1], flush=True)
    if args.only in (None, "postgres"):
        schema = f"chaos_{uuid.uuid4().hex[:12]}"
        try:
            results.append(await run_round(f"{POSTGRES}?schema={schema}", plan,
                                           tmp / "postgres"))
            print(results[-1], flush=True)
        finally:
            if results and results[-1].database == "PostgreSQL" and not results[-1].ok:
                print(f"kept for a post-mortem: schema {schema} of {POSTGRES}")
            else:
                await drop_postgres_schema(POSTGRES, schema)
    for figures in results:
        for problem in figures.problems[:20]:
            print(f"  {figures.database}: {problem}")
    ok = all(f.ok for f in results)
    if ok:
        shutil.rmtree(tmp)
    else:
        print(f"kept for a post-mortem: {tmp} (the SQLite store, the workers' logs)")
    print(f"chaos: {'0 invariants broken' if ok else 'INVARIANTS BROKEN'} (seed {plan.seed})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
