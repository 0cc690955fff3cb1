"""Write docs/syllabus.md, a 12-week plan of the course, from the notebooks and results/summary.json.

    python scripts/syllabus.py            # (re)write docs/syllabus.md
    python scripts/syllabus.py --check    # exit 1 if docs/syllabus.md is not what this script writes

What a lesson says about itself comes from its notebook: the title, learning objectives and prerequisites (first
cell), the exercises (the closing section) and the papers it cites, looked up in notebook 00's reading list. The CPU times come
from results/summary.json, which `make notebooks` writes. Only the weekly grouping, the placement of papers no
lesson cites by author, and the capstone are written here. tests/test_syllabus.py checks that the committed
syllabus is this script's output, so a re-run notebook or an edited objective cannot leave it stale.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SUMMARY = ROOT / "results" / "summary.json"
OUT = ROOT / "docs" / "syllabus.md"

#: (week title, lessons by number). Week 12 is the capstone's; it is handed out in week 9, after deployment.
WEEKS = [
    ("Product images as data; convolution by hand", ["00", "01"]),
    ("Product data: splits, leaks and your own folders", ["02"]),
    ("From hand-made features to VGG and ResNet", ["03"]),
    ("Transfer learning", ["04"]),
    ("Data augmentation", ["05"]),
    ("Evaluation beyond one accuracy number", ["06"]),
    ("Ensembles", ["07"]),
    ("Explaining predictions: Grad-CAM", ["08"]),
    ("Deployment (the capstone is handed out)", ["09"]),
    ("Federated learning; auditing a published result", ["10", "11"]),
    ("Real catalogs: cluttered photos and wrong labels", ["12", "13"]),
]
CAPSTONE_OUT, CAPSTONE_DUE = 9, 12

#: Where to read the papers on notebook 00's list that no lesson cites by author (the lesson that teaches their
#: method), by (first author, year); the others are read with the first lesson that cites them. Placed here too:
#: the Fashion-MNIST paper, read in week 1 with the data rather than in lesson 09, which cites it.
PLACED = {
    ("Xiao", "2017"): "00",
    ("Krizhevsky", "2012"): "03", ("Szegedy", "2015"): "03", ("Ioffe", "2015"): "03",  # CNNs, Inception, batch norm
    ("Tan", "2019"): "04", ("Kornblith", "2019"): "04",  # EfficientNet; do better ImageNet models transfer better
    ("Zhang", "2018"): "05", ("Yun", "2019"): "05",  # mixup, CutMix
    ("Guo", "2017"): "06", ("Lakshminarayanan", "2017"): "07",  # calibration; deep ensembles
    ("Selvaraju", "2017"): "08", ("Li", "2020"): "10",  # Grad-CAM; FedProx
}

CITATION = re.compile(r"\b([A-Z][A-Za-z-]+)(?: et al\.|(?:, [A-Z][A-Za-z-]+)*(?: & [A-Z][A-Za-z-]+))?,? \(?(\d{4})\)?")


@dataclass(frozen=True)
class Paper:
    surname: str  # the first author's
    year: str
    text: str  # as notebook 00 lists it, Markdown


@dataclass(frozen=True)
class Lesson:
    stem: str  # "08_gradcam"
    title: str  # "08 · Grad-CAM: what does the classifier look at?"
    objectives: list[str]
    prerequisites: str
    exercises: list[str]  # the prompts, without their expected answers
    worked: int  # the exercise with a worked solution
    markdown: str  # every markdown cell, joined

    @property
    def number(self) -> str:
        return self.stem[:2]


def _markdown_cells(nb: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(nb.read_text(encoding="utf-8"))["cells"]
            if c["cell_type"] == "markdown"]


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _items(block: str) -> list[str]:
    """The items of a numbered Markdown list, each on one line."""
    return [_one_line(m) for m in re.split(r"^\d+\. ", block, flags=re.M)[1:]]


def read_lesson(nb: Path) -> Lesson:
    md = _markdown_cells(nb)
    first = md[0]
    closing = [i for i, m in enumerate(md) if m.startswith("## Exercises")]
    last = md[closing[-1]] if closing else ""
    after = "\n".join(md[closing[-1] + 1:]) if closing else ""  # the worked solution's cells follow the exercises
    title = first.splitlines()[0].removeprefix("# ").strip()
    objectives = re.search(r"\*\*Learning objectives\.\*\*[^\n]*\n(.*?)(?:\n\n|\Z)", first, re.S)
    prereq = re.search(r"\*\*Prerequisites\.\*\*(.*?)(?:\n\n|\Z)", first, re.S)
    if not (objectives and prereq and last.startswith("## Exercises")):
        raise SystemExit(f"{nb.name}: no learning objectives, prerequisites or closing exercises to read")
    exercises = last.split("<details>")[0].removeprefix("## Exercises")
    prompts = [re.split(r"\s\*Expected", e)[0].strip() for e in _items(exercises)]
    worked = re.search(r"Worked solution to exercise (\d+)", last + "\n" + after)
    return Lesson(nb.stem, title, _items(objectives.group(1)), _one_line(prereq.group(1)), prompts,
                  int(worked.group(1)) if worked else 0, "\n".join(md))


def reading_list(lesson_00: Lesson) -> list[Paper]:
    """Notebook 00's "Further reading": one Paper per reference (a bullet may hold several, separated by "; ")."""
    section = lesson_00.markdown.split("## Further reading", 1)[1].split("\n## ", 1)[0]
    papers = []
    for bullet in re.split(r"^\* ", section, flags=re.M)[1:]:
        bullet = _one_line(bullet.split("\n\n")[0])
        for ref in re.split(r"; (?=[A-Z][A-Za-z-]+[ ,][^;]*\*)", bullet):
            ref = ref.rstrip(".")
            year = re.search(r"\b(19|20)\d\d\b", ref.split("*")[-1])
            papers.append(Paper(re.match(r"[A-Z][A-Za-z-]+", ref).group(0), year.group(0) if year else "", ref + "."))
    return papers


