"""The claims registry (prodvision/claims.toml) is the one place a claim's statement and threshold live: notebooks
call claims by id with data only, every entry is used, every used id is declared, headlines are asserted, and the
run records carry every claim a notebook tested."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from prodvision.claims import REGISTRY_PATH, ClaimError, load_registry, registered
from prodvision.results import RunRecord

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CLAIM_CALL = re.compile(r"run\.claim\(\s*f?[\"']([^\"']+)[\"']")


def _code(nb: Path) -> str:
    return "\n".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")


@pytest.fixture(autouse=True)
def _fresh_registry():
    """Tests below load throw-away registries: never leave one in load_registry's cache."""
    load_registry.cache_clear()
    yield
    load_registry.cache_clear()


def _used() -> dict[str, set[str]]:
    return {nb.stem: set(CLAIM_CALL.findall(_code(nb))) for nb in NOTEBOOKS}


def test_the_registry_loads_and_counts_itself():
    reg = load_registry()
    assert reg["policy"]["count"] == len(reg["claims"]) > 0
    assert reg["policy"]["headline_confidence"] > reg["policy"]["confidence"]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_call_claims_by_id_only(nb):
    code = _code(nb)
    assert not re.search(r"(?<![\w.])claim\(", code), "a bare claim(...) call: declare it in claims.toml, call run.claim"
    assert "import claim\n" not in code and re.search(r"import [^\n]*\bclaim\b(?!s)", code) is None, \
        "notebooks import no claim(): thresholds live in the registry"
    for call in re.finditer(r"run\.claim\((.*?)\)\s*(?:\n|;|$)", code, re.S):
        args = call.group(1)
        for kw in ("op=", "value=", "confidence=", "check=", "on="):
            assert not re.search(rf"\b{kw}", args), f"run.claim passes {kw!r} inline: {args[:80]}"


def test_every_registered_claim_is_used_and_every_used_id_is_registered():
    claims = load_registry()["claims"]
    used = _used()
    unused = [cid for cid, e in claims.items() if cid not in used.get(e["notebook"], set())]
    assert not unused, f"registered but no notebook tests them: {unused}"
    unknown = [(nb, cid) for nb, ids in used.items() for cid in ids if cid not in claims]
    assert not unknown, f"used but not registered: {unknown}"
    misplaced = [(nb, cid) for nb, ids in used.items() for cid in ids if cid in claims and claims[cid]["notebook"] != nb]
    assert not misplaced, f"used in another notebook than the registry says: {misplaced}"


def _parameters(nb: Path) -> set[str]:
    cells = json.loads(nb.read_text())["cells"]
    src = next(("".join(c["source"]) for c in cells if "parameters" in c["metadata"].get("tags", [])), "")
    return set(re.findall(r"^(\w+)\s*=", src, re.M))


def test_every_statement_field_is_a_parameter_or_passed_by_the_notebook():
    """A statement's {field} must be filled by the notebook's parameters or by the fmt= of every call, so a claim
    cannot fail at run time for a misnamed field (found only when the notebook executes)."""
    claims = load_registry()["claims"]
    for nb in NOTEBOOKS:
        params, code = _parameters(nb), _code(nb)
        for call in re.finditer(r"run\.claim\(\s*[\"']([^\"']+)[\"'](.*?)\)\s*(?:\n|;|$)", code, re.S):
            cid, args = call.group(1), call.group(2)
            if cid not in claims:
                continue
            passed = set(re.findall(r"fmt=\{([^}]*)\}", args, re.S) and
                         re.findall(r"[\"'](\w+)[\"']\s*:", re.search(r"fmt=\{([^}]*)\}", args, re.S).group(1)))
            for field in re.findall(r"\{(\w+)", claims[cid]["statement"]):
                assert field in params or field in passed, \
                    f"{nb.stem}: {cid}'s statement needs {{{field}}}: neither a parameter nor in the call's fmt"


def test_every_lesson_with_claims_has_a_headline_and_headlines_are_asserted():
    claims = load_registry()["claims"]
    per_nb: dict[str, list[str]] = {}
    for cid, e in claims.items():
        if e["headline"]:
            assert e.get("check", True) and e.get("on", "interval") == "interval", cid
            per_nb.setdefault(e["notebook"], []).append(cid)
    pending = load_registry()["pending"]
    for nb in {e["notebook"] for e in claims.values()}:
        if nb in pending:  # a lesson whose headline experiment is still to be built says so, with the reason
            assert not per_nb.get(nb) and len(pending[nb]) > 20, f"{nb}: pending, yet it has {per_nb.get(nb)}"
            continue
        assert 1 <= len(per_nb.get(nb, [])) <= 2, f"{nb}: one or two headline claims, found {per_nb.get(nb, [])}"


