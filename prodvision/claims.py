"""Check quantitative claims made in notebooks ("fine-tuning beats the linear probe", "accuracy >= 93.2%").

:func:`claim` takes per-item values -- 0/1 correctness or any per-item number, e.g. a per-image Spearman
correlation -- computes the quantity (``mean(a)``, or ``mean(a) - mean(b)`` for a paired comparison), a
confidence interval, prints a report and raises :class:`ClaimError` when the claim does not hold.

Which interval is used (chosen automatically from the inputs):

* **Wilson score** -- one model, ``(N,)`` 0/1 values. Exact enough for accuracies, well behaved near 0 and 1.
* **Paired bootstrap** -- two models scored on the *same* ``N`` items: percentile interval of the mean per-item
  difference. Pairing removes the item-difficulty variance both models share, so it is much tighter than
  comparing two separate intervals. Values with few distinct levels (e.g. 0/1 correctness, differences in
  {-1, 0, 1}) are resampled exactly through multinomial counts in O(n_boot).
* **Bootstrap** -- one model, non-binary ``(N,)`` values: percentile interval of the mean (chunked).
* **Hierarchical bootstrap** -- ``(R, N)``: R runs (seeds) on the same N items. Each draw resamples runs, then
  items (the same items for both sides when paired), so the interval reflects seed-to-seed variation as
  well as the finite test set. Use it whenever you have several seeds: one lucky seed then cannot carry a claim.

``on="interval"`` (default) tests the interval (a claim about the population of items/seeds); ``on="estimate"``
tests the point estimate against a fixed target (e.g. a reported number) and prints the interval for context.

**The registry.** Every claim the course tests is declared in advance in ``prodvision/claims.toml``: its id,
statement, comparison, threshold, confidence level and whether it is a lesson's *headline* (tested at the registry's
headline level). Notebooks call :func:`registered` (through :meth:`prodvision.results.RunRecord.claim`) with the id
and the data only, so changing a claim is a visible diff of that file; ``tests/test_claims_registry.py`` fails when a
notebook passes a threshold inline, an entry is unused or a headline is not checked.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any, Mapping

import numpy as np

__all__ = ["Claim", "ClaimError", "claim", "wilson_interval", "mean_interval", "load_registry", "registered",
           "REGISTRY_PATH"]

REGISTRY_PATH = Path(__file__).with_name("claims.toml")

_OPS = (">", ">=", "<", "<=", "within")
_ONS = ("interval", "estimate")
_CHUNK = 2_000_000  # max elements in one bootstrap chunk (~16 MB of float64)
_FEW_LEVELS = 64  # at most this many distinct values -> exact multinomial resampling


class ClaimError(AssertionError):
    """Raised by :func:`claim` when a claim does not hold; the message is the full report."""


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n`` (no continuity correction).

    Args:
        k: Number of successes, ``0 <= k <= n``.
        n: Number of trials, ``n >= 1``.
        confidence: Two-sided confidence level in (0, 1).

    Returns:
        ``(low, high)`` as floats in [0, 1].
    """
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n and n >= 1, got k={k}, n={n}")
    _check_confidence(confidence)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