def place_readings(lessons: list[Lesson], papers: list[Paper]) -> dict[str, list[str]]:
    """Lesson number -> the references to read with it: the PLACED ones, and the papers it is the first to cite
    (from notebook 00's list, or as cited where the list lacks them)."""
    by_key = {(p.surname, p.year): p for p in papers}
    out: dict[str, list[str]] = {ls.number: [] for ls in lessons}
    unknown = [key for key in PLACED if key not in by_key]
    if unknown:
        raise SystemExit(f"{unknown} in PLACED but not on notebook 00's reading list")
    seen = set(PLACED)
    for ls in lessons[1:]:  # notebook 00 holds the list itself
        for m in CITATION.finditer(ls.markdown):
            key = (m.group(1), m.group(2))
            if key in seen:
                continue
            seen.add(key)
            paper = by_key.get(key)
            out[ls.number].append(paper.text if paper else
                                  f"{_one_line(m.group(0)).strip('()').rstrip(',')} (cited in the lesson; not on "
                                  "notebook 00's list)")
    for key, number in PLACED.items():
        out[number].append(by_key[key].text)
    missing = [p.text for p in papers if (p.surname, p.year) not in seen]
    if missing:
        raise SystemExit(f"papers on notebook 00's list that no week reads (cite them or add to PLACED): {missing}")
    return out


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _anchor(heading: str) -> str:
    """The id MyST (myst_heading_anchors) and GitHub give a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _link(ls: Lesson) -> str:
    return f"[{ls.title}](../notebooks/{ls.stem}.ipynb)"


CAPSTONE_TITLE = "The capstone: your own catalog, end to end"
CAPSTONE = """## {title}

Handed out in week {out}, presented and graded in week {due}. Each student (or pair) collects a product catalog of
their own — at least 5 classes and 30 images per class, photographed or from a source whose licence allows it — and
takes it from a folder of photos to a service that answers with "unsure" where it should, using the `prodvision`
command line (`prodvision <command> --help` shows every option):

```bash
prodvision data scan my_catalog/ --strict         # every file checked as training loads it; fix or explain refusals
prodvision train --data my_catalog --arch tf_efficientnet_lite0 --weights imagenet --finetune probe --out runs/probe
prodvision train --data my_catalog --arch tf_efficientnet_lite0 --weights imagenet --out runs/shop
prodvision evaluate runs/shop/best.pt --out runs/shop/report      # the held-out test split only, with report files
prodvision export runs/shop/best.pt --out deploy/ --check my_catalog   # ONNX + TorchScript, parity checked
prodvision predict deploy/best.onnx new_photos/                   # photos taken after training; UNSURE flagged
prodvision cam runs/shop/best.pt new_photos/ --out runs/shop/cams # where the model looked, per image
prodvision serve deploy/best.onnx --port 8000                     # the upload page at http://127.0.0.1:8000/
```

The deliverable is the run folders (`recipe.json`, `split.json`, `history.json`), the evaluation report, the exported
model and a short report (4 pages at most) in which every comparison is stated with its 95% interval, computed with
`prodvision.claims` as the lessons do — and called inconclusive where the interval says so.

### Grading rubric (100 points)

