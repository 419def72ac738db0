"""The saga the worker processes of tests/test_workers.py run: `worker_sagas:saga`.

Its steps record their effects in the ledger named by $STATESAGA_TEST_LEDGER (the store).
"""

from __future__ import annotations

from ledger import build_machine

saga = build_machine("worker")