@dataclass(frozen=True)
class Claim:
    """The outcome of :func:`claim`. ``estimate``/``low``/``high`` are fractions (0.9321), not percentages."""

    statement: str
    estimate: float
    low: float
    high: float
    confidence: float
    a_mean: float
    b_mean: float | None
    names: tuple[str, str]
    n_items: int
    n_runs: int
    op: str
    value: float
    on: str
    method: str
    holds: bool
    binary: bool = False  # all values 0/1: report in % and percentage points
    claim_id: str | None = None  # the registry id (prodvision/claims.toml), when the claim is a registered one
    headline: bool = False  # the effect the lesson exists to teach (tested at the registry's headline level)
    check: bool = True  # False: reported with its interval, not asserted

    def record(self) -> dict[str, Any]:
        """The claim as a run-record entry (``results/<notebook>.json``, key ``claims``)."""
        return {"id": self.claim_id, "statement": self.statement, "headline": self.headline, "check": self.check,
                "op": self.op, "threshold": self.value, "on": self.on, "level": self.confidence,
                "estimate": self.estimate, "ci_low": self.low, "ci_high": self.high,
                "verdict": "holds" if self.holds else "does not hold", "method": self.method,
                "n_items": self.n_items, "n_runs": self.n_runs, "binary": self.binary,
                "difference": self.b_mean is not None}

    def _fmt(self, x: float, diff: bool) -> str:
        if self.binary:
            return f"{100 * x:+.2f}" if diff else f"{100 * x:.2f}%"
        return f"{x:+.4f}" if diff else f"{x:.4f}"

    def report(self) -> str:
        """Multi-line human-readable report: statement, means, interval, condition and verdict."""
        diff = self.b_mean is not None
        unit = " points" if diff and self.binary else ""
        conf = f"{100 * self.confidence:g}% CI"
        over = f"{self.n_items:,} items" if self.n_runs == 1 else f"{self.n_runs} runs x {self.n_items:,} items"
        method = "Wilson score" if self.method == "wilson" else self.method
        ci = f"[{conf} {self._fmt(self.low, diff)}, {self._fmt(self.high, diff)}], {method} over {over}"
        kind = ("headline claim" if self.headline else "claim") if self.check else "reported, not asserted"
        lines = [f"Claim: {self.statement}" + (f"  [{self.claim_id}, {kind}]" if self.claim_id else "")]
        if diff:
            lines.append(f"  {self.names[0]} {self._fmt(self.a_mean, False)}   "
                         f"{self.names[1]} {self._fmt(self.b_mean, False)}")
            lines.append(f"  difference {self._fmt(self.estimate, True)}{unit} {ci}")
        else:
            lines.append(f"  {self.names[0]} {self._fmt(self.estimate, False)} {ci}")
        v = self._fmt(self.value, diff) + unit
        if self.op == "within":
            band = f"{self._fmt(-self.value, diff)}, {self._fmt(self.value, diff)}]{unit}"
            cond = f"{conf} inside [{band}" if self.on == "interval" else f"|estimate| <= {v.lstrip('+')}"
        elif self.on == "interval":
            cond = f"{'lower' if self.op.startswith('>') else 'upper'} end of the {conf} {self.op} {v}"
        else:
            cond = f"estimate {self.op} {v}"
        if self.on == "estimate":
            cond += " (interval shown for information only)"
        lines += [f"  tested: {cond}", f"  verdict: {'holds' if self.holds else 'DOES NOT HOLD'}"]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def claim(statement: str, a: Any, b: Any = None, *, op: str = ">", value: float = 0.0, on: str = "interval",
          confidence: float = 0.95, n_boot: int = 10_000, seed: int = 0, names: tuple[str, str] = ("A", "B"),
          check: bool = True, quiet: bool = False) -> Claim:
    """Test a quantitative claim about per-item results and print the evidence.

    Args:
        statement: The claim in words, as written in the notebook.
        a: Per-item values of model/condition A: ``(N,)`` or ``(R, N)`` (R runs/seeds on the same N items).
            List, numpy array or torch tensor; bool, int or float; no NaN/inf.
        b: Optional per-item values of B, same shape and item/run order as ``a`` (paired). When given, the
            quantity is ``mean(a) - mean(b)``; otherwise ``mean(a)``.
        op: One of ``">", ">=", "<", "<=", "within"``; the claim is ``quantity op value``. ``"within"`` means
            ``-value <= quantity <= value`` ("no meaningful difference") and needs ``value > 0``.
        value: Threshold, as a fraction (0.932, not 93.2) for 0/1 data.
        on: ``"interval"`` compares the CI (low end for ``>``/``>=``, high end for ``<``/``<=``, both for
            ``within``); ``"estimate"`` compares the point estimate (for fixed targets).
        confidence: Two-sided confidence level in (0, 1).
        n_boot: Bootstrap draws (ignored by the Wilson interval); at least 100.
        seed: Seed for ``np.random.default_rng``; same seed -> same interval.
        names: Display names of A and B.
        check: Raise :class:`ClaimError` when the claim does not hold.
        quiet: Do not print the report.

    Returns:
        The :class:`Claim` (also when it does not hold and ``check`` is False).

    Raises:
        ClaimError: The claim does not hold and ``check`` is True.
        ValueError: Bad shapes, empty input, NaN/inf, unknown ``op``/``on``, bad ``confidence``/``n_boot``.
    """
    if op not in _OPS:
        raise ValueError(f"unknown op {op!r}; use one of {_OPS}")
    if on not in _ONS:
        raise ValueError(f"unknown on={on!r}; use 'interval' (test the CI) or 'estimate' (test the point value)")
    if op == "within" and not value > 0:
        raise ValueError(f"op='within' needs a positive margin value (e.g. 0.01 for +-1 point), got {value}")
    _check_confidence(confidence)
    if int(n_boot) < 100:
        raise ValueError(f"n_boot={n_boot} is too few for a percentile interval; use at least 100 (10,000 recommended)")
    x = _as_values(a, "a")
    y = None if b is None else _as_values(b, "b")
    if y is not None and y.shape != x.shape:
        raise ValueError(f"a has shape {x.shape} but b has shape {y.shape}; a paired claim needs both scored on "
                         "the same items (and runs) in the same order")
    if x.ndim == 2 and x.shape[0] == 1:  # a single run is just a 1-D result
        x, y = x[0], None if y is None else y[0]
    binary = all(bool(np.all((v == 0) | (v == 1))) for v in (x, y) if v is not None)
    d = x if y is None else x - y
    rng = np.random.default_rng(seed)
    estimate = float(d.mean())
    if d.ndim == 2:
        method, boots = "hierarchical bootstrap", _hier_boot_means(d, int(n_boot), rng)
    elif y is None and binary:
        method, boots = "wilson", None
    else:
        method, boots = ("bootstrap" if y is None else "paired bootstrap"), _boot_means(d, int(n_boot), rng)
    if boots is None:
        low, high = wilson_interval(int(d.sum()), d.size, confidence)
    else:
        low, high = (float(q) for q in np.quantile(boots, [0.5 - confidence / 2, 0.5 + confidence / 2]))
    lo, hi = (low, high) if on == "interval" else (estimate, estimate)
    holds = {">": lo > value, ">=": lo >= value, "<": hi < value, "<=": hi <= value,
             "within": -value <= lo and hi <= value}[op]
    result = Claim(statement=statement, estimate=estimate, low=low, high=high, confidence=confidence,
                   a_mean=float(x.mean()), b_mean=None if y is None else float(y.mean()),
                   names=(str(names[0]), str(names[1])), n_items=int(d.shape[-1]),
                   n_runs=int(d.shape[0]) if d.ndim == 2 else 1, op=op, value=float(value), on=on,
                   method=method, holds=bool(holds), binary=binary)
    if not quiet:
        print(result.report())
    if check and not result.holds:
        raise ClaimError(result.report())
    return result


