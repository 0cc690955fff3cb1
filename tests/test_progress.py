"""Progress bars stay quiet enough for a notebook kernel (see prodvision/progress.py for the nbval failure)."""

from __future__ import annotations

import pytest

import io
import re
import time
from pathlib import Path

import prodvision
from prodvision.progress import REFRESH_S, progress_bar


@pytest.mark.slow
def test_progress_bar_refreshes_at_most_every_refresh_s():
    buf = io.StringIO()
    n, t0 = 0, time.perf_counter()
    for _ in progress_bar(range(10**6), file=buf, ascii=True):
        n += 1
        if time.perf_counter() - t0 > 1.5 * REFRESH_S:
            break
        time.sleep(0.002)
    refreshes = buf.getvalue().count("\r")
    # tqdm's default (0.1 s) would refresh ~30 times here; ours: the first draw, about one more, the final one
    assert n > 100 and refreshes <= 4, (n, refreshes)


def test_package_draws_every_bar_through_progress_bar():
    root = Path(prodvision.__file__).parent
    raw = [p.name for p in root.rglob("*.py") if p.name != "progress.py"
           and re.search(r"^\s*(from tqdm|import tqdm)", p.read_text(), re.M)]
    assert raw == [], f"these modules create tqdm bars directly (use progress.progress_bar): {raw}"
