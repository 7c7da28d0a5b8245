"""Untrusted checkpoint files read safely: regular files only, size-capped strict JSON, safetensors checked
against the architecture before any tensor is read."""
from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import struct
from pathlib import Path

import torch
from safetensors import safe_open

from .errors import ConfigError, UserError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MAX_HEADER_BYTES = 1024 * 1024  # a few hundred tensor entries need ~50 KB

# safetensors dtype code -> (torch dtype, bytes per element); float32 tensors may also arrive as F16/BF16
_ST_DTYPES = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
              "F64": (torch.float64, 8), "C64": (torch.complex64, 8), "I64": (torch.int64, 8),
              "I32": (torch.int32, 4), "I16": (torch.int16, 2), "I8": (torch.int8, 1), "U8": (torch.uint8, 1),
              "BOOL": (torch.bool, 1)}
_ACCEPTED = {torch.float32: ("F32", "F16", "BF16")}


class CheckpointError(ValueError, UserError):
    """A checkpoint that is missing, unreachable, malformed or inconsistent with its config."""


# ----- safetensors -----------------------------------------------------------------------------
def read_safetensors_header(path: str | os.PathLike, size: int) -> tuple[int, dict[str, dict]]:
    """(offset of the tensor data, header) from the 8-byte length and the JSON header; no tensor data is read."""
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{WEIGHTS_NAME} is truncated: {size} bytes, too short for a safetensors file")
        (n,) = struct.unpack("<Q", prefix)
        if n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{WEIGHTS_NAME} is not a valid safetensors file: its header claims {n} bytes "
                                  f"(limit {MAX_HEADER_BYTES})")
        if 8 + n > size:
            raise CheckpointError(f"{WEIGHTS_NAME} is truncated: its header claims {n} bytes but only "
                                  f"{size - 8} follow")
        raw = f.read(n)
    if not raw.startswith(b"{"):
        raise CheckpointError(f"{WEIGHTS_NAME} is not a valid safetensors file: the header is not a JSON object")
    header = strict_json(raw, f"{WEIGHTS_NAME} header", CheckpointError)
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{WEIGHTS_NAME} is not a valid safetensors file: bad __metadata__")
    for name, entry in header.items():
        ok = (isinstance(entry, dict) and set(entry) == {"dtype", "shape", "data_offsets"}
              and isinstance(entry["dtype"], str) and isinstance(entry["shape"], list)
              and all(type(d) is int and d >= 0 for d in entry["shape"]) and isinstance(entry["data_offsets"], list)
              and len(entry["data_offsets"]) == 2 and all(type(o) is int and o >= 0 for o in entry["data_offsets"]))
        if not ok:
            raise CheckpointError(f"{WEIGHTS_NAME} is not a valid safetensors file: bad header entry for {name}")
    return 8 + n, header


def check_tensors(header: dict[str, dict], expected: dict[str, tuple], data_bytes: int) -> None:
    """Names, dtypes, shapes and byte layout of the file against the architecture, before any tensor is read."""
    missing = [n for n in expected if n not in header]
    unexpected = [n for n in header if n not in expected]
    if missing or unexpected:
        parts = [f"{label} tensors: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
                 for label, names in (("missing", missing), ("unexpected", unexpected)) if names]
        raise CheckpointError(f"{WEIGHTS_NAME} does not match the config: {'; '.join(parts)}")
    spans = []
    for name, (shape, dtype) in expected.items():
        entry = header[name]
        accepted = _ACCEPTED.get(dtype, tuple(k for k, (d, _) in _ST_DTYPES.items() if d == dtype))
        if entry["dtype"] not in accepted:
            raise CheckpointError(f"wrong dtype for {name}: expected {' or '.join(accepted)}, got {entry['dtype']}")
        if tuple(entry["shape"]) != shape:
            raise CheckpointError(f"shape mismatch for {name}: expected {list(shape)}, got {entry['shape']}")
        start, end = entry["data_offsets"]
        nbytes = math.prod(shape) * _ST_DTYPES[entry["dtype"]][1]
        if end - start != nbytes:
            raise CheckpointError(f"{WEIGHTS_NAME} is not a valid safetensors file: {name} spans {end - start} "
                                  f"bytes, its dtype and shape need {nbytes}")
        spans.append((start, end, name))
    position = 0
    for start, end, name in sorted(spans):
        if start != position:
            raise CheckpointError(f"{WEIGHTS_NAME} is not a valid safetensors file: data of {name} starts at "
                                  f"{start}, expected {position} (gaps or overlaps)")
        position = end
    if data_bytes < position:
        raise CheckpointError(f"{WEIGHTS_NAME} is truncated: the header describes {position} bytes of tensor data "
                              f"but the file holds {data_bytes}")
    if data_bytes > position:
        raise CheckpointError(f"{WEIGHTS_NAME} has {data_bytes - position} unexpected bytes after the tensor data")


def load_tensors(path, expected: dict[str, tuple]) -> dict[str, torch.Tensor]:
    state = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for name, (_, dtype) in expected.items():
            tensor = f.get_tensor(name).to(dtype)
            if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
                n_nan, n_inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
                raise CheckpointError(f"non-finite values in {name}: {n_nan} NaN and {n_inf} infinite")
            state[name] = tensor
    return state


def max_weights_bytes(expected: dict[str, tuple]) -> int:
    data = sum(math.prod(shape) * dtype.itemsize for shape, dtype in expected.values())
    return 8 + MAX_HEADER_BYTES + data


# ----- files -----------------------------------------------------------------------------------
def local_file(directory: Path, filename: str) -> Path | None:
    """The file inside `directory`, refusing symlinks that lead outside it and anything but regular files."""
    candidate = directory / filename
    if not os.path.lexists(candidate):
        return None
    real = Path(os.path.realpath(candidate))
    if Path(os.path.realpath(directory)) not in real.parents:
        raise CheckpointError(f"{candidate} is a symlink to {real}, outside the checkpoint directory; refusing it")
    regular_size(real, filename)
    return real


def regular_size(path, what: str) -> int:
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
        raise CheckpointError(f"{what} at {path} is not a regular file")
    return info.st_size


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: Path, max_bytes: int, error: type[ValueError]):
    size = regular_size(path, path.name)
    if size > max_bytes:
        raise error(f"{path.name} is {size} bytes, over the {max_bytes}-byte limit")
    with open(path, "rb") as f:
        raw = f.read(max_bytes + 1)
    return strict_json(raw, path.name, error)


def strict_json(raw: bytes, what: str, error: type[ValueError]):
    """json.loads that rejects NaN/Infinity, overflowing numbers and duplicate keys."""

    def unique_keys(pairs):
        out = {}
        for key, value in pairs:
            if key in out:
                raise error(f"{what}: duplicate key {key!r}")
            out[key] = value
        return out

    def finite(text):
        value = float(text)
        if not math.isfinite(value):
            raise error(f"{what}: number {text} is not finite")
        return value

    def constant(token):
        raise error(f"{what}: {token} is not valid JSON")

    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=unique_keys, parse_float=finite,
                          parse_constant=constant)
    except (ConfigError, CheckpointError):
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise error(f"{what} is not valid JSON: {err}") from None
