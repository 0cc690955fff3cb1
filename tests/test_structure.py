"""The package's shape: intra-package imports form layers (no cycle, nothing imports upwards), they sit at module top
(only the command line defers them, to start fast), and the job of each module has one home."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "prodvision"
ROOT = PKG.parent

# Lowest first. A module may import modules of its own layer or below, never above.
LAYERS = [
    {"__init__", "errors", "paths", "progress", "config"},
    {"cache", "checkpoint", "runtime", "results", "claims", "backgrounds"},
    {"transforms"},
    {"data"},
    {"models"},
    {"evaluate"},
    {"train", "features", "ensemble", "explain", "viz", "cleaning"},
    {"recipes", "federated", "report"},
    {"course", "deployed"},
    {"export", "predict"},
    {"serve"},
    {"cli_args", "cli_deploy", "cli", "__main__"},
]
LAZY_ALLOWED = {"cli", "cli_deploy"}  # defer the package (and torch) to the subcommand that needs it: --help < 1 s


def _module(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts) or "__init__"


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported prodvision module, at module top) for every intra-package import outside TYPE_CHECKING blocks."""
    tree = ast.parse(path.read_text())
    mod = _module(path)
    package = mod.split(".")[:-1] if path.name != "__init__.py" else mod.split(".")
    out = []

    def visit(node, top: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package[: len(package) - (child.level - 1)] if child.level > 1 else package
                    target = ".".join(base + ([child.module] if child.module else []))
                    names = [target] if child.module else [f"{target}.{a.name}".lstrip(".") for a in child.names]
                    out.extend((n.lstrip("."), top) for n in names)
                elif child.module and child.module.startswith("prodvision"):
                    out.append((child.module.removeprefix("prodvision").lstrip("."), top))
            elif isinstance(child, ast.Import):
                out.extend((a.name.removeprefix("prodvision").lstrip("."), top) for a in child.names
                           if a.name.startswith("prodvision"))
            visit(child, top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))

    visit(tree, True)
    return [(m, t) for m, t in out if m]


def _top(name: str) -> str:
    return name.split(".")[0] if name.split(".")[0] != "data" else "data"


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        src = _top(_module(path))
        for target, _ in _imports(path):
            tgt = _top(target)
            if tgt != src:
                graph.setdefault(src, set()).add(tgt)
    return graph


def _layer(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    raise AssertionError(f"module {name!r} is in no layer of tests/test_structure.py: add it where it belongs")


def test_every_module_has_a_layer():
    for path in PKG.rglob("*.py"):
        _layer(_top(_module(path)))


def test_no_upward_imports_and_no_cycles():
    graph = _graph()
    upward = [f"{a} -> {b}" for a, bs in graph.items() for b in bs if _layer(b) > _layer(a)]
    assert not upward, f"modules importing a higher layer: {upward}"
    seen, stack = set(), []

    def dfs(node):
        if node in stack:
            raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(node):] + [node])}")
        if node in seen:
            return
        stack.append(node)
        for nxt in graph.get(node, ()):
            dfs(nxt)
        stack.pop()
        seen.add(node)

    for node in list(graph):
        dfs(node)


def test_intra_package_imports_are_at_module_top():
    lazy = [f"{_module(p)} imports {m} inside a function" for p in PKG.rglob("*.py")
            for m, top in _imports(p) if not top and _top(_module(p)) not in LAZY_ALLOWED]
    assert not lazy, lazy


def test_the_graph_test_can_see_a_cycle(tmp_path, monkeypatch):
    """The checks above must be able to fail: a planted upward import is found."""
    fake = tmp_path / "prodvision"
    (fake / "data").mkdir(parents=True)
    (fake / "errors.py").write_text("from .serve import x\n")
    (fake / "serve.py").write_text("from .errors import y\n")
    monkeypatch.setattr(__import__(__name__), "PKG", fake)
    with pytest.raises(AssertionError, match="errors -> serve"):
        test_no_upward_imports_and_no_cycles()


@pytest.mark.parametrize("job, home", [
    ("def load_model(", "models.py"),  # rebuilding a model from a checkpoint
    ("def predict(", "evaluate.py"),  # running a model over data
    ("def load_dataset(", "data/sources.py"),  # datasets by name
    ("def eval_mode(", "runtime.py"),  # save/restore of train mode
    ("def atomic_write(", "cache.py"),  # atomic files of the caches
    ("def explain_image(", "explain.py"),  # one image's CAM for the CLI and the server
])
def test_one_home_per_job(job, home):
    homes = [p.relative_to(PKG).as_posix() for p in PKG.rglob("*.py")
             if re.search(rf"^{re.escape(job)}", p.read_text(), re.M)]  # module-level definitions
    assert homes == [home], f"{job!r} is defined in {homes}"


#: The inline train/eval save-restore idiom (issue 22, item 1): saving a flag, writing one, or restoring with
#: ``.train(flag)`` (which loses the per-submodule flags frozen BatchNorm relies on). runtime.eval_mode and
#: runtime.preserve_modes are the one place that does it.
MODE_SAVE_RESTORE = re.compile(r"=\s*[\w.]+\.training\b|\.training\s*=(?!=)|\.train\(\s*(?!True|False|mode=)[A-Za-z_]\w*\s*\)")


def _inline_mode_juggling(root: Path) -> list[str]:
    return [f"{p.relative_to(root).as_posix()}:{i}: {line.strip()}" for p in sorted(root.rglob("*.py"))
            if p.name != "runtime.py" for i, line in enumerate(p.read_text().splitlines(), 1)
            if MODE_SAVE_RESTORE.search(line.split("#")[0])]


def test_train_mode_is_saved_and_restored_in_one_place():
    found = _inline_mode_juggling(PKG)
    assert not found, f"inline train/eval save-restore (use runtime.eval_mode / preserve_modes): {found}"


def test_the_mode_check_can_fail(tmp_path):
    (tmp_path / "a.py").write_text("was = model.training\nmodel.eval()\nmodel.train(was)\n")
    (tmp_path / "b.py").write_text("for m, w in flags:\n    m.training = w\n")
    (tmp_path / "ok.py").write_text("model.train()\nmodel.train(False)\nif model.training == x: pass\n")
    assert [f.split(":")[0] for f in _inline_mode_juggling(tmp_path)] == ["a.py", "a.py", "b.py"]


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")) +
                         sorted(p.name for p in (ROOT / "scripts").glob("*.py")))
def test_benchmarks_and_scripts_import_what_the_package_has(script):
    """Benchmarks and scripts are not run by the test suite; a name moved out of a module must not break them
    silently (``make benchmarks`` once failed on ``prodvision.predict.load_deployed``). Checks every
    ``from prodvision.X import name``, at any depth, against the module's attributes."""
    import importlib

    path = next(p for d in ("benchmarks", "scripts") if (p := ROOT / d / script).exists())
    source = path.read_text()
    # imports inside string templates (worker code run in a subprocess) count too
    trees = [ast.parse(source)] + [ast.parse(s.value) for s in ast.walk(ast.parse(source))
                                   if isinstance(s, ast.Constant) and isinstance(s.value, str)
                                   and "from prodvision" in s.value]
    missing = []
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prodvision"):
                module = importlib.import_module(node.module)
                missing += [f"{node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)]
    assert not missing, f"{script} imports names that do not exist: {missing}"
