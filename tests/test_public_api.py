"""The names adapter authors import from ``cutbook`` are there, and cost nothing until used."""

from __future__ import annotations

import subprocess
import sys

import cutbook


def test_every_public_name_resolves_and_nothing_else_is_promised() -> None:
    names = set(cutbook.__all__) - {"__version__"}
    assert names == set(cutbook._EXPORTS)
    for name in names:
        assert getattr(cutbook, name) is not None, name
    assert sorted(dir(cutbook)) == sorted(cutbook.__all__)


def test_unknown_names_are_an_attribute_error() -> None:
    try:
        cutbook.Runner  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "Runner" in str(exc)
    else:
        raise AssertionError("cutbook.Runner should not be public")


def test_importing_the_package_loads_no_heavy_module() -> None:
    code = (
        "import sys, cutbook, cutbook.errors\n"
        "heavy = {'pydantic', 'prefect', 'httpx', 'jinja2'} & set(sys.modules)\n"
        "print(sorted(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
