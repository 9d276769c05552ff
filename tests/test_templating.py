"""Templates in runbook strings: native values, strictness, the sandbox, static analysis."""

from __future__ import annotations

from typing import Any

import pytest

from cutbook import templating
from cutbook.errors import PermanentError
from cutbook.templating import TemplateError, TemplateProblem, analyze, render, render_string

CTX: dict[str, Any] = {
    "vars": {"port": 8765, "satellites": ["e-manifest", "e-cargo"], "name": "Hà Nội", "on": True},
    "data": {
        "offices": [
            {"old_code": "13A2", "status": "renamed"},
            {"old_code": "14B3", "status": "ceased"},
            {"old_code": "29B4", "status": "ceased"},
        ]
    },
    "secrets": {"TOKEN": "<secret TOKEN>"},
    "item": {"old_code": "13A2"},
    "index": 0,
}


def refused(text: str) -> str:
    with pytest.raises(TemplateError) as info:
        render_string(text, CTX)
    return str(info.value)


# --- rendering ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ vars.port }}", 8765),
        ("  {{ vars.port }}\n", 8765),
        ("{{ vars.satellites }}", ["e-manifest", "e-cargo"]),
        ("{{ vars.satellites + ['e-payment'] }}", ["e-manifest", "e-cargo", "e-payment"]),
        ("{{ vars.on }}", True),
        ("{{ vars.port > 1024 }}", True),
        ("{{ none }}", None),
        ("{{ {'a': vars.port} }}", {"a": 8765}),
        ("{{ index + 1 }}", 1),
        (
            "{{ data.offices | selectattr('status', 'eq', 'ceased') | list }}",
            [{"old_code": "14B3", "status": "ceased"}, {"old_code": "29B4", "status": "ceased"}],
        ),
        ("{{ data.offices | map(attribute='old_code') | list }}", ["13A2", "14B3", "29B4"]),
    ],
)
def test_a_whole_expression_renders_to_its_native_value(text: str, expected: Any) -> None:
    got = render_string(text, CTX)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://127.0.0.1:{{ vars.port }}/vnaccs", "http://127.0.0.1:8765/vnaccs"),
        ("{{ vars.port }}{{ vars.port }}", "87658765"),
        ("/offices/{{ item.old_code }}/close", "/offices/13A2/close"),
        ("Cục Hải quan {{ vars.name }}", "Cục Hải quan Hà Nội"),
        ("{% if vars.on %}on{% else %}off{% endif %}", "on"),
        ("{% for s in vars.satellites %}{{ s }};{% endfor %}", "e-manifest;e-cargo;"),
        ("{# a comment #}", ""),
        ("{{ '{{' }}", "{{"),
        ("Bearer {{ secrets.TOKEN }}", "Bearer <secret TOKEN>"),
    ],
)
def test_mixed_text_renders_to_a_string(text: str, expected: str) -> None:
    assert render_string(text, CTX) == expected


def test_text_without_template_markers_is_returned_untouched() -> None:
    text = "{ not a template } and }} and {"
    assert templating.is_template(text) is False
    assert render_string(text, {}) is text


def test_tojson_is_stable_and_keeps_vietnamese_letters() -> None:
    got = render_string("{{ {'b': vars.name, 'a': 1} | tojson }}", CTX)
    assert str(got) == '{"a": 1, "b": "Hà Nội"}'


def test_render_walks_mappings_and_lists_and_keeps_other_values() -> None:
    value = {
        "path": "/offices/{{ item.old_code }}",
        "json": {"port": "{{ vars.port }}", "tags": ["{{ index }}", 7, None, False]},
    }
    assert render(value, CTX) == {
        "path": "/offices/13A2",
        "json": {"port": 8765, "tags": [0, 7, None, False]},
    }
    assert render(("{{ index }}",), CTX) == [0]


# --- strictness ----------------------------------------------------------------------


def test_undefined_names_are_errors_not_empty_strings() -> None:
    assert refused("{{ nope }}") == "template '{{ nope }}': 'nope' is undefined"
    assert refused("/x/{{ nope }}") == "template '/x/{{ nope }}': 'nope' is undefined"
    assert refused("{{ vars.missing }}") == (
        "template '{{ vars.missing }}': 'dict object' has no attribute 'missing'"
    )
    assert refused("{{ vars.satellites[5] }}") == (
        "template '{{ vars.satellites[5] }}': list object has no element 5"
    )


def test_runtime_failures_become_template_errors() -> None:
    assert refused("{{ vars.port + 'x' }}") == (
        "template \"{{ vars.port + 'x' }}\": TypeError: unsupported operand type(s) for +: "
        "'int' and 'str'"
    )
    assert refused("{{ 1 / 0 }}") == "template '{{ 1 / 0 }}': ZeroDivisionError: division by zero"
    assert refused("{{ 'a' ~ }}") == "template \"{{ 'a' ~ }}\": unexpected 'end of template'"


