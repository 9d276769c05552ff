"""The shared dependency graph: order, cycles and ancestors, as validation and planning see them."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cutbook import graph

# --- order -------------------------------------------------------------------------


def test_order_puts_dependencies_first_and_keeps_mapping_order_otherwise() -> None:
    deps = {"d": ["b"], "a": [], "b": ["a"], "c": []}
    # d is first in the mapping but waits for b; once ready it still goes before c.
    assert graph.topological_order(deps) == ["a", "b", "d", "c"]


def test_ready_node_earliest_in_the_mapping_goes_first() -> None:
    # After "late", both "early" and "mid" are ready; "early" is earlier in the mapping.
    deps = {"early": ["late"], "mid": ["late"], "late": []}
    assert graph.topological_order(deps) == ["late", "early", "mid"]


def test_order_of_an_empty_graph() -> None:
    assert graph.topological_order({}) == []
    assert graph.ancestors({}) == {}
    assert graph.find_cycle({}) is None


def test_repeated_dependency_is_harmless() -> None:
    assert graph.topological_order({"a": [], "b": ["a", "a"]}) == ["a", "b"]
    assert graph.ancestors({"a": [], "b": ["a", "a"]})["b"] == {"a"}


def test_unknown_dependency_is_refused() -> None:
    with pytest.raises(ValueError, match="'ghost'"):
        graph.topological_order({"a": ["ghost"]})
    with pytest.raises(ValueError, match="'ghost'"):
        graph.find_cycle({"a": ["ghost"]})


# --- cycles ------------------------------------------------------------------------


def test_no_cycle_in_a_dag() -> None:
    assert graph.find_cycle({"a": [], "b": ["a"], "c": ["a", "b"]}) is None


def test_cycle_starts_where_the_walk_closes_it_in_running_order() -> None:
    # Walking from a: a waits on c, c on b, b on a again; so a closes the loop.
    deps = {"a": ["c"], "b": ["a"], "c": ["b"]}
    assert graph.find_cycle(deps) == ["a", "b", "c", "a"]


def test_cycle_reached_through_other_nodes() -> None:
    deps = {"start": [], "x": ["start", "a"], "a": ["c"], "b": ["a"], "c": ["b"]}
    assert graph.find_cycle(deps) == ["a", "b", "c", "a"]


def test_first_cycle_in_mapping_order_is_named() -> None:
    deps = {"p": ["q"], "q": ["p"], "a": ["b"], "b": ["a"]}
    assert graph.find_cycle(deps) == ["p", "q", "p"]
    deps = {"a": ["b"], "b": ["a"], "p": ["q"], "q": ["p"]}
    assert graph.find_cycle(deps) == ["a", "b", "a"]


def test_dependencies_are_followed_in_listed_order() -> None:
    # a waits on two loops; the one through its first dependency is named.
    deps = {"a": ["b", "c"], "b": ["a"], "c": ["a"]}
    assert graph.find_cycle(deps) == ["a", "b", "a"]
    deps = {"a": ["c", "b"], "b": ["a"], "c": ["a"]}
    assert graph.find_cycle(deps) == ["a", "c", "a"]


def test_self_dependency_is_a_cycle() -> None:
    assert graph.find_cycle({"a": ["a"]}) == ["a", "a"]


def test_order_and_ancestors_raise_the_named_cycle() -> None:
    deps = {"a": ["c"], "b": ["a"], "c": ["b"]}
    with pytest.raises(graph.Cycle) as caught:
        graph.topological_order(deps)
    assert caught.value.members == ["a", "b", "c", "a"]
    assert "a → b → c → a" in str(caught.value)
    with pytest.raises(graph.Cycle):
        graph.ancestors(deps)


def test_nodes_need_not_be_strings() -> None:
    assert graph.topological_order({0: [2], 1: [], 2: [1]}) == [1, 2, 0]
    assert graph.find_cycle({0: [1], 1: [0]}) == [0, 1, 0]


# --- ancestors ---------------------------------------------------------------------


def test_ancestors_are_transitive() -> None:
    deps = {"a": [], "b": ["a"], "c": ["b"], "d": [], "e": ["c", "d"]}
    got = graph.ancestors(deps)
    assert got == {
        "a": frozenset(),
        "b": {"a"},
        "c": {"a", "b"},
        "d": frozenset(),
        "e": {"a", "b", "c", "d"},
    }


# --- properties over generated graphs ----------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    """A random DAG whose mapping order is shuffled (so it is not already sorted)."""
    n = draw(st.integers(0, 12))
    deps = [draw(st.lists(st.integers(0, i - 1), max_size=3)) if i else [] for i in range(n)]
    names = [f"n{i}" for i in range(n)]
    order = draw(st.permutations(range(n)))
    return {names[i]: [names[j] for j in deps[i]] for i in order}


@st.composite
def graphs(draw: st.DrawFn) -> dict[str, list[str]]:
    """Any small graph, cycles and self-loops included."""
    n = draw(st.integers(1, 8))
    names = [f"n{i}" for i in range(n)]
    return {name: draw(st.lists(st.sampled_from(names), max_size=3)) for name in names}


@given(dags())
def test_order_places_each_node_after_its_dependencies(deps: dict[str, list[str]]) -> None:
    order = graph.topological_order(deps)
    assert sorted(order) == sorted(deps)
    seen: set[str] = set()
    rank = {node: i for i, node in enumerate(deps)}
    for node in order:
        # ...and is the earliest (in mapping order) of the nodes ready at that point.
        ready = [n for n in deps if n not in seen and all(d in seen for d in deps[n])]
        assert node == min(ready, key=rank.__getitem__)
        seen.add(node)


@given(dags())
def test_ancestors_match_a_plain_search(deps: dict[str, list[str]]) -> None:
    got = graph.ancestors(deps)
    for node in deps:
        found: set[str] = set()
        todo = list(deps[node])
        while todo:
            dep = todo.pop()
            if dep not in found:
                found.add(dep)
                todo.extend(deps[dep])
        assert got[node] == found


@given(graphs())
def test_a_named_cycle_is_a_real_cycle(deps: dict[str, list[str]]) -> None:
    cycle = graph.find_cycle(deps)
    try:
        graph.topological_order(deps)
    except graph.Cycle as exc:
        assert exc.members == cycle
    else:
        assert cycle is None
        return
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert len(set(cycle)) == len(cycle) - 1
    for before, after in itertools.pairwise(cycle):
        assert before in deps[after]  # each member runs before the next
