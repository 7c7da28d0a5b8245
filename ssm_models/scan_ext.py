"""The compiled selective scan (scan_kernel.cpp): built once at set-up, loaded at first use only if it matches."""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

SOURCE = Path(__file__).with_name("scan_kernel.cpp")
BUILD_DIR = Path(__file__).with_name("_build")  # gitignored; each machine (and the Docker image) builds its own
LIBRARY = BUILD_DIR / "scan_kernel.so"
STAMP = BUILD_DIR / "scan_kernel.json"
ENV_SWITCH = "SSM_LAB_SCAN_EXT"  # "0" forces the PyTorch scan
# -ffast-math lets GCC call glibc's vector exp (libmvec); the tests hold the kernel to the reference's tolerances
FLAGS = ["-O3", "-ffast-math", "-std=c++17", "-shared", "-fPIC", "-fvisibility=hidden"]
log = logging.getLogger(__name__)


def build_key() -> dict:
    """What the library must have been built from: this source, these flags, this torch."""
    return {"source_sha256": hashlib.sha256(SOURCE.read_bytes()).hexdigest(), "flags": FLAGS,
            "torch": torch.__version__}


def compile_command(output: Path) -> list[str]:
    from torch.utils import cpp_extension

    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    includes = [f"-I{path}" for path in cpp_extension.include_paths()]
    libraries = [f"-L{path}" for path in cpp_extension.library_paths()]
    compiler = os.environ.get("CXX", "c++")
    return [compiler, *FLAGS, f"-D_GLIBCXX_USE_CXX11_ABI={abi}", *includes, str(SOURCE), "-o", str(output),
            *libraries, "-lc10", "-ltorch_cpu", "-lmvec"]


def build() -> str:
    """Compile the kernel into BUILD_DIR unless an up-to-date build is there; returns what it did."""
    if _stamp_matches():
        return f"compiled scan kernel up to date ({LIBRARY})"
    BUILD_DIR.mkdir(exist_ok=True)
    partial = LIBRARY.with_suffix(".so.partial")
    done = subprocess.run(compile_command(partial), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"compiling {SOURCE.name} failed:\n{done.stderr[-4000:]}")
    os.replace(partial, LIBRARY)  # the stamp goes last: a half-written build never looks current
    STAMP.write_text(json.dumps(build_key()))
    return f"built the compiled scan kernel ({LIBRARY})"


def _stamp_matches() -> bool:
    try:
        return LIBRARY.exists() and json.loads(STAMP.read_text()) == build_key()
    except (OSError, ValueError):
        return False


@functools.cache
def load() -> bool:
    """Load the built library if it matches the source; never compiles. False (logged once) otherwise."""
    if not _stamp_matches():
        log.debug("no up-to-date compiled scan kernel in %s: using the PyTorch scan", BUILD_DIR)
        return False
    try:
        torch.ops.load_library(str(LIBRARY))
    except (OSError, RuntimeError) as error:
        log.debug("could not load %s (%s): using the PyTorch scan", LIBRARY, error)
        return False
    return True


def enabled() -> bool:
    """Whether `selective_scan` may use the kernel: not switched off by SSM_LAB_SCAN_EXT=0, and built."""
    return os.environ.get(ENV_SWITCH, "1") != "0" and load()


def supports(*tensors: torch.Tensor) -> bool:
    """CPU tensors of one float32/float64 dtype: what the kernel is compiled for."""
    dtype = tensors[0].dtype
    return dtype in (torch.float32, torch.float64) and all(t.dtype == dtype and t.device.type == "cpu"
                                                           for t in tensors)


def compiled_scan(x, dt, A, B, C):
    """y_t = C_t h_t with h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t (no D term), by the compiled kernel.

    x, dt (batch, L, E); A (E, N); B, C (batch, L, N) -> (batch, L, E). Raises if the kernel is not built.
    """
    if not load():
        raise RuntimeError(f"the compiled scan kernel is not built: run `{sys.executable} -m ssm_models.scan_ext "
                           "build` (scripts/setup.sh does)")
    return _CompiledScan.apply(x, dt, A, B, C)


class _CompiledScan(torch.autograd.Function):
    """The kernel saves only its inputs; its backward recomputes each row's states in a per-thread scratch."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C):
        ctx.save_for_backward(x, dt, A, B, C)
        return torch.ops.ssm_scan.forward(x, dt, A, B, C)  # (batch, L, E)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        return tuple(torch.ops.ssm_scan.backward(grad_y, *ctx.saved_tensors))


def main(argv: list[str]) -> int:
    """`python -m ssm_models.scan_ext build [--require]`: one line saying what it did. Non-fatal unless
    --require: the lab works without the kernel, only slower at paper scale."""
    if argv[:1] != ["build"] or not set(argv[1:]) <= {"--require"}:
        print("usage: python -m ssm_models.scan_ext build [--require]", file=sys.stderr)
        return 2
    try:
        print(f"setup: {build()}")
    except (OSError, RuntimeError) as error:
        print(f"setup: could not build the compiled scan kernel, the PyTorch scan will be used: {error}",
              file=sys.stderr)
        return 1 if "--require" in argv else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
