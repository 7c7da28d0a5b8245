"""Importing the paper's reference checkpoints: synthetic reference-format state dicts vs independent re-implementations
of the reference forward (float64 unrolled recurrences; mambapy for Mamba)."""
import math

import pytest
import torch
import torch.nn.functional as F
from mambapy.mamba import MambaBlock as OracleMambaBlock
from mambapy.mamba import MambaConfig
from model_helpers import rel_err

from ssm_lab.cli import main
from ssm_models.hub import load_model
from ssm_models.reference import ReferenceImportError, convert_reference, import_reference, load_reference_state
from testkit.reference_states import CLASSES, DATASETS, LAYERS, MODES, WIDTH, mamba_state, s4_state, s5_state

TOLERANCE = {torch.float64: 1e-5, torch.float32: 1e-4}


# ----- the reference forward, written independently in float64 ----------------------------------------
def as_complex(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.complex128) if t.is_complex() else torch.complex(t[..., 0].double(), t[..., 1].double())


def causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """y_t = sum_j k_j u_{t-j}: u (B, L, H), k (H, L), as a grouped conv1d with the kernel flipped."""
    length, width = u.shape[1], u.shape[2]
    y = F.conv1d(F.pad(u.transpose(1, 2), (length - 1, 0)), k.flip(-1).unsqueeze(1), groups=width)  # (B, H, L)
    return y.transpose(1, 2)


def s4_kernel_by_unrolling(p: dict, length: int) -> torch.Tensor:
    """Bilinear discretisation of A = diag(w) - P P^* (conjugate-doubled), true C = C~ (I - dA^T)^-1 for the
    stored T (T = 0: C not yet transformed), then K_l = Re(C dA^l dB) by stepping the recurrence."""
    w = torch.complex(-torch.exp(p["kernel.kernel.log_w_real"].double()), p["kernel.kernel.w_imag"].double())[0]
    full = lambda z: torch.cat([z, z.conj()], -1)  # noqa: E731
    q, b = full(as_complex(p["kernel.kernel.P"])[0, 0]), full(as_complex(p["kernel.kernel.B"])[0, 0])
    a = torch.diag(full(w)) - torch.outer(q, q.conj())  # (N, N)
    dt = torch.exp(p["kernel.kernel.log_dt"].double()).to(torch.complex128)[:, None, None]  # (H, 1, 1)
    eye = torch.eye(a.shape[0], dtype=torch.complex128)
    d_a = torch.linalg.solve(eye - dt / 2 * a, eye + dt / 2 * a)  # (H, N, N)
    d_b = torch.linalg.solve(eye - dt / 2 * a, dt[..., 0] * b)  # (H, N)
    c = full(as_complex(p["kernel.kernel.C"])[0])  # (H, N)
    stored = int(p["kernel.kernel.L"])
    if stored:
        c = torch.linalg.solve((eye - torch.linalg.matrix_power(d_a, stored)).transpose(-1, -2), c)
    x, taps = d_b, []
    for _ in range(length):
        taps.append((c * x).sum(-1).real)
        x = (d_a @ x.unsqueeze(-1))[..., 0]
    return torch.stack(taps, -1)  # (H, L)


def dss_kernel_as_in_reference(p: dict, length: int) -> torch.Tensor:
    """SSKernelDiag(disc='dss') literally: both branches, the bounded reciprocal and the final real part."""
    w = as_complex(p["kernel.kernel.w"])  # (1, n)
    dt_a = w * torch.exp(p["kernel.kernel.log_dt"].double())[:, None]  # (H, n)
    positive = w.real > 0
    exponent = dt_a[..., None] * torch.arange(length, dtype=torch.float64)  # (H, n, L)
    exponent = exponent - (dt_a * positive * (length - 1))[..., None]
    signed = dt_a * (1 - 2 * positive.double())
    x = (torch.exp(signed * length) - 1) * w
    coef = as_complex(p["kernel.kernel.C"])[0] * (torch.exp(signed) - 1) * x.conj() / (x * x.conj() + 1e-7)
    return torch.einsum("hn,hnl->hl", coef, torch.exp(exponent)).real  # (H, L)


