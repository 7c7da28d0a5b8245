"""Import a state_dict saved by the paper's reference code (models/SSM.py) as an SSMClassifier with its function."""
from __future__ import annotations

import hashlib
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from .choices import REFERENCE_CLASS
from .classifier import SSMClassifier
from .config import ModelConfig
from .errors import UserError
from .hub import expected_tensors
from .kernels import discretize_dense

# The paper's two data sets: channels, image size; inputs in [0, 1], unnormalised. ssm_lab's DatasetInfo is the
# source of these facts, but ssm_models sits below ssm_lab and cannot import it; tests/test_reference.py checks that
# the two agree.
DATASETS = {"mnist": (1, 28), "cifar10": (3, 32)}
MAX_FILE_BYTES = 256 * 2**20  # the paper's largest model (Mamba, ~616k parameters) is ~2.5 MB
MAX_STORED_LENGTH = 1 << 20
DSS_EPSILON = 1e-7  # the reference's bounded reciprocal conj(x) / (|x|^2 + 1e-7) in its 'dss' kernel
MAX_CONDITION = 1e8

_KERNEL = "kernel.kernel."
LAYER_KEYS = {  # per layer, relative to mapping_layers.{i}.
    "s4": ["D", *(_KERNEL + k for k in ("C", "log_dt", "B", "P", "w_imag", "log_w_real", "L")),
           "output_linear.weight", "output_linear.bias"],
    "dss": ["D", _KERNEL + "C", _KERNEL + "log_dt", _KERNEL + "w", "output_linear.weight", "output_linear.bias"],
    "mamba": ["A_log", "D", "in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
              "dt_proj.bias", "out_proj.weight"],
    "s5": ["seq.Lambda", "seq.B", "seq.C", "seq.D", "seq.log_step"],
}
ADS_KEY = "adss.scale.weight"  # S4/DSS trained with --use_AdSS: act(W y) * y, W without bias
SHELL_KEYS = {"input.weight": "embed.proj.weight", "input.bias": "embed.proj.bias",
              "post_norm.weight": "embed_norm.weight", "post_norm.bias": "embed_norm.bias",
              "output.weight": "head.weight", "output.bias": "head.bias"}
# stored as a real view (..., 2) by the S4 kernels, as complex tensors by s5-pytorch; both are accepted
COMPLEX_KEYS = {_KERNEL + "C", _KERNEL + "B", _KERNEL + "P", _KERNEL + "w", "seq.Lambda", "seq.B", "seq.C"}


class ReferenceImportError(ValueError, UserError):
    """A file that is not a reference checkpoint of the requested kind, or one we cannot represent exactly."""


# ----- reading the file ----------------------------------------------------------------------------
def load_reference_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a reference checkpoint, read with `torch.load(weights_only=True)` only: a raw state_dict or a
    dict holding one under "state_dict" / "model"; DataParallel's "module." prefixes are stripped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ReferenceImportError(f"{path.name} is {size} bytes, more than any reference checkpoint "
                                   f"({MAX_FILE_BYTES} allowed)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        after = str(err).partition("WeightsUnpickler error:")[2].split("Check the documentation")[0]
        reason = next((line.strip() for line in after.splitlines() if line.strip()), str(err).splitlines()[0])
        if "global" not in reason.lower():  # not a pickle of ours at all (e.g. "Unsupported operand")
            raise ReferenceImportError(f"{path.name} is not a torch checkpoint: {reason}") from None
        reason = reason.split(" was not an allowed global")[0]  # drop torch's advice to allowlist it
        raise ReferenceImportError(
            f"{path.name} was refused by torch.load(weights_only=True), which only rebuilds tensors and plain "
            f"containers; this file holds other objects ({reason}) and is never fully unpickled") from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise ReferenceImportError(f"{path.name} is not a readable torch checkpoint: {err}") from None
    return _state_dict(obj, path.name)


