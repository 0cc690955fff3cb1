"""Damaged files give one-line errors that name the file and the fix (issue 24): truncated or untrusted checkpoints,
a torn run record; and the temp files a killed atomic write leaves behind are removed by the next write."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from prodvision import cache
from prodvision.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from prodvision.cli import main
from prodvision.errors import ConfigError
from prodvision.recipes import Recipe, load_run, train_recipe
from prodvision.train import TrainConfig


class NotATensor:  # a pickled instance of this is what weights_only=True refuses
    pass


def _checkpoint(path):
    return save_checkpoint({"model": {"w": torch.randn(50_000)}, "epoch": 1, "classes": ["a", "b"]}, path)


@pytest.mark.parametrize("keep", [0.0, 0.01, 0.5, 0.999])
def test_truncated_checkpoint_says_so_in_one_line(tmp_path, keep):
    data = _checkpoint(tmp_path / "full.pt").read_bytes()
    cut = tmp_path / "best.pt"
    cut.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(cut)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{cut}: ")
    msg = msg[len(str(cut)):]  # the words after the path (which holds the test's name)
    assert "truncated" in msg and "re-train" in msg.lower() and "copy it again" in msg
    assert "Errno" not in msg and "miniz" not in msg  # torch's internals are not the user's business


def test_truncated_checkpoint_on_the_command_line(tmp_path, capsys):
    data = _checkpoint(tmp_path / "full.pt").read_bytes()
    (tmp_path / "best.pt").write_bytes(data[:len(data) // 2])
    (tmp_path / "x.png").write_bytes(b"")
    assert main(["predict", str(tmp_path / "best.pt"), str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    head = f"error: {tmp_path / 'best.pt'}: "
    assert len(err) == 1 and err[0].startswith(head) and "truncated" in err[0][len(head):]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_untrusted_checkpoint_is_refused_without_suggesting_weights_only_false(tmp_path, how):
    path = tmp_path / "untrusted.pt"
    obj = {"format": "prodvision-checkpoint/1", "model": {}, "payload": NotATensor()}
    if how == "torch.save":
        torch.save(obj, path)
    else:
        import pickle

        path.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ")
    msg = msg[len(str(path)):]
    assert "other than tensors" in msg and "refused for safety" in msg
    assert "weights_only" not in msg and "trust" not in msg  # torch's "re-run with weights_only=False" is not advice
    if how == "torch.save":
        assert "NotATensor" in msg  # names what it holds


# ---------------------------------------------------------------------------------------------- run folders
def _recipe(data):
    return Recipe(name="tiny", arch="mini_resnet", data=str(data), size=16, in_chans=3,
                  model_kwargs={"widths": (4, 8, 8)},
                  train=TrainConfig(epochs=1, batch_size=8, lr=0.05, device="cpu", channels_last=False))


@pytest.fixture
def run(tmp_path, make_catalog):
    recipe = _recipe(make_catalog(tmp_path / "cat"))
    train_recipe(recipe, tmp_path / "run", progress=False)
    return recipe, tmp_path / "run"


def test_torn_history_json_names_the_file_and_how_to_resume(run):
    recipe, folder = run
    good = (folder / "history.json").read_text()
    (folder / "history.json").write_text(good[:len(good) // 2])
    with pytest.raises(ConfigError) as e:
        load_run(folder)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{folder / 'history.json'}: ")
    msg = msg[len(str(folder / "history.json")):]
    assert "corrupt" in msg and "can resume" in msg
    train_recipe(recipe, folder, progress=False)  # what the message says to do works: history.json is written again
    again, before = json.loads((folder / "history.json").read_text()), json.loads(good)
    assert again.pop("resumed_from") == 1 and before.pop("resumed_from") is None and again == before
    assert load_run(folder).history.epochs == json.loads(good)["epochs"]

    (folder / "history.json").write_text(good[:10])
    (folder / "last.pt").unlink()
    with pytest.raises(ConfigError, match="cannot resume.*train it again"):
        load_run(folder)


def test_torn_recipe_json_names_the_file(run):
    recipe, folder = run
    (folder / "recipe.json").write_text('{"recipe": {"na')
    with pytest.raises(ConfigError) as e:
        train_recipe(recipe, folder, progress=False)
    msg, head = str(e.value), f"{folder / 'recipe.json'}: "
    assert "\n" not in msg and msg.startswith(head) and "corrupt" in msg[len(head):]


def test_a_killed_atomic_write_leaves_nothing_after_the_next_run(run, tmp_path):
    recipe, folder = run
    stale = [folder / ".split.json.k2x9_q1.tmp", folder / ".history.json.99999999.abc.tmp", folder / ".best.pt.z.tmp"]
    for p in stale:
        p.write_text("half a file")
    live = folder / f".split.json.{os.getpid()}.live.tmp"  # a writer that is still running keeps its file
    live.write_text("being written")
    other = folder / ".notes.txt.x.tmp"  # not a file this run writes
    other.write_text("")
    train_recipe(recipe, folder, progress=False)
    assert not any(p.exists() for p in stale)
    assert live.exists() and other.exists()


def test_atomic_write_temp_files_name_their_writer(tmp_path):
    seen = []
    cache.atomic_write(tmp_path / "a.json", lambda fh: seen.extend(p.name for p in tmp_path.glob(".a.json.*.tmp")))
    assert len(seen) == 1 and seen[0].startswith(f".a.json.{os.getpid()}.")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


@pytest.mark.parametrize("damage", ["truncated", "empty", "not_torch", "wrong_contents"])
def test_a_damaged_features_cache_entry_is_named_and_recomputed(tmp_path, tiny_model, capsys, damage):
    """Issue 24 item 3: a corrupt features file gave torch's traceback; features are recomputable."""
    from torch.utils.data import TensorDataset

    from prodvision.features import extract_features

    data = TensorDataset(torch.rand(6, 3, 8, 8), torch.arange(6) % 3)
    feats, ys = extract_features(tiny_model, data, cache_dir=tmp_path, device="cpu", progress=False)
    (entry,) = tmp_path.glob("*.pt")
    good = entry.read_bytes()
    if damage == "wrong_contents":  # a readable file for another dataset size
        torch.save({"features": torch.zeros(2, 3), "targets": torch.zeros(2)}, entry)
    else:
        entry.write_bytes({"truncated": good[:len(good) // 2], "empty": b"", "not_torch": b"GIF89a no torch"}[damage])
    capsys.readouterr()
    again, ys2 = extract_features(tiny_model, data, cache_dir=tmp_path, device="cpu", progress=False)
    err = capsys.readouterr().err
    np.testing.assert_array_equal(again, feats)
    np.testing.assert_array_equal(ys2, ys)
    warning = [line for line in err.splitlines() if str(entry) in line]
    assert len(warning) == 1 and "damaged cache entry" in warning[0] and "recomputing" in warning[0]
    assert "Traceback" not in err
    assert torch.load(entry, weights_only=True)["features"].shape == (6, 3)  # rewritten whole
    extract_features(tiny_model, data, cache_dir=tmp_path, device="cpu", progress=False)
    assert "WARNING" not in capsys.readouterr().err  # and read from the cache the next time
