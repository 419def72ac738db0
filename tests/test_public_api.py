"""The public names DESIGN.md fixes: users' code and outside checks import exactly these."""

from __future__ import annotations

import subprocess
import sys

import statesaga

DESIGN_NAMES = ["SagaStateMachine", "StepContext", "Retry", "SagaStatus", "SagaRecord",
                "Orchestrator", "InMemoryStore", "SQLiteStore", "PostgresStore", "open_store",
                "SagaError", "SagaStep", "SagaDefinitionError", "SagaNotFound", "SagaConflict",
                "StoreError", "Event", "EventBus", "InMemoryBus", "RabbitMQBus"]


def test_every_name_the_design_fixes_is_exported() -> None:
    assert [] == [n for n in DESIGN_NAMES if n not in statesaga.__all__]
    for name in DESIGN_NAMES:
        assert getattr(statesaga, name) is not None


def test_all_is_sorted_and_complete() -> None:
    assert sorted(statesaga.__all__) == statesaga.__all__
    for name in statesaga.__all__:
        getattr(statesaga, name)


def test_the_error_family_says_what_it_is() -> None:
    assert issubclass(statesaga.SagaDefinitionError, ValueError)
    for error in ("SagaDefinitionError", "SagaNotFound", "SagaConflict", "StoreError",
                  "BusError"):
        assert issubclass(getattr(statesaga, error), statesaga.SagaError)


def test_the_orchestrator_has_the_methods_the_design_names() -> None:
    for method in ("run", "start", "resume", "recover", "work", "abort", "retry", "get",
                   "list", "register"):
        assert callable(getattr(statesaga.Orchestrator, method))


def test_importing_statesaga_loads_no_optional_driver() -> None:
    code = ("import sys, statesaga; print(sorted(m for m in ('graphviz', 'asyncpg', "
            "'aio_pika', 'opentelemetry', 'starlette', 'uvicorn', 'playwright') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert "[]" == out


def test_the_diagrams_and_testing_modules_offer_what_the_design_names() -> None:
    from statesaga import diagrams, testing

    assert callable(diagrams.to_dot)
    assert callable(diagrams.render)
    assert callable(testing.explore_failures)
    assert callable(testing.FailureReport.assert_ok)
