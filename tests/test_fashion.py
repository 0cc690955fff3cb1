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


def _damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "flipped":  # one byte of the gzip header's magic: gzip.BadGzipFile
        data[1] ^= 0xFF
    elif how == "flipped_data":  # one byte inside the deflate stream: zlib.error or a CRC mismatch
        data[len(data) // 2] ^= 0xFF
    else:  # truncated: EOFError
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flipped", "flipped_data", "truncated"])
@pytest.mark.parametrize("verify", [True, False])
def test_corrupt_gzip_names_the_file_and_the_fix(tmp_path, how, verify):
    root = _write_idx(tmp_path / "fm")
    bad = root / "train-images-idx3-ubyte.gz"
    _damage(bad, how)
    with pytest.raises(DatasetChecksumError) as e:
        load_fashion_mnist(root, verify=verify)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{bad}: ")
    msg = msg[len(str(bad)):]  # the words after the path (which holds the test's name)
    assert "corrupt" in msg
    assert "prodvision data fetch" in msg


def test_corrupt_debian_file_says_reinstall_the_package(tmp_path, monkeypatch):
    debian = _write_idx(tmp_path / "usr-share-datasets-fashion-mnist")
    _damage(debian / "t10k-labels-idx1-ubyte.gz", "truncated")
    monkeypatch.delenv("PRODVISION_DATA", raising=False)
    monkeypatch.setattr(fashion, "DEBIAN_PATH", debian)
    monkeypatch.setattr(fashion, "repo_root", lambda: tmp_path / "no-repo")
    with pytest.raises(DatasetChecksumError) as e:
        load_fashion_mnist(verify=False)
    msg, bad = str(e.value), debian / "t10k-labels-idx1-ubyte.gz"
    assert "\n" not in msg and msg.startswith(f"{bad}: ")
    assert "sudo apt-get install --reinstall dataset-fashion-mnist" in msg


def test_truncated_uncompressed_idx_is_refused_even_unverified(tmp_path):
    root = _write_idx(tmp_path / "fm", gz=False)
    _damage(root / "train-images-idx3-ubyte", "truncated")
    with pytest.raises(DatasetChecksumError, match=r"train-images-idx3-ubyte: .*truncated"):
        load_fashion_mnist(root, verify=False)
