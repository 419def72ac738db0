"""The pytest plugin's fixtures and the transition-sequence assertion."""

from __future__ import annotations

import sys

import pytest

from statesaga import InMemoryStore, Orchestrator, SagaStateMachine, SagaStatus, SagaStore
from statesaga.testing import FakeClock, assert_transitions


def machine() -> SagaStateMachine:
    m = SagaStateMachine("plugged")
    m.step("a", lambda ctx: 1, compensation=lambda ctx: None)
    m.step("b", lambda ctx: 1 / 0)
    return m


async def test_saga_orchestrator_runs_a_saga_on_each_store(
        saga_orchestrator: Orchestrator, saga_store: SagaStore) -> None:
    record = await saga_orchestrator.run(machine(), {"n": 1}, saga_id="p-1")
    assert SagaStatus.COMPENSATED is record.status
    assert record == await saga_store.load("p-1")


def test_saga_clock_is_virtual(saga_clock: FakeClock) -> None:
    start = saga_clock.time()
    saga_clock.advance(300)
    assert 300 == saga_clock.time() - start


async def test_assert_transitions_accepts_the_path_as_states_or_triples() -> None:
    record = await Orchestrator(store=InMemoryStore()).run(machine(), saga_id="t")
    assert_transitions(record, ["a", "b", "compensating_a", "compensated"])
    assert_transitions(record, [("a", "succeed", "b"), ("b", "fail", "compensating_a"),
                                ("compensating_a", "succeed", "compensated")])


async def test_assert_transitions_shows_a_readable_diff() -> None:
    record = await Orchestrator().run(machine(), saga_id="t")
    with pytest.raises(AssertionError) as err:
        assert_transitions(record, ["a", "b", "completed"])
    text = str(err.value)
    assert "saga 't' took another path" in text
    assert "-completed" in text
    assert "+compensating_a" in text


# -- the plugin in a user's project, in a fresh pytest process ----------------------------

pytest_plugins = ["pytester"]

SAMPLE = """
import pytest

from statesaga import SagaStateMachine, SagaStatus


def trip():
    m = SagaStateMachine("trip")
    m.step("book", lambda ctx: {"booked": 1}, compensation=lambda ctx: None)
    m.step("pay", lambda ctx: 1 / 0)
    return m


{marker}
async def test_a_saga_runs_on_each_store(saga_orchestrator, saga_store):
    record = await saga_orchestrator.run(trip(), {"n": 1}, saga_id="t-1")
    assert SagaStatus.COMPENSATED is record.status
    assert record == await saga_store.load("t-1")


def test_the_clock_is_virtual(saga_clock):
    saga_clock.advance(60)
"""


def sample(pytester: pytest.Pytester, ini: str | None, marker: str) -> None:
    if ini is not None:
        pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(test_sample=SAMPLE.replace("{marker}", marker))


@pytest.mark.parametrize(("ini", "marker"), [
    (None, "@pytest.mark.asyncio"),  # pytest-asyncio's default: strict
    ("asyncio_mode = strict", "@pytest.mark.asyncio"),
    ("asyncio_mode = auto", ""),
    ("asyncio_mode = auto\nasyncio_default_fixture_loop_scope = session", ""),
], ids=["default", "strict", "auto", "auto-session-loop"])
def test_the_async_fixtures_work_in_every_asyncio_mode(
        pytester: pytest.Pytester, ini: str | None, marker: str) -> None:
    sample(pytester, ini, marker)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)  # three stores, and the clock
    result.stdout.no_fnmatch_line("*async fixture*")


def test_the_fixtures_also_work_when_pytest_runs_in_process(
        pytester: pytest.Pytester) -> None:
    sample(pytester, "asyncio_mode = strict\nasyncio_default_fixture_loop_scope = function",
           "@pytest.mark.asyncio")
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=4)


def without_pytest_asyncio(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                           *args: str) -> pytest.RunResult:
    """pytest in a fresh process where `import pytest_asyncio` fails, as if not installed."""
    shim = pytester.mkdir("not_installed")
    (shim / "pytest_asyncio.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pytest_asyncio'\", name='pytest_asyncio')\n")
    monkeypatch.setenv("PYTHONPATH", str(shim))
    return pytester.run(sys.executable, "-m", "pytest", "-p", "no:asyncio", "-p",
                        "no:cacheprovider", "-p", "no:randomly", *args)


def test_without_pytest_asyncio_an_unrelated_run_is_untouched(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_other="def test_other():\n    assert True\n")
    result = without_pytest_asyncio(pytester, monkeypatch, "-W", "error")
    result.assert_outcomes(passed=1)
    assert 0 == result.ret


def test_without_pytest_asyncio_a_saga_fixture_says_what_to_install(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_store="def test_store(saga_store):\n    pass\n"
                                   "def test_clock(saga_clock):\n    pass\n")
    result = without_pytest_asyncio(pytester, monkeypatch)
    result.assert_outcomes(passed=1, errors=1)
    assert ("the statesaga fixture 'saga_store' is async and needs pytest-asyncio, which is "
            "not installed: pip install 'statesaga[pytest]'") in result.stdout.str()
