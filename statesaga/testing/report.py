"""The failure matrix `explore_failures` returns: one row per scenario, readable anywhere."""

from __future__ import annotations

import html
from typing import Any

import attrs


@attrs.frozen
class ScenarioResult:
    """How one scenario ended and which invariants it broke."""

    name: str
    outcome: str  # "ok", "violated" or "skipped"
    expected: str
    final_state: str | None
    violations: tuple[str, ...] = ()
    saga_id: str | None = None
    reason: str | None = None  # why it was skipped


@attrs.frozen
class FailureReport:
    """Every scenario `explore_failures` ran, and what a person must know about them."""

    machine: str
    results: tuple[ScenarioResult, ...]
    notes: tuple[str, ...] = ()  # what hides a problem: `assert_ok` fails on these
    seconds: float = 0.0
    bounds: tuple[str, ...] = ()  # how the scenarios were bounded (branch interleavings)

    @property
    def violations(self) -> list[str]:
        return [f"{r.name}: {v}" for r in self.results for v in r.violations]

    @property
    def skipped(self) -> list[ScenarioResult]:
        return [r for r in self.results if r.outcome == "skipped"]

    @property
    def ok(self) -> bool:
        return not self.violations and not self.notes

    def __len__(self) -> int:
        return len(self.results)

    def assert_ok(self) -> None:
        """Raise an `AssertionError` listing every violation (and every note that hides one)."""
        problems = list(self.notes) + self.violations
        if problems:
            lines = "\n".join(f"  - {p}" for p in problems)
            raise AssertionError(
                f"saga {self.machine!r}: {len(problems)} problem(s) in "
                f"{len(self.results)} scenarios:\n{lines}")

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        return [(r.name, r.outcome, r.expected, r.final_state or "-",
                 "; ".join(r.violations) or (r.reason or "")) for r in self.results]

    def __str__(self) -> str:
        head = ("scenario", "outcome", "expected", "final state", "violations / notes")
        rows = [head, *self.rows()]
        widths = [min(48, max(len(r[i]) for r in rows)) for i in range(4)]
        lines = [f"failure matrix of {self.machine!r}: {len(self.results)} scenarios, "
                 f"{len(self.violations)} violations, {len(self.skipped)} skipped "
                 f"({self.seconds:.2f} s)"]
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"note (bounded): {b}" for b in self.bounds]
        for r in rows:
            cells = [r[i][: widths[i]].ljust(widths[i]) for i in range(4)]
            lines.append("  ".join([*cells, r[4]]).rstrip())
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colour = {"ok": "#e6f4ea", "violated": "#fce8e6", "skipped": "#f1f3f4"}
        body = "".join(
            f"<tr style='background:{colour[r[1]]}'>" + "".join(
                f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.rows())
        notes = "".join(f"<p><b>note:</b> {html.escape(n)}</p>" for n in self.notes)
        notes += "".join(f"<p><b>note (bounded):</b> {html.escape(b)}</p>"
                         for b in self.bounds)
        return (f"<p>failure matrix of <b>{html.escape(self.machine)}</b>: "
                f"{len(self.results)} scenarios, {len(self.violations)} violations, "
                f"{len(self.skipped)} skipped</p>{notes}<table><tr><th>scenario</th>"
                "<th>outcome</th><th>expected</th><th>final state</th>"
                f"<th>violations / notes</th></tr>{body}</table>")

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))
