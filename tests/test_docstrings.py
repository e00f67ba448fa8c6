"""The docstring conventions of the package (see the developers' guide): raw strings, one
``:param name:`` line per argument, one References format, no pointers outside the package."""

import ast
import io
import pathlib
import re
import tokenize

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "pyro_vsm"

#: Modules whose docstrings are still being converted (their owners follow the same conventions);
#: remove an entry once its module passes.
PENDING = {
    "datasets/files.py",
    "models/networks.py",
    "models/vae.py",
}

MODULES = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py"))

ENTRY = re.compile(r"\[\d+\] `[^`]+`,$")
OUTSIDE = re.compile(r"\btests/|\bexamples/|\bbenchmarks/|\.\./shared|\bshared/|NOTES\.md")


def _docstrings(source):
    r"""``(line, token text, value)`` of every module, class and function docstring."""
    tokens = {
        tok.start: tok.string
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.STRING
    }
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                const = first.value
                text = tokens.get((const.lineno, const.col_offset), "")
                yield const.lineno, text, ast.get_docstring(node, clean=True)


def _problems(source):
    found = []
    for line, text, doc in _docstrings(source):
        if text[:1] not in "rR":
            found.append(f"line {line}: not a raw string")
        for m in re.finditer(r":param ([^:\n]*):", doc):
            if "," in re.sub(r"\[[^\]]*\]", "", m.group(1)):
                found.append(f"line {line}: several names in one field, {m.group(0)!r}")
        if OUTSIDE.search(doc):
            found.append(f"line {line}: points outside the package ({OUTSIDE.search(doc)[0]!r})")
        lines = doc.splitlines()
        for i, text_line in enumerate(lines):
            if not re.match(r"\s*References?\b", text_line):
                continue
            if text_line.strip() != "References:":
                found.append(f"line {line}: references header {text_line.strip()!r}")
                continue
            entries = [x for x in lines[i + 1 :] if x.strip()]
            indent = len(text_line) - len(text_line.lstrip())
            if not entries or not ENTRY.match(entries[0][indent:]):
                found.append(f"line {line}: references must start with [1] `Title`,")
            for x in entries:
                body = x[indent:]
                if not (ENTRY.match(body) or body.startswith("    ")):
                    found.append(f"line {line}: reference line {x.strip()!r}")
                elif re.match(r"\s+[A-Z]\. ", body):
                    # "Y. Song" at the start of a line is an enumerated list item in RST
                    found.append(f"line {line}: author line starts with an initial {x.strip()!r}")
    return found


@pytest.mark.parametrize("module", MODULES)
def test_docstring_conventions(module):
    if module in PENDING:
        pytest.skip("docstrings not converted yet")
    assert _problems((PACKAGE / module).read_text()) == []


def test_pending_modules_exist():
    assert PENDING <= set(MODULES)


def test_the_checks_can_fail():
    bad = (
        '"""Module.\n\nReferences\n\n* A. B. *Title*. 2020.\n"""\n\n'
        'def g():\n    r"""Doc.\n\n    References:\n\n    [1] `Title`,\n        A. Bee (2020)\n    """\n\n'
        'def f(a, b):\n    r"""Doc.\n\n    :param a, b: numbers (see tests/test_x.py).\n    """\n'
    )
    problems = _problems(bad)
    assert any("not a raw string" in p for p in problems)
    assert any("references header" in p for p in problems)
    assert any("several names" in p for p in problems)
    assert any("outside the package" in p for p in problems)
    assert any("starts with an initial" in p for p in problems)
    good = (
        'r"""Module.\n\nReferences:\n\n[1] `Title`,\n    Ann Bee, C. Dee (2020)\n"""\n\n'
        'def f(a, b):\n    r"""Doc.\n\n    :param tuple[int, int] a: a pair.\n    """\n'
    )
    assert _problems(good) == []
