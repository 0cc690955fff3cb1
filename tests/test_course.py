"""The course's shared recipes (prodvision.course)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from prodvision import course
from prodvision.recipes import get_or_train


pytestmark = pytest.mark.slow  # real data and trained models, or other processes

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


def test_overrides_equal_to_the_defaults_keep_the_recipe():
    """Notebook 03 passes all its parameters; at their defaults it must hit the cached default models."""
    common = dict(epochs=8, augment={"hflip": 0.5}, batch_size=256, lr=0.2, seed=0, device="auto")
    for role, kw in (("main", dict(widths=[24, 48, 96], model_kwargs={}, **common)),
                     ("vgg", dict(widths=(16, 32, 64), **common))):
        assert course.default_recipe(role, **kw).key() == course.default_recipe(role).key()
    assert course.default_recipe("vgg", epochs=9).key() != course.default_recipe("vgg").key()
    # notebook 05 at its defaults trains (and registers) the few-image role's default recipe, which 06 calibrates
    few = course.default_recipe("few_images", epochs=150, widths=(16, 32, 64), batch_size=64, seed=0,
                                augment={"hflip": 0.0}, labels_per_class=20, device="auto")
    assert few.key() == course.default_recipe("few_images").key()
    assert (few.labels_per_class, few.val_per_class, few.train.monitor) == (20, 10, "epoch")


def test_overrides_from_papermill_parameters():
    """YAML/JSON lists become tuples; ``labels_per_class=None`` means all images (not "the default")."""
    r = course.default_recipe("main", widths=[96, 192, 384], model_kwargs={"depths": [2, 2, 2], "stem_pool": False},
                              augment={"hflip": 0.5, "crop_padding": 2, "erasing": 0.5})
    assert r.model_kwargs == {"widths": (96, 192, 384), "depths": (2, 2, 2), "stem_pool": False}
    assert (r.augment.crop_padding, r.augment.erasing) == (2, 0.5)
    assert r.key() != course.default_recipe("main").key()
    assert course.default_recipe("vgg").labels_per_class is None  # the same budget as "main": every image
    assert course.default_recipe("vgg", labels_per_class=2700).labels_per_class == 2700
    assert course.default_recipe("vgg", labels_per_class=2700).key() != course.default_recipe("vgg").key()
    assert course.default_recipe("vgg", labels_per_class=None).labels_per_class is None
    with pytest.raises(TypeError):
        course.default_recipe("main", augment={"flip": 0.5})  # not an AugmentConfig field


def test_logits_are_computed_once_and_match_predict(tmp_path, monkeypatch):
    import os

    import numpy as np
    from torch.utils.data import DataLoader

    from prodvision.evaluate import predict
    from prodvision.recipes import prepare_data

    monkeypatch.setenv("PRODVISION_CACHE", str(tmp_path))
    r = replace(course.default_recipe("main", epochs=1, widths=(8, 16, 32), device="cpu"), labels_per_class=20)
    course.register("main", r)
    trained = get_or_train(r, progress=False)
    data = prepare_data(r)
    want, y = predict(trained.model, DataLoader(data.val, batch_size=1000), tta=[lambda x: x.flip(-1)])
    got, gy = course.logits("main", "val", view="mirrored")
    assert np.array_equal(got, want) and np.array_equal(gy, y)
    cached = tmp_path / "recipes" / trained.checkpoint.parent.name / "logits" / "val-mirrored.npz"
    assert cached.is_file()
    np.savez(cached, logits=np.zeros_like(got), targets=gy, stamp=np.load(cached)["stamp"])
    assert not course.logits("main", "val", view="mirrored")[0].any()  # served from the file...
    st = trained.checkpoint.stat()
    os.utime(trained.checkpoint, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # ...until the model changes
    assert np.array_equal(course.logits("main", "val", view="mirrored")[0], want)
    with pytest.raises(ValueError, match="split must be"):
        course.logits("main", "train")


def test_a_registered_role_runs_on_the_device_asked_for(tmp_path, monkeypatch):
    """Issue 22, item 2: course.recipe dropped the device for registered roles, so a role registered with "cuda"
    (the GPU tier) failed on a CPU machine. The device is a run-time field: the cache key does not change."""
    monkeypatch.setenv("PRODVISION_CACHE", str(tmp_path))
    r = course.default_recipe("main", epochs=1, widths=(8, 16, 32), device="cuda")
    course.register("main", r)
    got = course.recipe("main", device="cpu")
    assert got.train.device == "cpu" and got.key() == r.key()
