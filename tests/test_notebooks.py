"""The notebooks are stored executed, so a reader sees the drawings without running them; the
tests run each again top to bottom and check that its stored outputs are clean and current.

`python tests/test_notebooks.py` (`make notebooks`) executes them and stores their outputs.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
NOISE = re.compile(r"\x1b\[|saga\.\w+ saga_id=|Traceback|Warning")


def execute(path: Path, cwd: Path) -> tuple[Any, float]:
    """The notebook executed in `cwd`, and the seconds its cells took (kernel start aside)."""
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=60, kernel_name="python3", record_timing=True,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    timings = [c.metadata.pop("execution") for c in book.cells if c.cell_type == "code"]
    seconds = (_time(timings[-1]["shell.execute_reply"])
               - _time(timings[0]["iopub.execute_input"]))
    return book, seconds


def _time(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def outputs(book: Any) -> list[list[tuple[str, ...]]]:
    """Per code cell, what it shows: each output's type and formats (a stream once, however
    the kernel happened to split it)."""
    shown: list[list[tuple[str, ...]]] = []
    for cell in (c for c in book.cells if c.cell_type == "code"):
        kinds: list[tuple[str, ...]] = []
        for o in cell.outputs:
            kind = (o.output_type, *sorted(o.get("data", {})), o.get("name", ""))
            if not (kinds and kind == kinds[-1] and o.output_type == "stream"):
                kinds.append(kind)
        shown.append(kinds)
    return shown


def texts(book: Any) -> list[str]:
    return [o.get("text", "") + "".join(v for k, v in o.get("data", {}).items()
                                         if k == "text/plain")
            for c in book.cells if c.cell_type == "code" for o in c.outputs]


def test_there_are_notebooks() -> None:
    assert 5 <= len(NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_executed_in_order_with_clean_outputs(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert list(range(1, len(code) + 1)) == [c.execution_count for c in code]
    kinds = [o.output_type for c in code for o in c.outputs]
    assert "error" not in kinds
    assert [] == [o.text for c in code for o in c.outputs if o.get("name") == "stderr"]
    assert [] == [t for t in texts(book) if NOISE.search(t)]  # no log lines, colours
    assert {"execute_result", "display_data"} & set(kinds)  # it shows something


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom_in_under_10_s_and_shows_what_is_stored(
        path: Path, tmp_path: Path) -> None:
    book, seconds = execute(path, tmp_path)
    assert [] == [o for c in book.cells for o in c.get("outputs", [])
                  if o.output_type == "error"]
    assert outputs(nbformat.read(path, as_version=4)) == outputs(book)
    assert seconds < 10


if __name__ == "__main__":  # execute every notebook (or those named) and store its outputs
    for path in [Path(p).resolve() for p in sys.argv[1:]] or NOTEBOOKS:
        with tempfile.TemporaryDirectory() as folder:
            book, seconds = execute(path, Path(folder))
        nbformat.write(book, path)
        print(f"{path.name}: {seconds:.1f} s")
