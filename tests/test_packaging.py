"""Packaging: environment.yml in step with pyproject.toml, the console script, import without side effects,
run records and the README results table."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from prodvision.results import RunRecord

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"torch": "pytorch"}  # pip name -> conda-forge name where they differ


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = set(), set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip |= {_name(p) for p in dep["pip"] if not p.startswith("-e")}
        else:
            conda.add(_name(dep))
    have = conda | pip
    missing = {w for w in wanted if CONDA_NAMES.get(w, w) not in have}
    assert not missing, f"environment.yml lacks {sorted(missing)}"
    extra = {h for h in have if h not in {CONDA_NAMES.get(w, w) for w in wanted} | {"python", "pip"}}
    assert not extra, f"environment.yml has packages pyproject.toml does not: {sorted(extra)}"
    assert "-e ." in next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]


def test_console_script_and_module_entry():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["prodvision"] == "prodvision.cli:main"
    out = subprocess.run([sys.executable, "-m", "prodvision", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("data", "train", "evaluate", "export", "predict", "cam", "serve"):
        assert cmd in out.stdout


def test_import_has_no_side_effects():
    code = ("import torch; s = torch.initial_seed(); import prodvision, prodvision.models, prodvision.train, "
            "prodvision.data, prodvision.explain, prodvision.serve; "
            "assert torch.initial_seed() == s; assert not torch.are_deterministic_algorithms_enabled(); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "ok", out.stderr


def test_run_record(tmp_path):
    run = RunRecord("99_test", params={"seed": 3, "epochs": 1})
    run.log(test_acc=0.5, n=3)
    path = run.save(tmp_path)
    rec = json.loads(path.read_text())
    assert rec["metrics"] == {"test_acc": 0.5, "n": 3} and rec["seed"] == 3
    assert rec["wall_time_s"] >= 0 and rec["machine"]["cpu_count"] >= 1


def test_readme_table_from_summary():
    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    table = mod.readme_table({"runtime_s": {"00_quickstart": 12.0}, "total_runtime_s": 12.0,
                              "fashion_mnist_best_test_acc": 0.9123, "fashion_mnist_best_from": "07_ensembles",
                              "machine": {"cpu": "X", "cpu_count": 2, "torch": "2"},
                              "headlines": {"00_quickstart": {"train_images": 60000}}})
    assert "| `00_quickstart` | 12 | train_images = 60000 |" in table and "91.23%" in table
    readme = (ROOT / "README.md").read_text()
    assert readme.lstrip().startswith("# prodvision") and "make notebooks" in readme and "make test" in readme
    assert "<!-- results:start -->" in readme
