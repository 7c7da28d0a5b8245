"""One dataclass configures every classifier; validation runs before any tensor is allocated."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .bounds import check_number
from .choices import ADS_ACTIVATIONS, TOKENIZERS
from .errors import ConfigError  # noqa: F401  (defined beside UserError; raised and re-exported here)
from .families import list_models

ADS_POSITIONS = ("ssm", "residual")

# Bounds keep a hostile config.json from allocating gigabytes: the largest shipped or paper
# configuration is well inside them (paper: d_model 128, 4 layers, L = 4096).
LIMITS = {
    "d_model": (1, 1024),
    "n_layers": (1, 16),
    "d_state": (1, 256),
    "in_channels": (1, 4),
    "image_size": (4, 128),
    "num_classes": (2, 1000),
    "patch_size": (1, 32),
    "d_conv": (1, 16),
    "expand": (1, 4),
    "dt_rank": (0, 256),
    "mega_z_dim": (1, 512),
    "mega_ema_dim": (1, 64),
    "mega_hidden": (1, 2048),
}
MAX_PARAMETERS = 50_000_000
MAX_SEQUENCE = 128 * 128


@dataclass
class ModelConfig:
    arch: str = "s4"
    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    d_model: int = 64
    n_layers: int = 2
    d_state: int = 32
    tokenizer: str = "pixel"
    patch_size: int = 4
    # S4 / DSS / S5 block: None reproduces the reference (its GELU is never called); "gelu" is standard S4
    activation: str | None = None
    # Adaptive Scaling: act(W y) * y, or with ads_bias act(W_s y + b_s) * y + act(W_b y + b_b)
    ads: str | None = None
    ads_bias: bool = False
    ads_position: str = "ssm"
    # optional normalisation inside the model; inputs are always images in [0, 1]
    mean: list[float] | None = None
    std: list[float] | None = None
    # S4 / DSS / S5
    disc: str = "zoh"
    init: str = "legs"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    # Mamba
    d_conv: int = 4
    expand: int = 2
    dt_rank: int = 0  # 0 means ceil(d_model / 16), as in mamba_ssm
    # Mega
    mega_z_dim: int = 64
    mega_ema_dim: int = 16
    mega_hidden: int = 128
    mega_chunk: int = -1  # -1: full attention
    # free-form provenance (dataset, training method, threat model); never affects the architecture
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def seq_len(self) -> int:
        if self.tokenizer == "patch":
            return (self.image_size // self.patch_size) ** 2
        return self.image_size * self.image_size

    @property
    def resolved_dt_rank(self) -> int:
        return self.dt_rank or math.ceil(self.d_model / 16)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Build and validate; unknown keys are an error, not silently dropped."""
        if not isinstance(data, dict):
            raise ConfigError(f"config must be a JSON object, got {type(data).__name__}")
        data = dict(data.get("config", data)) if isinstance(data.get("config"), dict) else dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def validate(self) -> "ModelConfig":
        if self.arch not in list_models():
            raise ConfigError(f"unknown architecture {self.arch!r}; known: {', '.join(list_models())}")
        for name, (lo, hi) in LIMITS.items():
            check_number(name, getattr(self, name), lo=lo, hi=hi, integer=True, exact=True, error=ConfigError)
        if self.tokenizer not in TOKENIZERS:
            raise ConfigError(f"tokenizer must be one of {TOKENIZERS}, got {self.tokenizer!r}")
        if self.tokenizer == "patch" and self.image_size % self.patch_size:
            raise ConfigError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        if self.ads is not None and self.ads not in ADS_ACTIVATIONS:
            raise ConfigError(f"ads must be null or one of {ADS_ACTIVATIONS}, got {self.ads!r}")
        if self.activation not in (None, "gelu"):
            raise ConfigError(f"activation must be null or 'gelu', got {self.activation!r}")
        if self.ads_position not in ADS_POSITIONS:
            raise ConfigError(f"ads_position must be one of {ADS_POSITIONS}, got {self.ads_position!r}")
        if self.ads_position == "residual" and self.arch != "mamba":
            raise ConfigError("ads_position='residual' is only defined for mamba")
        if self.disc not in ("zoh", "bilinear"):
            raise ConfigError(f"disc must be 'zoh' or 'bilinear', got {self.disc!r}")
        if not (0 < self.dt_min <= self.dt_max < 10):
            raise ConfigError(f"need 0 < dt_min <= dt_max < 10, got {self.dt_min}, {self.dt_max}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, (list, tuple)) or len(value) != self.in_channels:
                raise ConfigError(f"{name} must be a list of {self.in_channels} numbers")
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value):
                raise ConfigError(f"{name} must contain finite numbers")
        if self.std is not None and any(v <= 0 for v in self.std):
            raise ConfigError("std must be positive")
        if (self.mean is None) != (self.std is None):
            raise ConfigError("mean and std must be given together")
        if self.seq_len > MAX_SEQUENCE:
            raise ConfigError(f"sequence length {self.seq_len} exceeds {MAX_SEQUENCE}")
        if not isinstance(self.meta, dict):
            raise ConfigError("meta must be a JSON object")
        return self
