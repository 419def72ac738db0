"""The chaos suite: `make chaos` (`python -m chaos`, tests/ on the path) runs a long round on
SQLite and on PostgreSQL; `tests/test_chaos.py` runs a short one in the normal test run.
See `harness.py` for what a round does and which invariants it checks."""
