"""The README's code blocks run, each in a fresh interpreter as a reader's program would.

So the docs cannot rot, and a block's logging set-up cannot leak into another. A block
whose first line is `# test_<name>.py: pytest [options]` is a test module: it is written
to that file in an empty directory and run with that command, as a reader would.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^( *)```python\n(.*?)^\1```", README.read_text(), re.M | re.S)
TEST_MODULE = re.compile(r"# (test_\w+\.py): pytest(.*)")


def run_block(index: int, cwd: Path) -> subprocess.CompletedProcess[str]:
    indent, code = BLOCKS[index]
    code = "\n".join(line[len(indent):] for line in code.splitlines())
    command = [sys.executable, "-c", code]
    if module := TEST_MODULE.fullmatch(code.splitlines()[0]):
        (cwd / module[1]).write_text(code)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   *module[2].split(), module[1]]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False)
    assert 0 == done.returncode, f"README.md block {index}:\n{done.stdout}{done.stderr}"
    return done


def test_the_readme_has_code_blocks() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_code_block_runs(index: int, tmp_path: Path) -> None:
    run_block(index, tmp_path)


def test_the_quickstart_runs_a_compensated_saga_and_prints_nothing(tmp_path: Path) -> None:
    assert "COMPENSATED" in BLOCKS[0][1]
    done = run_block(0, tmp_path)
    assert ("", "") == (done.stdout, done.stderr)


def test_the_stdlib_logging_example_shows_the_transition(tmp_path: Path) -> None:
    index = next(i for i, (_, code) in enumerate(BLOCKS) if "logging.basicConfig" in code)
    done = run_block(index, tmp_path)
    assert done.stderr.startswith("INFO statesaga saga.transition saga_id='shop-1' "
                                  "saga='shop' source='reserve' dest='completed'")


def public_names() -> list[str]:
    import statesaga
    import statesaga.testing

    return [*statesaga.__all__, *statesaga.testing.__all__]


def test_every_public_name_is_documented_in_the_readme() -> None:
    text = README.read_text()
    assert [] == [name for name in public_names()
                  if not re.search(rf"`[^`\n]*\b{name}\b[^`\n]*`", text)]


def test_the_pytest_plugin_examples_run_in_strict_and_in_auto_mode() -> None:
    modes = [TEST_MODULE.fullmatch(code.splitlines()[0]) for _, code in BLOCKS]
    assert {"", " -o asyncio_mode=auto"} <= {m[2] for m in modes if m}


def test_the_contents_link_to_sections_that_exist() -> None:
    text = README.read_text()
    slugs = {re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
             for title in re.findall(r"^#{2,3} (.+)$", text, re.M)}
    links = re.findall(r"\]\(#([\w\-]+)\)", text)
    assert len(links) > 10
    assert [] == [link for link in links if link not in slugs]
