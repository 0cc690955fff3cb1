"""prodvision: deep learning on product images -- a course and research kit.

Modules, one per stage: ``data`` (loading, datasets, splits), ``transforms``, ``models``, ``train``, ``features``,
``recipes`` (trained-model cache), ``evaluate``, ``ensemble``, ``explain`` (Grad-CAM), ``viz``, ``export``,
``serve``, ``federated``, ``cli``. Importing prodvision has no side effects (no downloads, seeding or device moves).
"""

__version__ = "0.1.0"
