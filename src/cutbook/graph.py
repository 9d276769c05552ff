"""Dependency graphs of steps: running order, cycles, and what each step waits for.

Validation and planning both need these answers and must agree on them, so they
live here once, on :mod:`graphlib`. A graph is a mapping from each node to the
nodes it depends on (graphlib's "predecessors"). The mapping's order matters:
it breaks ties, so that with a runbook's steps in file order the answers are
the same on every run and read the way the file does.

Pure standard library and cheap to import: ``validate`` and ``plan`` use it.
"""

from __future__ import annotations

import graphlib
import heapq
from collections.abc import Hashable, Mapping, Sequence
from typing import Generic, TypeVar

__all__ = ["Cycle", "ancestors", "find_cycle", "topological_order"]

N = TypeVar("N", bound=Hashable)


class Cycle(ValueError, Generic[N]):
    """Nodes wait on each other in a circle, so none of them can ever go first.

    ``members`` is the loop in running order (each member runs before the
    next), starting and ending with the same node, as :func:`find_cycle` names it.
    """

    def __init__(self, members: list[N]) -> None:
        super().__init__("dependency cycle: " + " → ".join(str(m) for m in members))
        self.members = members


def find_cycle(deps: Mapping[N, Sequence[N]]) -> list[N] | None:
    """The first cycle met walking the nodes in order, or None if there is none.

    Walking means following each node's dependencies depth first, in the order
    they are listed; the loop closes where the walk comes back to a node still
    on its path. That node comes first (and last) in the answer, which is in
    running order. Error messages quote it, so the choice must stay put: tests
    in ``tests/test_graph.py`` pin it.
    """
    _check_known(deps)
    # graphlib walks from each node to its *successors*; adding every edge
    # reversed makes it walk from a node to its dependencies, in their order.
    sorter: graphlib.TopologicalSorter[N] = graphlib.TopologicalSorter()
    for node in deps:
        sorter.add(node)
    for node, needs in deps.items():
        for dep in needs:
            sorter.add(dep, node)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        # The loop graphlib's own depth-first walk closes first, in "depends on" order.
        walked: list[N] = exc.args[1]
        return walked[::-1]
    return None


def topological_order(deps: Mapping[N, Sequence[N]]) -> list[N]:
    """Every node after all it depends on; among nodes ready together, the earliest first.

    "Earliest" is position in ``deps``, so independent steps keep their file
    order. Raises :class:`Cycle` (naming the loop as :func:`find_cycle` does).
    """
    _check_known(deps)
    sorter = graphlib.TopologicalSorter(deps)
    try:
        sorter.prepare()
    except graphlib.CycleError:
        raise Cycle(find_cycle(deps) or []) from None
    nodes = list(deps)
    rank = {node: i for i, node in enumerate(nodes)}
    ready: list[int] = []
    order: list[N] = []
    while sorter.is_active():
        # graphlib hands out newly ready nodes in the order they became ready;
        # the heap re-sorts them by position instead.
        for node in sorter.get_ready():
            heapq.heappush(ready, rank[node])
        node = nodes[heapq.heappop(ready)]
        order.append(node)
        sorter.done(node)
    return order


def ancestors(deps: Mapping[N, Sequence[N]]) -> dict[N, frozenset[N]]:
    """Everything each node waits for, directly or through others. Raises :class:`Cycle`."""
    result: dict[N, frozenset[N]] = {}
    for node in topological_order(deps):
        acc: set[N] = set()
        for dep in deps[node]:
            acc.add(dep)
            acc |= result[dep]
        result[node] = frozenset(acc)
    return result


def _check_known(deps: Mapping[N, Sequence[N]]) -> None:
    """Refuse edges to unknown nodes: graphlib would quietly add them as new nodes."""
    for node, needs in deps.items():
        for dep in needs:
            if dep not in deps:
                raise ValueError(f"{node!r} depends on {dep!r}, which is not in the graph")
