"""The paper's CIFAR-10 configurations (what `ssm-lab import-reference` produces), built with random weights, and
their peers: mambapy's parallel scan, our PyTorch and sequential Mamba scans, the naive Cauchy S4 kernel."""
from __future__ import annotations

import contextlib

import torch

from ssm_models import create_model
from ssm_models.kernels import set_kernel_cache

from .naive_cauchy import naive_nplr_kernel

PAPER = dict(in_channels=3, image_size=32, num_classes=10, d_model=128, n_layers=4, d_state=64, tokenizer="paper")
EXTRA = {"s4": dict(activation=None, disc="bilinear"), "mamba": dict(expand=2, dt_rank=8)}
QUICK = dict(in_channels=3, image_size=8, num_classes=10, d_model=8, n_layers=1, d_state=4, tokenizer="paper")


def paper_model(arch: str, quick: bool = False, **overrides):
    """A randomly initialised paper-configuration model in eval mode with frozen parameters (attack mode)."""
    torch.manual_seed(0)
    model = create_model(arch, **{**(QUICK if quick else PAPER), **EXTRA[arch], **overrides}).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def config_text(arch: str, quick: bool = False) -> str:
    config = {**(QUICK if quick else PAPER), **EXTRA[arch]}
    return f"`create_model({arch!r}, {', '.join(f'{k}={v!r}' for k, v in config.items())})`"


def with_mambapy_mixers(model):
    """A copy of a Mamba classifier whose mixers are mambapy's `MambaBlock` (pscan=True) with the same weights
    (mamba_ssm's parameter names on both sides), so the rest of the model is shared code."""
    import copy

    from mambapy.mamba import MambaBlock, MambaConfig

    peer = copy.deepcopy(model)
    cfg = model.config
    for layer in peer.layers:
        mixer = layer.mixer
        block = MambaBlock(MambaConfig(d_model=cfg.d_model, n_layers=1, d_state=mixer.d_state,
                                       expand_factor=mixer.d_inner // cfg.d_model, d_conv=mixer.d_conv,
                                       dt_rank=mixer.dt_rank, pscan=True))
        block.load_state_dict(mixer.state_dict())
        for p in block.parameters():
            p.requires_grad_(False)
        layer.mixer = block.eval()
    return peer


def with_scan(model, scan: str):
    """A copy of a Mamba classifier using another of `ssm_models.mamba.SCANS`: "sequential" (the step-by-step
    reference) or "tiled" (the pure-PyTorch scan, whether or not the compiled kernel is built)."""
    import copy

    peer = copy.deepcopy(model)
    for layer in peer.layers:
        layer.mixer.ssm.scan = scan
    return peer


@contextlib.contextmanager
def naive_cauchy_kernels(model):
    """Inside: every S4 kernel of `model` comes from the naive Cauchy path and is regenerated at every forward
    pass (the kernel cache off), as the reference code does; restored on exit."""
    kernels = [m for m in model.modules() if hasattr(m, "cauchy_kernel")]
    for kernel in kernels:
        kernel.cauchy_kernel = (lambda k: lambda: naive_nplr_kernel(k))(kernel)  # instance attribute
    set_kernel_cache(False)
    try:
        yield model
    finally:
        set_kernel_cache(True)
        for kernel in kernels:
            del kernel.cauchy_kernel


def forward(model, x: torch.Tensor):
    def run():
        with torch.no_grad():
            model(x)
    return run


def forward_input_grad(model, x: torch.Tensor):
    """Forward and the gradient of the summed logits with respect to the input, as an attack step needs."""
    def run():
        inputs = x.detach().requires_grad_(True)
        torch.autograd.grad(model(inputs).logsumexp(-1).sum(), inputs)
    return run


def images(n: int, model) -> torch.Tensor:
    cfg = model.config
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n, cfg.in_channels, cfg.image_size, cfg.image_size, generator=generator)  # (n, C, S, S)