| criterion | points | full marks | half marks |
|---|---:|---|---|
| Data (week 2) | 15 | `data scan --strict` passes or every refused file is explained; class counts shown; test images checked for near-duplicates in the training split (`prodvision.data.near_duplicates`, lesson 02) and what was done about them | the catalog is scanned and split, but leaks are not checked |
| Models (weeks 3–5) | 20 | at least two runs compared at the same budget — the linear probe and LP-FT, or scratch and ImageNet weights — chosen on validation images, never the test split; one augmentation choice justified by a measured shift | one trained model, or a choice made on test accuracy |
| Evaluation (weeks 6–7) | 20 | test accuracy with its interval; the confusion matrix read (which classes, and why); per-class recall; the "unsure" threshold and the share of predictions it would auto-approve | accuracy only, or numbers without intervals |
| Explanation (weeks 8, 11) | 15 | Grad-CAM on right and wrong predictions; one checked claim about where the model looks (mass on the product, or a background test as in lesson 12) | overlays shown without a checked claim |
| Deployment (week 9) | 15 | export parity passes; `predict` on new photos taken after training, with how many were right and how many unsure; the upload page demonstrated live | the model is exported but not run on new photos |
| Report and reproducibility | 15 | the exact commands, seeds and software versions; a classmate re-runs them from a clean clone and gets the same numbers within their intervals | the commands are given but do not reproduce |
"""


def render(lessons: list[Lesson], summary: dict) -> str:
    by_number = {ls.number: ls for ls in lessons}
    listed = [n for _, ns in WEEKS for n in ns]
    if sorted(listed) != sorted(by_number):
        raise SystemExit(f"WEEKS must list every notebook once: has {listed}, notebooks are {sorted(by_number)}")
    runtime = summary["runtime_s"]
    missing = [ls.stem for ls in lessons if ls.stem not in runtime]
    if missing:
        raise SystemExit(f"results/summary.json has no runtime for {missing}: run `make notebooks` first")
    readings = place_readings(lessons, reading_list(by_number["00"]))
    m = summary["machine"]
    machine = (f"{m['cpu']}, {m['cpu_count']} cores, torch {m['torch']}, "
               + (f"GPU {m['gpu']}" if m.get("gpu") else "no GPU"))
    lines = [
        "# Syllabus: a 12-week module",
        "",
        "<!-- Written by scripts/syllabus.py from the notebooks and results/summary.json: edit those, not this file."
        " -->",
        "",
        "Eleven weeks of lessons and a capstone week. Each week's lesson is one notebook: students run it (`make "
        "notebooks` runs them all; `.venv/bin/jupyter lab notebooks/` opens them), read its text, and do its "
        "exercises, of which the notebook gives expected answers and one worked solution. The objectives, "
        "prerequisites and exercises below are the notebooks' own.",
        "",
        f"**CPU time** is the wall time of the lesson's notebook measured by `make notebooks` "
        f"({machine}; total {_duration(summary['total_runtime_s'])}), running all notebooks in order from an empty "
        "model cache: lessons 05–09 reuse the models lesson 03 trained. Run on its own, such a lesson trains them "
        "first (its prerequisites say how long that takes).",
        "",
        "| week | topic | lessons | CPU time | papers to read |",
        "|---:|---|---|---:|---:|",
    ]
    for w, (title, numbers) in enumerate(WEEKS, 1):
        seconds = sum(runtime[by_number[n].stem] for n in numbers)
        papers = sum(len(readings[n]) for n in numbers)
        lessons_cell = ", ".join(f"[{n}](../notebooks/{by_number[n].stem}.ipynb)" for n in numbers)
        week = f"[{title}](#{_anchor(f'Week {w} · {title}')})"
        lines.append(f"| {w} | {week} | {lessons_cell} | {_duration(seconds)} | {papers} |")
    capstone = f"#{_anchor(CAPSTONE_TITLE)}"
    lines.append(f"| {CAPSTONE_DUE} | [Capstone: your own catalog, end to end]({capstone})"
                 " | presentations and grading | — | — |")
    lines.append("")
    for w, (title, numbers) in enumerate(WEEKS, 1):
        lines += [f"## Week {w} · {title}", ""]
        for n in numbers:
            ls = by_number[n]
            lines += [f"### {_link(ls)}", "",
                      f"**CPU time:** {_duration(runtime[ls.stem])}.", "",
                      f"**Prerequisites.** {ls.prerequisites}", "",
                      "**Objectives.** After this lesson a student can", ""]
            lines += [f"{i}. {o}" for i, o in enumerate(ls.objectives, 1)]
            lines += ["", f"**Exercises to hand out** (the notebook's closing section; expected answers there, and a worked "
                          f"solution to exercise {ls.worked} that runs with the notebook):", ""]
            lines += [f"{i}. {e}" for i, e in enumerate(ls.exercises, 1)]
            lines.append("")
            if readings[n]:
                lines += ["**Reading.**", ""] + [f"* {r}" for r in readings[n]] + [""]
        if w == CAPSTONE_OUT:
            lines += [f"**Capstone handed out:** [your own catalog, end to end]({capstone})"
                      f", due in week {CAPSTONE_DUE}.", ""]
    lines.append(CAPSTONE.format(title=CAPSTONE_TITLE, out=CAPSTONE_OUT, due=CAPSTONE_DUE).rstrip())
    return "\n".join(lines) + "\n"


def build() -> str:
    lessons = [read_lesson(nb) for nb in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))]
    return render(lessons, json.loads(SUMMARY.read_text(encoding="utf-8")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/syllabus.md is not what would be written")
    args = ap.parse_args(argv)
    text = build()
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run python scripts/syllabus.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