def mean_interval(values: Any, *, confidence: float = 0.95, n_boot: int = 10_000,
                  seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)`` of per-item values ``(N,)`` (or ``(R, N)`` runs x items): a bootstrap percentile interval
    (hierarchical over runs when 2-D), the same one :func:`claim` reports -- for tables of numbers with intervals."""
    c = claim("mean", values, op=">", value=-np.inf, confidence=confidence, n_boot=n_boot, seed=seed, quiet=True,
              check=False)
    return c.estimate, c.low, c.high


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence}")


def _as_values(v: Any, name: str) -> np.ndarray:
    """Any array-like (torch tensors by duck typing) -> finite float64 array of shape (N,) or (R, N)."""
    if hasattr(v, "detach"):  # torch.Tensor without importing torch
        v = v.detach()
        v = v.cpu() if hasattr(v, "cpu") else v
        v = v.double() if hasattr(v, "double") else v  # bool/bf16 tensors -> float64
        v = v.numpy() if hasattr(v, "numpy") else v
    try:
        arr = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric per-item values (0/1 or numbers): {e}") from None
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} has shape {arr.shape}; expected (N,) per-item values or (R, N) for R runs")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one item")
    bad = int((~np.isfinite(arr)).sum())
    if bad:
        raise ValueError(f"{name} has {bad} NaN/inf value(s); drop those items from both a and b (or fix the "
                         "metric) before making a claim")
    return arr


def _boot_means(d: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means of the (N,) values ``d``: (n_boot,). Exact multinomial counts when few distinct values."""
    n = d.size
    levels, counts = np.unique(d, return_counts=True)
    if len(levels) <= _FEW_LEVELS:  # resampled counts ~ Multinomial(N, observed frequencies): O(n_boot * levels)
        return rng.multinomial(n, counts / n, size=n_boot) @ levels / n
    step = max(1, _CHUNK // n)
    return np.concatenate([d[rng.integers(0, n, (min(step, n_boot - s), n))].mean(1)
                           for s in range(0, n_boot, step)])


def _hier_boot_means(d: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Hierarchical bootstrap of the (R, N) values ``d``: resample runs, then items. Returns (n_boot,)."""
    r, n = d.shape
    step = max(1, _CHUNK // (n + r))
    out = []
    for s in range(0, n_boot, step):
        c = min(step, n_boot - s)
        run_counts = rng.multinomial(r, np.full(r, 1 / r), size=c)  # (c, R): how often each run was drawn
        per_item = run_counts @ d / r  # (c, N): mean over the resampled runs, for every item
        items = rng.integers(0, n, (c, n))
        out.append(np.take_along_axis(per_item, items, axis=1).mean(1))
    return np.concatenate(out)


# --------------------------------------------------------------------------------------------------- the registry
_ENTRY_KEYS = {"notebook", "statement", "op", "value", "headline", "check", "on", "names", "note"}
_PARAM = re.compile(r"^\{(\w+)\}$")  # a threshold given as "{parameter}": the notebook parameter's value


@functools.lru_cache(maxsize=4)
def load_registry(path: str | Path = REGISTRY_PATH) -> dict[str, Any]:
    """Read and validate the claims registry (TOML). Returns ``{"policy", "claims": {id: entry}, "pending"}``.

    Each entry has ``notebook``, ``statement`` (may hold ``{name}`` fields filled at call time), ``op``, ``value``
    (a number, or ``"{param}"`` for a notebook parameter), ``headline`` and optionally ``check`` (default true),
    ``on`` (default ``"interval"``), ``names`` and ``note``. Headlines are tested at ``policy.headline_confidence``,
    the others at ``policy.confidence``; a headline must be checked on its interval.

    ``[pending]`` maps a lesson whose headline experiment is not built yet to the reason (shown in the README).

    Raises:
        ValueError: The file is missing, not TOML, or an entry is malformed; the message names the entry.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{path}: cannot read the claims registry: {e}") from None
    policy = raw.get("policy", {})
    for key in ("confidence", "headline_confidence"):
        if not isinstance(policy.get(key), float):
            raise ValueError(f"{path}: [policy] needs {key} = a level in (0, 1), e.g. 0.95")
        _check_confidence(policy[key])
    claims = raw.get("claims", {})
    if policy.get("count") != len(claims):
        raise ValueError(f"{path}: [policy] count = {policy.get('count')} but the registry holds {len(claims)} "
                         "claims; update the count (it is how the registry says how many tests the course runs)")
    for cid, e in claims.items():
        where = f"{path}: claim {cid!r}"
        if not isinstance(e, dict):
            raise ValueError(f"{where}: expected a table")
        unknown = set(e) - _ENTRY_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_ENTRY_KEYS)}")
        missing = {"notebook", "statement", "op", "value", "headline"} - set(e)
        if missing:
            raise ValueError(f"{where}: missing {sorted(missing)}")
        if not cid.startswith(e["notebook"][:2] + "."):
            raise ValueError(f"{where}: ids start with the notebook's number, e.g. {e['notebook'][:2]}.name")
        if e["op"] not in _OPS or e.get("on", "interval") not in _ONS:
            raise ValueError(f"{where}: op must be one of {_OPS} and on one of {_ONS}")
        if not isinstance(e["value"], (int, float)) and not (isinstance(e["value"], str) and _PARAM.match(e["value"])):
            raise ValueError(f"{where}: value must be a number or '{{parameter}}', got {e['value']!r}")
        if e["headline"] and (not e.get("check", True) or e.get("on", "interval") != "interval"):
            raise ValueError(f"{where}: a headline claim is checked (check = true) on its interval (on = 'interval')")
    pending = raw.get("pending", {})
    if not all(isinstance(v, str) for v in pending.values()):
        raise ValueError(f"{path}: [pending] maps a notebook to the reason its headline is still missing")
    return {"policy": policy, "claims": claims, "pending": pending}


