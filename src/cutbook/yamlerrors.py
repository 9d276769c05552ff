"""YAML syntax errors retold in plain words, pointing at the line to fix.

The parser says where it noticed a problem; people need to know where to look,
which is often an earlier line (an unclosed bracket or quote, a key without its
colon). libyaml and PyYAML word their errors differently and both are understood
here, so either parser gives the same message.
"""

from __future__ import annotations

import re

import yaml

_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def explain_syntax_error(
    exc: yaml.MarkedYAMLError,
    text: str,
    last_quoted: tuple[int, int, int] | None = None,
    open_at: list[tuple[int, int]] | None = None,
) -> tuple[int, int, str]:
    """Line, column (1-based) and a plain sentence for a parser's syntax error.

    The parser says where it noticed; the sentence names the line to fix,
    which is often an earlier one (an unclosed bracket or quote, a key
    without its colon). libyaml and PyYAML word their errors differently and
    are both understood here, so either parser gives the same message.
    ``last_quoted`` is the last quoted value that ran over several lines
    (0-based start line, start column, end line), the usual sign of a
    missing closing quote. ``open_at`` are the collections open when the
    parser stopped (1-based, outermost first), to name an unclosed bracket.
    """
    lines = _LINE_BREAK.split(text)
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line, mark.column) if mark is not None else (0, 0)
    line = min(line, len(lines) - 1)  # the end of a file without a final line break
    ctx = exc.context_mark
    problem = exc.problem or ""
    context = exc.context or ""
    char = _char_in(lines, line, col)
    at_end = not lines[line][col:].strip() and not any(t.strip() for t in lines[line + 1 :])
    if char == "\t":
        if not lines[line][:col].strip():
            return (
                line + 1,
                col + 1,
                (
                    f"line {line + 1} is indented with a tab; YAML indents with spaces only "
                    "(replace the tab with spaces)"
                ),
            )
        return line + 1, col + 1, "a tab where YAML expects spaces (replace it with spaces)"
    if "quoted scalar" in context and "end of stream" in problem and ctx is not None:
        quote = _char_in(lines, ctx.line, ctx.column)
        return (
            ctx.line + 1,
            ctx.column + 1,
            (
                f"the quote {quote} opened at line {ctx.line + 1}, column {ctx.column + 1} is "
                "never closed, so the rest of the file is read as its value: add the closing "
                f"{quote}"
            ),
        )
    if last_quoted is not None and last_quoted[2] == line:
        q_line, q_col, _ = last_quoted
        quote = _char_in(lines, q_line, q_col)
        return (
            q_line + 1,
            q_col + 1,
            (
                f"the quoted value that starts at line {q_line + 1}, column {q_col + 1} runs on to "
                f"line {line + 1}: is its closing {quote} missing on line {q_line + 1}?"
            ),
        )
    if "unknown escape" in problem:
        if char != "\\" and _char_in(lines, line, col - 1) == "\\":
            col -= 1  # PyYAML points after the backslash, libyaml at it
        escape = lines[line][col : col + 2]
        return (
            line + 1,
            col + 1,
            (
                f"'{escape}' is not an escape YAML knows: inside double quotes write \\\\ for a "
                "backslash, or put the value in single quotes"
            ),
        )
    if "flow" in context and "expected ','" in problem and ctx is not None:
        return _unclosed_flow(lines, line, col, (ctx.line, ctx.column), at_end)
    flows = [(ln - 1, c - 1) for ln, c in open_at or [] if _char_in(lines, ln - 1, c - 1) in "[{"]
    if at_end and flows:
        return _unclosed_flow(lines, line, col, flows[-1], at_end)
    if "could not find expected ':'" in problem and ctx is not None and ctx.line < line:
        return _missing_colon(lines, ctx.line, line)
    if "mapping values are not allowed" in problem:
        return _colon_in_value(lines, line, col)
    if "block mapping" in context or "block collection" in context:
        found = _misplaced(lines, line, col, char, ctx, "collection" in context)
        if found is not None:
            return found
    if "cannot start any token" in problem and char:
        return (
            line + 1,
            col + 1,
            (f"a value cannot start with {char!r} (YAML reserves it): put the value in quotes"),
        )
    if at_end:
        where = f" (it starts at line {ctx.line + 1}, column {ctx.column + 1})" if ctx else ""
        return (
            line + 1,
            col + 1,
            (
                f"the file ends in the middle of something{where}: a bracket, quote or block "
                "is not finished"
            ),
        )
    message = problem or context or "invalid YAML"
    if problem and context and ctx is not None and (ctx.line, ctx.column) != (line, col):
        message += f" ({context} that starts at line {ctx.line + 1}, column {ctx.column + 1})"
    return line + 1, col + 1, message


