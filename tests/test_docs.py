"""The docs hold together: relative links and anchors resolve, and the README's test command is CI's."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def heading_anchors(path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces as '-'."""
    anchors = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^#+\s+(.*)", line)
        if heading:
            anchors.add(re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-"))
    return anchors


def test_relative_links_and_anchors_resolve():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in heading_anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken


def test_readme_test_command_is_what_ci_runs():
    ci_command = (REPO / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci_command.startswith("pip install torch==2.13.0")
    assert ci_command in (REPO / "README.md").read_text(encoding="utf-8").splitlines()


# ---------------------------------------------------------------- names in docstrings
FILE_SUFFIXES = {"py", "md", "txt", "json", "npy", "npz", "safetensors"}


def local_names(tree) -> set[str]:
    """The names a module's code binds inside its functions: parameters and local variables (weight, x, ...)."""
    names = {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
    for function in (node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.Lambda))):
        names |= {node.id for node in ast.walk(function)
                  if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
    return names


def resolves(module, dotted: str) -> bool:
    """`a.b.c` names an attribute of `module`, or a module of minie5 (minie5.a, or a beside `module` in its
    package) and attributes of it."""
    def follow(obj, parts) -> bool:
        for part in parts:
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True

    parts = dotted.split(".")
    if hasattr(module, parts[0]):
        return follow(module, parts)
    for root in ("minie5", module.__package__):
        for split in range(len(parts), 0, -1):  # the longest prefix that imports as a module
            try:
                imported = importlib.import_module(root + "." + ".".join(parts[:split]))
            except ImportError:
                continue
            if follow(imported, parts[split:]):
                return True
    return False


@pytest.mark.parametrize("module_name", ["minie5.reference_int8", "minie5.engine.kernels_int8"])
def test_code_named_in_docstrings_exists(module_name):
    """Every `module.function` (or Class.attribute) a docstring names resolves, from the module itself or from
    minie5 (reference.linear, engine.kernels_int8.quantize_rows); attributes of the code's own variables
    (weight.T, x.shape) and file names (reference.py) are not names of code."""
    module = importlib.import_module(module_name)
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    skip = local_names(tree)
    missing = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) or not ast.get_docstring(node):
            continue
        for dotted in re.findall(r"(?<![\w/.])[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+", ast.get_docstring(node)):
            if dotted.split(".")[-1] in FILE_SUFFIXES or dotted.split(".")[0] in skip:
                continue
            if not resolves(module, dotted):
                missing.append(f"{getattr(node, 'name', 'module docstring')}: {dotted}")
    assert not missing, missing