def _registry(tmp_path, body: str, count: int = 1) -> Path:
    p = tmp_path / "claims.toml"
    p.write_text(f"[policy]\nconfidence = 0.95\nheadline_confidence = 0.99\ncount = {count}\n{body}")
    load_registry.cache_clear()
    return p


ENTRY = '[claims."05.x"]\nnotebook = "05_augmentation"\nstatement = "A beats B by {{margin}}"\nop = ">"\nvalue = {value}\nheadline = {headline}\n'


def test_registered_uses_the_registry_level_threshold_and_parameters(tmp_path):
    p = _registry(tmp_path, ENTRY.format(value='"{margin}"', headline="true"))
    rng = np.random.default_rng(0)
    a, b = rng.random(400) < 0.8, rng.random(400) < 0.5
    c = registered("05.x", a, b, params={"margin": 0.1}, registry=p, quiet=True)
    assert c.holds and c.value == 0.1 and c.confidence == 0.99 and c.headline and c.claim_id == "05.x"
    assert c.statement == "A beats B by 0.1"
    with pytest.raises(ClaimError):
        registered("05.x", a, b, params={"margin": 0.5}, registry=p, quiet=True)
    with pytest.raises(KeyError, match="declare it"):
        registered("05.y", a, b, registry=p)


def test_headlines_must_be_asserted_on_the_interval(tmp_path):
    p = _registry(tmp_path, ENTRY.format(value=0.0, headline="true") + "check = false\n")
    with pytest.raises(ValueError, match="headline"):
        load_registry(p)


def test_a_wrong_count_or_an_unknown_key_is_refused(tmp_path):
    with pytest.raises(ValueError, match="count"):
        load_registry(_registry(tmp_path, ENTRY.format(value=0.0, headline="false"), count=2))
    with pytest.raises(ValueError, match="unknown key"):
        load_registry(_registry(tmp_path, ENTRY.format(value=0.0, headline="false") + "treshold = 1\n"))


def test_run_records_carry_every_claim_also_a_failed_one(tmp_path, monkeypatch):
    p = _registry(tmp_path, ENTRY.format(value='"{margin}"', headline="false"))
    monkeypatch.setattr("prodvision.results.machine_info", lambda: {})
    run = RunRecord("05_augmentation", params={"margin": 0.1})
    a, b = np.r_[np.ones(90), np.zeros(10)], np.r_[np.ones(50), np.zeros(50)]
    run.claim("05.x", a, b, registry=p, quiet=True)
    run.claim("05.x", a, b, registry=p, quiet=True)  # a re-run cell replaces its record
    run.params["margin"] = 0.6
    with pytest.raises(ClaimError):
        run.claim("05.x", a, b, registry=p, quiet=True)
    rec = json.loads(run.save(tmp_path).read_text())
    assert [c["verdict"] for c in rec["claims"]] == ["holds", "does not hold"]
    first = rec["claims"][0]
    assert set(first) >= {"id", "statement", "headline", "check", "op", "threshold", "level", "estimate", "ci_low",
                          "ci_high", "verdict", "method", "n_items", "n_runs"}
    assert first["id"] == "05.x" and first["threshold"] == 0.1 and first["level"] == 0.95
    assert first["ci_low"] <= first["estimate"] <= first["ci_high"]


@pytest.mark.parametrize("results", [ROOT / "results", ROOT / "results" / "seed1"], ids=["seed0", "seed1"])
def test_committed_records_hold_their_headlines(results):
    claims = load_registry()["claims"]
    records = sorted(results.glob("[0-9][0-9]_*.json"))
    if results.name == "seed1" and not records:
        pytest.skip("no seed-1 records committed")
    seen = set()
    for path in records:
        for c in json.loads(path.read_text()).get("claims", []):
            seen.add(c["id"])
            assert c["id"] in claims, f"{path.name}: {c['id']} is not in the registry"
            if claims[c["id"]]["headline"]:
                assert c["verdict"] == "holds" and c["level"] == 0.99, f"{path.name}: headline {c['id']} {c['verdict']}"
    if results.name != "seed1":
        headlines = {cid for cid, e in claims.items() if e["headline"]}
        assert headlines <= seen, f"headlines with no committed record: {sorted(headlines - seen)}"