def _state_dict(obj, name: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = [k for k in ("state_dict", "model") if isinstance(obj.get(k), Mapping)]
        if not inner:
            keys = ", ".join(sorted(map(str, obj))[:10])
            raise ReferenceImportError(f"{name} holds a dict that is neither a state_dict nor has a 'state_dict' "
                                       f"or 'model' entry (keys: {keys})")
        obj = obj[inner[0]]
    if not isinstance(obj, Mapping):
        raise ReferenceImportError(f"{name} holds a {type(obj).__name__}, not a state_dict")
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ReferenceImportError(f"{name}: entry {key!r} is a {type(value).__name__}, not a tensor")
        clean = key[len("module."):] if key.startswith("module.") else key
        if clean in state:
            raise ReferenceImportError(f"{name}: {key!r} appears both with and without the 'module.' prefix")
        state[clean] = value
    return state


# ----- checks ---------------------------------------------------------------------------------------
def _listing(names, limit: int = 12) -> str:
    names = sorted(names)
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _guess_arch(state: Mapping[str, torch.Tensor]) -> str | None:
    layer0 = {k[len("mapping_layers.0."):] for k in state if k.startswith("mapping_layers.0.")}
    matches = [arch for arch, keys in LAYER_KEYS.items() if set(keys) <= layer0]
    return matches[0] if len(matches) == 1 else None


def _layer_count(state: Mapping[str, torch.Tensor]) -> int:
    indices = {int(m.group(1)) for k in state if (m := re.match(r"(?:mapping_layers|norms)\.(\d+)\.", k))}
    if not indices:
        raise ReferenceImportError("no mapping_layers.{i}.* / norms.{i}.* keys: not a reference SSM checkpoint")
    if indices != set(range(len(indices))):
        raise ReferenceImportError(f"layer indices are not 0..n-1: {sorted(indices)}")
    return len(indices)


def _check_keys(state: Mapping[str, torch.Tensor], arch: str, n_layers: int, with_ads: bool) -> None:
    per_layer = LAYER_KEYS[arch] + ([ADS_KEY] if with_ads else [])
    expected = set(SHELL_KEYS) | {f"norms.{i}.{p}" for i in range(n_layers) for p in ("weight", "bias")}
    expected |= {f"mapping_layers.{i}.{k}" for i in range(n_layers) for k in per_layer}
    missing, unknown = expected - set(state), set(state) - expected
    if missing or unknown:
        parts = [f"missing keys: {_listing(missing)}"] if missing else []
        parts += [f"unknown keys: {_listing(unknown)}"] if unknown else []
        guess = _guess_arch(state)
        if guess and guess != arch:
            parts.insert(0, f"its layers look like arch={guess!r}")
        elif arch == "dss" and any(k.endswith(_KERNEL + "log_w_real") for k in state):
            parts.append("a diagonal kernel with log_w_real/w_imag was trained with disc zoh/bilinear/foh, which the "
                         "file does not record; the reference's SSKernelDiag default is disc='dss' (key 'w')")
        raise ReferenceImportError(f"not a reference {REFERENCE_CLASS[arch]} checkpoint: {'; '.join(parts)}")
    bad_dtype = [k for k, t in state.items() if not (t.is_floating_point() or t.is_complex())
                 and not k.endswith(_KERNEL + "L")]  # complex where a real tensor belongs: a shape error later
    bad_dtype += [k for k, t in state.items() if k.endswith(_KERNEL + "L")
                  and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)]
    if bad_dtype:
        described = (f"{k} ({state[k].dtype})" for k in bad_dtype)
        raise ReferenceImportError(f"unexpected tensor dtypes: {_listing(described)}")
    non_finite = [k for k, t in state.items() if not bool(torch.isfinite(t).all())]
    if non_finite:
        raise ReferenceImportError(f"non-finite values (NaN/Inf) in: {_listing(non_finite)}")


def _describe(key: str, t: torch.Tensor) -> str:
    """Shape as text; complex parameters (complex dtype or a real view with a trailing 2) read 'complex (...)'."""
    if key.split(".", 2)[-1] in COMPLEX_KEYS and not t.is_complex() and t.shape[-1:] == (2,):
        return f"complex {tuple(t.shape[:-1])}"
    return f"complex {tuple(t.shape)}" if t.is_complex() else str(tuple(t.shape))


