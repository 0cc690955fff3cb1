"""Sphinx configuration of the course book (``make book``): the committed notebooks as they are, never executed, and
nothing fetched from the network when the book is built or read (MathJax, fonts, scripts and styles are local)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # autodoc documents this checkout's prodvision, installed or not

import prodvision  # noqa: E402

project = "prodvision"
author = "the prodvision authors"
copyright = "the prodvision authors, MIT licence"
release = version = prodvision.__version__

extensions = [
    "myst_nb",  # Markdown (MyST) pages and .ipynb notebooks with their committed outputs
    "sphinx.ext.autodoc",  # the API reference from the package's docstrings
    "sphinx.ext.autosummary",  # one page per module (generated into docs/api/, ignored by git)
    "sphinx.ext.napoleon",  # Google-style docstrings
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 copied into _static/ instead of loaded from a CDN
]

# The source folder is the checkout (`sphinx-build -c docs . _build/html`), so the lessons are the committed notebooks
# themselves and links between docs/, notebooks/ and figures/ are the ones GitHub shows. Only docs/ and the
# numbered notebooks are pages; every other top-level folder (.venv, runs, data, ...) is not even walked.
root_doc = "docs/index"
include_patterns = ["docs/**", "notebooks/[0-9][0-9]_*.ipynb"]
exclude_patterns = [p.name for p in ROOT.iterdir() if p.is_dir() and p.name not in ("docs", "notebooks")]
exclude_patterns += ["README.md", "docs/_templates", "**/.ipynb_checkpoints"]
templates_path = [str(ROOT / "docs" / "_templates")]  # absolute: autosummary reads it from the source folder
html_additional_pages = {"index": "book-redirect.html"}  # _build/html/index.html opens docs/index.html

# Notebooks: shown with the outputs they were committed with; the book never runs them (`make notebooks` does).
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]  # the lessons' $...$ and $$...$$, as Jupyter renders them
myst_dmath_double_inline = True  # $$...$$ inside a paragraph (lesson 01) is display maths there too
myst_heading_anchors = 3  # headings get the ids GitHub gives them: the syllabus links to its weeks

# API reference. autodoc imports each module (torch included), nothing runs at import (no side effects by design).
autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False


def _documented_names() -> dict[str, list[str]]:
    """Per module, the names its API page documents: what it exports (``__all__``) less what it imports from another
    module (``prodvision.train`` re-exports ``TrainConfig``): each name is documented once, where it is defined."""
    import ast
    import importlib
    import pkgutil

    out = {}
    for info in pkgutil.walk_packages(prodvision.__path__, "prodvision."):
        if info.ispkg or info.name.endswith("__main__"):
            continue
        mod = importlib.import_module(info.name)
        if not hasattr(mod, "__all__"):
            raise RuntimeError(f"{info.name} has no __all__: add one (the API reference documents what it exports)")
        tree = ast.parse(Path(mod.__file__).read_text(encoding="utf-8"))
        imported = {(a.asname or a.name).split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names}
        out[info.name] = [n for n in mod.__all__ if n not in imported]
    return out


autosummary_context = {"api_members": _documented_names()}  # read by _templates/autosummary/module.rst

html_theme = "sphinx_book_theme"
html_title = "prodvision"
html_static_path: list[str] = []
html_last_updated_fmt = None
html_copy_source = True  # the download button offers each lesson's .ipynb
html_theme_options = {
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": True,
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "navigation_with_keys": False,
    "navbar_persistent": [],  # the search field is in the sidebar; no second one in a header bar
}
