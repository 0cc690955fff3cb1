"""Fashion-MNIST: source order, checksums of decompressed content, clear errors."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest

from prodvision.data import DatasetChecksumError, DatasetNotFoundError, load_fashion_mnist
from prodvision.data import fashion


def _write_idx(folder, n_train=12, n_test=4, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def idx(arr, name):
        header = (0x0800 | arr.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
        data = header + arr.astype(np.uint8).tobytes()
        (folder / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)

    idx(rng.integers(0, 255, (n_train, 28, 28)), "train-images-idx3-ubyte")
    idx(np.arange(n_train) % 10, "train-labels-idx1-ubyte")
    idx(rng.integers(0, 255, (n_test, 28, 28)), "t10k-images-idx3-ubyte")
    idx(np.arange(n_test) % 10, "t10k-labels-idx1-ubyte")
    return folder


def test_explicit_root_loads_without_verification(tmp_path):
    fm = load_fashion_mnist(_write_idx(tmp_path / "fm", gz=False), verify=False)
    assert len(fm.train) == 12 and len(fm.test) == 4 and fm.classes[9] == "Ankle boot"
    x, y = fm.train[3]
    assert tuple(x.shape) == (1, 28, 28) and y == 3


def test_checksum_mismatch_is_refused(tmp_path):
    with pytest.raises(DatasetChecksumError, match="SHA-256"):
        load_fashion_mnist(_write_idx(tmp_path / "fm"))


def test_root_without_files_is_an_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not hold"):
        load_fashion_mnist(tmp_path)


def test_no_source_names_both_ways_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("PRODVISION_DATA", raising=False)
    monkeypatch.setattr(fashion, "DEBIAN_PATH", tmp_path / "nowhere")
    monkeypatch.setattr(fashion, "repo_root", lambda: tmp_path)
    with pytest.raises(DatasetNotFoundError) as e:
        load_fashion_mnist()
    assert "apt-get install dataset-fashion-mnist" in str(e.value) and "--download" in str(e.value)


def test_env_var_source_is_used(tmp_path, monkeypatch):
    _write_idx(tmp_path / "fashion-mnist")
    monkeypatch.setenv("PRODVISION_DATA", str(tmp_path))
    desc, folder = fashion.find_fashion_mnist()
    assert desc == "$PRODVISION_DATA" and folder == tmp_path / "fashion-mnist"


def test_real_fashion_mnist_verified():
    """The real dataset (installed by `make`): 60,000 / 10,000 images, checksums verified, 6,000 / 1,000 per class."""
    fm = load_fashion_mnist(verify=True)
    assert (len(fm.train), len(fm.test)) == (60000, 10000)
    assert fm.train.images.shape == (60000, 28, 28) and fm.train.images.dtype == np.uint8
    assert np.bincount(fm.train.targets).tolist() == [6000] * 10
    assert np.bincount(fm.test.targets).tolist() == [1000] * 10
    # the checksum covers the decompressed content: recompute one independently
    path = fashion._file_in(fashion.find_fashion_mnist()[1], "t10k-labels-idx1-ubyte")
    raw = path.read_bytes()
    data = gzip.decompress(raw) if path.suffix == ".gz" else raw
    assert hashlib.sha256(data).hexdigest() == fashion._FILES["t10k-labels-idx1-ubyte"][0]


def test_decoded_once_per_process_but_callers_get_their_own_copy(tmp_path):
    root = _write_idx(tmp_path / "fm", gz=False)
    a = load_fashion_mnist(root, verify=False)
    a.train.images[0] = 255  # a caller may modify what it got...
    b = load_fashion_mnist(root, verify=False)
    assert b.train.images.flags.writeable and not (b.train.images[0] == 255).all()  # ...without touching others
    # a file replaced on disk is read again, not served from memory
    import os

    f = root / "train-labels-idx1-ubyte"
    data = bytearray(f.read_bytes())
    data[-1] = 7
    f.write_bytes(bytes(data))
    os.utime(f, ns=(os.stat(f).st_atime_ns, os.stat(f).st_mtime_ns + 10**9))
    assert load_fashion_mnist(root, verify=False).train.targets[-1] == 7
