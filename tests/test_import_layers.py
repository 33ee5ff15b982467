"""The layout shows the architecture and keeps it: the project's modules import each other without a
cycle, and only downwards through the layers of DESIGN.md (storage and command-line plumbing at the
bottom, then layouts and MoCo machinery -> encoders -> the CMD model -> data -> engine and evaluation
-> commands). The import graph is read from the source with `ast` (every `import`, also those inside
functions: a lazy import is still a dependency), so nothing is imported to check it."""
from __future__ import annotations

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIPPED_FOLDERS = {"tests", ".venv", "docs", "pretrained_models", "missing_skeletons", "__pycache__"}

# (layer, what it is, the modules in it: a name, or a package and everything inside it)
LAYERS = (
    (0, "storage and the released reference", ("storage", "reference")),
    (1, "command-line plumbing", ("cli",)),
    (2, "layouts and MoCo machinery", ("graph", "moco")),
    (3, "encoders", ("encoders",)),
    (4, "the CMD model", ("cmd_model",)),
    (5, "data", ("dataset", "augmentation", "readers")),
    (6, "engine and evaluation", ("engine", "evaluation", "reporting")),
    (7, "commands", ("pretrain_cmd", "action_classification", "knn_eval", "prepare_data",
                     "download_pretrained", "draw_skeleton", "benchmark", "scripts")),
)
MAX_ROOT_MODULES = 12


def project_modules(root: str) -> dict[str, str]:
    """Dotted module name -> file, for the .py files at `root`, in its package folders (a folder with an
    `__init__.py`, at any depth) and in `scripts/` (named `scripts.NAME`)."""
    modules = {}
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        parts = [] if rel == "." else rel.split(os.sep)
        if parts and (parts[0] in SKIPPED_FOLDERS or parts[0].startswith(".")):
            dirs[:] = []
            continue
        if parts and parts != ["scripts"] and "__init__.py" not in files:
            dirs[:] = []
            continue
        for name in files:
            if name.endswith(".py"):
                stem = name[:-3]
                modules[".".join(parts + ([] if stem == "__init__" else [stem]))] = os.path.join(folder, name)
    return modules


def _package_of(name: str, path: str) -> str:
    return name if path.endswith("__init__.py") else name.rpartition(".")[0]


def imports_of(name: str, path: str, modules: dict) -> set[str]:
    """The project modules that importing `name` runs: each module named by an import, and the packages
    above it (their `__init__` runs first), except the packages that hold `name` itself."""
    with open(path) as f:
        tree = ast.parse(f.read(), filename=path)
    named = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(name, path).split(".")
                package = package[:len(package) - node.level + 1]
                base = ".".join(p for p in package + [base] if p)
            named.add(base)
            named.update(f"{base}.{alias.name}" for alias in node.names)
    deps = set()
    for target in named:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            dep = ".".join(parts[:i])
            if dep in modules and dep != name and not name.startswith(dep + "."):
                deps.add(dep)
    return deps


def import_graph(root: str) -> tuple[dict, dict]:
    """(module -> the project modules it imports, module -> its file relative to `root`)."""
    modules = project_modules(root)
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    return graph, {name: os.path.relpath(path, root) for name, path in modules.items()}


