"""Execute every notebook in order with papermill, in place, and gather the run records.

    python scripts/run_notebooks.py            # all notebooks/NN_*.ipynb in order
    python scripts/run_notebooks.py 03 06      # only those whose names start with these prefixes
    python scripts/run_notebooks.py --params scripts/gpu.yaml --output-dir runs/gpu 03 07   # bigger settings

Each notebook runs with its committed ``parameters`` defaults (what CI runs), from ``notebooks/`` as working
directory. A notebook is executed into a temporary file and replaces the committed one only if it ran without
error, so a failure never destroys the committed outputs (the failed copy is kept in ``runs/failed/``).
Afterwards ``results/summary.json`` holds per-notebook runtimes, the total and the best Fashion-MNIST test accuracy,
and the README's results table is regenerated from it.

``--params FILE`` (YAML) maps notebook-name prefixes to papermill parameters, e.g. ``03: {epochs: 40}``. Runs with
other settings than the committed defaults must not overwrite the committed outputs and records, so ``--params``
needs ``--output-dir DIR``: the executed notebooks go to ``DIR``, and the notebooks write their figures, run records
(and ``summary.json``) and trained models under ``DIR/figures``, ``DIR/results`` and ``DIR/cache``
(``$PRODVISION_FIGURES``, ``$PRODVISION_RESULTS``, ``$PRODVISION_CACHE``); the README is left alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NB_DIR, RESULTS, README = ROOT / "notebooks", ROOT / "results", ROOT / "README.md"


def load_params(path: Path, notebooks: list[Path]) -> dict[str, dict]:
    """``{notebook stem: parameters}`` from a YAML file keyed by notebook-name prefixes."""
    import yaml

    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SystemExit(f"{path}: cannot read parameters: {e}")
    if not isinstance(spec, dict) or not all(isinstance(v, dict) for v in spec.values()):
        raise SystemExit(f"{path}: expected a mapping of notebook prefixes to parameter mappings, e.g. '03: {{epochs: 40}}'")
    out = {}
    for prefix, params in spec.items():
        prefix = f"{prefix:02d}" if isinstance(prefix, int) else prefix  # YAML reads an unquoted 03 as the number 3
        hits = [nb for nb in notebooks if nb.name.startswith(str(prefix))]
        if len(hits) != 1:
            raise SystemExit(f"{path}: prefix {prefix!r} matches {len(hits)} of the selected notebooks (need exactly 1)")
        out[hits[0].stem] = params
    return out


def run(notebooks: list[Path], params: dict[str, dict] | None = None,
        output_dir: Path | None = None) -> tuple[dict[str, float], bool]:
    """Execute each notebook in order; stop at the first failure. Returns the runtimes of those that ran and whether
    one failed. With ``output_dir`` the executed notebooks go there instead of replacing the committed ones."""
    import papermill as pm

    times = {}
    for nb in notebooks:
        p = (params or {}).get(nb.stem, {})
        print(f"== {nb.name}" + (f" with {p}" if p else ""), flush=True)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / nb.name
            try:
                # log_output: what the cells print (what they will train, the time estimates, epoch lines) reaches
                # the terminal as it happens, not only the output notebook (issue 24, item 9)
                pm.execute_notebook(str(nb), str(out), parameters=p, cwd=str(NB_DIR), kernel_name="python3",
                                    progress_bar=False, log_output=True, request_save_on_cell_execute=False)
            except Exception as e:  # papermill raises PapermillExecutionError; keep the evidence, stop the run
                failed = ROOT / "runs" / "failed"
                failed.mkdir(parents=True, exist_ok=True)
                if out.exists():
                    shutil.copy(out, failed / nb.name)
                print(f"!! {nb.name} failed after {time.perf_counter() - t0:.0f} s: {e}\n"
                      f"   the committed notebook is unchanged; the failed run is in runs/failed/{nb.name}",
                      file=sys.stderr)
                return times, True
            _strip_machine_paths(out)
            shutil.copy(out, output_dir / nb.name if output_dir else nb)
        times[nb.stem] = round(time.perf_counter() - t0, 1)
        print(f"   {nb.name}: {times[nb.stem]:.0f} s", flush=True)
    return times, False


def _strip_machine_paths(path: Path) -> None:
    """papermill records the input and output paths (absolute, this machine's) in the notebook's metadata."""
    nb = json.loads(path.read_text())
    pm_meta = nb.get("metadata", {}).get("papermill", {})
    for key in ("input_path", "output_path"):
        if key in pm_meta:
            pm_meta[key] = Path(pm_meta[key]).name
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def summarize(times: dict[str, float], results: Path = RESULTS) -> dict:
    """Merge new runtimes into ``results/summary.json`` and compute the headline numbers from ``results/*.json``."""
    path = results / "summary.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    runtimes = {**old.get("runtime_s", {}), **times}
    runtimes = {k: runtimes[k] for k in sorted(runtimes) if (NB_DIR / f"{k}.ipynb").exists()}
    best, best_nb, headlines, claims, kinds = None, None, {}, {}, {}
    for rec_path in sorted(results.glob("[0-9]*.json")):
        rec = json.loads(rec_path.read_text())
        m = rec.get("metrics", {})
        headlines[rec["notebook"]] = {k: v for k, v in m.items() if isinstance(v, (int, float))}
        claims[rec["notebook"]] = [c for c in rec.get("claims", []) if c.get("headline")]
        acc = m.get("fashion_mnist_best_test_acc")
        if acc is not None and (best is None or acc > best):
            best, best_nb = acc, rec["notebook"]
        machine = rec.get("machine", {})
        kinds.setdefault(_kind(machine), []).append(rec["notebook"][:2])
    summary = {"runtime_s": runtimes, "total_runtime_s": round(sum(runtimes.values()), 1),
               "fashion_mnist_best_test_acc": best, "fashion_mnist_best_from": best_nb,
               "machine": machine if headlines else {}, "machine_kinds": kinds, "headlines": headlines,
               "headline_claims": claims}
    results.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _kind(machine: dict) -> str:
    """A run record's machine as a CPU *kind*: model name, family/model and ISA flags (records before these were
    recorded say so), cores and accelerator."""
    fm = machine.get("cpu_family_model")
    kind = f"{machine.get('cpu', '?')}" + (f" (family/model {fm}; {machine.get('cpu_isa') or 'no AVX2'})" if fm else
                                          " (family/model not recorded)")
    return kind + f", {machine.get('cpu_count', '?')} cores" + (f", GPU {machine['gpu']}" if machine.get("gpu") else "")


def readme_table(summary: dict) -> str:
    """Markdown for the README's results section."""
    rows = ["| notebook | runtime (s) | headline numbers |", "|---|---:|---|"]
    for nb, t in summary["runtime_s"].items():
        h = summary["headlines"].get(nb, {})
        shown = ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in list(h.items())[:4])
        rows.append(f"| `{nb}` | {t:.0f} | {shown} |")
    m = summary.get("machine", {})
    best = summary["fashion_mnist_best_test_acc"]
    rows += ["", f"Total: **{summary['total_runtime_s'] / 60:.1f} min**. Best Fashion-MNIST test accuracy in the suite: "
             f"**{best * 100:.2f}%** (`{summary['fashion_mnist_best_from']}`)." if best is not None else "",
             f"Machines (the kind each notebook's committed run used; the last digits differ per kind): " + "; ".join(
                 f"{kind}: {', '.join(nbs)}" for kind, nbs in summary.get("machine_kinds", {}).items())
             + f". torch {m.get('torch', '?')}."]
    rows += ["", "Each lesson's headline claims (declared in `prodvision/claims.toml` before the run; tested at 99%):", "",
             "| notebook | headline claim | estimate [99% CI] | verdict |", "|---|---|---|---|"]
    for nb, cs in summary.get("headline_claims", {}).items():
        for c in cs:
            diff = c.get("difference", False)
            scale, unit = (100, " points" if diff else "%") if c.get("binary") else (1, "")
            fmt = "{:+.2f}" if diff else "{:.2f}" if c.get("binary") else "{:.4f}"
            est = (fmt.format(scale * c["estimate"]) + f" [{fmt.format(scale * c['ci_low'])}, "
                   f"{fmt.format(scale * c['ci_high'])}]{unit}")
            rows.append(f"| `{nb[:2]}` | {c['statement']} | {est} | {c['verdict']} |")
    pending = _pending()
    rows += [f"| `{nb[:2]}` | *no headline yet:* {why} | | pending |" for nb, why in pending.items()]
    return "\n".join(rows)


def _pending() -> dict[str, str]:
    sys.path.insert(0, str(ROOT))
    from prodvision.claims import load_registry

    return load_registry()["pending"]


def update_readme(summary: dict) -> None:
    text = README.read_text()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    if start not in text or end not in text:
        print("README has no results markers; table not updated", file=sys.stderr)
        return
    new = re.sub(re.escape(start) + ".*?" + re.escape(end), start + "\n" + readme_table(summary) + "\n" + end, text,
                 flags=re.S)
    README.write_text(new)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prefixes", nargs="*", help="run only notebooks whose names start with these")
    ap.add_argument("--params", type=Path, help="YAML: notebook prefix -> papermill parameters (needs --output-dir)")
    ap.add_argument("--output-dir", type=Path, help="write executed notebooks, figures, results and models here")
    args = ap.parse_args()
    # papermill's log_output goes through its logger: show the cells' output and papermill's own lines, plainly
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    logging.getLogger("papermill").setLevel(logging.INFO)
    for noisy in ("traitlets", "asyncio", "blib2to3", "matplotlib", "PIL", "numexpr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("PRODVISION_PROGRESS", "0")  # executed notebooks keep no progress bars in their outputs
    nbs = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))
    if args.prefixes:
        nbs = [nb for nb in nbs if any(nb.name.startswith(p) for p in args.prefixes)]
    if not nbs:
        raise SystemExit("no notebooks matched")
    if args.params and not args.output_dir:
        raise SystemExit("--params changes the settings, so the committed outputs must stay: add --output-dir DIR")
    params = load_params(args.params, nbs) if args.params else {}
    results = RESULTS
    if args.output_dir:
        out = args.output_dir.resolve()
        results = out / "results"
        for sub, var in (("figures", "PRODVISION_FIGURES"), ("results", "PRODVISION_RESULTS"),
                         ("cache", "PRODVISION_CACHE")):
            (out / sub).mkdir(parents=True, exist_ok=True)
            os.environ[var] = str(out / sub)  # inherited by the kernels papermill starts
    t0 = time.perf_counter()
    times, failed = run(nbs, params, args.output_dir.resolve() if args.output_dir else None)
    summary = summarize(times, results)  # the notebooks that succeeded keep their new runtimes and results
    if not args.output_dir:
        update_readme(summary)
    if failed:
        raise SystemExit(1)
    print(f"== done: {len(nbs)} notebooks in {(time.perf_counter() - t0) / 60:.1f} min; "
          f"suite total {summary['total_runtime_s'] / 60:.1f} min; "
          f"best Fashion-MNIST test accuracy {summary['fashion_mnist_best_test_acc']}")


if __name__ == "__main__":
    main()
