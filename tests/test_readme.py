"""The README's code blocks run, so the docs cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^( *)```python\n(.*?)^\1```", README.read_text(), re.M | re.S)


def test_the_readme_has_code_blocks() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_code_block_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    indent, code = BLOCKS[index]
    code = "\n".join(line[len(indent):] for line in code.splitlines())
    exec(compile(code, f"README.md block {index}", "exec"), {"__name__": f"readme_{index}"})