def s5_by_recurrence(p: dict, u: torch.Tensor) -> torch.Tensor:
    """s5-pytorch 0.2.1 S5(H, H) (ZOH, P unpaired complex modes): y = Re(C x_t) + D u_t."""
    lam, step = as_complex(p["seq.Lambda"]), torch.exp(p["seq.log_step"].double())
    lam_bar = torch.exp(lam * step)  # (P,)
    b_bar = ((lam_bar - 1) / lam)[:, None] * as_complex(p["seq.B"])  # (P, H)
    c, x, ys = as_complex(p["seq.C"]), torch.zeros(u.shape[0], lam.shape[0], dtype=torch.complex128), []
    for t in range(u.shape[1]):
        x = lam_bar * x + u[:, t].to(torch.complex128) @ b_bar.T  # (B, P)
        ys.append((x @ c.T).real + p["seq.D"].double() * u[:, t])
    return torch.stack(ys, 1)  # (B, L, H)


def reference_forward(state: dict, x: torch.Tensor, arch: str, ads: str | None = None) -> torch.Tensor:
    s = {k: v.double() if v.is_floating_point() else v for k, v in state.items()}
    b, c, size, _ = x.shape
    z = x.double().reshape(b, size * size, c) @ s["input.weight"].T + s["input.bias"]  # x.view(B, H*W, C): no permute
    z = F.layer_norm(z, (WIDTH,), s["post_norm.weight"], s["post_norm.bias"])
    for i in range(LAYERS):
        p = {k.split(".", 2)[2]: v for k, v in s.items() if k.startswith(f"mapping_layers.{i}.")}
        if arch == "mamba":
            inner, d_state = p["A_log"].shape
            cfg = MambaConfig(d_model=WIDTH, n_layers=1, dt_rank=p["dt_proj.weight"].shape[1], d_state=d_state,
                              expand_factor=inner // WIDTH, d_conv=p["conv1d.weight"].shape[2], pscan=False)
            block = OracleMambaBlock(cfg).double()
            block.load_state_dict(p, strict=True)
            y = block(z)
        elif arch == "s5":
            y = s5_by_recurrence(p, z)
        else:
            kernel = s4_kernel_by_unrolling if arch == "s4" else dss_kernel_as_in_reference
            y = causal_conv(z, kernel(p, z.shape[1])) + z * p["D"][0]
            if ads is not None:
                act = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[ads]
                y = act(y @ p["adss.scale.weight"].T) * y
            y = y @ p["output_linear.weight"].T + p["output_linear.bias"]
        z = F.layer_norm(z + y, (WIDTH,), s[f"norms.{i}.weight"], s[f"norms.{i}.bias"])
    return z.mean(1) @ s["output.weight"].T + s["output.bias"]  # (B, classes)


def images(dataset: str, batch: int = 2) -> torch.Tensor:
    channels, size = DATASETS[dataset]
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(7))


