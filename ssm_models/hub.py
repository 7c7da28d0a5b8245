"""Safe checkpoint I/O: config validated first, tensors checked on the meta device, safetensors only; model cards."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import stat
import struct
import time
import warnings
from pathlib import Path

import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id
from safetensors import safe_open
from safetensors.torch import save_file

try:  # the HTTP client of huggingface_hub; its transport errors (connection refused, peer hung up) are not OSErrors
    from httpx2 import HTTPError as _HTTPClientError
except ImportError:  # older huggingface_hub releases use httpx
    from httpx import HTTPError as _HTTPClientError

from .classifier import SSMClassifier
from .config import MAX_PARAMETERS, ConfigError, ModelConfig
from .model_card import LIBRARY_NAME, model_card

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
METRICS_NAME = "metrics.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
MAX_CONFIG_BYTES = 64 * 1024
MAX_METRICS_BYTES = 1024 * 1024
MAX_HEADER_BYTES = 1024 * 1024  # a few hundred tensor entries need ~50 KB
SHIPPED_ROOT = Path(__file__).resolve().parent.parent / "checkpoints"

# safetensors dtype code -> (torch dtype, bytes per element); float32 tensors may also arrive as F16/BF16
_ST_DTYPES = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
              "F64": (torch.float64, 8), "C64": (torch.complex64, 8), "I64": (torch.int64, 8),
              "I32": (torch.int32, 4), "I16": (torch.int16, 2), "I8": (torch.int8, 1), "U8": (torch.uint8, 1),
              "BOOL": (torch.bool, 1)}
_ACCEPTED = {torch.float32: ("F32", "F16", "BF16")}
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SAFE_ETAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # the Hub sends a git sha1 or a sha256


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreachable, malformed or inconsistent with its config."""


