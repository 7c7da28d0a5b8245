"""Synthetic state dicts in the layout of the paper's reference code (key names and shapes of models/SSM.py), seeded."""
import math

import torch

WIDTH, MODES, LAYERS, CLASSES = 8, 4, 2, 10
DATASETS = {"mnist": (1, 28), "cifar10": (3, 32)}


def randn(gen: torch.Generator, *shape, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * scale  # float32, as the reference saves


def log_uniform(gen: torch.Generator, size: int, low: float = 1e-3, high: float = 1e-1) -> torch.Tensor:
    return torch.rand(size, generator=gen) * (math.log(high) - math.log(low)) + math.log(low)


# ----- synthetic reference state dicts (key names and shapes of models/SSM.py) ----------------------------
def shell_state(gen, channels: int) -> dict:
    state = {"input.weight": randn(gen, WIDTH, channels), "input.bias": randn(gen, WIDTH, scale=0.1),
             "post_norm.weight": 1 + randn(gen, WIDTH, scale=0.1), "post_norm.bias": randn(gen, WIDTH, scale=0.1),
             "output.weight": randn(gen, CLASSES, WIDTH, scale=0.3), "output.bias": randn(gen, CLASSES, scale=0.1)}
    for i in range(LAYERS):
        state[f"norms.{i}.weight"] = 1 + randn(gen, WIDTH, scale=0.1)
        state[f"norms.{i}.bias"] = randn(gen, WIDTH, scale=0.1)
    return state


def modes(gen) -> tuple[torch.Tensor, torch.Tensor]:
    """Real parts in [-0.6, -0.4] and spread frequencies, like trained LegS / S4D modes."""
    return -(0.4 + 0.2 * torch.rand(MODES, generator=gen)), math.pi * torch.arange(MODES) + randn(gen, MODES, scale=0.3)


def s4_state(seed: int, dataset: str, stored_length: int = 1024, adss: bool = False, arch: str = "s4") -> dict:
    gen = torch.Generator().manual_seed(seed)
    state = shell_state(gen, DATASETS[dataset][0])
    for i in range(LAYERS):
        p = f"mapping_layers.{i}."
        w_real, w_imag = modes(gen)
        state[p + "kernel.kernel.log_dt"] = log_uniform(gen, WIDTH)
        state[p + "kernel.kernel.C"] = randn(gen, 1, WIDTH, MODES, 2, scale=0.5)
        if arch == "s4":
            state[p + "kernel.kernel.B"] = randn(gen, 1, 1, MODES, 2)
            state[p + "kernel.kernel.P"] = randn(gen, 1, 1, MODES, 2, scale=0.5)
            state[p + "kernel.kernel.log_w_real"] = torch.log(-w_real)[None]
            state[p + "kernel.kernel.w_imag"] = w_imag[None]
            state[p + "kernel.kernel.L"] = torch.tensor(stored_length)
        else:  # SSKernelDiag(disc='dss'): w as a complex real view, B folded into C
            state[p + "kernel.kernel.w"] = torch.stack([w_real, w_imag], -1)[None]
        state[p + "D"] = randn(gen, 1, WIDTH)
        state[p + "output_linear.weight"] = randn(gen, WIDTH, WIDTH, scale=WIDTH ** -0.5)
        state[p + "output_linear.bias"] = randn(gen, WIDTH, scale=0.1)
        if adss:
            state[p + "adss.scale.weight"] = randn(gen, WIDTH, WIDTH, scale=WIDTH ** -0.5)
    return state


def mamba_state(seed: int, dataset: str, inner: int = 16, d_state: int = 4, d_conv: int = 4, rank: int = 2) -> dict:
    gen = torch.Generator().manual_seed(seed)
    state = shell_state(gen, DATASETS[dataset][0])
    for i in range(LAYERS):
        p = f"mapping_layers.{i}."
        dt = torch.exp(log_uniform(gen, inner))
        state.update({
            p + "A_log": torch.log(torch.arange(1, d_state + 1.0)).repeat(inner, 1)
            + randn(gen, inner, d_state, scale=0.1),
            p + "D": 1 + randn(gen, inner, scale=0.1), p + "in_proj.weight": randn(gen, 2 * inner, WIDTH, scale=0.4),
            p + "conv1d.weight": randn(gen, inner, 1, d_conv, scale=0.5),
            p + "conv1d.bias": randn(gen, inner, scale=0.1),
            p + "x_proj.weight": randn(gen, rank + 2 * d_state, inner, scale=0.3),
            p + "dt_proj.weight": randn(gen, inner, rank, scale=rank ** -0.5),
            p + "dt_proj.bias": dt + torch.log(-torch.expm1(-dt)),  # inverse softplus
            p + "out_proj.weight": randn(gen, WIDTH, inner, scale=0.3)})
    return state


def s5_state(seed: int, dataset: str, state_width: int = 6) -> dict:
    gen = torch.Generator().manual_seed(seed)
    state = shell_state(gen, DATASETS[dataset][0])
    for i in range(LAYERS):
        p = f"mapping_layers.{i}.seq."
        lam = torch.complex(-(0.4 + 0.2 * torch.rand(state_width, generator=gen)), randn(gen, state_width, scale=3.0))
        state.update({p + "Lambda": lam, p + "B": randn(gen, state_width, WIDTH, 2, scale=0.4),
                      p + "C": torch.complex(randn(gen, WIDTH, state_width), randn(gen, WIDTH, state_width)) * 0.4,
                      p + "D": torch.rand(WIDTH, generator=gen), p + "log_step": log_uniform(gen, state_width)})
    return state
