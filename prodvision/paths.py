"""Where things live: the repository root (when running from a checkout), figures/, results/ and caches."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_root", "project_dir", "cache_dir", "figures_dir", "results_dir"]


def repo_root(start: str | os.PathLike | None = None) -> Path | None:
    """The prodvision checkout containing ``start`` (default: the working directory), or this package's checkout.

    A folder is the checkout if it has a ``pyproject.toml`` naming the ``prodvision`` project. Returns None when
    prodvision is installed outside a checkout and the working directory is not inside one.
    """
    starts = [Path(start or Path.cwd()).resolve(), Path(__file__).resolve().parent]
    for s in starts:
        for d in (s, *s.parents):
            py = d / "pyproject.toml"
            if py.is_file() and 'name = "prodvision"' in py.read_text(encoding="utf-8", errors="replace"):
                return d
    return None


def project_dir() -> Path:
    """The checkout if there is one, else the working directory: the base for figures/, results/ and runs/."""
    return repo_root() or Path.cwd()


def cache_dir() -> Path:
    """Model/feature caches: ``$PRODVISION_CACHE`` or ``<project>/runs/cache``."""
    return Path(os.environ.get("PRODVISION_CACHE") or project_dir() / "runs" / "cache")


def figures_dir() -> Path:
    """Where notebooks save figures: ``$PRODVISION_FIGURES`` or ``<project>/figures``."""
    return Path(os.environ.get("PRODVISION_FIGURES") or project_dir() / "figures")


def results_dir() -> Path:
    """Where notebooks write run records: ``$PRODVISION_RESULTS`` or ``<project>/results``."""
    return Path(os.environ.get("PRODVISION_RESULTS") or project_dir() / "results")
