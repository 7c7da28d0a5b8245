"""Hub faults during downloads: `python -m benchmarks.hub_faults [--repeat N]` prints counts per fault."""
from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import http.server
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from unittest import mock

from benchmarks.verdict import report_and_exit_code
from testkit.hub_server import HubEnvironment, HubServer

WEIGHTS, CONFIG = "model.safetensors", "config.json"
TINY = {"d_model": 8, "n_layers": 1, "d_state": 4, "image_size": 8, "num_classes": 3}
_SHA256 = re.compile(r"[0-9a-f]{64}")


@contextlib.contextmanager
def hub_environment(home: Path):
    """huggingface_hub online with a private cache under `home`; every setting is undone on exit."""
    import pytest

    with pytest.MonkeyPatch.context() as patch:
        env = HubEnvironment(patch, home)
        env.set_offline(False)
        yield env


def reference_model(seed: int = 0):
    import torch

    from ssm_models import create_model

    torch.manual_seed(seed)
    return create_model("s4", **TINY).eval()


def warm_up(reference, directory: Path) -> None:
    """The first load in a process imports torch internals for the meta-device build (seconds, tens of MB): pay
    for it before anything is timed or its memory measured."""
    from ssm_models.hub import load_model, save_pretrained

    save_pretrained(reference, directory)
    load_model(directory)


def same_weights(a, b) -> bool:
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def cache_problems(cache_dir: Path) -> list[str]:
    """Partial downloads, blobs whose sha256 is not their name, and snapshot pointers to nothing."""
    problems = []
    for path in sorted(Path(cache_dir).rglob("*")):
        where = path.relative_to(cache_dir).as_posix()
        if path.name.endswith(".incomplete"):
            problems.append(f"partial file {where}")
        elif path.is_symlink() and not path.exists():
            problems.append(f"dangling pointer {where}")
        elif path.parent.name == "blobs" and _SHA256.fullmatch(path.name) and path.is_file():
            if hashlib.sha256(path.read_bytes()).hexdigest() != path.name:
                problems.append(f"corrupt blob {where}")
    return problems


class HostileHub:
    """An endpoint answering like the Hub, with crafted headers and bodies: `headers[name]` overrides the headers of
    that file (also of its 404 when the file is absent); `bodies[name]` replaces its GET body (bytes, or an int n
    for n zero bytes streamed); the HEAD always describes the real file."""

    COMMIT = "c0ffee" + "0" * 34

    def __init__(self, files: dict[str, bytes], headers: dict | None = None, bodies: dict | None = None):
        self.files, self.headers, self.bodies = files, headers or {}, bodies or {}
        self.requests: list[tuple[str, str, int]] = []
        self._httpd = None

    def __enter__(self) -> HostileHub:
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, "HEAD")

            def do_GET(self) -> None:
                hub._answer(self, "GET")

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def _answer(self, handler, method: str) -> None:
        name = handler.path.rsplit("/", 1)[-1]
        data = self.files.get(name)
        if data is None:
            status, headers, body = 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": self.COMMIT}, b""
        else:
            status, body = 200, self.bodies.get(name, data)
            headers = {"X-Repo-Commit": self.COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        headers.update(self.headers.get(name, {}))
        length = len(data or b"") if method == "HEAD" else (body if isinstance(body, int) else len(body))
        self.requests.append((method, name, status))
        handler.send_response(status)
        for key, value in {**headers, "Content-Length": str(length), "Connection": "close"}.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.close_connection = True
        if method == "GET":
            try:
                if isinstance(body, int):  # streamed, so the server's own memory stays out of the client's peak
                    for start in range(0, body, 1 << 16):
                        handler.wfile.write(b"\0" * min(1 << 16, body - start))
                else:
                    handler.wfile.write(body)
            except OSError:  # the client gave up on a body it did not want
                pass


class DyingProxy:
    """A TCP proxy in front of the Hub that can die mid-transfer: after `kill(filename, body_bytes)`, the next GET of
    that file gets its headers and `body_bytes` of its body, then the proxy stops listening (connections are
    refused, as from a crashed server) until `revive()` listens again on the same port."""

    def __init__(self, upstream_port: int):
        self.upstream = ("127.0.0.1", upstream_port)
        self.port = 0
        self.deaths = 0
        self._kill: tuple[str, int] | None = None
        self._listener: socket.socket | None = None

    def __enter__(self) -> DyingProxy:
        return self.revive()

    def __exit__(self, *exc) -> None:
        self._close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self, filename: str, body_bytes: int) -> None:
        self._kill = (filename, body_bytes)

    def revive(self) -> DyingProxy:
        self._listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: the same port again
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()
        return self

    def _close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _accept(self, listener: socket.socket) -> None:
        while listener is self._listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        client.settimeout(None)
        with client, socket.create_connection(self.upstream) as upstream:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = client.recv(1 << 16)
                if not chunk:
                    return
                request += chunk
            upstream.sendall(request)
            line = request.split(b"\r\n", 1)[0].decode("latin-1").split()
            kill = self._kill
            dying = kill is not None and line[:1] == ["GET"] and line[1].endswith("/" + kill[0])
            response = b""
            while chunk := upstream.recv(1 << 16):
                response += chunk
                head_end = response.find(b"\r\n\r\n")
                if dying and head_end >= 0 and len(response) >= head_end + 4 + kill[1]:
                    self._kill = None
                    self.deaths += 1
                    self._close()  # stop listening first: the client's resume attempts are refused
                    client.sendall(response[:head_end + 4 + kill[1]])
                    return
            client.sendall(response)


