"""Every notebook is a lesson: objectives and prerequisites up front, a summary and exercises at the end, and
committed outputs a reader can trust (no machine paths, echoed reprs, warnings, errors or frozen progress bars)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(work|tmp|home|root|usr|var|opt|mnt)/[\w.-]")
NOISE = {"echoed path": "PosixPath(", "echoed generator": "<torch._C.Generator", "echoed object": " object at 0x",
         "echoed numpy scalar": "np.float64(",
         "progress bar": "|#", "warning": "Warning:", "frozen bar at 0%": " 0%|"}


def _cells(nb: Path) -> list[dict]:
    return json.loads(nb.read_text())["cells"]


def _markdown(nb: Path) -> list[str]:
    return ["".join(c["source"]) for c in _cells(nb) if c["cell_type"] == "markdown"]


def _outputs(nb: Path):
    for i, c in enumerate(_cells(nb)):
        for o in c.get("outputs", []):
            text = "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
            yield i, o, text


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 14


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_opens_with_objectives_and_prerequisites(nb):
    first = _markdown(nb)[0]
    assert first.startswith(f"# {nb.name[:2]} · "), "the first cell is the notebook's title"
    objectives = re.search(r"\*\*Learning objectives\.\*\*(.*?)(\n\n|\Z)", first, re.S)
    assert objectives, "the first cell states the learning objectives"
    n = len(re.findall(r"^\d+\. ", objectives.group(1), re.M))
    assert 3 <= n <= 4, f"3-4 learning objectives, found {n}"
    assert "**Prerequisites.**" in first


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_ends_with_summary_and_exercises(nb):
    cells = _cells(nb)
    md = _markdown(nb)
    summary = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and "## Summary" in "".join(c["source"])]
    assert summary, "a '## Summary' section"
    after = cells[summary[0] + 1]
    assert after["cell_type"] == "code" and "print(" in "".join(after["source"]), \
        "the summary is printed from the outputs (numbers computed, not typed)"
    start = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
             and "".join(c["source"]).startswith("## Exercises")]
    assert start and start[0] > summary[0], "the exercises follow the summary"
    exercises = "".join(cells[start[0]]["source"])
    items = re.findall(r"^\d+\. ", exercises, re.M)
    assert 3 <= len(items) <= 5, f"3-5 exercises, found {len(items)}"
    rest = cells[start[0] + 1:]
    heading = re.compile(r"^### Worked solution to exercise (\d+)\b")
    solved = [int(m.group(1)) for c in rest if c["cell_type"] == "markdown"
              and (m := heading.match("".join(c["source"])))]
    assert solved and all(1 <= n <= len(items) for n in solved), "a worked solution to one of the exercises"
    solution_cells = [c for c in rest if c["cell_type"] == "code"]
    assert solution_cells and all("solution" in c["metadata"].get("tags", []) for c in solution_cells), \
        "the worked solution is code that runs with the notebook (cells tagged 'solution')"
    assert all(c.get("outputs") for c in solution_cells), "the worked solution is committed executed"
    for c in [cells[start[0]], *rest]:  # a solution written as a code block in markdown would never run
        assert c["cell_type"] == "code" or "```python" not in "".join(c["source"]), \
            "worked solutions are code cells, not code blocks in markdown (CI would not run them)"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_outputs_are_clean(nb):
    code = [c for c in _cells(nb) if c["cell_type"] == "code"]
    assert any(c.get("outputs") for c in code), "committed with outputs"
    problems = []
    for i, o, text in _outputs(nb):
        if o.get("output_type") == "error":
            problems.append(f"cell {i}: an error ({o.get('ename')})")
        if ABSOLUTE_PATH.search(text):
            problems.append(f"cell {i}: an absolute path: {ABSOLUTE_PATH.search(text).group(0)}...")
        for what, marker in NOISE.items():
            if marker in text:
                problems.append(f"cell {i}: {what}")
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {}):
            problems.append(f"cell {i}: a progress widget")
    assert not problems, problems


def test_the_clean_output_check_can_fail(tmp_path):
    bad = tmp_path / "99_bad.ipynb"
    cell = {"cell_type": "code", "metadata": {}, "source": "x", "execution_count": 1,
            "outputs": [{"output_type": "stream", "name": "stdout", "text": "saved to /work/main/figures/a.png\n"}]}
    bad.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    with pytest.raises(AssertionError, match="absolute path"):
        test_committed_outputs_are_clean(bad)