def registered(claim_id: str, a: Any, b: Any = None, *, params: Mapping[str, Any] | None = None,
               fmt: Mapping[str, Any] | None = None, names: tuple[str, str] | None = None,
               registry: str | Path = REGISTRY_PATH, n_boot: int = 10_000, seed: int = 0,
               quiet: bool = False, raise_on_fail: bool = True) -> Claim:
    """Test the registered claim ``claim_id`` on data: statement, comparison, threshold, level and ``check`` all come
    from the registry; the caller passes only the per-item values (as for :func:`claim`).

    Args:
        claim_id: An id of ``prodvision/claims.toml``, e.g. ``"05.augmentation_pays_once_it_can_overfit"``.
        a, b: Per-item values, as for :func:`claim`.
        params: The notebook's parameters: fill ``{name}`` fields of the statement and ``"{name}"`` thresholds.
        fmt: Further values for the statement's ``{name}`` fields only (e.g. the member an ensemble is compared
            with); never thresholds.
        names: Display names of A and B (default: the entry's ``names``, else ``("A", "B")``).
        raise_on_fail: Raise when a checked claim does not hold (False: the caller records, then raises).

    Returns:
        The :class:`Claim`, with its id and headline flag.

    Raises:
        KeyError: Unknown id (the message lists the notebook's ids).
        ClaimError: The claim does not hold and the registry says it is checked.
    """
    reg = load_registry(registry)
    entry = reg["claims"].get(claim_id)
    if entry is None:
        known = sorted(k for k in reg["claims"] if k[:3] == claim_id[:3])
        raise KeyError(f"claim {claim_id!r} is not in {registry}; declare it there first (known here: {known})")
    fields = {**(params or {}), **(fmt or {})}
    value = entry["value"]
    if isinstance(value, str):
        pname = _PARAM.match(value).group(1)
        if pname not in (params or {}):
            raise KeyError(f"claim {claim_id!r}: its threshold is the parameter {pname!r}, which the run lacks")
        value = float(params[pname])
    try:
        statement = entry["statement"].format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise KeyError(f"claim {claim_id!r}: its statement needs the field {e}; pass it in params or fmt") from None
    headline = bool(entry["headline"])
    confidence = reg["policy"]["headline_confidence" if headline else "confidence"]
    result = claim(statement, a, b, op=entry["op"], value=value, on=entry.get("on", "interval"),
                   confidence=confidence, n_boot=n_boot, seed=seed,
                   names=tuple(names or entry.get("names", ("A", "B"))), check=False, quiet=True)
    result = _with_id(result, claim_id, headline, bool(entry.get("check", True)))
    if not quiet:
        print(result.report())
    if raise_on_fail and result.check and not result.holds:
        raise ClaimError(result.report())
    return result


def _with_id(c: Claim, claim_id: str, headline: bool, check: bool) -> Claim:
    import dataclasses

    return dataclasses.replace(c, claim_id=claim_id, headline=headline, check=check)
