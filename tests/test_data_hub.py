"""The Hub data path end to end against the local Hub server, with real Parquet files written here."""
from __future__ import annotations

import functools
import io
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ssm_lab.data import load_dataset
from ssm_lab.datasets.hub import HubDataError, fetch_hub_split
from ssm_lab.datasets.info import DATASETS

MNIST = DATASETS["mnist"]
MNIST_TEST = MNIST.hub.files["test"]


def encode(images: np.ndarray, fmt: str) -> list[bytes]:
    """(N, S, S) or (N, S, S, 3) uint8 -> one PNG/JPEG file each, as the Hub's Parquet files hold them."""
    out = []
    for pixels in images:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt)
        out.append(buffer.getvalue())
    return out


def parquet_bytes(encoded: list[bytes], labels: np.ndarray, column: str) -> bytes:
    images = pa.array([{"bytes": data, "path": f"{i}.png"} for i, data in enumerate(encoded)],
                      type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    buffer = io.BytesIO()
    pq.write_table(pa.table({column: images, "label": pa.array(labels, type=pa.int64())}), buffer)
    return buffer.getvalue()


@functools.lru_cache(maxsize=4)
def mnist_like(seed: int = 0, rows: int = 10_000) -> tuple[np.ndarray, np.ndarray, bytes]:
    """A 10,000-row MNIST-shaped test file: (images (N, 1, 28, 28), labels, Parquet bytes)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(rows, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=rows).astype(np.int64)
    return images[:, None], labels, parquet_bytes(encode(images, "PNG"), labels, "image")


@pytest.fixture
def data_env(monkeypatch, tmp_path):
    """A private array cache and no data folder, so only the Hub path (or the sample) can answer."""
    monkeypatch.setenv("SSM_LAB_CACHE", str(tmp_path / "array_cache"))
    monkeypatch.delenv("SSM_LAB_DATA", raising=False)
    monkeypatch.delenv("SSM_LAB_OFFLINE", raising=False)
    monkeypatch.delenv("SSM_LAB_MNIST_REVISION", raising=False)
    return tmp_path / "array_cache"


def hf_files(hub_env, repo: str = "ylecun/mnist") -> list[str]:
    """Downloaded content (blobs, partial blobs, snapshot links) of a repo in the Hugging Face cache; refs aside."""
    folder = hub_env.cache_dir / f"datasets--{repo.replace('/', '--')}"
    return sorted(p.name for part in ("blobs", "snapshots") for p in (folder / part).rglob("*")
                  if p.is_file() or p.is_symlink())


def test_first_download_is_verified_and_then_reloads_offline_from_the_cache(hub_server, data_env):
    images, labels, data = mnist_like()
    hub_server.add_file("ylecun/mnist", MNIST_TEST, data, repo_type="dataset")
    commit = hub_server.commit_of("ylecun/mnist", repo_type="dataset")
    first = load_dataset("mnist", "test", revision=commit)
    assert first.source == "official MNIST test set (Hub, 10,000)"
    assert first.detail == f"ylecun/mnist@{commit}"
    assert first.warning is None
    assert np.array_equal(first.images, images)
    assert np.array_equal(first.labels, labels)
    assert ("GET", f"/datasets/ylecun/mnist/resolve/{commit}/{MNIST_TEST}", 200) in hub_server.requests
    hub_server.stop()
    hub_server.env.set_offline(True)
    start = time.perf_counter()
    again = load_dataset("mnist", "test", revision=commit)
    assert time.perf_counter() - start < 5, "an offline re-load must not wait for the network"
    assert again.source == first.source
    assert np.array_equal(again.images, images)


def test_the_parquet_file_is_decoded_from_the_hf_cache_when_the_array_cache_is_gone(hub_server, data_env):
    images, _, data = mnist_like()
    hub_server.add_file("ylecun/mnist", MNIST_TEST, data, repo_type="dataset")
    commit = hub_server.commit_of("ylecun/mnist", repo_type="dataset")
    load_dataset("mnist", "test", revision=commit)
    for path in data_env.rglob("*"):
        if path.is_file():
            path.unlink()
    hub_server.env.set_offline(True)
    again = load_dataset("mnist", "test", revision=commit)
    assert again.source == "official MNIST test set (Hub, 10,000)"
    assert np.array_equal(again.images, images)


def test_revision_pinning_by_argument_and_environment(hub_server, data_env, monkeypatch):
    _, main_labels, main_data = mnist_like(0)
    _, tagged_labels, tagged_data = mnist_like(1)
    hub_server.add_file("ylecun/mnist", MNIST_TEST, main_data, repo_type="dataset")
    hub_server.add_file("ylecun/mnist", MNIST_TEST, tagged_data, revision="v1", repo_type="dataset")
    assert np.array_equal(load_dataset("mnist", "test", revision="v1").labels, tagged_labels)
    assert np.array_equal(load_dataset("mnist", "test", revision="main").labels, main_labels)
    monkeypatch.setenv("SSM_LAB_MNIST_REVISION", "v1")
    pinned = load_dataset("mnist", "test")
    assert pinned.detail == "ylecun/mnist@v1"
    assert np.array_equal(pinned.labels, tagged_labels)


def test_a_hub_error_names_the_data_set_and_revision_and_the_loader_falls_back_to_the_sample(hub_server, data_env):
    hub_server.add_file("ylecun/mnist", MNIST_TEST, mnist_like()[2], repo_type="dataset")
    with pytest.raises(HubDataError, match=r"MNIST test split \(ylecun/mnist@no-such-tag\).*unknown revision"):
        fetch_hub_split(MNIST, "test", "no-such-tag")
    fallback = load_dataset("mnist", "test", revision="no-such-tag")
    assert fallback.source == "bundled sample of the MNIST test set (1,000)"
    assert "ylecun/mnist@no-such-tag" in fallback.warning


def test_a_corrupted_download_is_refused_and_removed_and_the_next_try_succeeds(hub_server, data_env):
    images, _, data = mnist_like()
    hub_server.add_file("ylecun/mnist", MNIST_TEST, data, repo_type="dataset")
    hub_server.inject("corrupt", filename=MNIST_TEST)
    with pytest.raises(HubDataError, match="checksum mismatch"):
        fetch_hub_split(MNIST, "test", "main")
    assert hf_files(hub_server.env) == [], "the corrupt file must not stay in the Hugging Face cache"
    assert not any(p.is_file() for p in data_env.rglob("*")), "nothing may enter the array cache"
    fetched, _ = fetch_hub_split(MNIST, "test", "main")
    assert np.array_equal(fetched, images)


def test_a_truncated_transfer_leaves_no_partial_file_in_the_cache(hub_server, data_env):
    hub_server.add_file("ylecun/mnist", MNIST_TEST, mnist_like()[2], repo_type="dataset")
    hub_server.inject("drop", filename=MNIST_TEST, times=None)  # every GET hangs up halfway
    with pytest.raises(HubDataError, match="MNIST test split"):
        fetch_hub_split(MNIST, "test", "main")
    gets = [p for m, p, _ in hub_server.requests if m == "GET" and p.endswith(MNIST_TEST)]
    assert len(gets) >= 1, f"no download was attempted: {hub_server.requests}"
    assert hf_files(hub_server.env) == [], "a half-downloaded file stayed in the Hugging Face cache"
    assert not any(p.is_file() for p in data_env.rglob("*")), "nothing may enter the array cache"


def test_a_file_with_the_wrong_row_count_is_refused_naming_the_revision(hub_server, data_env):
    hub_server.add_file("ylecun/mnist", MNIST_TEST, mnist_like(2, rows=100)[2], repo_type="dataset")
    with pytest.raises(HubDataError, match=r"ylecun/mnist@main\): uint8 images of shape \(100, 1, 28, 28\)"):
        fetch_hub_split(MNIST, "test", "main")


def test_a_cold_cache_offline_falls_back_to_the_sample_with_one_clear_line(hub_env, data_env):
    start = time.perf_counter()
    test = load_dataset("mnist", "test")
    assert time.perf_counter() - start < 5, "offline must not wait for retries"
    assert test.source == "bundled sample of the MNIST test set (1,000)"
    assert len(test) == 1000
    assert "\n" not in test.warning
    assert "offline" in test.warning


def test_an_unreachable_hub_falls_back_at_once_when_not_offline(hub_env, data_env):
    hub_env.set_offline(False)  # the endpoint is a closed local port
    start = time.perf_counter()
    test = load_dataset("cifar10", "test")
    assert time.perf_counter() - start < 8, "an unreachable Hub must not cost ~23 s of retries"
    assert test.source == "bundled sample of the CIFAR-10 test set (1,000)"
    assert "not reachable" in test.warning


@pytest.mark.e2e  # a local Hub server and 50,000 PNG decodes (~20 s)
def test_cifar10_training_split_comes_from_the_hub_with_its_validation_part_carved_out(hub_server, data_env):
    rng = np.random.default_rng(3)
    rows = 50_000
    tiles = rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)  # few distinct PNGs keep the test fast
    which = rng.integers(0, 16, size=rows)
    labels = np.arange(rows, dtype=np.int64) % 10
    encoded = encode(tiles, "PNG")
    data = parquet_bytes([encoded[k] for k in which], labels, "img")
    hub_server.add_file("uoft-cs/cifar10", DATASETS["cifar10"].hub.files["train"], data, repo_type="dataset")
    train = load_dataset("cifar10", "train", revision="main")
    val = load_dataset("cifar10", "val", revision="main")
    assert train.source == "CIFAR-10 training set minus 1,000 validation images (Hub, 49,000)"
    assert len(val) == 1000
    assert np.bincount(val.labels).tolist() == [100] * 10
    assert np.bincount(train.labels).tolist() == [4_900] * 10


@pytest.mark.e2e  # a local Hub server and 10,000 JPEG decodes
def test_tiny_imagenet_valid_split_loads_as_a_64x64_rgb_test_set(hub_server, data_env):
    info = DATASETS["tiny-imagenet"]
    rng = np.random.default_rng(4)
    colour = rng.integers(0, 256, size=(8, 64, 64, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, size=(2, 64, 64), dtype=np.uint8)  # the real set holds some greyscale JPEGs
    encoded = encode(colour, "JPEG") + encode(grey, "JPEG")
    labels = np.arange(10_000, dtype=np.int64) % 200
    data = parquet_bytes([encoded[i % 10] for i in range(10_000)], labels, "image")
    hub_server.add_file(info.hub.repo_id, info.hub.files["test"], data, repo_type="dataset")
    test = load_dataset("tiny-imagenet", "test", revision="main")
    assert test.source == "official Tiny-ImageNet test set (Hub, 10,000)"
    assert test.images.shape == (10_000, 3, 64, 64)
    assert np.array_equal(test.labels, labels)
    grey_row = test.images[8]
    assert np.array_equal(grey_row[0], grey_row[2]), "a greyscale image becomes three equal channels"
    x, _ = test.tensors([0, 1])
    assert tuple(x.shape) == (2, 3, 64, 64)
