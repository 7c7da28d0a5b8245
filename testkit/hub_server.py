"""A local stand-in for the Hugging Face Hub's file endpoints, with fault injection, for tests and offline demos."""
from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import re
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from testkit.hub_uploads import handle_post

_RESOLVE = re.compile(r"^/(?:(?P<kind>datasets)/)?(?P<org>[^/]+)/(?P<name>[^/]+)/resolve/(?P<revision>[^/]+)/"
                      r"(?P<filename>.+)$")
DATASETS_DIR = "datasets"  # data set repos live under <root>/datasets/<org>/<name>, as their URLs do
_COMMIT = re.compile(r"[0-9a-f]{40}")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
FAULT_KINDS = ("status", "drop", "corrupt")


@dataclass
class Fault:
    """`status`: answer `status` instead; `drop`: close the connection halfway through the body;
    `corrupt`: serve different bytes of the same length (headers still describe the real file)."""

    kind: str
    filename: str | None = None  # None: any file
    repo_id: str | None = None
    method: str | None = None  # "GET", "HEAD" or None for both (drop/corrupt only affect bodies)
    times: int | None = 1  # None: every time
    status: int = 500

    def matches(self, method: str, repo_id: str, filename: str) -> bool:
        if self.kind in ("drop", "corrupt") and method != "GET":
            return False
        return ((self.method in (None, method)) and (self.repo_id in (None, repo_id))
                and (self.filename in (None, filename)) and (self.times is None or self.times > 0))


