"""Recipe cache (train once, reuse), data preparation, and the feature cache."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from prodvision.features import extract_features, feature_extractor, fit_linear_probe
from prodvision.checkpoint import load_checkpoint
from prodvision.errors import ConfigError
from prodvision.recipes import Recipe, finetune_defaults, get_or_train, prepare_data, train_recipe, wise_average
from prodvision.train import TrainConfig



@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRODVISION_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_get_or_train_trains_once_then_reuses(tmp_path, make_catalog, cache):
    data = make_catalog(tmp_path / "cat")
    r = Recipe(name="tiny", arch="mini_resnet", data=str(data), size=16, in_chans=3, model_kwargs={"widths": (4, 8, 8)},
               train=TrainConfig(epochs=2, batch_size=8, lr=0.05, device="cpu", channels_last=False))
    first = get_or_train(r, progress=False)
    assert not first.cached and first.checkpoint.is_file() and len(first.history.epochs) == 2
    second = get_or_train(r, progress=False)
    assert second.cached and second.history.epochs == first.history.epochs
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    third = get_or_train(replace(r, train=replace(r.train, epochs=1)), progress=False)
    assert not third.cached and third.checkpoint.parent != first.checkpoint.parent
    assert len(list((cache / "recipes").iterdir())) == 2


def test_get_or_train_is_reproducible_whatever_the_process_drew_before(tmp_path, make_catalog, monkeypatch):
    data = make_catalog(tmp_path / "cat")
    r = Recipe(name="tiny", arch="mini_resnet", data=str(data), size=16, in_chans=3, model_kwargs={"widths": (4, 8, 8)},
               train=TrainConfig(epochs=1, batch_size=8, lr=0.05, device="cpu", seed=3))
    models = []
    for k, draws in enumerate((0, 17)):
        monkeypatch.setenv("PRODVISION_CACHE", str(tmp_path / f"cache{k}"))
        torch.manual_seed(k)
        torch.rand(draws)  # a notebook cell that used the global RNG before training
        models.append(get_or_train(r, progress=False).model)
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(a, b)
    # a cached model comes back in the same (default) memory format as a freshly trained one
    again = get_or_train(r, progress=False)
    convs = [next(p for p in m.parameters() if p.ndim == 4 and p.shape[-1] > 1) for m in (models[1], again.model)]
    assert again.cached and all(c.is_contiguous() for c in convs)


def test_recipe_key_depends_on_everything_that_matters():
    a = Recipe(name="x")
    assert a.key() == Recipe(name="x").key()
    assert a.key() != replace(a, labels_per_class=5).key()
    assert a.key() != replace(a, train=replace(a.train, lr=0.05)).key()
    assert a.key() != replace(a, cv_fold=(0, 5)).key() != replace(a, cv_fold=(1, 5)).key()
    assert "cv_fold" not in a.experiment()  # keys of recipes without folds are those from before the field existed


def test_cv_folds_of_a_catalog_score_every_image_once(tmp_path, make_catalog):
    data = make_catalog(tmp_path / "cat")
    held = []
    for fold in range(3):
        d = prepare_data(Recipe(name="f", data=str(data), size=16, in_chans=3, cv_fold=(fold, 3)))
        assert d.split["cv_fold"] == [fold, 3]
        held += [rel for rel, _ in d.split["val"] + d.split["test"]]
        assert not {rel for rel, _ in d.split["train"]} & set(held[-len(d.val) - len(d.test):])
    n = len(prepare_data(Recipe(name="f", data=str(data), size=16, in_chans=3)).source.pool)
    assert sorted(held) == sorted(set(held)) and len(held) == n
    with pytest.raises(ConfigError, match="cv_fold"):
        Recipe(name="f", cv_fold=(3, 3))
    with pytest.raises(Exception, match="official test set"):
        prepare_data(Recipe(name="f", cv_fold=(0, 3)))  # Fashion-MNIST keeps its official test set


def test_prepare_fashion_mnist_subsets_and_relabels():
    r = Recipe(name="p", classes=("Sandal", "Bag"), labels_per_class=7)
    d = prepare_data(r)
    assert d.classes == ["Sandal", "Bag"]
    assert len(d.train) == 14 and sorted(set(d.train.targets.tolist())) == [0, 1]
    assert len(d.test) == 2000 and len(d.val) == 1200  # all test/val images of the two classes
    x, y = d.val[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    with pytest.raises(ValueError, match="unknown classes"):
        prepare_data(Recipe(name="p", classes=("Hat",)))


def test_feature_cache_hits_and_keys(tmp_path, tiny_model):
    from torch.utils.data import TensorDataset

    from prodvision.data import ArrayDataset
    from prodvision.transforms import eval_transform

    imgs = np.random.default_rng(0).integers(0, 255, (20, 8, 8, 3), dtype=np.uint8)
    ds = ArrayDataset(imgs, np.arange(20) % 3, ["a", "b", "c"], eval_transform(size=8))
    fx = feature_extractor(tiny_model, "4")
    f1, y1 = extract_features(fx, ds, cache_dir=tmp_path, progress=False)
    assert f1.shape == (20, 4) and len(list(tmp_path.iterdir())) == 1
    f2, _ = extract_features(fx, ds, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(f1, f2)
    assert len(list(tmp_path.iterdir())) == 1  # read from the cache
    with torch.no_grad():
        tiny_model[0].weight.mul_(2)  # other weights -> other key
    extract_features(feature_extractor(tiny_model, "4"), ds, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.iterdir())) == 2
    probe = fit_linear_probe(f1, y1)
    assert probe.predict(f1).shape == (20,)
    class Opaque(torch.utils.data.Dataset):  # nothing to hash: refused rather than cached under a wrong key
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.zeros(3, 8, 8), 0

    with pytest.raises(TypeError, match="fingerprint"):
        extract_features(fx, Opaque(), cache_dir=tmp_path)


def test_val_per_class_caps_validation():
    d = prepare_data(Recipe(name="p", labels_per_class=3, val_per_class=5))
    assert len(d.train) == 30 and len(d.val) == 50
    assert np.bincount(d.val.targets).tolist() == [5] * 10


def test_probe_folds_into_a_linear_layer(rng):
    from prodvision.features import probe_to_linear

    f = rng.normal(3, 2, (200, 6)).astype(np.float32)
    y = (f[:, 0] > 3).astype(int) + (f[:, 1] > 3).astype(int)
    probe = fit_linear_probe(f, y)
    lin = probe_to_linear(probe)
    with torch.no_grad():
        out = lin(torch.from_numpy(f)).numpy()
    np.testing.assert_allclose(out, probe.decision_function(f), rtol=1e-4, atol=1e-4)
    assert (out.argmax(1) == probe.predict(f)).all()


def test_wise_average_interpolates_float_weights_and_keeps_integer_buffers():
    probe = {"w": torch.zeros(3), "n": torch.tensor(5)}
    tuned = {"w": torch.tensor([2.0, 4.0, -2.0]), "n": torch.tensor(9)}
    assert torch.equal(wise_average(probe, tuned, 0.0)["w"], probe["w"])
    assert torch.equal(wise_average(probe, tuned, 1.0)["w"], tuned["w"])
    mid = wise_average(probe, tuned, 0.25)
    assert torch.allclose(mid["w"], torch.tensor([0.5, 1.0, -0.5])) and mid["n"].item() == 9
    with pytest.raises(ConfigError, match="same network"):
        wise_average(probe, {"w": tuned["w"]}, 0.5)


def test_wise_needs_lp_ft_a_fraction_and_the_last_epoch():
    ft = TrainConfig(**finetune_defaults("full"))
    ok = Recipe(name="x", weights="imagenet", arch="tf_efficientnet_lite0", finetune="full", train=ft, wise=0.5)
    assert ok.train.monitor == "epoch"
    for bad, match in ((dict(finetune="probe"), "needs finetune='full'"), (dict(wise=1.5), "between 0"),
                       (dict(train=replace(ft, monitor="val_acc")), "monitor='epoch'")):
        with pytest.raises(ConfigError, match=match):
            replace(ok, **bad)
    assert "wise" not in Recipe(name="x").experiment()  # older recipes keep their cache keys


@pytest.mark.slow
def test_lp_ft_with_wise_keeps_the_average_of_probe_and_last_epoch_also_when_resumed(tmp_path, make_catalog, cache):
    data = make_catalog(tmp_path / "cat")
    tiny = dict(arch="mini_resnet", data=str(data), size=16, in_chans=3, model_kwargs={"widths": (4, 8, 8)})
    base = get_or_train(Recipe(name="base", **tiny, train=TrainConfig(epochs=1, batch_size=8, lr=0.05, device="cpu")),
                        progress=False)
    ft = TrainConfig(**{**finetune_defaults("full"), "epochs": 2, "lr": 0.01, "batch_size": 8, "device": "cpu"})
    probe = train_recipe(Recipe(name="p", **tiny, weights=str(base.checkpoint), finetune="probe"), tmp_path / "p",
                         progress=False)
    r = Recipe(name="w", **tiny, weights=str(base.checkpoint), finetune="full", train=ft, wise=0.5)
    run = train_recipe(r, tmp_path / "w", progress=False)
    best, last = load_checkpoint(tmp_path / "w" / "best.pt"), load_checkpoint(tmp_path / "w" / "last.pt")
    assert best["wise"] == 0.5 and run.history.wise["alpha"] == 0.5 and run.history.wise["epoch"] == 2
    expected = wise_average(load_checkpoint(probe.checkpoint)["model"], last["model"], 0.5)
    changed = [k for k, v in last["model"].items() if v.is_floating_point()
               and not torch.equal(v, load_checkpoint(probe.checkpoint)["model"][k])]
    assert changed  # fine-tuning moved the weights, so the average differs from both ends
    for k, v in expected.items():
        assert torch.allclose(best["model"][k], v, atol=1e-6), k
    again = train_recipe(r, tmp_path / "w", progress=False)  # a finished run resumed: averaged once, not twice
    for k, v in expected.items():
        assert torch.allclose(load_checkpoint(again.checkpoint)["model"][k], v, atol=1e-6), k
