"""A shell that forgives: options anywhere, definitions found, advice that works as written,
no store created by a read, quiet pipes, short lines, and never a password in the output."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_stores_reads import record

from statesaga import Orchestrator, SagaStatus, SQLiteStore
from statesaga.cli import main
from statesaga.examples.trip import trip

ROOT = Path(__file__).resolve().parent.parent
ORDER = textwrap.dedent("""
    from pathlib import Path
    from statesaga import Retry, SagaStateMachine

    order = SagaStateMachine("order")

    def release(ctx):
        if Path("broken").exists():
            raise RuntimeError("stock service down")

    def charge(ctx):
        raise RuntimeError("card declined")

    order.step("reserve", lambda ctx: {"sku": ctx.data.get("sku")}, compensation=release,
               compensation_retry=Retry(attempts=1))
    order.step("charge", charge)
""")


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, shell: bool = False
        ) -> subprocess.CompletedProcess[str]:
    """The installed `statesaga` command, as a person runs it (no PYTHONPATH of ours)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("STATESAGA_")}
    return subprocess.run(args[0] if shell else ["statesaga", *args], cwd=cwd, shell=shell,
                          env=base | {"PATH": path} | (env or {}), capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def order_dir(tmp_path: Path) -> Path:
    """A project folder with its saga module and a store holding one stuck `order` saga."""
    (tmp_path / "ordersagas.py").write_text(ORDER)
    (tmp_path / "broken").touch()
    done = cli("--saga", "ordersagas:order", "demo", cwd=tmp_path)  # creates the store
    assert 0 == done.returncode, done.stderr
    code = ("import asyncio, ordersagas; from statesaga import Orchestrator, SQLiteStore; "
            "asyncio.run(Orchestrator(store=SQLiteStore('sagas.db')).run("
            "ordersagas.order, {'sku': 'book'}, saga_id='stuck-1'))")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True,
                   capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return tmp_path


def test_global_options_go_before_or_after_the_command(order_dir: Path) -> None:
    after = cli("list", "--store", "sqlite:///sagas.db", "--status", "failed", "--json",
                cwd=order_dir)
    before = cli("--store", "sqlite:///sagas.db", "list", "--status", "failed", "--json",
                 cwd=order_dir)
    assert (0, 0) == (after.returncode, before.returncode), after.stderr
    assert ["stuck-1"] == [r["saga_id"] for r in json.loads(after.stdout)]
    assert after.stdout == before.stdout
    shown = cli("show", "stuck-1", "--saga", "ordersagas:order", "-v", cwd=order_dir)
    assert 0 == shown.returncode, shown.stderr


def test_the_advice_for_a_stuck_saga_is_a_command_that_works_as_written(
        order_dir: Path) -> None:
    bare = cli("retry", "stuck-1", cwd=order_dir)
    assert 2 == bare.returncode
    assert "--saga MODULE:ATTR" in bare.stderr
    assert "statesaga.sagas" in bare.stderr
    shown = cli("--saga", "ordersagas:order", "show", "stuck-1", cwd=order_dir)
    advice = [line.strip() for line in shown.stdout.splitlines()
              if line.strip().startswith("statesaga ")]
    assert ["statesaga --store sqlite:///sagas.db --saga ordersagas:order retry stuck-1 "
            "--reason 'what was fixed'"] == advice
    (order_dir / "broken").unlink()  # the stock service is fixed
    retried = cli(advice[0], cwd=order_dir, shell=True)
    assert 0 == retried.returncode, retried.stderr
    assert "status: COMPENSATED in compensated" in retried.stdout
    assert "what was fixed" in retried.stdout


def test_definitions_come_from_the_environment_and_entry_points(order_dir: Path) -> None:
    plain = cli("--saga", "ordersagas:order", "show", "stuck-1", cwd=order_dir)
    assert "--saga ordersagas:order" in plain.stdout
    by_env = cli("show", "stuck-1", cwd=order_dir, env={"STATESAGA_SAGAS": "ordersagas:order"})
    assert "statesaga --store sqlite:///sagas.db retry stuck-1" in by_env.stdout
    site = order_dir / "site"
    info = site / "orders-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: orders\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[statesaga.sagas]\norder = ordersagas:order\n")
    (site / "ordersagas.py").write_text(ORDER)
    (order_dir / "broken").unlink()
    elsewhere = order_dir / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "broken").touch()
    found = cli("--store", f"sqlite:///{order_dir / 'sagas.db'}", "retry", "stuck-1",
                "--reason", "fixed", cwd=order_dir / "site", env={"PYTHONPATH": str(site)})
    assert 0 == found.returncode, found.stderr
    assert "status: COMPENSATED" in found.stdout


def test_commands_that_only_read_never_create_a_store(tmp_path: Path) -> None:
    for args in (["show", "x"], ["list"], ["recover"], ["retry", "x"], ["web"]):
        done = cli("--store", "sqlite:///typo.db", *args, cwd=tmp_path)
        assert (2, True) == (done.returncode, f"no saga store at {tmp_path / 'typo.db'}"
                             in done.stderr), args
    assert [] == list(tmp_path.iterdir())


