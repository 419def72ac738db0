"""A chaos worker: `statesaga worker worker_sagas:saga` with a short lease, in a process of
its own, its wall clock run `$CHAOS_SKEW` seconds ahead (time.time, which statesaga's
`SystemClock` reads), as a machine whose clock drifted would.

    python tests/chaos/worker.py URL LEASE

Its steps record their effects in the ledger named by $STATESAGA_TEST_LEDGER.
"""

from __future__ import annotations

import os
import sys
import time

SKEW = float(os.environ.get("CHAOS_SKEW", "0"))
if SKEW:
    _real = time.time
    time.time = lambda: _real() + SKEW

from statesaga.cli import main  # noqa: E402 - after the clock is skewed

if __name__ == "__main__":
    url, lease = sys.argv[1], sys.argv[2]
    sys.exit(main(["--store", url, "worker", "worker_sagas:saga", "--poll", "0.1",
                   "--concurrency", "8", "--lease", lease]))
