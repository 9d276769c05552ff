"""Step ids and ``depends_on``: the graph every later check and the planner stand on."""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Mapping

from cutbook import graph
from cutbook.model import Runbook
from cutbook.validation.report import Report
from cutbook.validation.wording import did_you_mean

RESERVED_ID = "guard"
"""The deadline guard's question goes by this name (the engine's ``guard.QUESTION_ID``)."""


def check_unique_ids(report: Report, rb: Runbook, positions: list[int]) -> None:
    """Ids name steps in ``depends_on`` and templates, so each must be used once.

    ``positions`` gives each valid step's place among all steps in the file.
    """
    first: dict[str, int] = {}
    for i, step in enumerate(rb.steps):
        if step.id == RESERVED_ID:
            report.err(
                ("steps", positions[i], "id"),
                f"step id {RESERVED_ID!r} is reserved: it names the deadline guard's go/no-go "
                f"(cutbook approve RUN {RESERVED_ID}); call the step something else",
            )
        if step.id in first:
            line = report.doc.locate(("steps", positions[first[step.id]], "id")).line
            report.err(
                ("steps", positions[i], "id"),
                f"duplicate step id {step.id!r} (first at line {line})",
            )
        else:
            first[step.id] = i


def check_depends_on(report: Report, rb: Runbook, known: Iterable[str]) -> None:
    """Each dependency must be another step, listed once.

    ``known`` also holds ids of steps that failed validation, so a dependency on
    them is not called unknown on top of their own error.
    """
    ids = set(known)
    for step in rb.steps:
        for j, dep in enumerate(step.depends_on):
            path = report.step_path(step, "depends_on", j)
            if dep == step.id:
                report.err(path, f"step {step.id!r} depends on itself")
            elif dep not in ids:
                hint = did_you_mean(dep, ids)
                report.err(path, f"step {step.id!r} depends on unknown step {dep!r}{hint}")
            elif step.depends_on.index(dep) != j:
                report.err(path, f"step {step.id!r} lists {dep!r} twice in depends_on")


def check_cycles(report: Report, rb: Runbook) -> bool:
    """Report one dependency cycle, at the step where it closes; whether there was one."""
    cycle = graph.find_cycle(_dependencies(rb))
    if cycle is None:
        return False
    where = report.step_path(rb.step(cycle[0]), "depends_on")
    report.err(where, "dependency cycle: " + " → ".join(cycle))
    return True


def ancestors(rb: Runbook) -> dict[str, frozenset[str]]:
    """The steps each step waits for, to tell which outputs it may read. Needs no cycle."""
    return graph.ancestors(_dependencies(rb))


class Upstream(Container[str]):
    """The steps one step waits for, worked out the first time anyone asks.

    Most steps never read another step's output, so nothing asks; building
    every step's whole set up front costs time and memory that grow with the
    square of the steps (a 10,000-step runbook spent most of its checks there).
    ``unsure`` are steps whose ``depends_on`` was wrong: a step that is one of
    them, or waits for one, may wait for anything.
    """

    def __init__(self, step: str, deps: Mapping[str, list[str]], unsure: frozenset[str]) -> None:
        self.step = step
        self.deps = deps
        self.unsure = unsure
        self._found: set[str] | None = None

    def __contains__(self, other: object) -> bool:
        if self._found is None:
            found: set[str] = set()
            todo = list(self.deps.get(self.step, ()))
            while todo:
                dep = todo.pop()
                if dep not in found:
                    found.add(dep)
                    todo.extend(self.deps.get(dep, ()))
            self._found = found
        return other in self._found or self.step in self.unsure or bool(self._found & self.unsure)


class Ancestry(Mapping[str, Upstream]):
    """What each step waits for (see :class:`Upstream`), for every step of ``rb``."""

    def __init__(self, rb: Runbook, unsure: Iterable[str] = ()) -> None:
        self._deps = _dependencies(rb)
        self._unsure = frozenset(unsure)

    def __getitem__(self, step: str) -> Upstream:
        if step not in self._deps:
            raise KeyError(step)
        return Upstream(step, self._deps, self._unsure)

    def __iter__(self) -> Iterator[str]:
        return iter(self._deps)

    def __len__(self) -> int:
        return len(self._deps)


def _dependencies(rb: Runbook) -> dict[str, list[str]]:
    """Each step's dependencies, without those :func:`check_depends_on` reports as wrong."""
    known = rb.steps_by_id
    return {s.id: [d for d in s.depends_on if d in known and d != s.id] for s in rb.steps}