def test_a_closed_pipe_ends_the_listing_quietly(tmp_path: Path) -> None:
    async def seed() -> None:
        store = SQLiteStore(tmp_path / "sagas.db")
        for i in range(1000):
            await store.create(record(f"saga-{i:04d}-" + "x" * 30, SagaStatus.COMPLETED),
                               data_json="{}", owner=None, lease=None)
        await store.close()

    asyncio.run(seed())
    done = cli("statesaga --store sqlite:///sagas.db list --limit 1000 | head -1", cwd=tmp_path,
               shell=True, env={"SHELL": "/bin/bash"})
    assert ("saga_id", "") == (done.stdout.split()[0], done.stderr)


def test_list_cuts_long_ids_and_pages_with_a_cursor(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    async def seed() -> None:
        store = SQLiteStore(tmp_path / "sagas.db")
        for saga_id in ("a", "b", "c" * 10_000):
            await store.create(record(saga_id, SagaStatus.RUNNING), data_json="{}",
                               owner=None, lease=None)
        await store.close()

    asyncio.run(seed())
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    assert 0 == main(["list", "--store", url, "--limit", "2"])
    out, err = capsys.readouterr()
    assert max(len(line) for line in out.splitlines()) < 200
    assert "c" * 39 + "…" in out
    assert "(2 sagas, more after)" in out
    cursor = err.split("--after ")[1].strip()
    assert 0 == main(["list", "--store", url, "--limit", "2", "--after", cursor, "--json"])
    assert ["a"] == [r["saga_id"] for r in json.loads(capsys.readouterr().out)]
    assert 2 == main(["list", "--store", url, "--after", "nonsense"])
    assert "not a cursor" in capsys.readouterr().err


def test_recover_names_sagas_held_by_other_workers_and_sums_up_unknown_versions(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    async def seed() -> None:
        store = SQLiteStore(tmp_path / "sagas.db")
        orch = Orchestrator(store=store)
        await orch.start(trip, saga_id="held")
        await store.claim("worker-7", now=orch.clock.time(), lease=600, limit=1,
                          saga_id="held")
        for i in range(90):
            await store.create(record(f"old-{i}", SagaStatus.RUNNING, name="trip",
                                      version="0ld"), data_json="{}", owner=None,
                               lease=None)
        await store.close()

    asyncio.run(seed())
    assert 0 == main(["recover", "--store", f"sqlite:///{tmp_path / 'sagas.db'}"])
    out = capsys.readouterr().out
    assert "recovered 0 saga(s)" in out
    assert [f"left alone: 90 unfinished saga(s) of trip version 0ld, which is not registered "
            f"(registered: {trip.version})"] == [
        line for line in out.splitlines() if line.startswith("left alone")]
    assert "held by other workers" in out
    assert "worker-7: 1 saga(s) ('held'), lease until" in out


def test_render_writes_mermaid(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "trip.mmd"
    assert 0 == main(["render", "statesaga.examples.trip:trip", "-o", str(target)])
    assert target.read_text().startswith("stateDiagram-v2")


def test_show_prints_data_and_results_cut_unless_full(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    async def seed() -> None:
        store = SQLiteStore(tmp_path / "sagas.db")
        await store.create(record("s1", SagaStatus.RUNNING),
                           data_json='{"note": "' + "n" * 500 + '", "flight": "LH1"}',
                           owner=None, lease=None)
        await store.close()

    asyncio.run(seed())
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    assert 0 == main(["show", "s1", "--store", url])
    out = capsys.readouterr().out
    assert '  flight: "LH1"' in out
    assert "n" * 70 + "…" in out
    assert "n" * 200 not in out
    assert "results: (none)" in out
    assert 0 == main(["show", "s1", "--store", url, "--full"])
    assert "n" * 500 in capsys.readouterr().out


def test_a_store_password_never_appears(tmp_path: Path) -> None:
    url = "postgresql://postgres:sekrit@127.0.0.1:1/db"
    for args in (["--store", url, "list"], ["list", url], ["--store", url, "show", "x"],
                 ["--store", url, "web", "--port", "0"]):
        done = cli(*args, cwd=tmp_path)
        assert (2, False) == (done.returncode, "sekrit" in done.stdout + done.stderr), args
        assert "***" in done.stderr, args


def test_the_advice_never_prints_a_password(postgres_dsn: str, pg_schema: str,
                                            tmp_path: Path) -> None:
    url = postgres_dsn.replace("postgres@", "postgres:sekrit@") + f"?schema={pg_schema}"
    done = cli("--store", url, "demo", "--fail-at", "charge_payment", "--stuck", "book_hotel",
               cwd=tmp_path)
    assert 3 == done.returncode, done.stderr
    assert "sekrit" not in done.stdout + done.stderr
    assert 'statesaga --store "$STATESAGA_STORE" retry' in done.stdout