def ours(model, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    with torch.no_grad():
        return model(x.to(dtype))


# ----- the function is the same ------------------------------------------------------------------------------
@pytest.mark.parametrize("arch,dataset,dtype", [
    ("s4", "mnist", torch.float64), ("s4", "cifar10", torch.float32), ("dss", "cifar10", torch.float64),
    ("dss", "mnist", torch.float32), ("mamba", "mnist", torch.float64), ("mamba", "cifar10", torch.float32),
    ("s5", "cifar10", torch.float64), ("s5", "mnist", torch.float32)])
def test_imported_model_computes_the_reference_function(arch, dataset, dtype):
    state = {"s4": s4_state, "dss": lambda s, d: s4_state(s, d, arch="dss"), "mamba": mamba_state,
             "s5": s5_state}[arch](1, dataset)
    model = convert_reference(state, arch=arch, dataset=dataset, dtype=dtype)
    x = images(dataset)
    expected = reference_forward(state, x, arch)
    assert rel_err(ours(model, x, dtype), expected) < TOLERANCE[dtype]
    cfg = model.config
    assert (cfg.tokenizer, cfg.activation, cfg.mean, cfg.std, cfg.image_size) == ("paper", None, None, None,
                                                                                   DATASETS[dataset][1])
    assert (cfg.arch, cfg.d_model, cfg.n_layers, cfg.num_classes, cfg.in_channels) == (arch, WIDTH, LAYERS, CLASSES,
                                                                                       DATASETS[dataset][0])
    assert not model.training
    assert next(model.parameters()).dtype == dtype


@pytest.mark.parametrize("stored_length", [0, 256, 768, 2048])
def test_s4_kernel_length_buffer_is_honoured(stored_length):
    """L = 0: C was never transformed; 256: the reference would double it up to 1024; 768 and 2048: C~ must be
    re-targeted through (I - dA^L)^-1. The same numbers mean a different true C for each L."""
    state = s4_state(2, "mnist", stored_length=stored_length)
    model = convert_reference(state, arch="s4", dataset="mnist", dtype=torch.float64)
    layer = {k.split(".", 2)[2]: v for k, v in state.items() if k.startswith("mapping_layers.1.")}
    with torch.no_grad():
        kernel = model.layers[1].mixer.ssm.kernel.kernel(784)  # (H, L)
    assert rel_err(kernel, s4_kernel_by_unrolling(layer, 784)) < 1e-9
    as_if_1024 = s4_kernel_by_unrolling({**layer, "kernel.kernel.L": torch.tensor(1024)}, 784)
    assert rel_err(kernel, as_if_1024) > 1e-3  # the buffer matters for these parameters


def test_dss_mapping_keeps_the_reference_epsilon_and_length():
    """The reference's DSS kernel depends on the sequence length through e^(dt w L) - 1: the import is per
    dataset, and a mode whose e^(dt w L) is close to 1 is where the 1e-7 of its bounded reciprocal shows."""
    state = s4_state(3, "mnist", arch="dss")
    w = state["mapping_layers.0.kernel.kernel.w"]
    w[0, 0] = torch.tensor([-2e-4, 2 * math.pi / (784 * 0.05)])  # dt w L ~ 2 pi i for dt ~ 0.05
    state["mapping_layers.0.kernel.kernel.log_dt"][:] = math.log(0.05)
    model = convert_reference(state, arch="dss", dataset="mnist", dtype=torch.float64)
    x = images("mnist")
    assert rel_err(ours(model, x, torch.float64), reference_forward(state, x, "dss")) < 1e-8
    # the same layers read as a CIFAR-10 model (L = 1024): same C, another input normalisation B
    as_cifar = {**state, "input.weight": state["input.weight"].repeat(1, 3)}
    cifar = convert_reference(as_cifar, arch="dss", dataset="cifar10", dtype=torch.float64)
    ours_mnist, ours_cifar = model.layers[1].mixer.ssm.kernel, cifar.layers[1].mixer.ssm.kernel
    assert torch.equal(ours_cifar.C, ours_mnist.C)
    assert rel_err(ours_cifar.B, ours_mnist.B) > 1e-3


@pytest.mark.parametrize("ads", ["relu", "tanh"])
def test_adss_checkpoint_needs_its_activation_and_then_matches(ads):
    state = s4_state(4, "mnist", adss=True)
    with pytest.raises(ReferenceImportError, match="does not record their activation"):
        convert_reference(state, arch="s4", dataset="mnist")
    model = convert_reference(state, arch="s4", dataset="mnist", ads=ads, dtype=torch.float64)
    x = images("mnist")
    assert rel_err(ours(model, x, torch.float64), reference_forward(state, x, "s4", ads=ads)) < 1e-8
    with pytest.raises(ReferenceImportError, match="no AdSS weights"):
        convert_reference(s4_state(4, "mnist"), arch="s4", dataset="mnist", ads=ads)


# ----- what we cannot represent, and bad files --------------------------------------------------------------
@pytest.mark.parametrize("arch,key,index", [("dss", "mapping_layers.1.kernel.kernel.w", (0, 2, 0)),
                                            ("s5", "mapping_layers.0.seq.Lambda", (3,))])
def test_growing_modes_are_refused_not_approximated(arch, key, index):
    state = s4_state(5, "mnist", arch="dss") if arch == "dss" else s5_state(5, "mnist")
    if state[key].is_complex():
        state[key][index] = complex(0.05, float(state[key][index].imag))
    else:
        state[key][index] = 0.05
    where = "layer 1 w" if arch == "dss" else "layer 0 Lambda"
    with pytest.raises(ReferenceImportError, match=f"non-negative real part.*{where}: 1 of"):
        convert_reference(state, arch=arch, dataset="mnist")


def _corrupt(kind: str) -> tuple[dict, str, str]:
    state = s4_state(6, "mnist")
    if kind == "missing":
        del state["mapping_layers.1.kernel.kernel.P"]
        return state, "s4", r"missing keys: mapping_layers\.1\.kernel\.kernel\.P"
    if kind == "unknown":
        state["mapping_layers.0.kernel.kernel.omega"] = torch.zeros(3)
        return state, "s4", r"unknown keys: mapping_layers\.0\.kernel\.kernel\.omega"
    if kind == "wrong arch":
        return mamba_state(6, "mnist"), "s4", r"checkpoint: its layers look like arch='mamba'; missing keys"
    if kind == "shape":
        state["mapping_layers.1.kernel.kernel.B"] = torch.zeros(1, 1, MODES + 1, 2)
        return state, "s4", r"inconsistent tensor shapes: mapping_layers\.1\.kernel\.kernel\.B complex \(1, 1, 5\)"
    if kind == "nan":
        state["norms.0.bias"][3] = float("nan")
        return state, "s4", r"non-finite values \(NaN/Inf\) in: norms\.0\.bias"
    if kind == "channels":
        return s4_state(6, "cifar10"), "s4", "input takes 3 channels per token but mnist images have 1"
    if kind == "rank":
        state["mapping_layers.0.kernel.kernel.P"] = torch.zeros(2, 1, MODES, 2)
        return state, "s4", r"kernel\.P complex \(2, 1, 4\) \(expected complex \(1, 1, 4\)\)"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "unknown", "wrong arch", "shape", "nan", "channels", "rank"])
