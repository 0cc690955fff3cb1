"""The package's one progress-bar factory: ``tqdm.auto`` refreshing at most every ``REFRESH_S`` seconds.

Why not tqdm's default (10 refreshes per second): in a Jupyter kernel every refresh of a widget bar is about three
IOPub messages. ZeroMQ drops IOPub messages past its high-water mark (1000 at each end) while no client reads them,
and nbval reads a cell's messages only after the cell has finished -- so a ten-minute training cell lost the kernel's
final "idle" message and nbval failed with "Timeout of 5 seconds exceeded waiting for output" (CI, notebook 07).
At one refresh every 2 s a ten-minute cell sends ~900 messages. JupyterLab reads continuously and is unaffected
either way; a bar that moves every 2 s is still a live bar.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["REFRESH_S", "progress_bar"]

#: Seconds between two refreshes of a progress bar (``mininterval``; see the module docstring for why not 0.1).
REFRESH_S = 2.0


def progress_bar(iterable: Any = None, **kwargs: Any):
    """``tqdm.auto.tqdm(iterable, **kwargs)`` with ``mininterval=REFRESH_S`` unless given.

    ``PRODVISION_PROGRESS=0`` in the environment disables every bar: ``make test`` and ``make notebooks`` set it, so
    executed notebooks keep no bar frozen at its last refresh in their saved outputs (a live JupyterLab session,
    where the variable is unset, shows the bars).
    """
    from tqdm.auto import tqdm

    kwargs.setdefault("mininterval", REFRESH_S)
    if os.environ.get("PRODVISION_PROGRESS", "1") == "0":
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)
