"""Compiling scan_kernel.cpp against the installed torch into _build/, and the stamp saying what it was built from."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import torch

from ..atomic import atomic_write

SOURCE = Path(__file__).with_name("scan_kernel.cpp")
BUILD_DIR = Path(__file__).with_name("_build")  # gitignored: each machine (and the Docker image) builds its own
LIBRARY = BUILD_DIR / "scan_kernel.so"
STAMP = BUILD_DIR / "scan_kernel.json"
# IEEE arithmetic (no -ffast-math: the float32 exp relies on its evaluation order); `omp simd` pragmas, not
# OpenMP threads, vectorise (at::parallel_for threads); GNU mode lets FMAs contract. No -march: the kernel carries
# its own AVX2 clone, chosen at load time (see the source).
FLAGS = ["-O3", "-std=gnu++20", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-shared", "-fPIC",
         "-fvisibility=hidden"]
TORCH_DIR = Path(torch.__file__).parent


def build_key() -> dict:
    """What a usable library was built from: this source, these flags, this torch."""
    return {"source_sha256": hashlib.sha256(SOURCE.read_bytes()).hexdigest(), "flags": FLAGS,
            "torch": torch.__version__}


def stamp_matches() -> bool:
    try:
        return LIBRARY.exists() and json.loads(STAMP.read_text()) == build_key()
    except (OSError, ValueError):
        return False


def compile_command(output: Path) -> list[str]:
    """The compiler line: torch's headers and libraries straight from the installed package (no setuptools or
    ninja needed), and torch's C++ ABI."""
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    includes = [f"-I{TORCH_DIR / 'include'}", f"-I{TORCH_DIR / 'include' / 'torch' / 'csrc' / 'api' / 'include'}"]
    return [os.environ.get("CXX", "c++"), *FLAGS, f"-D_GLIBCXX_USE_CXX11_ABI={abi}", *includes, str(SOURCE),
            "-o", str(output), f"-L{TORCH_DIR / 'lib'}", "-lc10", "-ltorch_cpu"]


def build() -> str:
    """Compile the kernel into BUILD_DIR unless an up-to-date build is there; returns what it did."""
    if stamp_matches():
        return f"compiled scan kernel up to date ({LIBRARY})"
    BUILD_DIR.mkdir(exist_ok=True)
    partial = LIBRARY.with_suffix(".so.partial")
    done = subprocess.run(compile_command(partial), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"compiling {SOURCE.name} failed:\n{done.stderr[-4000:]}")
    STAMP.unlink(missing_ok=True)  # the stamp goes last: a half-replaced build never looks current
    atomic_write(LIBRARY, partial.read_bytes(), mode=0o755)
    partial.unlink()
    atomic_write(STAMP, json.dumps(build_key()))
    return f"built the compiled scan kernel ({LIBRARY})"
