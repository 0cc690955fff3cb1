"""The notebooks' ``parameters`` cells and the settings files for bigger runs (scripts/gpu.yaml)."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _load_script():
    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _parameters_cell(nb: Path) -> str:
    cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    assert "parameters" in cells[0].get("metadata", {}).get("tags", []), f"{nb.name}: first code cell is not tagged"
    return "".join(cells[0]["source"])


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter(nb):
    """papermill parses the cell line by line; a line it cannot parse (e.g. a comment containing '=') makes it
    report the parameter as unknown. Every assigned name must come back."""
    import papermill as pm

    assigned = [t.id for node in ast.parse(_parameters_cell(nb)).body if isinstance(node, ast.Assign)
                for t in node.targets]
    assert list(pm.inspect_notebook(str(nb))) == assigned
    # a notebook that draws anything at random says which seed; 06 evaluates notebook 03's model on the fixed test
    # split and draws nothing (03's seed decides its model)
    assert "seed" in assigned or nb.name.startswith("06_")


def _names_read(nb: Path) -> set[str]:
    """Every name loaded (read) by the notebook's code cells after the parameters cell -- not counting reads that
    only record the value in the run record (``RunRecord(..., params=...)``), which do not change what runs."""
    cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"][1:]
    names = set()
    for c in cells:
        src = "\n".join(line for line in "".join(c["source"]).splitlines() if not line.lstrip().startswith(("%", "!")))
        tree = ast.parse(src)
        recorded = {id(n) for call in ast.walk(tree) if isinstance(call, ast.Call)
                    and getattr(call.func, "id", getattr(call.func, "attr", None)) == "RunRecord" for n in ast.walk(call)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and id(node) not in recorded:
                names.add(node.id)
    return names


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_parameter_is_used(nb):
    """A parameter that no cell reads is a lie: `-p dataset cifar10` would silently change nothing."""
    assigned = [t.id for node in ast.parse(_parameters_cell(nb)).body if isinstance(node, ast.Assign)
                for t in node.targets]
    unused = sorted(set(assigned) - _names_read(nb))
    assert not unused, f"{nb.name}: parameters never read: {unused}"


def test_unused_parameter_check_can_fail(tmp_path):
    nb = tmp_path / "99_x.ipynb"
    cells = [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "seed = 0\ndataset = 'x'\n",
              "outputs": [], "execution_count": None},
             {"cell_type": "code", "metadata": {}, "source": "print(seed)\n", "outputs": [], "execution_count": None}]
    nb.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    with pytest.raises(AssertionError, match="dataset"):
        test_every_parameter_is_used(nb)


@pytest.mark.parametrize("settings", ["gpu.yaml", "seed1.yaml"])
def test_settings_files_name_existing_parameters(settings):
    import papermill as pm

    script = _load_script()
    params = script.load_params(ROOT / "scripts" / settings, NOTEBOOKS)
    assert params, f"scripts/{settings} selects no notebook"
    for stem, p in params.items():
        known = set(pm.inspect_notebook(str(ROOT / "notebooks" / f"{stem}.ipynb")))
        assert set(p) <= known, f"{stem}: unknown parameters {sorted(set(p) - known)}"


def test_the_seed_check_covers_every_notebook_with_a_seed():
    script = _load_script()
    params = script.load_params(ROOT / "scripts" / "seed1.yaml", NOTEBOOKS)
    with_seed = {nb.stem for nb in NOTEBOOKS if re.search(r"^seed\s*=", _parameters_cell(nb), re.M)}
    assert {stem for stem, p in params.items() if p.get("seed") not in (None, 0)} == with_seed


def test_params_file_errors(tmp_path):
    script = _load_script()
    good = tmp_path / "ok.yaml"
    good.write_text("03: {epochs: 2}\n")  # an unquoted 03 is the number 3 in YAML
    assert script.load_params(good, NOTEBOOKS) == {"03_building_vgg_resnet": {"epochs": 2}}
    for text, msg in (("'0': {epochs: 2}\n", "matches 10"), ("'99': {epochs: 2}\n", "matches 0"),
                      ("- epochs\n", "expected a mapping"), ("03: [\n", "cannot read")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(SystemExit, match=msg):
            script.load_params(bad, NOTEBOOKS)


def _defaults(nb: Path) -> dict:
    """The parameters cell's default values (literals only), by name."""
    out = {}
    for node in ast.parse(_parameters_cell(nb)).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def _documented_values() -> list[tuple[str, str, str, object]]:
    """Every papermill value the README and the notebooks' text show: (where, notebook, name, value as papermill
    passes it). ``-p NAME VALUE`` goes through papermill's own type resolution (numbers, booleans, None, else a
    string); ``-y "NAME: VALUE"`` through YAML, the way to pass lists and tuples."""
    import yaml
    from papermill.cli import _resolve_type

    found = []
    texts = [("README.md", None, (ROOT / "README.md").read_text())]
    texts += [(nb.name, nb.stem, "".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"]
                                         if c["cell_type"] == "markdown")) for nb in NOTEBOOKS]
    for where, stem, text in texts:
        for line in text.splitlines():
            target = re.search(r"notebooks/(\d\d_\w+)\.ipynb", line)
            nb_stem = target.group(1) if target else stem
            for name, value in re.findall(r'-p\s+"?(\w+)"?\s+("[^"]*"|\'[^\']*\'|[^\s`]+)', line):
                found.append((where, nb_stem, name, _resolve_type(value.strip("\"'"))))
            for doc in re.findall(r'-y\s+"([^"]+)"', line):
                for name, value in yaml.safe_load(doc).items():
                    found.append((where, nb_stem, name, value))
    return found


def test_documented_papermill_values_have_the_parameters_type():
    """A value shown in the README or an exercise must reach the notebook with its parameter's type: `-p widths
    "(64, 128, 256)"` injects a *string* (create_model then fails), `-p layer "'layer3'"` keeps the quotes."""
    found = _documented_values()
    assert len(found) >= 15, "the extraction found too few documented values"
    sequences = (tuple, list)
    for where, stem, name, value in found:
        assert stem is not None, f"{where}: a papermill value outside a notebook's text names no notebook"
        defaults = _defaults(ROOT / "notebooks" / f"{stem}.ipynb")
        assert name in defaults, f"{where}: {name!r} is not a parameter of {stem}"
        default = defaults[name]
        if isinstance(default, sequences):
            assert isinstance(value, sequences), f"{where}: {name} = {value!r} reaches {stem} as a " \
                f"{type(value).__name__}, not a sequence: pass it with -y \"{name}: [...]\""
        elif isinstance(default, str):
            assert isinstance(value, str) and not value[:1] in "\"'", f"{where}: {name} = {value!r} keeps quotes"
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            assert isinstance(value, (int, float)) and not isinstance(value, bool), \
                f"{where}: {name} = {value!r} reaches {stem} as a {type(value).__name__}"