def _reference_shapes(state: Mapping[str, torch.Tensor], arch: str, n_layers: int, with_ads: bool) -> dict:
    """Every key's expected shape (complex keys: their complex shape) from a few sizes read off the file."""
    width, channels = state["input.weight"].shape
    classes = state["output.weight"].shape[0]
    shapes = {"input.weight": (width, channels), "input.bias": (width,), "post_norm.weight": (width,),
              "post_norm.bias": (width,), "output.weight": (classes, width), "output.bias": (classes,)}
    first = {k[len("mapping_layers.0."):]: t for k, t in state.items() if k.startswith("mapping_layers.0.")}
    dim = lambda key, axis: first[key].shape[axis] if first[key].dim() > axis else -1  # noqa: E731
    if arch in ("s4", "dss"):
        n = dim(_KERNEL + "C", 2)
        layer = {"D": (1, width), _KERNEL + "C": (1, width, n), _KERNEL + "log_dt": (width,),
                 "output_linear.weight": (width, width), "output_linear.bias": (width,)}
        if arch == "s4":
            layer.update({_KERNEL + "B": (1, 1, n), _KERNEL + "P": (1, 1, n), _KERNEL + "w_imag": (1, n),
                          _KERNEL + "log_w_real": (1, n), _KERNEL + "L": ()})
        else:
            layer[_KERNEL + "w"] = (1, n)
    elif arch == "mamba":
        inner, n, conv, rank = dim("A_log", 0), dim("A_log", 1), dim("conv1d.weight", 2), dim("dt_proj.weight", 1)
        layer = {"A_log": (inner, n), "D": (inner,), "in_proj.weight": (2 * inner, width),
                 "conv1d.weight": (inner, 1, conv), "conv1d.bias": (inner,), "x_proj.weight": (rank + 2 * n, inner),
                 "dt_proj.weight": (inner, rank), "dt_proj.bias": (inner,), "out_proj.weight": (width, inner)}
    else:
        n = dim("seq.log_step", 0)
        layer = {"seq.Lambda": (n,), "seq.B": (n, width), "seq.C": (width, n), "seq.D": (width,),
                 "seq.log_step": (n,)}
    if with_ads:
        layer[ADS_KEY] = (width, width)
    for i in range(n_layers):
        shapes.update({f"norms.{i}.weight": (width,), f"norms.{i}.bias": (width,)})
        shapes.update({f"mapping_layers.{i}.{k}": s for k, s in layer.items()})
    return {k: f"complex {s}" if k.split(".", 2)[-1] in COMPLEX_KEYS else str(s) for k, s in shapes.items()}


def _check_shapes(state: Mapping[str, torch.Tensor], expected: dict) -> None:
    wrong = [f"{k} {_describe(k, t)} (expected {expected[k]})" for k, t in state.items()
             if _describe(k, t) != expected[k]]
    if wrong:
        raise ReferenceImportError(f"inconsistent tensor shapes: {_listing(wrong, 8)}")


def _complex(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.complex128) if t.is_complex() else torch.view_as_complex(t.to(torch.float64).contiguous())