# ----- fault trials ------------------------------------------------------------------------------
def _drop_every_time(hub, proxy):
    hub.inject("drop", filename=WEIGHTS, times=None)


def _server_dies(hub, proxy):
    proxy.kill(WEIGHTS, body_bytes=1000)  # the reference weights are 2252 bytes


FAULTS = {  # name -> (what happens, setup(hub, proxy), expected: "loads" or a regex of the error message)
    "drop-once": ("connection closed halfway through the weights body, once",
                  lambda hub, proxy: hub.inject("drop", filename=WEIGHTS), "loads"),
    "drop-every-time": ("every GET of the weights (resumes included) closed halfway", _drop_every_time,
                        r"download of model\.safetensors from \S+ failed: peer closed connection"),
    "server-dies": ("the server stops listening after 1000 bytes of the weights body", _server_dies,
                    r"download of model\.safetensors from \S+ failed: .*(refused|reset)"),
    "500-head-once": ("HTTP 500 on the config's HEAD, once",
                      lambda hub, proxy: hub.inject("status", filename=CONFIG, method="HEAD"), "loads"),
    "500-get-once": ("HTTP 500 on the weights' GET, once",
                     lambda hub, proxy: hub.inject("status", filename=WEIGHTS, method="GET"), "loads"),
    "500-get-always": ("HTTP 500 on every GET of the weights",
                       lambda hub, proxy: hub.inject("status", filename=WEIGHTS, method="GET", times=None),
                       r"download of model\.safetensors from \S+ failed: Server error '500"),
    "500-always": ("HTTP 500 on every request (the Hub is down, cold cache)",
                   lambda hub, proxy: hub.inject("status", times=None),
                   r"download of config\.json from \S+ failed and the local cache does not have it: the Hub "
                   r"failed or could not be reached \(.*500"),
    "corrupt-weights-once": ("weights body replaced by other bytes of the same length, once",
                             lambda hub, proxy: hub.inject("corrupt", filename=WEIGHTS),
                             r"checksum mismatch: model\.safetensors .* removed from the cache"),
    "corrupt-config-once": ("config body replaced by other bytes of the same length, once",
                            lambda hub, proxy: hub.inject("corrupt", filename=CONFIG),
                            r"checksum mismatch: config\.json .* removed from the cache"),
    "corrupt-every-time": ("every weights body corrupted",
                           lambda hub, proxy: hub.inject("corrupt", filename=WEIGHTS, times=None),
                           r"checksum mismatch: model\.safetensors"),
    "down-but-cached": ("HTTP 500 on every request after a first good download",
                        lambda hub, proxy: hub.inject("status", times=None), "loads"),
}


@contextlib.contextmanager
def _skipped_waits(skip: bool):
    """huggingface_hub's retry back-off and resume pauses call time.sleep; CI may skip them (and count them)."""
    waited = [0.0]
    if not skip:
        yield waited
        return
    with mock.patch("time.sleep", lambda seconds: waited.__setitem__(0, waited[0] + seconds)):
        yield waited


