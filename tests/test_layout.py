"""The package layout the architecture promises: short modules, and training (``infer``) and
evaluation (``evaluation``) that never import each other, not even lazily inside a function."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "pyro_vsm"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 500


def _imported_packages(source, parts):
    r"""The ``pyro_vsm`` subpackages a module (``source``, in package ``pyro_vsm.<parts>``)
    imports anywhere in its body."""
    tree = ast.parse(source)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = list(parts[: len(parts) - (node.level - 1)])
                target = base + (node.module.split(".") if node.module else [])
                names = [target + [a.name] for a in node.names] if not node.module else [target]
            elif node.module == "pyro_vsm":
                names = [[a.name] for a in node.names]
            elif node.module and node.module.startswith("pyro_vsm."):
                names = [node.module.split(".")[1:]]
            else:
                continue
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1:] for a in node.names if a.name.startswith("pyro_vsm.")]
        else:
            continue
        found.update(n[0] for n in names if n)
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_module_length(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


@pytest.mark.parametrize(
    ("source", "forbidden"), [("infer", "evaluation"), ("evaluation", "infer")]
)
def test_infer_and_evaluation_do_not_import_each_other(source, forbidden):
    offenders = [
        p.relative_to(PACKAGE).as_posix()
        for p in (PACKAGE / source).rglob("*.py")
        if forbidden in _imported_packages(p.read_text(), p.relative_to(PACKAGE).parts[:-1])
    ]
    assert offenders == []


def test_the_import_scan_can_fail():
    lazy = "def f():\n    from ..evaluation.importance import x\n"
    assert "evaluation" in _imported_packages(lazy, ("infer",))
    assert "evaluation" in _imported_packages("from pyro_vsm import evaluation\n", ("infer",))
    assert "evaluation" in _imported_packages("import pyro_vsm.evaluation.ais\n", ("infer",))
    assert "evaluation" in _imported_packages("from .. import evaluation\n", ("infer",))
    assert "evaluation" not in _imported_packages("from .evaluation import x\n", ("infer",))
