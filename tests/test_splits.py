"""Stratified, seeded, stable splits and the perceptual-hash leak check."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from prodvision.data import kfold_split, near_duplicates, phash, stratified_split


def test_split_is_stratified_disjoint_and_stable():
    y = np.repeat(np.arange(5), 100)
    s = stratified_split(y, seed=3)
    assert s.sizes() == {"train": 400, "val": 50, "test": 50}
    parts = [set(s.train), set(s.val), set(s.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert set().union(*parts) == set(range(500))
    for part in (s.val, s.test):
        assert np.bincount(y[part]).tolist() == [10] * 5
    again = stratified_split(y, seed=3)
    assert all((a == b).all() for a, b in zip((s.train, s.val, s.test), (again.train, again.val, again.test)))
    other = stratified_split(y, seed=4)
    assert not np.array_equal(s.test, other.test)


def test_groups_never_straddle_parts():
    y = np.repeat(np.arange(4), 30)
    groups = np.arange(120) // 3  # triples of variants
    s = stratified_split(y, seed=0, groups=groups)
    for a, b in ((s.train, s.val), (s.train, s.test), (s.val, s.test)):
        assert not set(groups[a]) & set(groups[b])


@pytest.mark.parametrize("grouped", [False, True])
def test_kfold_holds_out_every_item_once(grouped):
    y = np.repeat(np.arange(4), 30)
    groups = np.arange(120) // 3 if grouped else None
    held = []
    for fold in range(5):
        s = kfold_split(y, k=5, fold=fold, seed=2, groups=groups)
        parts = [set(s.train), set(s.val), set(s.test)]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        assert set().union(*parts) == set(range(120))
        assert len(s.val) and len(s.test) and abs(len(s.val) - len(s.test)) <= (3 if grouped else 1)
        assert set(np.unique(y[s.train])) == set(range(4))
        if grouped:
            assert not set(groups[s.train]) & set(groups[np.concatenate([s.val, s.test])])
        held += list(s.val) + list(s.test)
    assert sorted(held) == list(range(120))  # each item scored exactly once over the k folds
    again = kfold_split(y, k=5, fold=3, seed=2, groups=groups)
    assert np.array_equal(again.test, kfold_split(y, k=5, fold=3, seed=2, groups=groups).test)


def test_kfold_refuses_a_fold_out_of_range():
    with pytest.raises(ValueError, match="0 <= fold < k"):
        kfold_split([0, 1] * 10, k=5, fold=5)


def test_bad_fractions():
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split([0, 1] * 10, fractions=(0.5, 0.5, 0.5))


def test_phash_matches_imagehash(rng):
    imagehash = pytest.importorskip("imagehash")
    imgs = [Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)) for _ in range(20)]
    ours = phash(imgs)
    theirs = [int(str(imagehash.phash(im)), 16) for im in imgs]
    assert [int(h) for h in ours] == theirs


def test_near_duplicates_finds_planted_twins(rng):
    train = rng.integers(0, 255, (200, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 255, (50, 28, 28), dtype=np.uint8)
    test[[3, 17]] = train[[10, 99]]  # exact copies
    test[25] = np.clip(train[5].astype(int) + 3, 0, 255)  # a slightly brighter copy
    res = near_duplicates(phash(test), phash(train), max_distance=4)
    assert set(res["test_index"]) == {3, 17, 25}
    assert dict(zip(res["test_index"], res["train_index"])) == {3: 10, 17: 99, 25: 5}


def test_pixel_nearest_confirms_twins(rng):
    from prodvision.data import pixel_nearest

    train = rng.integers(0, 255, (100, 8, 8), dtype=np.uint8)
    test = rng.integers(0, 255, (10, 8, 8), dtype=np.uint8)
    test[4] = np.clip(train[42].astype(int) + 2, 0, 255)
    dist, arg = pixel_nearest(test, train, chunk=3)
    assert arg[4] == 42 and dist[4] < 2.1
    brute = np.sqrt(((test[:, None].astype(float) - train[None].astype(float)) ** 2).mean((2, 3)))
    np.testing.assert_allclose(dist, brute.min(1), rtol=1e-4)
    assert (arg == brute.argmin(1)).all()