def run_trial(fault: str, work: Path, reference, skip_waits: bool = False) -> dict:
    """One fault on a fresh cache: outcome, message, seconds, cache state, and whether the next request works."""
    from ssm_models.hub import load_model, save_pretrained

    _, setup, expected = FAULTS[fault]
    work.mkdir(parents=True)
    save_pretrained(reference, work / "repos" / "org" / "model")
    out = {"fault": fault}
    with hub_environment(work / "hf_home") as env, HubServer(work / "repos") as hub, \
            DyingProxy(hub.port) as proxy, _skipped_waits(skip_waits) as waited:
        env.set_endpoint(proxy.url)
        if fault == "down-but-cached":
            load_model("org/model")
        setup(hub, proxy)
        start = time.perf_counter()
        try:
            loaded = load_model("org/model")
            out["outcome"] = "loaded" if same_weights(loaded, reference) else "WRONG WEIGHTS"
        except (ValueError, OSError) as err:  # CheckpointError and ConfigError are ValueErrors
            out.update(outcome="error", error=type(err).__name__, message=str(err))
        except Exception as err:  # noqa: BLE001 - anything else is the unclear failure this run looks for
            out.update(outcome="CRASH", error=type(err).__name__, message=str(err))
        out["seconds"] = time.perf_counter() - start
        out["cache_after_fault"] = cache_problems(env.cache_dir)
        hub.clear_faults()
        if proxy.deaths:
            proxy.revive()
        try:
            out["next_ok"] = same_weights(load_model("org/model"), reference)
        except Exception as err:  # noqa: BLE001
            out["next_ok"], out["next_error"] = False, f"{type(err).__name__}: {err}"
        out["cache_after_next"] = cache_problems(env.cache_dir)
        out["waits_skipped"] = waited[0]
        out["requests"] = len(hub.requests)
    out["as_expected"] = (out["outcome"] == "loaded") if expected == "loads" else (
        out["outcome"] == "error" and out["error"] == "CheckpointError" and bool(re.search(expected,
                                                                                          out["message"])))
    return out


def run(repeat: int, faults=tuple(FAULTS), skip_waits: bool = False, log=None) -> dict[str, list[dict]]:
    import logging

    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # its resume warnings would flood the report
    reference = reference_model()
    results: dict[str, list[dict]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        warm_up(reference, Path(tmp) / "warm-up")
        for fault in faults:
            for i in range(repeat):
                results[fault].append(run_trial(fault, Path(tmp) / f"{fault}-{i}", reference, skip_waits))
                if log:
                    log(f"{fault} #{i}: {results[fault][-1]['outcome']} in {results[fault][-1]['seconds']:.1f} s")
    return dict(results)


def message_kind(message: str) -> str:
    """A message without its variable parts (hashes, URLs, numbers), at most 200 characters."""
    text = re.sub(r"[0-9a-f]{40,64}", "<sha>", " ".join(message.split()))
    text = re.sub(r"\bN\b|\b\d+\b", "N", re.sub(r"https?://[^\s']+", "<url>", text))
    return text if len(text) <= 200 else text[:197] + "..."


def table(results: dict[str, list[dict]]) -> str:
    lines = ["| fault | what happens | trials | outcome | as expected | next request works | cache clean "
             "(after fault / after next) | seconds (median / max) |", "|---|---|---:|---|---:|---:|---:|---:|"]
    for fault, trials in results.items():
        outcomes = collections.Counter(t["outcome"] if t["outcome"] != "error" else f"error ({t['error']})"
                                       for t in trials)
        seconds = [t["seconds"] for t in trials]
        clean = (sum(not t["cache_after_fault"] for t in trials), sum(not t["cache_after_next"] for t in trials))
        lines.append(f"| {fault} | {FAULTS[fault][0]} | {len(trials)} | "
                     f"{', '.join(f'{k} {v}' for k, v in outcomes.items())} | {sum(t['as_expected'] for t in trials)} "
                     f"| {sum(t['next_ok'] for t in trials)} | {clean[0]} / {clean[1]} | "
                     f"{statistics.median(seconds):.2f} / {max(seconds):.2f} |")
    messages = collections.Counter((fault, message_kind(t["message"])) for fault, trials in results.items()
                                   for t in trials if "message" in t)
    lines += ["", "| fault | error message (variable parts folded) | count |", "|---|---|---:|"]
    lines += [f"| {fault} | {text.replace('|', '/')} | {n} |" for (fault, text), n in messages.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--faults", nargs="*", default=list(FAULTS), choices=list(FAULTS))
    parser.add_argument("--skip-waits", action="store_true", help="skip huggingface_hub's retry pauses (as CI does)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    start = time.time()
    results = run(args.repeat, args.faults, args.skip_waits, log=lambda text: print(text, file=sys.stderr))
    headline = (f"{sum(map(len, results.values()))} trials in {time.time() - start:.0f} s "
                f"(retry pauses {'skipped' if args.skip_waits else 'real'})")
    bad = [t for trials in results.values() for t in trials
           if not (t["as_expected"] and t["next_ok"] and not t["cache_after_fault"] and not t["cache_after_next"])]
    return report_and_exit_code(headline, table(results), bad, "UNEXPECTED", most=10)


if __name__ == "__main__":
    raise SystemExit(main())
