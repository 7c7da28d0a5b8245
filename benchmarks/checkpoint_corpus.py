"""Hostile and broken checkpoints: `python -m benchmarks.checkpoint_corpus` loads each one and prints the tables."""
from __future__ import annotations

import argparse
import collections
import io
import json
import os
import pickle
import re
import shutil
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from benchmarks.fuzz_uploads import _reset_peak_rss, _rss_kib
from benchmarks.hub_faults import (
    CONFIG,
    WEIGHTS,
    HostileHub,
    cache_problems,
    hub_environment,
    reference_model,
    same_weights,
    warm_up,
)
from benchmarks.verdict import report_and_exit_code
from testkit.hub_server import HubServer

# per load; the largest allowed config (the over-budget case) would need about 1 GB. A lying Hub that streams more
# than it announced costs up to about 40 MiB whatever it sends: huggingface_hub reads bodies in 10 MiB chunks
MAX_PEAK_MIB = 64
TARGET = "head.weight"  # (3, 8) float32 in the reference model: the tensor the weight cases tamper with
SENTINEL = "PWNED"  # created in the run directory if any pickle payload is ever unpickled


@dataclass
class Good:
    config: dict
    tensors: dict
    weights: bytes
    sentinel: Path


@dataclass(frozen=True)
class Case:
    name: str
    category: str
    expect: str  # regex the rejection message must match
    build: Callable[[Good, Path], None]  # writes the checkpoint's files into a directory
    where: tuple = ("local", "hub")
    source: str | None = None  # what to load instead ("{repo}" is the case's repo): names that must not reach the Hub
    hostile: Callable | None = None  # (good, run_dir, cache_dir) -> HostileHub options: a Hub lying in its answers


class _Payload:
    """Unpickling this opens `path` for writing, creating it: visible proof that a loader ran pickle code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def pickle_payload(good: Good) -> bytes:
    return pickle.dumps({"state_dict": _Payload(good.sentinel)})


def torch_payload(good: Good, benign: bool = False) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(good.tensors if benign else {"state_dict": _Payload(good.sentinel)}, buffer)  # torch's zip format
    return buffer.getvalue()


# ----- builders ----------------------------------------------------------------------------------
def write(directory: Path, config: bytes | dict, files: dict[str, bytes]) -> None:
    directory.mkdir(parents=True)
    text = config if isinstance(config, bytes) else json.dumps(config).encode()
    (directory / CONFIG).write_bytes(text)
    for name, data in files.items():
        (directory / name).write_bytes(data)


def config_change(**change) -> Callable:
    return lambda g, d: write(d, {**g.config, **change}, {WEIGHTS: g.weights})


def config_bytes(make: Callable[[Good], bytes]) -> Callable:
    return lambda g, d: write(d, make(g), {WEIGHTS: g.weights})


def weights_bytes(make: Callable[[Good], bytes]) -> Callable:
    return lambda g, d: write(d, g.config, {WEIGHTS: make(g)})


def only_files(**makers) -> Callable:  # no model.safetensors at all
    return lambda g, d: write(d, g.config, {name.replace("__", "."): make(g) for name, make in makers.items()})


def tensors_edit(edit: Callable[[dict], None]) -> Callable:
    from safetensors.torch import save

    def make(g: Good) -> bytes:
        tensors = {k: v.clone() for k, v in g.tensors.items()}
        edit(tensors)
        return save({k: v.contiguous() for k, v in tensors.items()})

    return weights_bytes(make)


def split(weights: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", weights[:8])
    return json.loads(weights[8:8 + n]), weights[8 + n:]


def raw_weights(header: bytes | dict, data: bytes, length: int | None = None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def header_edit(edit: Callable[[dict], None]) -> Callable:
    def make(g: Good) -> bytes:
        header, data = split(g.weights)
        edit(header)
        return raw_weights(header, data)

    return weights_bytes(make)


def set_entry(name: str = TARGET, **fields) -> Callable[[dict], None]:
    return lambda header: header[name].update(fields)


def nonfinite(value: float, everywhere: bool = False, half: bool = False) -> Callable:
    def edit(tensors):
        if half:
            tensors.update({k: v.half() for k, v in tensors.items()})
        if everywhere:
            tensors[TARGET].fill_(value)
        else:
            tensors[TARGET].view(-1)[1] = value

    return tensors_edit(edit)


def converted(dtype_name: str) -> Callable:
    import torch

    dtype = getattr(torch, dtype_name)
    return tensors_edit(lambda t: t.update({TARGET: (t[TARGET] * 100).to(dtype)}))


def special_file(kind: str, which: str) -> Callable:
    """A directory, FIFO or symlink pointing outside the checkpoint where a file belongs (local cases)."""

    def build(g: Good, d: Path) -> None:
        write(d, g.config, {WEIGHTS: g.weights})
        path = d / which
        real = path.read_bytes()
        path.unlink()
        if kind == "dir":
            path.mkdir()
        elif kind == "fifo":
            os.mkfifo(path)  # opening it for reading would block forever
        else:
            outside = d.parent / f"{d.name}-outside-{which}"
            outside.write_bytes(real)
            path.symlink_to(outside)

    return build


def escape(run_dir: Path, cache_dir: Path, repo: str, below: str, tag: str) -> str:
    """A relative path that leads from a folder of the repo's cache to `run_dir/ESCAPED-<tag>`."""
    start = cache_dir / f"models--org--{repo}" / below
    return os.path.relpath(run_dir / f"ESCAPED-{tag}", start)


