"""The course's shared recipes (prodvision.course)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from prodvision import course
from prodvision.recipes import get_or_train


@pytest.mark.parametrize("role", ["main", "vgg"])
def test_nhwc_course_recipes_train_bit_reproducibly(role, tmp_path, monkeypatch):
    """main and vgg train in NHWC with deterministic algorithms (faster on CPU). oneDNN does not promise a
    reproducible NHWC backward for every shape, so check these recipes' layers: two trainings, same weights."""
    r = course.default_recipe(role, epochs=1, device="cpu")
    assert r.train.channels_last and r.train.deterministic
    # real Fashion-MNIST, the recipe's model and batch size; 3 batches (256, 256, 88) keep it quick
    r = replace(r, name=f"nhwc_{role}", labels_per_class=60, val_per_class=10)
    states = []
    for k, draws in enumerate((0, 17)):
        monkeypatch.setenv("PRODVISION_CACHE", str(tmp_path / f"cache{k}"))
        torch.manual_seed(k)
        torch.rand(draws)  # whatever the process drew before must not matter either
        trained = get_or_train(r, progress=False)
        assert not trained.cached
        states.append(trained.model.state_dict())
    for (name, a), b in zip(states[0].items(), states[1].values()):
        assert torch.equal(a, b), name


def test_unknown_role_is_refused():
    with pytest.raises(ValueError, match="unknown role"):
        course.default_recipe("nope")
