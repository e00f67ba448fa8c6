"""Sphinx configuration of the pyro-vsm API reference (``make docs``).

The pages under ``api/`` list every public module of the package with ``automodule``, so new
functions and classes appear by themselves; a new *module* must be added to one of the pages,
and the build warns (an error under ``-W``) when a module is listed nowhere.
"""

import importlib
import os
import pkgutil
import re
import sys

from sphinx.util import logging

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

import pyro_vsm  # noqa: E402

project = "pyro-vsm"
author = "the pyro-vsm authors"
copyright = "the pyro-vsm authors"
version = release = pyro_vsm.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.mathjax", "sphinx.ext.viewcode"]

exclude_patterns = ["_build"]
html_theme = "alabaster"
nitpicky = False

# Docstrings are Sphinx field lists (``:param name:``), no napoleon needed. Constructor
# arguments are documented in the class docstring.
autoclass_content = "class"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Overrides without a docstring do not show torch's or Pyro's text as if it were ours.
autodoc_inherit_docstrings = False
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"

# Modules that are not part of the API reference: private modules (a leading underscore), the
# command line and the experiment runner behind it.
UNDOCUMENTED = {"pyro_vsm.__main__", "pyro_vsm.cli", "pyro_vsm.experiments"}

_logger = logging.getLogger(__name__)


def _package_modules():
    names = {"pyro_vsm"}
    for info in pkgutil.walk_packages(pyro_vsm.__path__, "pyro_vsm."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.add(info.name)
    return names - UNDOCUMENTED


def _check_every_module_listed(app):
    listed = set()
    for folder, _, files in os.walk(app.srcdir):
        if os.path.relpath(folder, app.srcdir).startswith("_build"):
            continue
        for page in files:
            if page.endswith(".rst"):
                with open(os.path.join(folder, page), encoding="utf-8") as f:
                    listed.update(re.findall(r"^\.\. automodule:: (\S+)", f.read(), re.M))
    for name in sorted(_package_modules() - listed):
        _logger.warning("module %s is not listed in any page of the API reference", name)


def _lookup(target):
    r"""The object a dotted name ``pyro_vsm.x.y.Name[.attr]`` denotes, or ``None``."""
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _canonical(obj):
    obj = getattr(obj, "fget", obj)  # properties
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not (module and qualname) or not module.startswith("pyro_vsm"):
        return None
    return f"{module}.{qualname}"


def _resolve_reexported(app, env, node, contnode):
    r"""Links names that autodoc documents elsewhere: ``pyro_vsm.pkg.Name`` (a re-exported public
    name) to ``pyro_vsm.pkg.module.Name``, and relative names (``Name``, ``method``) in a module
    or class docstring to where they are defined (e.g. an inherited method)."""
    if node.get("refdomain") != "py" or node.get("reftype") == "mod":
        return None
    target = node.get("reftarget", "")
    candidates = [target]
    module, cls = node.get("py:module"), node.get("py:class")
    if module and not target.startswith("pyro_vsm"):
        if cls:
            candidates.append(f"{module}.{cls}.{target}")
        candidates.append(f"{module}.{target}")
    domain = env.get_domain("py")
    for candidate in candidates:
        if not candidate.startswith("pyro_vsm"):
            continue
        canonical = _canonical(_lookup(candidate))
        if canonical and canonical != target:
            found = domain.resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], canonical, node, contnode
            )
            if found is not None:
                return found
    return None


def setup(app):
    app.connect("builder-inited", _check_every_module_listed)
    app.connect("missing-reference", _resolve_reexported)