def lying_headers(filename: str, **headers) -> Callable:
    """HostileHub options whose `{escape:<folder>}` header values are turned into a traversal path."""

    def options(g: Good, run_dir: Path, cache_dir: Path, repo: str) -> dict:
        values = {k: (f'"{escape(run_dir, cache_dir, repo, v[8:], filename)}"' if k == "ETag" else
                      escape(run_dir, cache_dir, repo, v[8:], filename)) if v.startswith("{escape:") else v
                  for k, v in headers.items()}
        return {"headers": {filename: values}}

    return options


def good_files(g: Good, d: Path) -> None:
    write(d, g.config, {WEIGHTS: g.weights})


def without_weights(g: Good, d: Path) -> None:
    write(d, g.config, {})


# ----- the corpus --------------------------------------------------------------------------------
NOT_ST = r"model\.safetensors (is not a valid safetensors file|is truncated)"
PICKLE_REFUSED = r"only safetensors weights are accepted"
TOO_BIG = r"more than any valid checkpoint|over the \d+-byte limit"
BAD_ENTRY = r"not a valid safetensors file: bad header entry for head\.weight"
BAD_NAME = r"invalid|not a shipped checkpoint|no such checkpoint directory"
DOWNLOAD_FAILED = r"download of model\.safetensors from \S+ failed: Consistency check failed"
DEEP = "[" * 30_000 + "]" * 30_000  # 60 KB: under the config cap, far over json's recursion limit
BUDGET = {"arch": "mamba", "d_model": 1024, "n_layers": 16, "d_state": 256, "expand": 4, "image_size": 32,
          "tokenizer": "patch"}  # every field within its bounds, ~1 GB of parameters in all


