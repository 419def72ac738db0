"""Drawings of saga machines and of live sagas: graphviz DOT and images, Mermaid, Jupyter.

Offline only: nothing on a saga's run path calls this package, and `graphviz` is imported
only when a drawing is made. `python -m statesaga.diagrams OUTDIR` redraws the examples.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ..exceptions import SagaError
from .mermaid import to_mermaid
from .model import check_record

if TYPE_CHECKING:
    from ..definition import SagaStateMachine
    from ..records import SagaRecord
    from ..stores.base import SagaStore

__all__ = ["FORMATS", "Diagram", "load_children", "mimebundle", "render", "to_dot", "to_mermaid",
           "to_svg"]

FORMATS = ("dot", "pdf", "png", "svg")
"""What `render` draws to, by the path's suffix."""


def to_dot(machine: SagaStateMachine, record: SagaRecord | None = None, *,
           legend: bool = True, children: Iterable[SagaRecord] = ()) -> str:
    """The machine as graphviz DOT source; with `record`, that saga's path and state on it.

    A step that runs a sub-saga is drawn with the child machine inside it (and its mirror
    inside the step's compensation); `children`: the records of `record`'s sub-sagas
    ("<saga id>/<step>", e.g. from `load_children`), drawn there.
    `legend=False` leaves out the small table that explains the line styles.
    """
    from .dot import digraph

    return digraph(machine, record, legend, children).source  # type: ignore[no-any-return]


def to_svg(machine: SagaStateMachine, record: SagaRecord | None = None, *,
           children: Iterable[SagaRecord] = ()) -> str:
    """The drawing as SVG text (needs graphviz's `dot`), e.g. to inline in a web page."""
    return _pipe(to_dot(machine, record, children=children), "svg").decode("utf-8")


def render(
    machine: SagaStateMachine, path: str | Path, record: SagaRecord | None = None, *,
    legend: bool = True, children: Iterable[SagaRecord] = (),
) -> Path:
    """Draw the machine (and `record`) to `path`, in the format of its suffix; return the path."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise SagaError(f"cannot draw to {str(path)!r}: unknown suffix {path.suffix!r}; "
                        f"use one of {', '.join('.' + f for f in FORMATS)}")
    if not path.parent.is_dir():
        raise SagaError(f"cannot draw to {str(path)!r}: the folder {str(path.parent)!r} "
                        "does not exist; create it first")
    source = to_dot(machine, record, legend=legend, children=children)
    if fmt == "dot":
        path.write_text(source, encoding="utf-8")
    else:
        path.write_bytes(_pipe(source, fmt))
    return path


def mimebundle(machine: SagaStateMachine, record: SagaRecord | None = None,
               children: Iterable[SagaRecord] = ()) -> dict[str, str]:
    """What Jupyter shows: the SVG drawing, or the DOT source when `dot` is not installed."""
    source = to_dot(machine, record, children=children)
    if shutil.which("dot") is None:
        return {"text/plain": "// install graphviz (apt-get install graphviz) to see this "
                              "as a drawing\n" + source}
    what = repr(machine) if record is None else f"<saga {record.saga_id!r} in {record.state}>"
    return {"image/svg+xml": _pipe(source, "svg").decode("utf-8"), "text/plain": what}


@attrs.frozen
class Diagram:
    """A machine, and optionally one saga on it, as a drawing: Jupyter shows it as SVG.

    `Diagram(machine, record, children)` is checked when made: the record must be of that
    machine, and each of `children` one of its sub-sagas.
    """

    machine: SagaStateMachine
    record: SagaRecord | None = None
    children: tuple[SagaRecord, ...] = attrs.field(default=(), converter=tuple)

    def __attrs_post_init__(self) -> None:
        if self.record is not None:
            check_record(self.machine, self.record)
        if self.children:
            from .subsagas import child_traces

            child_traces(self.machine, self.record, self.children)

    def to_dot(self) -> str:
        return to_dot(self.machine, self.record, children=self.children)

    def to_mermaid(self) -> str:
        return to_mermaid(self.machine, self.record, children=self.children)

    def render(self, path: str | Path) -> Path:
        """Draw to `path`, in the format of its suffix (.svg .png .pdf .dot)."""
        return render(self.machine, path, self.record, children=self.children)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return mimebundle(self.machine, self.record, self.children)


async def load_children(store: SagaStore, machine: SagaStateMachine,
                        record: SagaRecord) -> list[SagaRecord]:
    """The records of `record`'s sub-sagas that exist in `store` (a step not reached yet has
    none), their own sub-sagas' after them: what `to_dot(..., children=)` draws."""
    from ..exceptions import SagaNotFound
    from ..orchestrator_children import sub_sagas

    out: list[SagaRecord] = []
    for step, child in sub_sagas(machine.graph).items():
        try:
            found = await store.load(f"{record.saga_id}/{step}")
        except SagaNotFound:
            continue
        out.append(found)
        if (found.name, found.version) == (child.name, child.version):
            out += await load_children(store, child, found)
    return out


def _pipe(source: str, fmt: str) -> bytes:
    """Run graphviz's `dot` on `source`; when it is missing, say how to install it."""
    if shutil.which("dot") is None:
        raise SagaError(f"drawing to .{fmt} needs graphviz's `dot` program, which is not "
                        "installed: install graphviz (`apt-get install graphviz`, or `brew "
                        "install graphviz`), or draw to .dot")
    import graphviz

    return graphviz.Source(source).pipe(format=fmt)  # type: ignore[no-any-return]