def test_invalid_state_dicts_fail_with_specific_errors(kind):
    state, arch, message = _corrupt(kind)
    with pytest.raises(ReferenceImportError, match=message):
        convert_reference(state, arch=arch, dataset="mnist")


# ----- files and the CLI ----------------------------------------------------------------------------------
def test_file_wrappers_and_dataparallel_prefix(tmp_path):
    state = s4_state(8, "mnist")
    prefixed = {f"module.{k}": v for k, v in state.items()}
    for wrap in ("state_dict", "model"):
        torch.save({wrap: prefixed, "epoch": 3, "optimizer": {"lr": 1e-3}}, tmp_path / f"{wrap}.pt")
        loaded = load_reference_state(tmp_path / f"{wrap}.pt")
        assert loaded.keys() == state.keys()
        assert all(torch.equal(loaded[k], state[k]) for k in state)
    torch.save(prefixed, tmp_path / "ckpt.pt")
    model = import_reference(tmp_path / "ckpt.pt", arch="s4", dataset="mnist", dtype=torch.float64)
    x = images("mnist")
    assert rel_err(ours(model, x, torch.float64), reference_forward(state, x, "s4")) < 1e-8
    assert model.config.meta["imported_from"]["file"] == "ckpt.pt"
    assert len(model.config.meta["imported_from"]["sha256"]) == 64


def test_non_state_dict_files_are_refused(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(ReferenceImportError, match="holds a list, not a state_dict"):
        import_reference(tmp_path / "list.pt", arch="s4", dataset="mnist")
    torch.save({"epoch": 3, "weights": {"a": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(ReferenceImportError, match="neither a state_dict nor has a 'state_dict'"):
        import_reference(tmp_path / "other.pt", arch="s4", dataset="mnist")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ReferenceImportError, match="junk.pt is not a torch checkpoint"):
        import_reference(tmp_path / "junk.pt", arch="s4", dataset="mnist")


class _CreatesFile:
    """Unpickling this calls open(path, 'w'), i.e. runs code and leaves a file behind."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_pickle_that_runs_code_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    torch.save({"input.weight": torch.zeros(2, 1), "payload": _CreatesFile(marker)}, tmp_path / "evil.pt")
    refused = r"refused by torch.load\(weights_only=True\).*never fully unpickled"
    with pytest.raises(ReferenceImportError, match=refused):
        import_reference(tmp_path / "evil.pt", arch="s4", dataset="mnist")
    out = tmp_path / "out"
    assert main(["import-reference", str(tmp_path / "evil.pt"), "--arch", "s4", "--dataset", "mnist",
                 "--out", str(out)]) == 2
    assert "weights_only" in capsys.readouterr().err
    assert not marker.exists()
    assert not out.exists()
    # control: the payload is live, a full unpickle would have created the marker
    torch.load(tmp_path / "evil.pt", weights_only=False)["payload"].close()
    assert marker.exists()


def test_cli_import_reference_end_to_end(tmp_path):
    state = mamba_state(9, "mnist")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "S6Nat-epoch180.pt")
    out = tmp_path / "imported"
    assert main(["import-reference", str(tmp_path / "S6Nat-epoch180.pt"), "--arch", "mamba", "--dataset", "mnist",
                 "--out", str(out)]) == 0
    model = load_model(out)
    assert (model.config.arch, model.config.tokenizer, model.config.meta["dataset"]) == ("mamba", "paper", "mnist")
    x = images("mnist")
    assert rel_err(ours(model, x, torch.float32), reference_forward(state, x, "mamba")) < 1e-4


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_the_reference_importers_image_shapes_agree_with_the_dataset_info(name):
    from ssm_lab.datasets.info import DATASETS as INFO
    from ssm_models.reference import DATASETS

    assert DATASETS[name] == (INFO[name].channels, INFO[name].image_size)
