"""The classifier shell every family shares: tokens -> LayerNorm -> n x LayerNorm(x + Block(x)) -> pool -> head."""
from __future__ import annotations

import contextlib
from collections import OrderedDict

import torch
from torch import nn

from .ads import AdaptiveScaling
from .config import ConfigError, ModelConfig
from .families import arch_defaults, block_factory, list_models
from .tokenizers import build_tokenizer


@contextlib.contextmanager
def frozen(model: nn.Module):
    """Eval mode with every parameter's requires_grad off, restored afterwards (any nn.Module).

    Attacks need input gradients only; with parameters frozen the time-invariant SSM kernels are cached."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


class Normalize(nn.Module):
    """(x - mean) / std inside the model, so attacks always work on images in [0, 1]."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std  # (B, C, S, S)


class MeanPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)  # (B, L, H) -> (B, H)


class ResidualLayer(nn.Module):
    """`LayerNorm(x + mixer(x))`, with Mamba's optional AdS on the residual sum before the norm."""

    def __init__(self, mixer: nn.Module, d_model: int, residual_ads: nn.Module | None = None):
        super().__init__()
        self.mixer = mixer
        self.residual_ads = residual_ads
        self.residual_norm = nn.LayerNorm(d_model)
        # what the analysis names as these components' inputs (probes record them with pre-hooks)
        self.residual_norm.probe_input_label = "x + mixer(x)" if residual_ads is None else "residual AdS output"
        if residual_ads is not None:
            residual_ads.probe_input_label = "x + mixer(x)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x + self.mixer(x)  # (B, L, H)
        if self.residual_ads is not None:
            z = self.residual_ads(z)  # (B, L, H)
        return self.residual_norm(z)  # (B, L, H)

    def step(self, x_t: torch.Tensor, state):
        y_t, state = self.mixer.step(x_t, state)  # (B, H)
        z = x_t + y_t  # (B, H)
        if self.residual_ads is not None:
            z = self.residual_ads(z)
        return self.residual_norm(z), state


INFERENCE_CHUNK_BYTES = 8 * 2**20


def _hooked(model: nn.Module) -> bool:
    """Whether a forward hook or pre-hook watches the model or any module in it (or every module)."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


class SSMClassifier(nn.Module):
    """Images in [0, 1], shape (B, C, S, S) -> logits (B, num_classes); saved and loaded by `hub.py`."""

    def __init__(self, config: ModelConfig | dict):
        super().__init__()
        if isinstance(config, dict):
            config = ModelConfig.from_dict(config)
        config.validate()
        self.config = config
        self.normalize = Normalize(config.mean, config.std) if config.mean is not None else None
        self.embed = build_tokenizer(config.tokenizer, config.in_channels, config.d_model, config.patch_size)
        self.embed_norm = nn.LayerNorm(config.d_model)
        make_block = block_factory(config.arch)
        layers = []
        for i in range(config.n_layers):
            residual_ads = None
            if config.ads and config.ads_position == "residual":
                residual_ads = AdaptiveScaling(config.d_model, config.ads, config.ads_bias)
            layers.append(ResidualLayer(make_block(config, i), config.d_model, residual_ads))
        self.layers = nn.ModuleList(layers)
        self.pool = MeanPool()
        self.head = nn.Linear(config.d_model, config.num_classes)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The first layer: normalisation and token embedding, (B, C, S, S) -> (B, L, H)."""
        if self.normalize is not None:
            x = self.normalize(x)  # (B, C, S, S)
        return self.embed(x)  # (B, L, H)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        z = self.embed_norm(self.tokens(x))  # (B, L, H)
        for layer in self.layers:
            z = layer(z)  # (B, L, H)
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunk = self.inference_chunk(x)
        if chunk < x.shape[0]:
            return torch.cat([self.head(self.pool(self.features(part))) for part in x.split(chunk)])  # (B, classes)
        return self.head(self.pool(self.features(x)))  # (B, classes)

    def inference_chunk(self, x: torch.Tensor) -> int:
        """Images per pass. Without gradients, in eval mode, the images of a batch are independent, so a large
        batch runs in chunks whose widest intermediates (about 4 d_model values a token: Mamba's in_proj, S4's
        padded spectra) fit in INFERENCE_CHUNK_BYTES and stay in cache: at the paper's CIFAR-10 size, batch 100,
        S4 took 15.5 ms an image in one pass and 7.3 in chunks of 25 or fewer, Mamba 84 and 57 ms, with the same
        logits. Never while gradients are recorded (Mamba's backward decides to recompute from the batch's
        memory), in training mode, or while any forward hook watches the model (probes record one pass)."""
        batch = x.shape[0]
        if torch.is_grad_enabled() or self.training:
            return batch
        per_image = self.config.seq_len * 4 * self.config.d_model * x.element_size()
        chunk = max(2, INFERENCE_CHUNK_BYTES // per_image)
        return batch if chunk >= batch or _hooked(self) else chunk  # the module walk only where it matters

    # ----- recurrent mode -------------------------------------------------------------------
    def forward_recurrent(self, x: torch.Tensor) -> torch.Tensor:
        """Token-by-token evaluation with each block's `step`; equals `forward` for the SSM families."""
        tokens = self.embed_norm(self.tokens(x))  # (B, L, H)
        b, length, _ = tokens.shape
        states = [layer.mixer.initial_state(b, tokens.device, tokens.dtype) for layer in self.layers]
        total = torch.zeros(b, self.config.d_model, device=tokens.device, dtype=tokens.dtype)  # (B, H)
        for t in range(length):
            z = tokens[:, t]  # (B, H)
            for i, layer in enumerate(self.layers):
                z, states[i] = layer.step(z, states[i])
            total = total + z
        return self.head(total / length)  # (B, classes)

    # ----- probes ----------------------------------------------------------------------------
    def probe_modules(self) -> "OrderedDict[str, nn.Module]":
        """Stable names in forward order: embed, embed_norm, layers.i.<component>..., pool, logits."""
        out: "OrderedDict[str, nn.Module]" = OrderedDict()
        out["embed"] = self.embed
        out["embed_norm"] = self.embed_norm
        for i, layer in enumerate(self.layers):
            for suffix, attr in layer.mixer.probe_points.items():
                module = getattr(layer.mixer, attr, None)
                if module is not None:
                    out[f"layers.{i}.{suffix}"] = module
            if layer.residual_ads is not None:
                out[f"layers.{i}.residual_ads"] = layer.residual_ads
            out[f"layers.{i}.residual_norm"] = layer.residual_norm
        out["pool"] = self.pool
        out["logits"] = self.head
        return out

    def token_map(self, values: torch.Tensor) -> torch.Tensor:
        """Per-token values (B, L) -> image-plane map (B, S, S), whatever the tokenizer."""
        return self.embed.token_map(values, self.config.image_size, self.config.in_channels)

    # ----- attack mode -----------------------------------------------------------------------
    def frozen(self):
        """Eval mode with parameters frozen: input gradients only, and LTI kernels may be cached."""
        return frozen(self)


def create_model(name: str, **config) -> SSMClassifier:
    """Build a classifier: `create_model('s4', d_model=64, n_layers=2)`, the family's defaults under `config`."""
    if name not in list_models():
        raise ConfigError(f"unknown architecture {name!r}; known: {', '.join(list_models())}")
    return SSMClassifier(ModelConfig.from_dict({**arch_defaults(name), **config, "arch": name}))
