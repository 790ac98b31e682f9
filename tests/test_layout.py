"""The package's layout stays what docs/architecture.md says ("Where things are"): every folder and
file in its table, the import layers it lists (every import points down, no circles), a docstring
in each folder's __init__.py saying what may be imported, and every public name importable from its
documented path."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "minie5"
DOC = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
SECTION = DOC.split("## Where things are", 1)[1].split("\n## ", 1)[0]


def table_rows() -> dict[str, set[str]]:
    """folder ("minie5/", "minie5/engine/", ...) -> the .py files its row names."""
    rows = {}
    for line in SECTION.splitlines():
        match = re.match(r"\| `(minie5/[\w/]*)` \| [^|]+ \| (.+) \|$", line)
        if match:
            rows[match.group(1)] = set(re.findall(r"`([\w]+\.py)`", match.group(2)))
    return rows


def layers() -> dict[str, int]:
    """A place ("model.py", "engine/") -> its layer, 1 at the top."""
    places = {}
    for number, entries in re.findall(r"^(\d+)\. (.+)$", SECTION, flags=re.M):
        for place in re.findall(r"`([\w/]+(?:\.py|/))`", entries):
            places[place] = int(number)
    return places


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def place_of(module: str) -> str:
    parts = module.split(".")[1:]  # without "minie5"
    if not parts:
        return "__init__.py"
    if (PACKAGE / parts[0]).is_dir():
        return parts[0] + "/"
    return parts[0] + ".py"


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `module` imports, at the top or inside functions."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = [f"{target}.{alias.name}" for alias in node.names]
            if node.module is None and all(name in known for name in submodules):
                candidates = submodules  # `from . import reference`: the module, not the package's __init__
            else:
                candidates = [target] + submodules
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found |= {c for c in candidates if c in known and c != module}
    return found


def test_the_table_names_every_folder_and_file_of_the_tree():
    rows = table_rows()
    folders = {"minie5/"} | {f"minie5/{p.name}/" for p in PACKAGE.iterdir()
                             if p.is_dir() and (p / "__init__.py").exists()}
    assert set(rows) == folders, "architecture.md's table and minie5/'s folders differ"
    for folder, named in rows.items():
        on_disk = {p.name for p in (REPO / folder).glob("*.py")}
        if folder != "minie5/":
            on_disk.discard("__init__.py")
        assert named == on_disk, f"{folder}: table names {sorted(named - on_disk)} not on disk, " \
                                 f"{sorted(on_disk - named)} on disk but not in the table"


def test_every_module_has_a_layer():
    places = layers()
    assert len(places) >= 15
    for module in modules():
        assert place_of(module) in places, f"{module} ({place_of(module)}) is in no layer of architecture.md"


def test_imports_point_down_the_layers():
    places, known = layers(), modules()
    upward = []
    for module, path in known.items():
        for target in imports_of(module, path, known):
            if places[place_of(target)] < places[place_of(module)]:
                upward.append(f"{module} (layer {places[place_of(module)]}) imports {target} "
                              f"(layer {places[place_of(target)]})")
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    known = modules()
    graph = {module: imports_of(module, path, known) for module, path in known.items()}
    # a package's __init__ re-exporting its own modules is not a circle: leave those edges out
    graph = {m: {t for t in targets if not t.startswith(m + ".")} for m, targets in graph.items()}
    state: dict[str, int] = {}

    def visit(module, trail):
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                raise AssertionError("import circle: " + " -> ".join(trail[trail.index(target):] + [target]))
            if not state.get(target):
                visit(target, trail + [target])
        state[module] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module, [module])


@pytest.mark.parametrize("folder", sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()))
def test_each_folder_says_what_lives_there_and_what_it_may_import(folder):
    doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text(encoding="utf-8")))
    assert doc, f"minie5/{folder}/__init__.py has no docstring"
    assert re.search(r"\bmay import\b", doc, flags=re.I), f"minie5/{folder}/__init__.py does not say what it may import"
    for name in {p.name for p in (PACKAGE / folder).glob("*.py")} - {"__init__.py"}:
        assert name in doc, f"minie5/{folder}/__init__.py does not name {name}"


# Every public name, from the path the README and docs give it.
PUBLIC = {
    "minie5": ["load", "Model", "ForwardOutput", "ModelConfig", "DEFAULT_MODEL", "__version__", "SentenceTransformer",
               "SimilarityFunction", "quantize_embeddings", "Minie5Error", "ModelFileError", "UnsupportedModelError",
               "InputError", "Minie5Warning", "TruncationWarning", "UnsupportedArgumentError", "MissingExtraError"],
    "minie5.distributed": ["embed_dataset", "Embedder", "job_stats"],
    "minie5.integrations.langchain": ["Minie5Embeddings"],
    "minie5.integrations.llama_index": ["Minie5Embedding"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_import_from_their_documented_paths(module):
    code = f"from {module} import {', '.join(PUBLIC[module])}; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_public_names_are_the_packages_all():
    import minie5
    assert set(minie5.__all__) == set(PUBLIC["minie5"])
    for name in ["Minie5Error", "ModelFileError", "UnsupportedModelError", "InputError", "UnsupportedArgumentError",
                 "MissingExtraError"]:
        assert issubclass(getattr(minie5, name), Exception), name
    assert issubclass(minie5.TruncationWarning, minie5.Minie5Warning)


@pytest.mark.parametrize("command", [[sys.executable, "-m", "minie5", "--version"], ["minie5", "--version"]])
def test_the_command_and_python_m_minie5(command):
    import minie5
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"minie5 {minie5.__version__}"