class HubServer:
    """Threaded HTTP server on 127.0.0.1; `url` is the value for HF_ENDPOINT. Use as a context manager.

    Serves `<root>/<org>/<name>/<file>` as revision "main" and `<root>/<org>/<name>@<rev>/<file>` as `<rev>`, at
    `/{org}/{name}/resolve/{revision}/{filename}`; each revision's commit sha is derived from its files. Data set
    repos (repo_type="dataset") are the same under `<root>/datasets/`, at `/datasets/{org}/{name}/resolve/...`.
    As a script: `python -m testkit.hub_server ROOT --port 8808`, then `export HF_ENDPOINT=http://127.0.0.1:8808`."""

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int = 0):
        self.root = Path(root)
        self.host, self.port = host, port
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self._lock = threading.Lock()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> HubServer:
        self._httpd = http.server.ThreadingHTTPServer((self.host, self.port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self  # type: ignore[attr-defined]
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----- content ---------------------------------------------------------------------------
    def add_file(self, repo_id: str, filename: str, data: bytes | str, revision: str = "main",
                 repo_type: str = "model") -> Path:
        """Write a file into the served tree (revision "main" or a named branch/tag directory)."""
        folder = self._tree(repo_type) / (repo_id if revision == "main" else f"{repo_id}@{revision}")
        path = folder / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def commit_of(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> str:
        found = self._revision_dir(repo_id, revision, repo_type)
        if not isinstance(found, Path):
            raise KeyError(f"{repo_id}@{revision}: {found}")
        return _commit(found)

    def inject(self, kind: str, **options) -> Fault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}")
        fault = Fault(kind, **options)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def _take_fault(self, method: str, repo_id: str, filename: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, repo_id, filename):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _tree(self, repo_type: str) -> Path:
        if repo_type not in ("model", "dataset"):
            raise ValueError(f"repo_type must be 'model' or 'dataset', got {repo_type!r}")
        return self.root / DATASETS_DIR if repo_type == "dataset" else self.root

    def _revision_dir(self, repo_id: str, revision: str, repo_type: str = "model") -> Path | str:
        """The directory serving `repo_id@revision`, or the Hub error code explaining why there is none."""
        org, name = repo_id.split("/")
        org_dir = self._tree(repo_type) / org
        folders = sorted(p for p in org_dir.glob(f"{glob_escape(name)}*")
                         if p.is_dir() and (p.name == name or p.name.startswith(name + "@")))
        if not folders:
            return "RepoNotFound"
        wanted = name if revision == "main" else f"{name}@{revision}"
        for folder in folders:
            if folder.name == wanted or (_COMMIT.fullmatch(revision) and _commit(folder) == revision):
                return folder
        return "RevisionNotFound"


class HubEnvironment:
    """Points huggingface_hub at an endpoint with a private cache. huggingface_hub reads HF_ENDPOINT,
    HF_HUB_OFFLINE and the cache paths into `huggingface_hub.constants` at import, so both the environment
    and those constants are patched (through pytest's `monkeypatch`, which undoes it all). Starts offline."""

    DEAD_ENDPOINT = "http://127.0.0.1:9"  # nothing listens there: a forgotten network call fails, never leaks

    def __init__(self, monkeypatch, home: str | Path):
        from huggingface_hub import constants
        from huggingface_hub.utils import tqdm as hf_tqdm

        self._patch, self._constants = monkeypatch, constants
        self.home = Path(home)
        self.cache_dir = self.home / "hub"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        settings = {"HF_HOME": str(self.home), "HF_HUB_CACHE": str(self.cache_dir), "HF_HUB_DISABLE_TELEMETRY": True,
                    "HF_HUB_DISABLE_PROGRESS_BARS": True, "HF_HUB_DISABLE_XET": True,
                    "HF_HUB_DISABLE_IMPLICIT_TOKEN": True}
        for key, value in settings.items():
            monkeypatch.setenv(key, "1" if value is True else value)
            monkeypatch.setattr(constants, key, value, raising=False)
        monkeypatch.setattr(hf_tqdm, "HF_HUB_DISABLE_PROGRESS_BARS", True, raising=False)
        self.set_endpoint(self.DEAD_ENDPOINT)
        self.set_offline(True)

    def set_endpoint(self, url: str) -> None:
        url = url.rstrip("/")
        self._patch.setenv("HF_ENDPOINT", url)
        self._patch.setattr(self._constants, "ENDPOINT", url)
        template = url + "/{repo_id}/resolve/{revision}/{filename}"
        self._patch.setattr(self._constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)

    def set_offline(self, offline: bool = True) -> None:
        self._patch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
        self._patch.setattr(self._constants, "HF_HUB_OFFLINE", bool(offline))


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _commit(folder: Path) -> str:
    """A 40-hex commit id fixed by the folder's content (name + sha256 of every file)."""
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LocalHub/1.0"

    def log_message(self, *args) -> None:  # keep test output clean; `HubServer.requests` has the log
        pass

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        handle_post(self)

    def _reply(self, method: str, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.server.hub.requests.append((method, self.path, status))
        self.send_response(status)
        for key, value in {**headers, "Content-Length": headers.get("Content-Length", str(len(body))),
                           "Connection": "close"}.items():
            self.send_header(key, value)
        self.end_headers()
        self.close_connection = True  # no keep-alive: a stopped server must not keep answering old connections
        if method != "HEAD" and body:
            self.wfile.write(body)

    def _error(self, method: str, status: int, code: str | None, message: str, commit: str | None = None) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        if commit:
            headers["X-Repo-Commit"] = commit
        self._reply(method, status, headers, json.dumps({"error": message}).encode())

    def _serve(self, method: str) -> None:
        hub: HubServer = self.server.hub
        match = _RESOLVE.match(urllib.parse.urlsplit(self.path).path)
        if match is None:
            return self._error(method, 404, None, "not served by the local hub")
        repo_id = f"{urllib.parse.unquote(match['org'])}/{urllib.parse.unquote(match['name'])}"
        revision, filename = urllib.parse.unquote(match["revision"]), urllib.parse.unquote(match["filename"])
        fault = hub._take_fault(method, repo_id, filename)
        if fault is not None and fault.kind == "status":
            return self._error(method, fault.status, None, "injected failure")
        repo_type = "dataset" if match["kind"] else "model"
        if "/" in revision or ".." in repo_id or (repo_type == "model" and match["org"] == DATASETS_DIR):
            folder = "RepoNotFound"
        else:
            folder = hub._revision_dir(repo_id, revision, repo_type)
        if not isinstance(folder, Path):
            return self._error(method, 404, folder, f"{folder}: {repo_id}@{revision}")
        commit = _commit(folder)
        path = (folder / filename).resolve()
        if folder.resolve() not in path.parents or not path.is_file():
            return self._error(method, 404, "EntryNotFound", f"{filename} not in {repo_id}", commit)
        data = path.read_bytes()
        headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        status, body = 200, data
        requested = self.headers.get("Range")
        if requested:
            span = _RANGE.match(requested.strip())
            start = int(span[1]) if span and span[1] else None
            end = int(span[2]) if span and span[2] else len(data) - 1
            if span is None or start is None or start >= len(data) or end < start:
                return self._error(method, 416, None, "bad range")
            end = min(end, len(data) - 1)
            status, body = 206, data[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        if fault is not None and fault.kind == "corrupt":
            body = bytes(b ^ 0xFF for b in body)
        if fault is not None and fault.kind == "drop":  # promise the whole body, send half, hang up
            headers["Content-Length"] = str(len(body))
            body = body[: len(body) // 2]
        self._reply(method, status, headers, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="directory laid out as <org>/<name>/<file>")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8808)
    args = parser.parse_args()
    server = HubServer(args.root, args.host, args.port).start()
    print(f"serving {args.root} at {server.url}  (export HF_ENDPOINT={server.url})", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