def test_template_errors_are_permanent_so_the_engine_never_retries_them() -> None:
    assert issubclass(TemplateError, PermanentError)


# --- the sandbox ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["{{ ''.__class__.__mro__ }}", "x {{ ''.__class__.__mro__ }}", "{{ ''.__class__ }}"],
)
def test_sandbox_refuses_python_internals_at_render_time(text: str) -> None:
    assert refused(text) == (
        f"template {text!r} was refused by the sandbox: "
        "access to attribute '__class__' of 'str' object is unsafe."
    )


def test_sandbox_refuses_function_globals() -> None:
    assert refused("{{ lipsum.__globals__ }}") == (
        "template '{{ lipsum.__globals__ }}' was refused by the sandbox: "
        "access to attribute '__globals__' of 'function' object is unsafe."
    )


@pytest.mark.parametrize(("method", "kind"), [("append(1)", "list"), ("pop()", "list")])
def test_immutable_sandbox_refuses_mutating_runbook_values(method: str, kind: str) -> None:
    text = f"{{{{ vars.satellites.{method} }}}}"
    name = method.split("(")[0]
    assert refused(text) == (
        f"template {text!r} was refused by the sandbox: "
        f"access to attribute '{name}' of '{kind}' object is unsafe."
    )
    assert CTX["vars"]["satellites"] == ["e-manifest", "e-cargo"]


def test_immutable_sandbox_refuses_dict_update() -> None:
    text = "{{ vars.update({'port': 1}) }}"
    assert "was refused by the sandbox" in refused(text)
    assert CTX["vars"]["port"] == 8765


def test_sandbox_caps_huge_ranges() -> None:
    assert refused("{{ range(10**7) | list }}") == (
        "template '{{ range(10**7) | list }}': OverflowError: Range too big. "
        "The sandbox blocks ranges larger than MAX_RANGE (100000)."
    )


# --- static analysis -------------------------------------------------------------


def test_analyze_names_and_constant_references() -> None:
    info = analyze("{{ vars.estate_url }}/{{ data['offices'] | length }}/{{ steps['x'].output }}")
    assert info.names == {"vars", "data", "steps"}
    assert info.refs == {"vars": {"estate_url"}, "data": {"offices"}, "steps": {"x"}}
    assert info.unsafe == []


def test_analyze_records_only_the_first_level_under_a_name() -> None:
    info = analyze("{{ vars.a.b }} {{ item.old_code }} {{ vars[0] }}")
    assert info.names == {"vars", "item"}
    assert info.refs == {"vars": {"a", "0"}, "item": {"old_code"}}


def test_analyze_does_not_count_loop_variables_as_names() -> None:
    info = analyze("{% for o in data.offices %}{{ o.code }}{% endfor %}")
    assert info.names == {"data"}
    assert info.refs["data"] == {"offices"}


@pytest.mark.parametrize(
    ("text", "unsafe"),
    [
        ("{{ ''.__class__.__mro__ }}", {"__class__", "__mro__"}),
        ("{{ lipsum.__globals__['os'] }}", {"__globals__"}),
        ("{{ x['__globals__'] }}", {"__globals__"}),
        ("{{ vars.office.mro() }}", {"mro"}),
        ("{{ f.func_globals }}", {"func_globals"}),
        ("{{ g.gi_frame.f_locals }}", {"gi_frame", "f_locals"}),
        ("{{ vars._private }}", {"_private"}),
    ],
)
def test_analyze_flags_sandbox_escapes_without_running_them(text: str, unsafe: set[str]) -> None:
    assert set(analyze(text).unsafe) == unsafe


def test_analyze_reports_syntax_errors_as_template_problems() -> None:
    with pytest.raises(TemplateProblem) as info:
        analyze("{{ vars.x")
    assert str(info.value) == (
        "template syntax error: unexpected end of template, expected 'end of print statement'."
    )
    with pytest.raises(TemplateProblem, match=r"^template syntax error: "):
        analyze("{% for x in y %}")


def test_walk_strings_finds_every_template_with_its_path() -> None:
    value = {
        "a": "plain",
        "b": ["{{ x }}", {"c": "{# note #}"}],
        "d": 3,
        "e": "{% if y %}{% endif %}",
    }
    assert templating.walk_strings(value) == [
        (("b", 0), "{{ x }}"),
        (("b", 1, "c"), "{# note #}"),
        (("e",), "{% if y %}{% endif %}"),
    ]


def test_the_names_a_runbook_may_use() -> None:
    assert {"vars", "data", "secrets", "runbook"} == templating.STATIC_NAMES
    assert {"item", "index", "steps", "run", "output"} == templating.RUNTIME_NAMES