def _cases() -> list[Case]:
    c = []
    add = lambda name, category, expect, build, **kw: c.append(Case(name, category, expect, build, **kw))  # noqa
    # pickles that would run code: never unpickled, whatever they are named
    add("pickle-named-safetensors", "pickle", NOT_ST, weights_bytes(pickle_payload))
    add("torch-zip-named-safetensors", "pickle", NOT_ST, weights_bytes(torch_payload))
    add("pytorch_model.bin-only", "pickle", PICKLE_REFUSED, only_files(pytorch_model__bin=pickle_payload))
    add("model.pt-only", "pickle", PICKLE_REFUSED, only_files(model__pt=torch_payload))
    add("model.ckpt-only", "pickle", PICKLE_REFUSED, only_files(model__ckpt=pickle_payload))
    add("benign-state-dict-bin-only", "pickle", PICKLE_REFUSED,
        only_files(pytorch_model__bin=lambda g: torch_payload(g, benign=True)))
    add("pickle-named-config", "pickle", r"config\.json is not valid JSON", config_bytes(pickle_payload))
    add("pickle-file-as-source", "pickle", r"is a pickle file; only safetensors", only_files(model__pt=torch_payload),
        where=("local",), source="model.pt")
    # dtypes other than F32/F16/BF16 for float parameters
    for dtype, code in (("int64", "I64"), ("int32", "I32"), ("int16", "I16"), ("int8", "I8"), ("uint8", "U8"),
                        ("bool", "BOOL"), ("float64", "F64"), ("complex64", "C64")):
        add(f"dtype-{code}", "dtype", rf"wrong dtype for head\.weight: expected F32 or F16 or BF16, got {code}",
            converted(dtype))
    for code in ("F8_E4M3", "X99"):
        add(f"dtype-{code}-in-header", "dtype", rf"wrong dtype for head\.weight: .*got {code}",
            header_edit(set_entry(dtype=code)))
    # shapes and names
    shape = r"shape mismatch for head\.weight: expected \[3, 8\], got "
    add("shape-one-extra-element", "shape", shape + r"\[25\]", tensors_edit(lambda t: t.update(
        {TARGET: t[TARGET].new_zeros(25)})))
    add("shape-transposed", "shape", shape + r"\[8, 3\]", tensors_edit(lambda t: t.update({TARGET: t[TARGET].T})))
    add("shape-extra-dim", "shape", shape + r"\[1, 3, 8\]", tensors_edit(lambda t: t.update(
        {TARGET: t[TARGET][None]})))
    add("shape-scalar", "shape", shape + r"\[\]", tensors_edit(lambda t: t.update({TARGET: t[TARGET][0, 0]})))
    add("shape-zero-size", "shape", shape + r"\[0, 8\]", tensors_edit(lambda t: t.update({TARGET: t[TARGET][:0]})))
    add("shape-huge-declared", "shape", shape + r"\[1099511627776\]",
        header_edit(set_entry(shape=[1 << 40])))  # 4 TB if anything trusted it
    add("tensor-missing", "names", r"missing tensors: head\.weight", tensors_edit(lambda t: t.pop(TARGET)))
    add("tensor-unexpected", "names", r"unexpected tensors: evil", tensors_edit(
        lambda t: t.update(evil=t[TARGET].clone())))
    add("tensor-renamed", "names", r"missing tensors: head\.weight; unexpected tensors: head\.weight_",
        tensors_edit(lambda t: t.update({TARGET + "_": t.pop(TARGET)})))
    add("10k-unexpected-entries", "names", r"unexpected tensors: x0, x1, x2, x3, x4 \.\.\.", header_edit(
        lambda h: h.update({f"x{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(10_000)})))
    # values
    finite = r"non-finite values in head\.weight: "
    add("value-nan", "values", finite + "1 NaN and 0 infinite", nonfinite(float("nan")))
    add("value-inf", "values", finite + "0 NaN and 1 infinite", nonfinite(float("inf")))
    add("value-minus-inf", "values", finite + "0 NaN and 1 infinite", nonfinite(float("-inf")))
    add("value-all-nan", "values", finite + "24 NaN", nonfinite(float("nan"), everywhere=True))
    add("value-nan-in-f16", "values", finite + "1 NaN", nonfinite(float("nan"), half=True))
    # the safetensors container itself
    add("header-length-2pow62", "layout", r"header claims 4611686018427387904 bytes \(limit 1048576\)",
        weights_bytes(lambda g: struct.pack("<Q", 1 << 62) + g.weights[8:]))
    add("header-length-over-limit", "layout", r"header claims 1048577 bytes \(limit", weights_bytes(
        lambda g: raw_weights(b"{" + b" " * 1048575 + b"}", b"")))
    add("header-length-past-end", "layout", r"is truncated: its header claims \d+ bytes but only \d+ follow",
        weights_bytes(lambda g: raw_weights(b"{}", b"", length=4096)))
    add("header-length-zero", "layout", r"the header is not a JSON object",
        weights_bytes(lambda g: struct.pack("<Q", 0) + g.weights[8:]))
    add("header-not-json", "layout", r"header is not valid JSON", weights_bytes(lambda g: raw_weights(b"{oops", b"")))
    add("header-json-array", "layout", NOT_ST, weights_bytes(lambda g: raw_weights(b"[1, 2]", b"")))
    add("header-duplicate-name", "layout", r"duplicate key 'head\.weight'", weights_bytes(lambda g: raw_weights(
        b'{"head.weight": {}, ' + g.weights[9:8 + struct.unpack("<Q", g.weights[:8])[0]], b"")))
    add("header-nan-offset", "layout", r"NaN is not valid JSON", weights_bytes(lambda g: raw_weights(
        b'{"head.weight": {"dtype": "F32", "shape": [3, 8], "data_offsets": [NaN, 96]}}', b"")))
    add("header-deep-nesting", "layout", r"header is not valid JSON: maximum recursion depth",
        weights_bytes(lambda g: raw_weights(('{"__metadata__": ' + "[" * 200_000 + "]" * 200_000 + "}").encode(),
                                            b"")))
    add("header-bad-metadata", "layout", r"bad __metadata__", header_edit(lambda h: h.update(__metadata__={"a": 1})))
    add("entry-extra-key", "layout", BAD_ENTRY, header_edit(set_entry(evil="x")))
    add("entry-negative-offset", "layout", BAD_ENTRY, header_edit(set_entry(data_offsets=[-96, 0])))
    add("entry-float-shape", "layout", BAD_ENTRY, header_edit(set_entry(shape=[3.0, 8])))
    add("offsets-aliased", "layout", r"gaps or overlaps", header_edit(
        lambda h: [e.update(data_offsets=[0, e["data_offsets"][1] - e["data_offsets"][0]])
                   for k, e in h.items() if k != "__metadata__"]))
    add("offset-beyond-file", "layout", r"gaps or overlaps", header_edit(
        lambda h: h[TARGET].update(data_offsets=[o + (1 << 40) for o in h[TARGET]["data_offsets"]])))
    add("span-wrong-size", "layout", r"head\.weight spans 4 bytes, its dtype and shape need 96", header_edit(
        lambda h: h[TARGET].update(data_offsets=[h[TARGET]["data_offsets"][0], h[TARGET]["data_offsets"][0] + 4])))
    add("truncated-data", "layout", r"is truncated: the header describes \d+ bytes of tensor data but the file "
        r"holds \d+", weights_bytes(lambda g: g.weights[:-10]))
    add("truncated-header", "layout", r"is truncated: its header claims", weights_bytes(lambda g: g.weights[:100]))
    add("seven-bytes", "layout", r"too short for a safetensors file", weights_bytes(lambda g: g.weights[:7]))
    add("empty-weights", "layout", r"is truncated: 0 bytes", weights_bytes(lambda g: b""))
    add("trailing-bytes", "layout", r"4 unexpected bytes after the tensor data", weights_bytes(
        lambda g: g.weights + b"junk"))
    add("oversized-weights", "layout", TOO_BIG, weights_bytes(lambda g: g.weights + b"\0" * (2 << 20)))
    # config.json
    bounds = r"={} is above the limit of"
    add("config-unknown-arch", "config", r"unknown architecture 'transformer'", config_change(arch="transformer"))
    add("config-arch-list", "config", r"arch must be a string, got \['s4'\]", config_change(arch=["s4"]))
    add("config-trust_remote_code", "config", r"unknown config keys: trust_remote_code",
        config_change(trust_remote_code=True))
    add("config-auto_map", "config", r"unknown config keys: auto_map", config_change(auto_map={"AutoModel": "x.Y"}))
    add("config-key-beside-wrapper", "config", r"unknown config keys beside 'config': auto_map",
        config_bytes(lambda g: json.dumps({"config": g.config, "auto_map": "x.Y"}).encode()))
    for field, value in (("d_model", 10**9), ("n_layers", 10**6), ("d_state", 10**7), ("image_size", 10**6),
                         ("num_classes", 10**9)):
        add(f"config-huge-{field}", "config", field + bounds.format(value), config_change(**{field: value}))
    add("config-over-parameter-budget", "config", r"mamba config has [\d,]+ parameters, over the parameter budget",
        config_change(**BUDGET))
    add("config-number-as-string", "config", r"dt_min must be a number, got 'tiny'", config_change(dt_min="tiny"))
    add("config-flag-as-string", "config", r"ads_bias must be true or false, got 'yes'", config_change(ads_bias="yes"))
    add("config-int-as-float", "config", r"d_model must be an integer, got 8\.0", config_change(d_model=8.0))
    add("config-int-as-bool", "config", r"d_model must be an integer, got True", config_change(d_model=True))
    add("config-python-syntax", "config", r"config\.json is not valid JSON",
        config_bytes(lambda g: repr(g.config).encode()))
    add("config-nan", "config", r"NaN is not valid JSON", config_bytes(lambda g: b'{"arch": "s4", "dt_min": NaN}'))
    add("config-overflow", "config", r"1e999 is not finite", config_bytes(lambda g: b'{"arch": "s4", "dt_max": 1e999}'))
    add("config-duplicate-key", "config", r"duplicate key 'arch'", config_bytes(
        lambda g: b'{"arch": "s4", "arch": "mamba"}'))
    add("config-json-array", "config", r"must hold a JSON object, got list", config_bytes(lambda g: b'["s4"]'))
    add("config-empty", "config", r"config\.json is not valid JSON", config_bytes(lambda g: b""))
    add("config-not-utf8", "config", r"not valid JSON: 'utf-8' codec", config_bytes(
        lambda g: json.dumps({**g.config, "meta": {"by": "\xe9"}}, ensure_ascii=False).encode("latin-1")))
    add("config-deep-nesting", "config", r"not valid JSON: maximum recursion depth", config_bytes(
        lambda g: json.dumps({**g.config, "meta": "X"}).replace('"X"', DEEP).encode()))
    add("config-over-64KB", "config", r"over the 65536-byte limit", config_bytes(
        lambda g: json.dumps({**g.config, "meta": {"pad": "x" * 70_000}}).encode()))
    add("config-8MB", "config", r"over the 65536-byte limit", config_bytes(lambda g: b"{" + b" " * (8 << 20) + b"}"))
    add("config-is-directory", "config", r"config\.json at \S+ is not a regular file", special_file("dir", CONFIG),
        where=("local",))
    add("config-is-fifo", "config", r"config\.json at \S+ is not a regular file", special_file("fifo", CONFIG),
        where=("local",))
    add("weights-is-fifo", "layout", r"model\.safetensors at \S+ is not a regular file",
        special_file("fifo", WEIGHTS), where=("local",))
    # names and paths that lead elsewhere
    add("config-symlink-outside", "traversal", r"outside the checkpoint directory", special_file("link", CONFIG),
        where=("local",))
    add("weights-symlink-outside", "traversal", r"outside the checkpoint directory", special_file("link", WEIGHTS),
        where=("local",))
    for name, source in (("repo-id-dotdot", "org/../../etc"), ("revision-dotdot", "org/{repo}@../../../evil"),
                         ("revision-path-dotdot", "org/{repo}@main/../../evil"), ("repo-name-dotdot", "org/na..me"),
                         ("revision-absolute", "org/{repo}@/etc"), ("revision-newline", "org/{repo}@v1\n")):
        add(name, "traversal", BAD_NAME, good_files, where=("hub",), source=source)
    add("etag-dotdot-config", "traversal", r"config\.json in \S+: the Hub answered with an invalid ETag", good_files,
        where=("hostile",), hostile=lying_headers(CONFIG, ETag="{escape:blobs}"))
    add("etag-dotdot-weights", "traversal", r"model\.safetensors in \S+: the Hub answered with an invalid ETag",
        good_files, where=("hostile",), hostile=lying_headers(WEIGHTS, ETag="{escape:blobs}"))
    add("etag-absolute-path", "traversal", r"invalid ETag '/", good_files, where=("hostile",),
        hostile=lambda g, run, cache, repo: {"headers": {CONFIG: {"ETag": f'"{run}/ESCAPED-absolute"'}}})
    add("commit-dotdot", "traversal", r"invalid commit id '\.\./", good_files, where=("hostile",),
        hostile=lying_headers(CONFIG, **{"X-Repo-Commit": "{escape:snapshots}"}))
    add("commit-dotdot-on-404", "traversal", r"file missing: model\.safetensors is not in", without_weights,
        where=("hostile",), hostile=lying_headers(WEIGHTS, **{"X-Repo-Commit": "{escape:.no_exist}"}))
    add("commit-missing", "traversal", r"invalid commit id ''", good_files, where=("hostile",),
        hostile=lambda g, run, cache, repo: {"headers": {CONFIG: {"X-Repo-Commit": ""}}})
    # downloads that end early or run long
    add("transfer-truncated", "transfer", DOWNLOAD_FAILED, good_files, where=("hostile",),
        hostile=lambda g, run, cache, repo: {"bodies": {WEIGHTS: g.weights[:len(g.weights) // 2]}})
    add("transfer-16MB-for-2KB", "transfer", DOWNLOAD_FAILED, good_files, where=("hostile",),
        hostile=lambda g, run, cache, repo: {"bodies": {WEIGHTS: 16 << 20}})
    return c


CASES = _cases()


# ----- running -----------------------------------------------------------------------------------
def attempt(source, good: Good, run_dir: Path) -> dict:
    """One load_model call: outcome, message, seconds, peak RSS growth, and the side effects that must not happen."""
    from ssm_models.hub import load_model

    resettable = _reset_peak_rss()
    before = _rss_kib("VmRSS")
    start = time.perf_counter()
    try:
        load_model(source)
        out = {"outcome": "LOADED"}
    except ValueError as err:  # ConfigError and CheckpointError
        out = {"outcome": "rejected", "error": type(err).__name__, "message": str(err)}
    except Exception as err:  # noqa: BLE001 - anything else is a crash this corpus looks for
        out = {"outcome": "CRASH", "error": type(err).__name__, "message": str(err)}
    out["seconds"] = time.perf_counter() - start
    out["peak_mib"] = max(0, _rss_kib("VmHWM") - before) / 1024 if resettable else float("nan")
    out["executed"] = good.sentinel.exists()
    out["escaped"] = sorted(p.name for p in run_dir.rglob("ESCAPED*"))
    return out


def run(cases=CASES, log=None) -> list[dict]:
    """Every case locally and/or through the local Hub (one cache for the whole run) or a lying Hub."""
    import torch
    from safetensors.torch import load_file

    from ssm_models.hub import load_model, save_pretrained

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        reference = reference_model()
        save_pretrained(reference, run_dir / "hub" / "org" / "good")
        good_dir = run_dir / "hub" / "org" / "good"
        good = Good(json.loads((good_dir / CONFIG).read_text()), load_file(good_dir / WEIGHTS),
                    (good_dir / WEIGHTS).read_bytes(), run_dir / SENTINEL)
        control = run_dir / "control"
        pickle.loads(pickle_payload(Good({}, {}, b"", control)))
        assert control.exists(), "the pickle payload must be live for the corpus to mean anything"
        warm_up(reference, run_dir / "warm-up")
        with torch.no_grad(), hub_environment(run_dir / "hf_home") as env, \
                HubServer(run_dir / "hub") as hub:
            env.set_endpoint(hub.url)
            assert same_weights(load_model("org/good"), reference)
            for case in cases:
                directory = run_dir / "local" / case.name
                case.build(good, directory)
                for where in case.where:
                    seen = len(hub.requests)
                    if where == "local":
                        out = attempt(directory / case.source if case.source else directory, good, run_dir)
                    elif where == "hub":
                        shutil.copytree(directory, run_dir / "hub" / "org" / case.name)
                        source = (case.source or "org/{repo}").format(repo=case.name)
                        out = attempt(source, good, run_dir)
                    else:
                        files = {p.name: p.read_bytes() for p in directory.iterdir()}
                        with HostileHub(files, **case.hostile(good, run_dir, env.cache_dir, case.name)) as liar:
                            env.set_endpoint(liar.url)
                            out = attempt(f"org/{case.name}", good, run_dir)
                        env.set_endpoint(hub.url)
                    out.update(case=case.name, category=case.category, where=where, requests=len(hub.requests) - seen,
                               shown=out.get("message", "").replace(str(run_dir), "<run>"))
                    out["expected_message"] = out["outcome"] == "rejected" and bool(re.search(case.expect,
                                                                                              out["message"]))
                    if where != "local":
                        out["cache_problems"] = cache_problems(env.cache_dir)
                        out["good_reloads"] = same_weights(load_model("org/good"), reference)
                    results.append(out)
                    if log:
                        log(f"{case.name} [{where}]: {out['outcome']} {out.get('message', '')[:100]}")
    return results


def failures(results: list[dict], max_peak_mib: float = MAX_PEAK_MIB) -> list[str]:
    """Every broken promise: not rejected with the expected message, code executed, a write outside the cache, memory
    over the bound, a partial or corrupt cache entry, the good checkpoint no longer loading, a name reaching the Hub."""
    problems = []
    for r in results:
        where = f"{r['case']} [{r['where']}]"
        if not r["expected_message"]:
            problems.append(f"{where}: {r['outcome']} {r.get('error', '')}: {r.get('message', '')[:200]}")
        if r["executed"] or r["escaped"]:
            problems.append(f"{where}: executed code ({r['executed']}) or wrote outside the cache ({r['escaped']})")
        if r["peak_mib"] > max_peak_mib:
            problems.append(f"{where}: peak RSS growth {r['peak_mib']:.1f} MiB over {max_peak_mib} MiB")
        if r.get("cache_problems") or r.get("good_reloads") is False:
            problems.append(f"{where}: cache {r.get('cache_problems')}, good checkpoint reloads: {r['good_reloads']}")
        if r["category"] == "traversal" and r["where"] == "hub" and r["requests"]:
            problems.append(f"{where}: a bad name reached the Hub ({r['requests']} requests)")
    return problems


def tables(results: list[dict]) -> str:
    by_case = collections.defaultdict(dict)
    for r in results:
        by_case[(r["category"], r["case"])][r["where"]] = r
    lines = ["| category | case | local | Hub | message (first attempt) | peak MiB | ms |",
             "|---|---|---|---|---|---:|---:|"]
    for (category, name), runs in by_case.items():
        first = next(iter(runs.values()))
        cell = lambda w: ("-" if w not in runs else  # noqa: E731
                          ("rejected" if runs[w]["expected_message"] else f"**{runs[w]['outcome']}**"))
        hub = cell("hub") if "hub" in runs else cell("hostile") + (" (lying Hub)" if "hostile" in runs else "")
        message = " ".join(first["shown"].split())
        message = re.sub(r"[0-9a-f]{40,64}", "<sha>", message).replace("|", "/")
        message = message if len(message) <= 110 else message[:107] + "..."
        lines.append(f"| {category} | {name} | {cell('local')} | {hub} | {first.get('error', '')}: {message} | "
                     f"{max(r['peak_mib'] for r in runs.values()):.1f} | "
                     f"{max(r['seconds'] for r in runs.values()) * 1000:.0f} |")
    summary = ["", "| category | cases | loads | rejected with the expected message | code executed | writes outside "
               "the cache | largest peak RSS growth (MiB) | cache problems after | good checkpoint reloaded |",
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for category in dict.fromkeys(r["category"] for r in results):
        rs = [r for r in results if r["category"] == category]
        hub_rs = [r for r in rs if r["where"] != "local"]
        summary.append(f"| {category} | {len({r['case'] for r in rs})} | {len(rs)} | "
                       f"{sum(r['expected_message'] for r in rs)} | {sum(r['executed'] for r in rs)} | "
                       f"{sum(bool(r['escaped']) for r in rs)} | {max(r['peak_mib'] for r in rs):.1f} | "
                       f"{sum(bool(r['cache_problems']) for r in hub_rs)} | "
                       f"{sum(r['good_reloads'] for r in hub_rs)} / {len(hub_rs)} |")
    return "\n".join(lines + summary)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", help="case names (default: all)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    import logging

    import torch

    torch.set_num_threads(1)
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    cases = [c for c in CASES if not args.only or c.name in args.only]
    start = time.time()
    results = run(cases, log=(lambda text: print(text, file=sys.stderr)) if args.verbose else None)
    worst = max(results, key=lambda r: r["peak_mib"])
    headline = (f"{len(cases)} cases, {len(results)} loads in {time.time() - start:.1f} s; largest peak RSS growth "
                f"{worst['peak_mib']:.1f} MiB ({worst['case']} [{worst['where']}]), bound {MAX_PEAK_MIB} MiB")
    return report_and_exit_code(headline, tables(results), failures(results), "FAIL")


if __name__ == "__main__":
    raise SystemExit(main())
