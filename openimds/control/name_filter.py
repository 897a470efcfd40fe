"""Name filters with bounded cost: literal text, optionally anchored — never a regular expression.

Nova documents `?name=` as a regular expression, and evaluating a guest-chosen pattern lets one
request freeze the API (`^(a+)+$` against `'a' * 26 + '!'` backtracks for seconds, doubling
with each character). What clients actually send is a name, a prefix (`^web`), a suffix or an
exact name (`^web-1$`), so openimds honours exactly those forms and nothing else:

* a leading ``^`` anchors at the start, a trailing unescaped ``$`` at the end;
* everything in between is literal text (``\\`` escapes the next character, so ``\\$`` is a
  dollar sign and ``a\\.b`` is ``a.b``); ``.``, ``*``, ``(`` … are ordinary characters;
* unanchored text matches anywhere in the name (Nova's ``re.search`` on a plain word).

Matching is ``==`` / ``startswith`` / ``endswith`` / ``in``: linear in the name's length.
"""

from __future__ import annotations

from collections.abc import Callable

from openimds.control.errors import BadRequest

MAX_PATTERN = 255


def _unescape(body: str) -> str:
    out: list[str] = []
    chars = iter(body)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, None)
            if nxt is None:
                raise BadRequest("Invalid name filter: it ends with a lone backslash.")
            out.append(nxt)
        else:
            out.append(ch)
    return "".join(out)


def _ends_with_unescaped_dollar(text: str) -> bool:
    if not text.endswith("$"):
        return False
    backslashes = len(text[:-1]) - len(text[:-1].rstrip("\\"))
    return backslashes % 2 == 0


def name_matcher(pattern: str) -> Callable[[str], bool]:
    """A predicate for one `?name=` value (see the module docstring for the forms)."""
    if len(pattern) > MAX_PATTERN:
        raise BadRequest(f"Invalid name filter: longer than {MAX_PATTERN} characters.")
    start = pattern.startswith("^")
    body = pattern[1:] if start else pattern
    end = _ends_with_unescaped_dollar(body)
    if end:
        body = body[:-1]
    literal = _unescape(body)
    if start and end:
        return lambda name: name == literal
    if start:
        return lambda name: name.startswith(literal)
    if end:
        return lambda name: name.endswith(literal)
    return lambda name: literal in name


def any_name_matcher(patterns: list[str]) -> Callable[[str], bool]:
    """Repeated `?name=` values: a name matching any of them."""
    matchers = [name_matcher(p) for p in patterns]
    return lambda name: any(m(name) for m in matchers)


__all__ = ["MAX_PATTERN", "any_name_matcher", "name_matcher"]