def _real_view(z: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(z.resolve_conj()).clone()


def _strictly_stable(w: torch.Tensor, what: str, failures: list) -> None:
    if bool((w.real >= 0).any()):
        failures.append(f"{what}: {int((w.real >= 0).sum())} of {w.numel()} modes with Re >= 0")


# ----- per-family conversion (float64) ------------------------------------------------------------------
def _s4_mixer(p: Mapping[str, torch.Tensor], target_length: int) -> dict[str, torch.Tensor]:
    """A rename, except C~ = C (I - dA^T), which is re-targeted from the file's T (buffer L) to ours."""
    out = {f"ssm.kernel.{k}": p[_KERNEL + k] for k in ("log_dt", "B", "P", "w_imag", "log_w_real")}
    stored = int(p[_KERNEL + "L"])
    if not 0 <= stored <= MAX_STORED_LENGTH:
        raise ReferenceImportError(f"kernel length buffer L={stored} is outside [0, {MAX_STORED_LENGTH}]")
    c_tilde = _complex(p[_KERNEL + "C"])[0]  # (H, n)
    if stored != target_length:
        w = torch.complex(-torch.exp(p[_KERNEL + "log_w_real"].double()), p[_KERNEL + "w_imag"].double())[0]  # (n,)
        q = _complex(p[_KERNEL + "P"])[0, 0]  # (n,)
        q_full = torch.cat([q, q.conj()])  # (N,)
        a = torch.diag(torch.cat([w, w.conj()])) - q_full[:, None] * q_full.conj()[None, :]  # (N, N)
        d_a, _ = discretize_dense(a, torch.zeros_like(q_full), torch.exp(p[_KERNEL + "log_dt"].double()), "bilinear")
        c_tilde = _retarget_c_tilde(c_tilde, d_a, stored, target_length)
    out["ssm.kernel.C"] = _real_view(c_tilde)[None]  # (1, H, n, 2)
    out["ssm.D"] = p["D"]
    return out


def _retarget_c_tilde(c_tilde: torch.Tensor, d_a: torch.Tensor, stored: int, target: int) -> torch.Tensor:
    """C~ for T=`stored` (0: the raw C, before the reference's first forward) -> C~ for T=`target`.

    The reference itself goes from T to 2T with C~ (I + dA^T), so when `stored` divides `target` this is
    exactly its own doubling; otherwise C = C~ (I - dA^stored)^-1 is recovered first, if well conditioned."""
    n = c_tilde.shape[-1]
    eye = torch.eye(d_a.shape[-1], dtype=d_a.dtype).expand_as(d_a)
    if stored == 0:
        factor = eye - torch.linalg.matrix_power(d_a, target)  # (H, N, N)
    elif target % stored == 0:
        factor, length = eye, stored
        while length < target:
            factor = factor @ (eye + torch.linalg.matrix_power(d_a, length))
            length *= 2
    else:
        truncation = eye - torch.linalg.matrix_power(d_a, stored)  # (H, N, N)
        condition = float(torch.linalg.cond(truncation).abs().max())
        if not condition < MAX_CONDITION:
            raise ReferenceImportError(f"cannot re-target C~ from kernel length {stored} to {target}: "
                                       f"I - dA^{stored} is ill-conditioned (condition number {condition:.3g})")
        factor = torch.linalg.solve(truncation, eye - torch.linalg.matrix_power(d_a, target))
    c_full = torch.cat([c_tilde, c_tilde.conj()], dim=-1)  # (H, N)
    return (c_full.unsqueeze(1) @ factor)[:, 0, :n]  # (H, n): the first of each conjugate pair


def _dss_mixer(p: Mapping[str, torch.Tensor], length: int, where: str, failures: list) -> dict[str, torch.Tensor]:
    """The reference's SSKernelDiag(disc='dss') kernel for sequences of `length`, per mode a = dt w:
        K_l = Re sum_n C_n (e^a - 1) r(w (e^(a L) - 1)) e^(a l),   r(x) = conj(x) / (|x|^2 + 1e-7)
    (its branch for Re w > 0 is the same function). Our DSS with disc='zoh' computes
        K_l = 2 Re sum_n C'_n B'_n (e^a - 1) / w e^(a l),
    so C' = C / 2 and B' = w r(w (e^(a L) - 1)) reproduce it exactly, the epsilon included, for Re w < 0;
    Re w >= 0 (growing or undamped modes) has no counterpart in our w = -exp(log_w_real) + i w_imag."""
    w = _complex(p[_KERNEL + "w"])[0]  # (n,)
    _strictly_stable(w, where, failures)
    log_dt = p[_KERNEL + "log_dt"].double()  # (H,)
    width = log_dt.shape[0]
    a = torch.exp(log_dt)[:, None] * w  # (H, n)
    x = w * torch.expm1(a * length)  # (H, n)
    b = w * x.conj() / (x.real.square() + x.imag.square() + DSS_EPSILON)  # (H, n)
    return {"ssm.kernel.log_dt": log_dt,
            "ssm.kernel.log_w_real": torch.log(-w.real).expand(width, -1),  # (H, n)
            "ssm.kernel.w_imag": w.imag.expand(width, -1),  # (H, n)
            "ssm.kernel.B": _real_view(b)[None],  # (1, H, n, 2)
            "ssm.kernel.C": _real_view(_complex(p[_KERNEL + "C"])[0] / 2)[None],  # (1, H, n, 2)
            "ssm.D": p["D"]}


def _s5_mixer(p: Mapping[str, torch.Tensor], where: str, failures: list) -> dict[str, torch.Tensor]:
    """s5-pytorch 0.2.1 `S5(H, H)`: x_t = e^(dt Lambda) x_{t-1} + (e^(dt Lambda) - 1) / Lambda B u_t,
    y = Re(C x_t) + D u_t over P complex modes (no conjugate pairing), ZOH, per-mode dt = exp(log_step),
    no output layer. Ours reads 2 Re(C x) and ends in output_linear: C / 2, and an identity output_linear."""
    lam = _complex(p["seq.Lambda"])  # (P,)
    _strictly_stable(lam, where, failures)
    width = p["seq.D"].shape[0]
    return {"ssm.kernel.log_dt": p["seq.log_step"], "ssm.kernel.log_w_real": torch.log(-lam.real),
            "ssm.kernel.w_imag": lam.imag, "ssm.kernel.B": _real_view(_complex(p["seq.B"])),  # (P, H, 2)
            "ssm.kernel.C": _real_view(_complex(p["seq.C"]) / 2),  # (H, P, 2)
            "ssm.D": p["seq.D"], "output_linear.weight": torch.eye(width, dtype=torch.float64),
            "output_linear.bias": torch.zeros(width, dtype=torch.float64)}


# ----- the import -----------------------------------------------------------------------------------------
def _config(state: Mapping[str, torch.Tensor], arch: str, dataset: str, n_layers: int, ads: str | None,
            meta: dict) -> ModelConfig:
    width, channels = state["input.weight"].shape
    first = {k[len("mapping_layers.0."):]: t for k, t in state.items() if k.startswith("mapping_layers.0.")}
    fields = dict(arch=arch, in_channels=channels, image_size=DATASETS[dataset][1], d_model=width,
                  n_layers=n_layers, num_classes=state["output.weight"].shape[0], tokenizer="paper",
                  activation=None, ads=ads, mean=None, std=None, meta=meta)
    if arch in ("s4", "dss"):
        modes = _complex(first[_KERNEL + "C"]).shape[-1]
        # the reference's DSS kernel maps exactly onto our ZOH one (see _dss_mixer); S4 is bilinear
        disc, init = ("bilinear", "legs") if arch == "s4" else ("zoh", "lin")
        fields.update(d_state=2 * modes, disc=disc, init=init)
    elif arch == "mamba":
        inner, d_state = first["A_log"].shape
        if inner % width:
            raise ReferenceImportError(f"Mamba inner width {inner} is not a multiple of d_model {width}")
        fields.update(d_state=d_state, d_conv=first["conv1d.weight"].shape[2], expand=inner // width,
                      dt_rank=first["dt_proj.weight"].shape[1])
    else:
        fields.update(d_state=2 * first["seq.log_step"].shape[0], disc="zoh", init="legs")
    return ModelConfig(**fields).validate()


def convert_reference(state: Mapping[str, torch.Tensor], *, arch: str, dataset: str, ads: str | None = None,
                      dtype: torch.dtype = torch.float32, meta: dict | None = None) -> SSMClassifier:
    """A reference state_dict (prefixes already stripped) -> our model computing the same function, in eval mode.

    `ads` names the activation of an S4/DSS checkpoint trained with AdSS (relu / sigmoid / tanh): the file
    holds its weight but not which activation it used."""
    if arch not in LAYER_KEYS:
        raise ReferenceImportError(f"arch must be one of {sorted(LAYER_KEYS)}, got {arch!r}")
    if dataset not in DATASETS:
        raise ReferenceImportError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    state = {k: v.detach() for k, v in state.items()}
    n_layers = _layer_count(state)
    with_ads = any(k.endswith("." + ADS_KEY) for k in state)
    if with_ads and arch not in ("s4", "dss"):
        raise ReferenceImportError(f"AdSS weights ({ADS_KEY}) exist only in the reference S4/DSS blocks, not {arch}")
    if with_ads and ads is None:
        raise ReferenceImportError("the checkpoint has AdSS weights (adss.scale.weight) but the file does not record "
                                   "their activation: pass ads='relu', 'sigmoid' or 'tanh' (its --AdSS_Type)")
    if ads is not None and not with_ads:
        raise ReferenceImportError(f"ads={ads!r} was given but the checkpoint has no AdSS weights ({ADS_KEY})")
    _check_keys(state, arch, n_layers, with_ads)
    if state["input.weight"].dim() != 2:
        raise ReferenceImportError("input is not a Linear (a Conv2d patch embedding, patch_size set): those reference "
                                   "models view the conv output (B, C, H, W) as (B, H*W, C) without a permute, "
                                   "which no tokenizer here reproduces")
    _check_shapes(state, _reference_shapes(state, arch, n_layers, with_ads))
    channels, _ = DATASETS[dataset]
    if state["input.weight"].shape[1] != channels:
        raise ReferenceImportError(f"input takes {state['input.weight'].shape[1]} channels per token but {dataset} "
                                   f"images have {channels}")
    meta = {"dataset": dataset, "method": "unknown (imported from the reference code)",
            "reference_class": REFERENCE_CLASS[arch], **(meta or {})}
    cfg = _config(state, arch, dataset, n_layers, ads, meta)
    expected_tensors(cfg)  # the parameter budget, checked on the meta device before anything is allocated

    with torch.random.fork_rng(devices=[]):  # building draws random inits: keep the caller's RNG stream intact
        model = SSMClassifier(cfg)
    ours = {new: state[old] for old, new in SHELL_KEYS.items()}
    failures: list[str] = []
    for i, layer in enumerate(model.layers):
        prefix = f"mapping_layers.{i}."
        p = {k[len(prefix):]: t for k, t in state.items() if k.startswith(prefix)}
        ours.update({f"layers.{i}.residual_norm.{k}": state[f"norms.{i}.{k}"] for k in ("weight", "bias")})
        if arch == "mamba":
            mixer = dict(p)
        elif arch == "s5":
            mixer = _s5_mixer(p, f"layer {i} Lambda", failures)
        else:
            if arch == "s4":
                mixer = _s4_mixer(p, layer.mixer.ssm.kernel.kernel_length)
            else:
                mixer = _dss_mixer(p, cfg.seq_len, f"layer {i} w", failures)
            mixer.update({f"output_linear.{k}": p[f"output_linear.{k}"] for k in ("weight", "bias")})
            if with_ads:
                mixer["ads.scale.weight"] = p[ADS_KEY]
        ours.update({f"layers.{i}.mixer.{k}": t for k, t in mixer.items()})
    if failures:
        raise ReferenceImportError(f"our {arch} parameterisation w = -exp(log_w_real) + i w_imag cannot represent "
                                   f"modes with a non-negative real part, which this checkpoint has "
                                   f"({'; '.join(failures)}); no exact import exists")
    non_finite = [k for k, t in ours.items() if not bool(torch.isfinite(t).all())]
    if non_finite:
        raise ReferenceImportError(f"conversion overflowed (extreme log_dt?) in: {_listing(non_finite)}")
    model = model.to(dtype)
    model.load_state_dict({k: t.to(dtype) for k, t in ours.items()}, strict=True)
    return model.eval()


def import_reference(path: str | Path, *, arch: str, dataset: str, ads: str | None = None,
                     dtype: torch.dtype = torch.float32) -> SSMClassifier:
    """Read a checkpoint saved by the reference code (`torch.load(weights_only=True)` only) and convert it."""
    path = Path(path)
    state = load_reference_state(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return convert_reference(state, arch=arch, dataset=dataset, ads=ads, dtype=dtype,
                             meta={"imported_from": {"file": path.name, "sha256": digest}})
