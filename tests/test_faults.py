"""Damaged files give one-line errors that name the file and the fix (issue 24): truncated or untrusted checkpoints."""

from __future__ import annotations

import pytest
import torch

from prodvision.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from prodvision.cli import main


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