# ----- save ------------------------------------------------------------------------------------
def save_pretrained(model: SSMClassifier, directory: str | os.PathLike, *, card: dict | None = None) -> Path:
    """Write config.json (exactly `ModelConfig.to_dict()`), model.safetensors (float32) and a README.md card.

    `card` may hold `dataset`, `method`, `threat_model`, `description` and `metrics`; metrics are also
    written to metrics.json. Without them, an existing metrics.json in `directory` feeds the card."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model.config.validate()
    tensors = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if tensor.is_floating_point():
            tensor = tensor.to(torch.float32)
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"refusing to save: non-finite values in {name}")
        tensors[name] = tensor.contiguous().clone()  # clone: shared storage is not allowed in safetensors
    _atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    config_text = json.dumps(cfg.to_dict(), indent=2, allow_nan=False) + "\n"
    _atomic_write(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(config_text, encoding="utf-8"))
    card = dict(card or {})
    if card.get("metrics") is not None:
        metrics_text = json.dumps(card["metrics"], indent=2, allow_nan=False) + "\n"
        _atomic_write(directory / METRICS_NAME, lambda tmp: Path(tmp).write_text(metrics_text, encoding="utf-8"))
    elif (directory / METRICS_NAME).is_file():
        try:
            card["metrics"] = _read_json(directory / METRICS_NAME, MAX_METRICS_BYTES, CheckpointError)
        except CheckpointError as err:  # a bad metrics file must not stop a training run from saving
            warnings.warn(f"model card without metrics: {err}", stacklevel=2)
    n_params = sum(t.numel() for t in tensors.values())
    text = str(model_card(cfg, card, n_params=n_params))
    _atomic_write(directory / CARD_NAME, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return directory


def _atomic_write(path: Path, write) -> None:
    # a crash mid-save must not leave a half-written file where a good checkpoint was
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ----- load ------------------------------------------------------------------------------------
def load_model(source: str | os.PathLike, revision: str | None = None, *, cache_dir: str | os.PathLike | None = None,
               local_files_only: bool | None = None, token: str | bool | None = None, map_location="cpu",
               force_download: bool = False, max_parameters: int = MAX_PARAMETERS) -> SSMClassifier:
    """Load a checkpoint directory, shipped checkpoint name or Hub repo id (`org/name` or `org/name@rev`).

    Nothing is allocated until config and safetensors header agree with the architecture (built on the meta
    device). `local_files_only=None` follows HF_HUB_OFFLINE. Sets `model.source_info` for reports."""
    target = resolve_checkpoint(source)
    if Path(target).is_absolute():
        if revision is not None:
            raise CheckpointError(f"a revision ({revision!r}) only applies to Hub repos, not to {target}")
        directory = Path(target)
        config_path, weights_path = _local_file(directory, CONFIG_NAME), _local_file(directory, WEIGHTS_NAME)
        if config_path is None:
            raise CheckpointError(f"file missing: no {CONFIG_NAME} in {directory}")
        info = {"source": str(source), "repo_id": None, "revision": None, "requested_revision": None,
                "path": str(directory)}
        cfg = read_config(config_path)
        expected = expected_tensors(cfg, max_parameters)
        if weights_path is None:
            pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
            found = f"; found {', '.join(pickles)}, which is never unpickled" if pickles else ""
            raise CheckpointError(f"file missing: no {WEIGHTS_NAME} in {directory}; only safetensors weights "
                                  f"are accepted{found}")
    else:
        repo_id, _, at_revision = target.partition("@")
        if at_revision and revision and at_revision != revision:
            raise CheckpointError(f"conflicting revisions: {target!r} and revision={revision!r}")
        revision = _check_revision(at_revision or revision)
        hub = _HubFetch(repo_id, revision, cache_dir, local_files_only, token, force_download)
        config_path = hub.fetch(CONFIG_NAME, MAX_CONFIG_BYTES)
        commit = Path(config_path).parent.name
        commit = commit if _COMMIT.fullmatch(commit) else None
        hub.revision = commit or revision  # weights come from the very commit the config came from
        cfg = read_config(config_path)
        expected = expected_tensors(cfg, max_parameters)
        weights_path = hub.fetch(WEIGHTS_NAME, _max_weights_bytes(expected))
        info = {"source": str(source), "repo_id": repo_id, "revision": commit, "requested_revision": revision,
                "path": str(Path(weights_path).parent)}
    size = _regular_size(weights_path, WEIGHTS_NAME)
    if size > _max_weights_bytes(expected):
        raise CheckpointError(f"{WEIGHTS_NAME} is {size} bytes, more than any valid checkpoint for this config "
                              f"({_max_weights_bytes(expected)})")
    info["sha256"] = _sha256(weights_path)
    data_start, header = read_safetensors_header(weights_path, size)
    check_tensors(header, expected, size - data_start)
    state = _load_tensors(weights_path, expected)
    with torch.random.fork_rng(devices=[]):  # building draws random inits: keep the caller's RNG stream intact
        model = SSMClassifier(cfg)
    model.load_state_dict(state, strict=True)
    model.to(map_location).eval()
    model.source_info = info
    return model


def read_config(path: str | os.PathLike) -> ModelConfig:
    """Size-capped, strict JSON (no NaN, no duplicate keys), then `ModelConfig.from_dict` validation."""
    data = _read_json(Path(path), MAX_CONFIG_BYTES, ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{CONFIG_NAME} must hold a JSON object, got {type(data).__name__}")
    if isinstance(data.get("config"), dict):  # the {"config": {...}} form from_dict also reads: nothing beside it
        if set(data) != {"config"}:
            raise ConfigError(f"unknown config keys beside 'config': {', '.join(sorted(set(data) - {'config'}))}")
        data = data["config"]
    _check_json_types(data)
    try:
        return ModelConfig.from_dict(data)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:  # e.g. a string where a number belongs
        raise ConfigError(f"invalid {CONFIG_NAME}: {err}") from err


# JSON types of the fields that ModelConfig.validate does not type-check itself (keyed by annotation)
_JSON_TYPES = {"bool": (bool,), "float": (int, float), "str": (str,), "str | None": (str, type(None))}


def _check_json_types(data: dict) -> None:
    """A string where a number belongs would otherwise fail later with a message naming no field, and a
    string or number where a flag belongs would be taken as true."""
    for f in dataclasses.fields(ModelConfig):
        allowed = _JSON_TYPES.get(str(f.type))
        value = data.get(f.name)
        if f.name in data and allowed and (not isinstance(value, allowed) or (bool not in allowed and
                                                                               isinstance(value, bool))):
            wanted = {"bool": "true or false", "float": "a number", "str": "a string",
                      "str | None": "a string or null"}[str(f.type)]
            raise ConfigError(f"invalid {CONFIG_NAME}: {f.name} must be {wanted}, got {value!r}")


def expected_tensors(cfg: ModelConfig, max_parameters: int = MAX_PARAMETERS) -> dict[str, tuple]:
    """Name -> (shape, dtype) of the state dict, from a model built on the meta device (no memory)."""
    try:
        with torch.device("meta"):
            model = SSMClassifier(cfg)
    except (RuntimeError, NotImplementedError) as err:
        raise CheckpointError(f"cannot build {cfg.arch} on the meta device to check the checkpoint: {err}") from err
    # floating tensors are stored as float32 whatever the module keeps (save_pretrained converts them)
    expected = {name: (tuple(t.shape), torch.float32 if t.is_floating_point() else t.dtype)
                for name, t in model.state_dict().items()}
    n_params = sum(math.prod(shape) for shape, _ in expected.values())
    if n_params > max_parameters:
        raise ConfigError(f"{cfg.arch} config has {n_params:,} parameters, over the parameter budget of "
                          f"{max_parameters:,}")
    return expected


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
    header = _strict_json(raw, f"{WEIGHTS_NAME} header", CheckpointError)
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


def _load_tensors(path, expected: dict[str, tuple]) -> dict[str, torch.Tensor]:
    state = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for name, (_, dtype) in expected.items():
            tensor = f.get_tensor(name).to(dtype)
            if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
                n_nan, n_inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
                raise CheckpointError(f"non-finite values in {name}: {n_nan} NaN and {n_inf} infinite")
            state[name] = tensor
    return state


def _max_weights_bytes(expected: dict[str, tuple]) -> int:
    data = sum(math.prod(shape) * dtype.itemsize for shape, dtype in expected.values())
    return 8 + MAX_HEADER_BYTES + data


class _HubFetch:
    """hf_hub_download (so HF_ENDPOINT, HF_HUB_OFFLINE and the cache all apply), size-capped, errors explained."""

    def __init__(self, repo_id, revision, cache_dir, local_files_only, token, force_download):
        try:
            validate_repo_id(repo_id)
        except HFValidationError as err:
            raise CheckpointError(f"invalid repo id {repo_id!r}: {err}") from None
        if "/" not in repo_id:
            raise CheckpointError(f"invalid repo id {repo_id!r}: expected 'org/name'")
        self.repo_id, self.revision = repo_id, revision
        self.endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None  # read now, not at import
        if local_files_only is None:
            offline_env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
            local_files_only = hf_constants.is_offline_mode() or offline_env
        self.options = {"cache_dir": cache_dir or _cache_dir_from_env(), "local_files_only": bool(local_files_only),
                        "token": token, "force_download": force_download, "endpoint": self.endpoint,
                        "library_name": LIBRARY_NAME}

    def fetch(self, filename: str, max_bytes: int) -> str:
        where = f"{self.repo_id}@{self.revision or 'main'}"
        try:
            etag = None if self.options["local_files_only"] else self._preflight(filename, max_bytes, where)
            try:
                path = hf_hub_download(self.repo_id, filename, revision=self.revision, **self.options)
            except HfHubHTTPError as err:
                if not _server_error_on_get(err):
                    raise
                time.sleep(1)  # huggingface_hub retries a failing HEAD but never a failing GET: one more try
                path = hf_hub_download(self.repo_id, filename, revision=self.revision, **self.options)
        except RepositoryNotFoundError:
            raise CheckpointError(f"unknown repo {self.repo_id!r} on {self.endpoint or hf_constants.ENDPOINT} "
                                  "(or it is private or gated: pass token=...)") from None
        except RevisionNotFoundError:
            raise CheckpointError(f"unknown revision {self.revision!r} for repo {self.repo_id!r}") from None
        except LocalEntryNotFoundError as err:
            cause = err.__cause__  # set when the Hub was asked and failed, as opposed to offline mode
            if cause is not None and not self.options["local_files_only"] and type(cause).__name__ != \
                    "OfflineModeIsEnabled":
                reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
                raise CheckpointError(f"download of {filename} from {where} failed and the local cache does not "
                                      f"have it: the Hub failed or could not be reached ({reason}); retry later, "
                                      "or load a local directory") from None
            raise CheckpointError(
                f"{filename} of {where} is offline and not in cache: the local Hugging Face cache does not have it "
                "and the Hub was not reached (HF_HUB_OFFLINE=1 / local_files_only, or no network / Hub down). "
                f"Connect and unset HF_HUB_OFFLINE, or load a local directory. ({err})") from None
        except EntryNotFoundError:
            hint = ("; only safetensors weights are accepted (pickle files such as pytorch_model.bin are never "
                    "loaded)") if filename == WEIGHTS_NAME else ""
            raise CheckpointError(f"file missing: {filename} is not in {where}{hint}") from None
        except (HfHubHTTPError, OSError, _HTTPClientError) as err:
            raise CheckpointError(f"download of {filename} from {where} failed: {err}") from None
        return self._verified(path, filename, etag, where)

    def _preflight(self, filename: str, max_bytes: int, where: str) -> str | None:
        """HEAD the file before hf_hub_download does: the size against the cap, and the commit and ETag, which
        hf_hub_download turns into cache paths without checking them (an ETag of `../../x` writes outside the
        cache). Returns the ETag, or None when the Hub does not answer (hf_hub_download then retries or falls
        back to the cache)."""
        if self.revision and _COMMIT.fullmatch(self.revision) and not self.options["force_download"] and isinstance(
                try_to_load_from_cache(self.repo_id, filename, self.options["cache_dir"], self.revision), str):
            return None  # a pinned commit already in the cache is served without asking the Hub
        url = hf_hub_url(self.repo_id, filename, revision=self.revision, endpoint=self.endpoint)
        try:
            meta = get_hf_file_metadata(url, token=self.options["token"], library_name=LIBRARY_NAME,
                                        endpoint=self.endpoint)
        except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError):
            raise
        except (HfHubHTTPError, OSError, _HTTPClientError):
            return None
        if not isinstance(meta.commit_hash, str) or not _COMMIT.fullmatch(meta.commit_hash):
            raise CheckpointError(f"{filename} in {where}: the Hub answered with an invalid commit id "
                                  f"{meta.commit_hash!r}; refusing it")
        if not isinstance(meta.etag, str) or not _SAFE_ETAG.fullmatch(meta.etag):
            raise CheckpointError(f"{filename} in {where}: the Hub answered with an invalid ETag {meta.etag!r} "
                                  "(it would name a file in the cache); refusing it")
        if meta.size is not None and meta.size > max_bytes:
            raise CheckpointError(f"{filename} in {where} is {meta.size} bytes, over the {max_bytes}-byte limit "
                                  "for this file")
        return meta.etag

    def _verified(self, path: str, filename: str, etag: str | None, where: str) -> str:
        """The downloaded file, inside the cache and matching its sha256 when the Hub announced one. A corrupt
        download is evicted (pointer and blob), so the next request downloads it afresh instead of failing again."""
        cache = os.path.realpath(self.options["cache_dir"] or hf_constants.HF_HUB_CACHE)
        if Path(cache) not in Path(os.path.realpath(path)).parents:
            raise CheckpointError(f"{filename} of {where} resolved to {os.path.realpath(path)}, outside the cache "
                                  f"{cache}; refusing it")
        # the repo's blob entry, named after the ETag (one link from the snapshot pointer; it may itself link on
        # into the cache-wide store of Xet blobs, whose names are Xet hashes)
        blob = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path))) if os.path.islink(path) \
            else path
        name = os.path.basename(blob)
        if etag is not None and os.path.islink(path) and name != etag:
            raise CheckpointError(f"{filename} of {where}: the Hub announced ETag {etag} and then {name}; refusing "
                                  "the file")
        if _SHA256.fullmatch(name):
            digest = _sha256(path)
            if digest != name:
                for stale in (path, blob):  # entries of this repo only, never the shared store behind them
                    Path(stale).unlink(missing_ok=True)
                raise CheckpointError(f"checksum mismatch: {filename} of {where} has sha256 {digest} but the Hub "
                                      f"announced {name}; the corrupt download was removed from the cache, so "
                                      "loading again downloads it afresh")
        return path


def _server_error_on_get(err: HfHubHTTPError) -> bool:
    response = getattr(err, "response", None)
    return response is not None and response.status_code >= 500 and response.request.method == "GET"


def _cache_dir_from_env() -> str | None:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None  # huggingface_hub's own default


def _check_revision(revision: str | None) -> str | None:
    if revision is None:
        return None
    if (not isinstance(revision, str) or len(revision) > 128 or not _REVISION.fullmatch(revision)
            or ".." in revision or revision.endswith((".lock", "."))):
        raise CheckpointError(f"invalid revision {revision!r}: use a branch, a tag or a 40-character commit sha")
    return revision


# ----- files -----------------------------------------------------------------------------------
def _local_file(directory: Path, filename: str) -> Path | None:
    """The file inside `directory`, refusing symlinks that lead outside it and anything but regular files."""
    candidate = directory / filename
    if not os.path.lexists(candidate):
        return None
    real = Path(os.path.realpath(candidate))
    if Path(os.path.realpath(directory)) not in real.parents:
        raise CheckpointError(f"{candidate} is a symlink to {real}, outside the checkpoint directory; refusing it")
    _regular_size(real, filename)
    return real


def _regular_size(path, what: str) -> int:
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
        raise CheckpointError(f"{what} at {path} is not a regular file")
    return info.st_size


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_json(path: Path, max_bytes: int, error: type[ValueError]):
    size = _regular_size(path, path.name)
    if size > max_bytes:
        raise error(f"{path.name} is {size} bytes, over the {max_bytes}-byte limit")
    with open(path, "rb") as f:
        raw = f.read(max_bytes + 1)
    return _strict_json(raw, path.name, error)


def _strict_json(raw: bytes, what: str, error: type[ValueError]):
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


# ----- shipped checkpoints ---------------------------------------------------------------------
def list_checkpoints(root: str | os.PathLike = SHIPPED_ROOT) -> list[dict]:
    """Every directory under `root` with a config.json: name, path, config dict, metrics.json (or None)."""
    root = Path(root)
    found = []
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root):  # does not descend into symlinked directories
        dirnames.sort()
        if CONFIG_NAME not in filenames:
            continue
        path = Path(dirpath)
        try:
            config = read_config(_local_file(path, CONFIG_NAME)).to_dict()
            metrics_path = _local_file(path, METRICS_NAME)
            metrics = _read_json(metrics_path, MAX_METRICS_BYTES, CheckpointError) if metrics_path else None
        except (ConfigError, CheckpointError, OSError) as err:
            warnings.warn(f"skipping checkpoint {path}: {err}", stacklevel=2)
            continue
        found.append({"name": path.relative_to(root).as_posix(), "path": str(path), "config": config,
                      "metrics": metrics, "has_weights": (path / WEIGHTS_NAME).is_file()})
    return found


def resolve_checkpoint(name_or_path_or_repo: str | os.PathLike, root: str | os.PathLike = SHIPPED_ROOT) -> str:
    """A shipped checkpoint name -> its directory; an existing directory -> its absolute path; else a repo id
    (`org/name` or `org/name@revision`), validated."""
    if isinstance(name_or_path_or_repo, os.PathLike):
        text, path_like = os.fspath(name_or_path_or_repo), True
    else:
        text = str(name_or_path_or_repo)
        repo_part = text.partition("@")[0]  # revisions such as refs/pr/1 may contain slashes
        path_like = text.startswith((".", "/", "~", "\\")) or repo_part.count("/") > 1 or "\\" in text
    root = Path(root)
    parts = Path(text).parts
    if text and not Path(text).is_absolute() and ".." not in parts and (root / text / CONFIG_NAME).is_file():
        shipped = Path(os.path.realpath(root / text))
        if Path(os.path.realpath(root)) in shipped.parents:
            return str(shipped)
    local = Path(text).expanduser()
    if local.is_dir():
        return str(local.resolve())
    if local.exists():
        if local.suffix in PICKLE_SUFFIXES:
            raise CheckpointError(f"{text} is a pickle file; only safetensors checkpoints are accepted and pickle "
                                  "files are never loaded (convert it with the explicit reference-import path)")
        if local.name in (CONFIG_NAME, WEIGHTS_NAME):
            return str(local.resolve().parent)
        raise CheckpointError(f"{text} is a file; expected a checkpoint directory with {CONFIG_NAME} and "
                              f"{WEIGHTS_NAME}")
    if path_like:
        raise CheckpointError(f"no such checkpoint directory: {text}")
    repo_id, _, revision = text.partition("@")
    try:
        validate_repo_id(repo_id)
        if "/" not in repo_id:
            raise HFValidationError("a Hub repo id has the form 'org/name'")
    except HFValidationError as err:
        raise CheckpointError(f"{text!r} is not a shipped checkpoint, a directory or a valid Hub repo id: "
                              f"{err}") from None
    if revision:
        _check_revision(revision)
    return text