def _unclosed_flow(
    lines: list[str], line: int, col: int, start: tuple[int, int], at_end: bool
) -> tuple[int, int, str]:
    """A ``[...]`` or ``{...}`` (opened at ``start``, 0-based) the parser could not finish."""
    ctx_line, ctx_col = start
    opener = _char_in(lines, ctx_line, ctx_col) or "["
    closer = {"[": "]", "{": "}"}.get(opener, "]")
    what = "list" if opener == "[" else "mapping"
    opened = f"the {opener} opened at line {ctx_line + 1}, column {ctx_col + 1}"
    if at_end:
        return (
            ctx_line + 1,
            ctx_col + 1,
            (f"{opened} is never closed: the file ends first; add {closer} where the {what} ends"),
        )
    if line > ctx_line:
        last = _previous_content_line(lines, line)
        end = last + 1 if last is not None else ctx_line + 1
        return (
            ctx_line + 1,
            ctx_col + 1,
            (
                f"{opened} is not closed before line {line + 1}: add {closer} at the end of the "
                f"{what} (line {end})"
            ),
        )
    return (
        line + 1,
        col + 1,
        (
            f"expected ',' or {closer!r} here, inside {opened}: separate the items with commas "
            f"and close the {what} with {closer}"
        ),
    )


def _colon_in_value(lines: list[str], line: int, col: int) -> tuple[int, int, str]:
    """``mapping values are not allowed``: a ': ' inside a value, or a line out of place."""
    here = lines[line]
    before = here[:col]
    if re.search(r":(\s|$)", before):
        key, _, value = before.lstrip(" -").partition(":")
        value = (value.strip() + here[col:]).rstrip()
        return (
            line + 1,
            col + 1,
            (
                f"a second ': ' on line {line + 1}: a value that contains ': ' must be quoted, "
                f'as in {key.strip()}: "{value}"'
            ),
        )
    prev = _previous_content_line(lines, line)
    indent = _indent(here)
    if prev is not None:
        above = lines[prev]
        body = above.strip()
        while body.startswith("- "):
            body = body[2:].lstrip()
        key, colon, value = body.partition(": ")
        if not colon and not body.endswith(":"):
            return _missing_colon(lines, prev, line)
        if colon and value.strip() and not value.lstrip().startswith("#"):
            mine = here.strip().lstrip("- ").partition(":")[0].strip()
            theirs = key.strip()
            return (
                line + 1,
                indent + 1,
                f"line {line + 1} is indented more than line {prev + 1}, but {theirs!r} there "
                f"already has a value ({value.strip()!r}): line {mine!r} up with {theirs!r}, "
                f"or, if {mine!r} belongs under {theirs!r}, put nothing after '{theirs}:'",
            )
    return (
        line + 1,
        col + 1,
        ("a key where none can start: check this line's indentation against the lines above"),
    )


def _missing_colon(lines: list[str], key_line: int, line: int) -> tuple[int, int, str]:
    """A key without its colon runs on into the next line, where the parser stops."""
    above = lines[key_line]
    body = above.strip()
    while body.startswith("- "):
        body = body[2:].lstrip()
    return (
        key_line + 1,
        len(above) - len(body) + 1,
        f"line {key_line + 1} has no ':' after its key, so YAML reads it and line {line + 1} "
        f"as one value: write it as 'key: value' ({body!r} has no colon)",
    )


def _misplaced(
    lines: list[str],
    line: int,
    col: int,
    char: str,
    ctx: yaml.Mark | None,
    in_list: bool,
) -> tuple[int, int, str] | None:
    """A line that fits neither the block mapping nor the list around it."""
    if ctx is None or not char:
        return None
    indent = _indent(lines[line])
    started = f"line {ctx.line + 1}"
    if char in "]}":
        opener = "[" if char == "]" else "{"
        return (
            line + 1,
            col + 1,
            f"a stray {char!r}: no {opener} is open here, so it closes nothing",
        )
    if not in_list and char == "-":
        return (
            line + 1,
            col + 1,
            (
                f"a list item ('- ') where the mapping that starts at {started} expects a key: "
                "a list is the value of a key (write the key with nothing after its colon, "
                "then the items indented below it)"
            ),
        )
    prev = _previous_content_line(lines, line)
    prev_key = _key_column(lines[prev]) if prev is not None else None
    if in_list and indent == ctx.column:
        return (
            line + 1,
            indent + 1,
            (
                f"line {line + 1} lines up with the '- ' of the list that starts at {started}, "
                f"but is not a list item: start it with '- ' for a new item, or indent it "
                f"{ctx.column + 2} spaces to belong to the item above"
            ),
        )
    if prev is not None and prev_key is not None and prev_key != indent:
        levels = [prev_key] if in_list else sorted({prev_key, ctx.column}, reverse=True)
        shown = " or ".join(str(n) for n in levels)
        return (
            line + 1,
            indent + 1,
            (
                f"line {line + 1} is indented {indent} spaces, which lines up with no key above "
                f"it (line {prev + 1} is indented {prev_key}): indent it {shown} spaces, like "
                "the key it belongs with"
            ),
        )
    return None


def _key_column(text: str) -> int:
    """Where a line's key starts, after any list dashes (0-based)."""
    col = _indent(text)
    while text[col : col + 2] == "- ":
        col += 2
        while text[col : col + 1] == " ":
            col += 1
    return col


def _indent(text: str) -> int:
    return len(text) - len(text.lstrip(" "))


def _previous_content_line(lines: list[str], line: int) -> int | None:
    """The nearest line above ``line`` that is neither blank nor only a comment."""
    for i in range(min(line, len(lines)) - 1, -1, -1):
        stripped = lines[i].strip()
        if stripped and not stripped.startswith("#"):
            return i
    return None


def _char_in(lines: list[str], line: int, column: int) -> str:
    if 0 <= line < len(lines) and 0 <= column < len(lines[line]):
        return lines[line][column]
    return ""
