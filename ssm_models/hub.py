"""Safe checkpoint I/O: config validated first, tensors checked on the meta device, safetensors only; model cards."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from pathlib import Path

import torch
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors.torch import save as safetensors_bytes

from .atomic import atomic_write
from .classifier import SSMClassifier
from .config import MAX_PARAMETERS, ConfigError, ModelConfig
from .hub_fetch import COMMIT, HubFetch, check_revision
from .model_card import model_card
from .safe_files import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    check_tensors,
    load_tensors,
    local_file,
    max_weights_bytes,
    read_json,
    read_safetensors_header,
    regular_size,
    sha256,
)

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "CheckpointError", "ConfigError", "SHIPPED_ROOT", "expected_tensors",
           "list_checkpoints", "load_model", "read_config", "resolve_checkpoint", "save_pretrained"]

CARD_NAME = "README.md"
METRICS_NAME = "metrics.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
MAX_CONFIG_BYTES = 64 * 1024
MAX_METRICS_BYTES = 1024 * 1024


def shipped_root(package: Path = Path(__file__).resolve().parent) -> Path:
    """Inside the installed package (pyproject maps the top-level checkpoints/ there), else beside the packages in
    a source checkout."""
    installed = package / "checkpoints"
    return installed if installed.is_dir() else package.parent / "checkpoints"


SHIPPED_ROOT = shipped_root()


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
    # each file atomic: a crash mid-save never leaves a half-written file where a good checkpoint was
    atomic_write(directory / WEIGHTS_NAME, safetensors_bytes(tensors, metadata={"format": "pt"}))
    atomic_write(directory / CONFIG_NAME, json.dumps(cfg.to_dict(), indent=2, allow_nan=False) + "\n")
    card = dict(card or {})
    if card.get("metrics") is not None:
        atomic_write(directory / METRICS_NAME, json.dumps(card["metrics"], indent=2, allow_nan=False) + "\n")
    elif (directory / METRICS_NAME).is_file():
        try:
            card["metrics"] = read_json(directory / METRICS_NAME, MAX_METRICS_BYTES, CheckpointError)
        except CheckpointError as err:  # a bad metrics file must not stop a training run from saving
            warnings.warn(f"model card without metrics: {err}", stacklevel=2)
    n_params = sum(t.numel() for t in tensors.values())
    text = str(model_card(cfg, card, n_params=n_params))
    atomic_write(directory / CARD_NAME, text)
    return directory


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
        config_path, weights_path = local_file(directory, CONFIG_NAME), local_file(directory, WEIGHTS_NAME)
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
        revision = check_revision(at_revision or revision)
        hub = HubFetch(repo_id, revision, cache_dir, local_files_only, token, force_download)
        config_path = hub.fetch(CONFIG_NAME, MAX_CONFIG_BYTES)
        commit = Path(config_path).parent.name
        commit = commit if COMMIT.fullmatch(commit) else None
        hub.revision = commit or revision  # weights come from the very commit the config came from
        cfg = read_config(config_path)
        expected = expected_tensors(cfg, max_parameters)
        weights_path = hub.fetch(WEIGHTS_NAME, max_weights_bytes(expected))
        info = {"source": str(source), "repo_id": repo_id, "revision": commit, "requested_revision": revision,
                "path": str(Path(weights_path).parent)}
    size = regular_size(weights_path, WEIGHTS_NAME)
    if size > max_weights_bytes(expected):
        raise CheckpointError(f"{WEIGHTS_NAME} is {size} bytes, more than any valid checkpoint for this config "
                              f"({max_weights_bytes(expected)})")
    info["sha256"] = sha256(weights_path)
    data_start, header = read_safetensors_header(weights_path, size)
    check_tensors(header, expected, size - data_start)
    state = load_tensors(weights_path, expected)
    with torch.random.fork_rng(devices=[]):  # building draws random inits: keep the caller's RNG stream intact
        model = SSMClassifier(cfg)
    model.load_state_dict(state, strict=True)
    model.to(map_location).eval()
    model.source_info = info
    return model


def read_config(path: str | os.PathLike) -> ModelConfig:
    """Size-capped, strict JSON (no NaN, no duplicate keys), then `ModelConfig.from_dict` validation."""
    data = read_json(Path(path), MAX_CONFIG_BYTES, ConfigError)
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
            config = read_config(local_file(path, CONFIG_NAME)).to_dict()
            metrics_path = local_file(path, METRICS_NAME)
            metrics = read_json(metrics_path, MAX_METRICS_BYTES, CheckpointError) if metrics_path else None
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
        check_revision(revision)
    return text
