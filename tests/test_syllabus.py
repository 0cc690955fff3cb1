"""docs/syllabus.md is what scripts/syllabus.py writes from the notebooks and results/summary.json, so it cannot go
stale; the script fails loudly on a notebook it cannot read; the capstone uses commands the CLI has."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("syllabus", ROOT / "scripts" / "syllabus.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def syllabus():
    return _script()


def test_committed_syllabus_is_the_scripts_output(syllabus):
    committed = (ROOT / "docs" / "syllabus.md").read_text(encoding="utf-8")
    assert committed == syllabus.build(), "docs/syllabus.md is stale: run python scripts/syllabus.py"


def test_every_lesson_once_with_its_objectives_time_and_exercises(syllabus):
    text = (ROOT / "docs" / "syllabus.md").read_text(encoding="utf-8")
    summary = json.loads((ROOT / "results" / "summary.json").read_text())
    weeks = re.findall(r"^## Week (\d+) ", text, re.M)
    assert 10 <= len(weeks) + 1 <= 12, "a 10-12 week plan (the last week is the capstone's)"
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        lesson = syllabus.read_lesson(nb)
        section = text.split(f"### [{lesson.title}](../notebooks/{nb.name})", 1)
        assert len(section) == 2, f"{nb.stem} has no section"
        section = section[1].split("\n### ")[0].split("\n## ")[0]
        first_cell = json.loads(nb.read_text())["cells"][0]["source"]
        for objective in lesson.objectives:  # taken from the notebook, not retyped
            assert objective.split()[0] in "".join(first_cell)
            assert objective in section
        assert syllabus._duration(summary["runtime_s"][nb.stem]) in section
        assert len(re.findall(r"^\d+\. ", section.split("**Exercises to hand out**")[1], re.M)) == len(lesson.exercises)
        assert 3 <= len(lesson.exercises) <= 5 and all("*Expected" not in e for e in lesson.exercises)


def test_times_follow_the_summary(syllabus):
    lessons = [syllabus.read_lesson(nb) for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))]
    summary = json.loads((ROOT / "results" / "summary.json").read_text())
    slower = copy.deepcopy(summary)
    slower["runtime_s"]["03_building_vgg_resnet"] = 4321.0
    assert "72.0 min" not in syllabus.render(lessons, summary)
    assert "**CPU time:** 72.0 min." in syllabus.render(lessons, slower)
    del slower["runtime_s"]["13_catalog_cleaning"]
    with pytest.raises(SystemExit, match="13_catalog_cleaning"):
        syllabus.render(lessons, slower)


def test_every_paper_on_the_reading_list_is_read_once(syllabus):
    lessons = [syllabus.read_lesson(nb) for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))]
    papers = syllabus.reading_list(lessons[0])
    assert len(papers) >= 15
    placed = [r for refs in syllabus.place_readings(lessons, papers).values() for r in refs]
    for p in papers:
        assert placed.count(p.text) == 1, p.text
    assert any("Selvaraju" in r for r in syllabus.place_readings(lessons, papers)["08"])
    assert any("McMahan" in r for r in syllabus.place_readings(lessons, papers)["10"])  # cited by 10 itself


def test_a_notebook_without_objectives_is_refused(syllabus, tmp_path):
    nb = tmp_path / "99_bad.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# 99 · Bad\n\ntext"},
                                        {"cell_type": "markdown", "metadata": {}, "source": "## Exercises\n\n1. x"}],
                              "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    with pytest.raises(SystemExit, match="99_bad"):
        syllabus.read_lesson(nb)


def test_capstone_commands_exist():
    from prodvision.cli import build_parser

    text = (ROOT / "docs" / "syllabus.md").read_text(encoding="utf-8")
    capstone = text.split("## The capstone", 1)[1]
    used = re.findall(r"^prodvision (\w+)(?: (\w+))?", capstone, re.M)
    assert {c for c, _ in used} >= {"data", "train", "evaluate", "export", "serve"}
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for command, arg in used:
        assert command in sub.choices, f"prodvision {command}: no such command"
        if command == "data":
            data_sub = next(a for a in sub.choices["data"]._actions if a.dest == "data_command")
            assert arg in data_sub.choices, f"prodvision data {arg}: no such command"
    assert re.search(r"\| criterion \| points \|", capstone), "a grading rubric"
    points = [int(p) for p in re.findall(r"^\| [^|]+ \| (\d+) \|", capstone, re.M)]
    assert sum(points) == 100
