"""Run records: each notebook writes its headline numbers, parameters, seed, machine and wall time to
``results/<notebook>.json``; ``scripts/run_notebooks.py`` gathers them into ``results/summary.json``."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from .claims import REGISTRY_PATH, ClaimError, load_registry, registered
from .paths import results_dir

__all__ = ["RunRecord", "machine_info"]


#: The ISA flags that decide which CPU kernels PyTorch and oneDNN run (the machine *kind*: AVX2, AVX-512, AMX).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
             "amx_int8")


def cpu_kind() -> dict[str, str]:
    """The CPU's model name, ``family/model`` numbers and :data:`ISA_FLAGS` from ``/proc/cpuinfo`` (first CPU):
    enough to tell AMD EPYC generations and Xeons with and without AMX apart."""
    info = {"cpu": platform.processor() or "", "family_model": "?/?", "isa": ""}
    try:
        fields = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the first CPU's block is enough
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        return info
    flags = set(fields.get("flags", "").split())
    info.update(cpu=fields.get("model name", info["cpu"]),
                family_model=f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}",
                isa=" ".join(f for f in ISA_FLAGS if f in flags))
    return info


def machine_info() -> dict[str, Any]:
    """What ran it: CPU model, kind (family/model, ISA flags) and count, threads, accelerator, Python/torch versions."""
    import torch

    kind = cpu_kind()
    return {"cpu": kind["cpu"], "cpu_family_model": kind["family_model"], "cpu_isa": kind["isa"],
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}


class RunRecord:
    """Collects one notebook run's results; :meth:`save` writes ``results/<name>.json``.

    Example::

        run = RunRecord("06_evaluation", params={"epochs": 4, "seed": 0})
        run.log(test_acc=0.921, macro_f1=0.92)
        gain = run.claim("06.temperature_scaling_lowers_nll", nll_before, nll_after)  # declared in claims.toml
        run.save()
    """

    def __init__(self, name: str, params: dict[str, Any] | None = None):
        self.name, self.params = name, dict(params or {})
        self.metrics: dict[str, Any] = {}
        self._claims: dict[tuple[str, str], dict[str, Any]] = {}  # (id, statement) -> record: a re-run cell replaces
        self._t0 = time.perf_counter()

    def claim(self, claim_id: str, a: Any, b: Any = None, *, registry: str | os.PathLike | None = None,
              **kwargs: Any):
        """Test the registered claim ``claim_id`` (:func:`prodvision.claims.registered`) with this run's parameters
        and record it (also when it does not hold; then :class:`ClaimError` is raised)."""
        registry = registry or REGISTRY_PATH
        entry = load_registry(registry)["claims"].get(claim_id)
        if entry is not None and entry["notebook"] != self.name:
            raise KeyError(f"claim {claim_id!r} belongs to {entry['notebook']}, not {self.name}")
        result = registered(claim_id, a, b, params=self.params, registry=registry, raise_on_fail=False, **kwargs)
        self._claims[(claim_id, result.statement)] = result.record()
        if result.check and not result.holds:
            raise ClaimError(result.report())
        return result

    @property
    def claims(self) -> list[dict[str, Any]]:
        """The claims tested so far, in order, as run-record entries."""
        return list(self._claims.values())

    def log(self, **metrics: Any) -> None:
        for k, v in metrics.items():
            self.metrics[k] = v.item() if hasattr(v, "item") else v

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        folder = Path(folder) if folder is not None else results_dir()
        folder.mkdir(parents=True, exist_ok=True)
        rec = {"notebook": self.name, "metrics": self.metrics, "claims": self.claims, "params": self.params,
               "seed": self.params.get("seed"), "wall_time_s": round(time.perf_counter() - self._t0, 1),
               "machine": machine_info()}
        path = folder / f"{self.name}.json"
        path.write_text(json.dumps(rec, indent=1, default=str) + "\n")
        return path
