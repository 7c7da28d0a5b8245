"""Hub data sets: Parquet files at a pinned revision, checked, decoded once into the local array cache."""
from __future__ import annotations

import io
import json
import os
import urllib.parse
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ssm_models.hub_fetch import HubFetch, check_revision
from ssm_models.safe_files import CheckpointError

from .base import DataError, cache_dir, host_reachable, is_offline, load_cached_arrays, save_cached_arrays
from .info import DatasetInfo

CACHE_FORMAT = 1
DEFAULT_ENDPOINT = "https://huggingface.co"


class HubDataError(DataError):
    """A Hub data file could not be fetched or is not what it should be; the message names data set and revision."""


class HubUnavailable(DataError):
    """The Hub was not asked (offline) or not reachable, and no downloaded copy is cached."""


def pinned_revision(info: DatasetInfo, revision: str | None = None) -> str:
    """The revision to use: the argument, else $SSM_LAB_<NAME>_REVISION, else the one pinned in the code."""
    env = f"SSM_LAB_{info.name.upper().replace('-', '_')}_REVISION"
    chosen = revision or os.environ.get(env) or info.hub.revision
    try:
        return check_revision(chosen)
    except CheckpointError as err:
        raise HubDataError(f"{info.display_name}: {err}") from None


def hub_file(info: DatasetInfo, split: str) -> str:
    hub_split = "train" if split in ("train", "val") else "test"
    if info.hub is None or hub_split not in info.hub.files:
        raise HubDataError(f"{info.display_name} has no {hub_split} split on the Hub")
    return hub_split


def _stem(info: DatasetInfo, hub_split: str, revision: str) -> Path:
    return cache_dir() / "hub" / info.name / f"{hub_split}-{revision.replace('/', '_')}"


def _meta(info: DatasetInfo, hub_split: str, revision: str) -> dict:
    return {"format": CACHE_FORMAT, "repo": info.hub.repo_id, "file": info.hub.files[hub_split],
            "revision": revision}


def cached_hub_split(info: DatasetInfo, split: str,
                     revision: str | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The decoded arrays of an earlier download of this revision, when the array cache holds them intact."""
    hub_split, revision = hub_file(info, split), pinned_revision(info, revision)
    cached = load_cached_arrays(_stem(info, hub_split, revision), _meta(info, hub_split, revision))
    if cached is None:
        return None
    try:
        return _checked(info, hub_split, revision, cached["images"], cached["labels"])
    except HubDataError:
        return None


def is_cached(info: DatasetInfo, split: str, revision: str | None = None) -> bool:
    """Whether an earlier download of this revision sits in the array cache (its index file only is read)."""
    hub_split, revision = hub_file(info, split), pinned_revision(info, revision)
    stem = _stem(info, hub_split, revision)
    try:
        stored = json.loads(stem.with_name(f"{stem.name}.json").read_text())
    except (OSError, ValueError):
        return False
    return all(stored.get(k) == v for k, v in _meta(info, hub_split, revision).items())


def fetch_hub_split(info: DatasetInfo, split: str, revision: str | None = None, *,
                    offline: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, C, S, S) uint8, labels (N,) int64) of the Hub split behind `split` ("val" is carved from
    "train" by the caller): from the array cache, else the Hugging Face cache, else a download.

    Raises HubUnavailable when offline or the Hub is unreachable and nothing is cached, HubDataError when a file
    is refused (corrupt, truncated, wrong rows or shapes; a corrupt download is removed from the cache)."""
    hub_split, revision = hub_file(info, split), pinned_revision(info, revision)
    cached = cached_hub_split(info, split, revision)
    if cached is not None:
        return cached
    offline = is_offline() if offline is None else offline
    where = f"{info.display_name} {hub_split} split ({info.hub.repo_id}@{revision})"
    if not offline and not _endpoint_reachable():
        offline_reason = f"the Hub ({_endpoint()}) is not reachable"
        offline = True
    else:
        offline_reason = "offline mode (HF_HUB_OFFLINE or SSM_LAB_OFFLINE is set)"
    fetch = HubFetch(info.hub.repo_id, revision, None, offline, None, False, repo_type="dataset")
    try:
        path = fetch.fetch(info.hub.files[hub_split], info.hub.max_bytes)
    except CheckpointError as err:
        if offline and "not in cache" in str(err):
            raise HubUnavailable(f"{where}: {offline_reason} and no downloaded copy is cached") from None
        raise HubDataError(f"{where}: {err}") from None
    images, labels = _checked(info, hub_split, revision, *read_parquet(path, info, where))
    save_cached_arrays(_stem(info, hub_split, revision), {"images": images, "labels": labels},
                       _meta(info, hub_split, revision))
    return images, labels


def read_parquet(path: str | Path, info: DatasetInfo, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode every image of a Parquet file (image column: struct of PNG/JPEG `bytes` and `path`) to uint8."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    column = info.hub.image_column
    try:
        table = pq.read_table(path, columns=[column, "label"])
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise HubDataError(f"{where}: not a readable Parquet file with columns {column!r} and 'label' ({exc})") \
            from None
    images = table.column(column).combine_chunks()
    if not pa.types.is_struct(images.type) or images.type.get_field_index("bytes") < 0:
        raise HubDataError(f"{where}: column {column!r} is {images.type}, expected a struct with image bytes")
    encoded = images.field("bytes").to_pylist()
    side, mode = info.image_size, ("L" if info.channels == 1 else "RGB")
    out = np.empty((len(encoded), side, side, info.channels), dtype=np.uint8)  # (N, S, S, C) as Pillow lays it out
    for i, data in enumerate(encoded):
        try:
            with Image.open(io.BytesIO(data or b"")) as image:
                if image.size != (side, side):
                    raise HubDataError(f"{where}: row {i} is a {image.size[0]}x{image.size[1]} image, expected "
                                       f"{side}x{side}")
                out[i] = np.asarray(image.convert(mode)).reshape(side, side, info.channels)
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise HubDataError(f"{where}: row {i} is not a decodable image ({exc})") from None
    try:
        labels = np.asarray(table.column("label").to_numpy(), dtype=np.int64)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise HubDataError(f"{where}: the label column is not integers ({exc})") from None
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2)), labels  # (N, C, S, S)


def _checked(info: DatasetInfo, hub_split: str, revision: str, images: np.ndarray, labels: np.ndarray):
    where = f"{info.display_name} {hub_split} split ({info.hub.repo_id}@{revision})"
    rows = info.hub.rows[hub_split]
    shape = (rows, info.channels, info.image_size, info.image_size)
    if images.shape != shape or images.dtype != np.uint8:
        raise HubDataError(f"{where}: {images.dtype} images of shape {images.shape}, expected uint8 {shape}")
    if labels.shape != (rows,):
        raise HubDataError(f"{where}: {labels.shape[0] if labels.ndim else 0} labels, expected {rows}")
    if labels.min() < 0 or labels.max() >= len(info.classes):
        raise HubDataError(f"{where}: labels span [{labels.min()}, {labels.max()}], expected [0, "
                           f"{len(info.classes) - 1}]")
    return images, labels.astype(np.int64)


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or DEFAULT_ENDPOINT


def _endpoint_reachable() -> bool:
    """A 3-second TCP probe, so a machine without network falls back at once instead of after ~23 s of retries."""
    url = urllib.parse.urlsplit(_endpoint())
    return host_reachable(url.hostname or "", url.port or (443 if url.scheme == "https" else 80))