def find_cycles(graph: dict) -> list[list[str]]:
    """The import cycles: for each strongly connected group of modules (Tarjan), the shortest cycle through
    each of its modules, as a closed path [a, b, ..., a] that starts at its first module by name."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph.get(v, ()):
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = set()
    for group in groups:                    # the shortest cycle through each module of the group
        for start in group:
            path = _closed_path(graph, group, start)[:-1]
            first = path.index(min(path))
            cycles.add(tuple(path[first:] + path[:first] + [path[first]]))
    return sorted(list(c) for c in cycles)


def _closed_path(graph: dict, group: list, start: str) -> list[str]:
    """The shortest path from `start` back to itself through the group (breadth-first)."""
    members = set(group)
    previous, frontier = {}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start] + path[::-1][1:] + [start] if v != start else [start, start]
                if w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    return group + [group[0]]


def layer_of(name: str, layers=LAYERS):
    for layer, what, names in layers:
        if any(name == n or name.startswith(n + ".") for n in names):
            return layer, what
    return None


def layer_violations(graph: dict, files: dict, layers=LAYERS) -> list[str]:
    """Each import that runs from a lower layer to a higher one, and each module that no layer holds."""
    problems = []
    for name in sorted(graph):
        mine = layer_of(name, layers)
        if mine is None:
            problems.append(f"{files[name]}: in no layer (add it to LAYERS in tests/test_import_layers.py)")
            continue
        for dep in sorted(graph[name]):
            theirs = layer_of(dep, layers)
            if theirs is not None and theirs[0] > mine[0]:
                problems.append(f"{files[name]} ({mine[1]}) imports {files[dep]} ({theirs[1]}), a higher layer")
    return problems


def describe_cycles(cycles, files) -> list[str]:
    return ["import cycle: " + " -> ".join(files[m] for m in cycle) for cycle in cycles]


# ------------------------------------------------------------------------------------------- the project
def test_project_has_no_import_cycle():
    graph, files = import_graph(REPO)
    assert {"cmd_model", "encoders.stgcn", "storage.run_folder", "cli.flag_values"} <= set(graph)
    problems = describe_cycles(find_cycles(graph), files)
    assert not problems, "\n".join(problems)


def test_project_imports_run_downwards_through_the_layers():
    graph, files = import_graph(REPO)
    problems = layer_violations(graph, files)
    assert not problems, "\n".join(problems)


def test_root_holds_few_modules_and_each_folder_states_its_job():
    root_modules = sorted(f for f in os.listdir(REPO) if f.endswith(".py"))
    assert len(root_modules) <= MAX_ROOT_MODULES, root_modules
    packages = sorted(name for name, path in project_modules(REPO).items() if path.endswith("__init__.py"))
    assert packages, "no package folders found"
    for package in packages:
        path = os.path.join(REPO, *package.split("."), "__init__.py")
        with open(path) as f:
            doc = ast.get_docstring(ast.parse(f.read()))
        first = (doc or "").split("\n\n")[0]
        assert first.strip() and "\n" not in first.strip() and first.rstrip().endswith("."), \
            f"{os.path.relpath(path, REPO)}: its docstring must open with a one-line statement of the folder's job"


# ------------------------------------------------------------------------------- the check itself works
def _write(root, files: dict) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_cycle_made_on_purpose_is_found_and_named(tmp_path):
    """runtime.py -> flag_values.py -> runtime.py, as the repository had it (the second import inside a
    function), plus a cycle through a package's __init__ and a relative import."""
    _write(tmp_path, {
        "runtime.py": "def add_threads_argument(parser):\n    import flag_values\n",
        "flag_values.py": "import runtime\n",
        "pkg/__init__.py": '"""A package."""\nfrom pkg import inner\n',
        "pkg/inner.py": "from . import helper\n",
        "pkg/helper.py": "import top\n",
        "top.py": "import pkg.other\n",
        "pkg/other.py": "",
        "fine.py": "import runtime\nimport pkg.other\n",
    })
    graph, files = import_graph(str(tmp_path))
    assert graph["pkg.inner"] == {"pkg.helper"} and graph["top"] == {"pkg", "pkg.other"}
    problems = describe_cycles(find_cycles(graph), files)
    assert problems == [
        "import cycle: flag_values.py -> runtime.py -> flag_values.py",
        "import cycle: pkg/__init__.py -> pkg/inner.py -> pkg/helper.py -> top.py -> pkg/__init__.py",
    ], problems


def test_no_cycle_reported_for_a_package_importing_its_own_parts(tmp_path):
    """A package's __init__ that imports its modules, which import each other through the package's
    name, is no cycle: the modules never run the __init__ that is already running."""
    _write(tmp_path, {
        "pkg/__init__.py": '"""A package."""\nfrom pkg import a, b\n',
        "pkg/a.py": "from pkg.b import x\n",
        "pkg/b.py": "x = 1\n",
        "user.py": "from pkg.a import x\n",
    })
    graph, _ = import_graph(str(tmp_path))
    assert find_cycles(graph) == []
    assert graph["user"] == {"pkg", "pkg.a"}


def test_an_upward_import_is_named(tmp_path):
    _write(tmp_path, {"low.py": "import high\n", "high.py": "import low\n", "stray.py": ""})
    layers = ((0, "bottom", ("low",)), (1, "top", ("high",)))
    graph, files = import_graph(str(tmp_path))
    assert layer_violations(graph, files, layers) == [
        "low.py (bottom) imports high.py (top), a higher layer",
        "stray.py: in no layer (add it to LAYERS in tests/test_import_layers.py)",
    ]


@pytest.mark.parametrize("edit", ["cycle", "upward"])
def test_the_project_check_fails_when_a_module_gets_a_bad_import(tmp_path, edit):
    """A copy of the project's sources with one import added on purpose: the checks that pass on the
    project report exactly that import."""
    import shutil
    for name, path in project_modules(REPO).items():
        target = tmp_path / os.path.relpath(path, REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    graph, files = import_graph(str(tmp_path))
    assert find_cycles(graph) == [] and layer_violations(graph, files) == []
    victim = tmp_path / "storage" / "run_folder.py"
    added = "\n\ndef _bad():\n    from cli import flag_values  # noqa\n" if edit == "cycle" else \
        "\n\ndef _bad():\n    import cmd_model  # noqa\n"
    if edit == "cycle":                          # flag_values -> ... -> run_folder: make it come back
        (tmp_path / "cli" / "flag_values.py").write_text(
            (tmp_path / "cli" / "flag_values.py").read_text() + "\nfrom storage import run_folder  # noqa\n")
    victim.write_text(victim.read_text() + added)
    graph, files = import_graph(str(tmp_path))
    if edit == "cycle":
        assert describe_cycles(find_cycles(graph), files) == [
            "import cycle: cli/flag_values.py -> storage/run_folder.py -> cli/flag_values.py"]
    else:
        assert layer_violations(graph, files) == [
            "storage/run_folder.py (storage and the released reference) imports cmd_model.py "
            "(the CMD model), a higher layer"]


def test_code_version_hashes_every_project_module():
    """A resume compares `code_version`: it must change with a change in any folder of the project."""
    from engine import resume_check
    covered = set(resume_check.source_files())
    modules = {path for name, path in project_modules(REPO).items() if not name.startswith("scripts.")}
    assert modules and modules <= covered, sorted(modules - covered)
