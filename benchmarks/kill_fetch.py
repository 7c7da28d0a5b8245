"""Kill during fetches: a Hub model download (through a slow link) and `ssm-lab import-reference`, then check files."""
from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

from testkit.hub_server import HubServer
from testkit.reference_states import s4_state

from .hub_faults import cache_problems
from .kill_files import file_differences, folder_problems
from .kill_runs import MODES, child_env, cli_command, kill_in_write, run, run_and_kill

REPO = "org/model"
BIG = {"d_model": 96, "n_layers": 2, "d_state": 16, "image_size": 28, "num_classes": 10}  # 98 KB of weights
LOAD = "import sys; from ssm_models.hub import load_model; load_model(sys.argv[1])"


class SlowLink:
    """A TCP proxy that relays each response at `bytes_per_s`, so a download lasts long enough to be killed in."""

    def __init__(self, upstream_port: int, bytes_per_s: int = 400_000):
        self.upstream = ("127.0.0.1", upstream_port)
        self.chunk, self.pause, self.bytes_per_s = 8192, 8192 / bytes_per_s, bytes_per_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.open = False
        self.listener.close()

    def _accept(self) -> None:
        while self.open:
            try:
                client, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        try:
            with client, socket.create_connection(self.upstream) as upstream:
                client.settimeout(None)
                request = b""
                while b"\r\n\r\n" not in request:
                    part = client.recv(65536)
                    if not part:
                        return
                    request += part
                upstream.sendall(request)
                while part := upstream.recv(self.chunk):
                    client.sendall(part)
                    time.sleep(self.pause)
        except OSError:  # the killed client went away mid-response
            return


def hub_env(home: Path, endpoint: str) -> dict:
    return child_env(HF_HOME=str(home), HF_HUB_CACHE=str(home / "hub"), HF_ENDPOINT=endpoint, HF_HUB_OFFLINE="0",
                     HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_XET="1",
                     HF_HUB_DISABLE_IMPLICIT_TOKEN="1")


def download_trials(work: Path, trials: int, rng, log) -> list[dict]:
    import torch

    from ssm_models import create_model
    from ssm_models.hub import save_pretrained

    torch.manual_seed(0)
    root = work / "hub-root"
    save_pretrained(create_model("s4", **BIG), root / REPO)
    rows = []
    with HubServer(root) as hub:
        link = SlowLink(hub.port)
        command = [sys.executable, "-c", LOAD, REPO]
        try:
            base = run(command, hub_env(work / "hf-baseline", link.url))
            if base.returncode != 0:
                raise RuntimeError(f"uninterrupted download failed: {base.stderr}")
            transfer_s = (root / REPO / "model.safetensors").stat().st_size / link.bytes_per_s
            log(f"baseline download: {base.seconds:.1f} s, of which about {transfer_s:.1f} s transfer")
            for trial in range(trials):
                home = work / f"hf-{trial}"
                env = hub_env(home, link.url)
                # a random moment of the transfer: huggingface_hub's partial file exists while bytes arrive
                outcome = run_and_kill(command, env, when=lambda h=home: any(h.rglob("*.incomplete")),
                                       within_s=transfer_s, rng=rng)
                partial = [p for p in cache_problems(home / "hub") if p.startswith("partial file")]
                bad = [p for p in cache_problems(home / "hub") if not p.startswith("partial file")]
                again = run(command, env)
                rows.append({"what": "model download (load_model)", "mode": "transfer", "killed": outcome.killed,
                             "left_partial": len(partial), "unverified": bad, "next_rc": again.returncode,
                             "after_next": cache_problems(home / "hub")})
                log(f"download {trial}: {rows[-1]}")
        finally:
            link.close()
    return rows


def import_trials(work: Path, trials: int, rng, log) -> list[dict]:
    import torch

    source = work / "reference.pt"
    torch.save(s4_state(0, "mnist"), source)

    def command(out: Path, slow: bool) -> list[str]:
        return cli_command(["import-reference", str(source), "--arch", "s4", "--dataset", "mnist", "--out", str(out)],
                           slow)

    env = child_env()
    base = run(command(work / "import-baseline", False), env)
    if base.returncode != 0:
        raise RuntimeError(f"uninterrupted import failed: {base.stderr}")
    rows = []
    for trial in range(trials):
        out, mode = work / f"import-{trial}", MODES[trial % len(MODES)]
        if mode == "write":
            outcome = kill_in_write(lambda slow, o=out: command(o, slow), env, [out], rng)
        else:
            outcome = run_and_kill(command(out, False), env, after_s=rng.uniform(0.5, base.seconds), rng=rng)
        problems, temporaries = folder_problems(out)
        again = run(command(out, False), env)
        rows.append({"what": "ssm-lab import-reference", "mode": mode, "killed": outcome.killed,
                     "in_write": outcome.in_write, "left_partial": temporaries, "unverified": problems,
                     "next_rc": again.returncode,
                     "after_next": file_differences(work / "import-baseline", out) if again.returncode == 0 else
                     [again.stderr[-300:]]})
        log(f"import {trial}: {rows[-1]}")
    return rows


def fetch_trials(work: Path, trials: int, rng, log) -> list[dict]:
    return (download_trials(work, trials, rng, log) + data_trials(work, trials, rng, log)
            + import_trials(work, trials, rng, log))


def fetch_passed(row: dict) -> bool:
    return not row["unverified"] and row["next_rc"] == 0 and not row["after_next"]


def fetch_table(rows: list[dict]) -> str:
    lines = ["| fetch | kill moment | trials | killed | killed inside a write | left a partial file (never served) | "
             "left a file that fails to verify or load | next run complete and equal |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for key in sorted({(r["what"], r["mode"]) for r in rows}):
        sel = [r for r in rows if (r["what"], r["mode"]) == key]
        lines.append(f"| {key[0]} | {key[1]} | {len(sel)} | {sum(r['killed'] for r in sel)} | "
                     f"{sum(r.get('in_write', False) for r in sel)} | {sum(r['left_partial'] > 0 for r in sel)} | "
                     f"{sum(bool(r['unverified']) for r in sel)} | "
                     f"{sum(r['next_rc'] == 0 and not r['after_next'] for r in sel)} |")
    return "\n".join(lines)


# ----- a Hub data set: the MNIST test split's Parquet file, served by the local Hub --------------------------------
FETCH_SPLIT = ("import hashlib, sys\n"
               "from ssm_lab.datasets.hub import fetch_hub_split\n"
               "from ssm_lab.datasets.info import DATASETS\n"
               "images, labels = fetch_hub_split(DATASETS['mnist'], 'test', sys.argv[1])\n"
               "print(hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest())\n")


def mnist_test_parquet() -> bytes:
    """The real MNIST test split (from the developer data folder) as the Hub's Parquet file holds it: PNG bytes."""
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from ssm_lab.data import load_dataset
    from ssm_lab.datasets.info import DATASETS

    test = load_dataset("mnist", "test")
    rows = np.arange(DATASETS["mnist"].hub.rows["test"]) % len(test.labels)  # the bundled sample, where it is all
    pngs = []
    for pixels in test.images[rows, 0]:  # (28, 28) each
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    column = pa.array([{"bytes": data, "path": f"{i}.png"} for i, data in enumerate(pngs)],
                      type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    buffer = io.BytesIO()
    pq.write_table(pa.table({"image": column, "label": pa.array(test.labels[rows], type=pa.int64())}), buffer)
    return buffer.getvalue()


def data_trials(work: Path, trials: int, rng, log) -> list[dict]:
    from ssm_lab.datasets.info import DATASETS

    from .kill_runs import python_command

    root = work / "data-hub-root"
    with HubServer(root) as hub:
        hub.add_file("ylecun/mnist", DATASETS["mnist"].hub.files["test"], mnist_test_parquet(), repo_type="dataset")
        commit = hub.commit_of("ylecun/mnist", repo_type="dataset")
        link = SlowLink(hub.port, bytes_per_s=1_000_000)
        try:
            def env_for(home: Path) -> dict:
                env = hub_env(home, link.url)
                env.pop("SSM_LAB_DATA", None)
                return {**env, "SSM_LAB_CACHE": str(home / "arrays"), "SSM_LAB_OFFLINE": "0"}

            base = run(python_command(FETCH_SPLIT, [commit]), env_for(work / "data-baseline"))
            if base.returncode != 0:
                raise RuntimeError(f"uninterrupted data fetch failed: {base.stderr}")
            log(f"baseline data fetch: {base.seconds:.1f} s")
            rows = []
            for trial in range(trials):
                home, mode = work / f"data-{trial}", ("transfer", "write")[trial % 2]
                env = env_for(home)
                if mode == "transfer":
                    outcome = run_and_kill(python_command(FETCH_SPLIT, [commit]), env, rng=rng, within_s=2.0,
                                           when=lambda h=home: any(h.rglob("*.incomplete")))
                else:  # inside the array cache's atomic writes, after the download and decoding
                    outcome = kill_in_write(lambda slow: python_command(FETCH_SPLIT, [commit], slow), env,
                                            [home / "arrays" / "hub" / "mnist"], rng)
                bad = [p for p in cache_problems(home / "hub") if not p.startswith("partial file")]
                partial = len(cache_problems(home / "hub")) - len(bad)
                problems, temporaries = folder_problems(home / "arrays")
                again = run(python_command(FETCH_SPLIT, [commit]), env)
                same = again.returncode == 0 and again.stdout == base.stdout
                rows.append({"what": "Hub data set (MNIST test Parquet)", "mode": mode, "killed": outcome.killed,
                             "in_write": outcome.in_write, "left_partial": partial + temporaries,
                             "unverified": bad + problems, "next_rc": again.returncode,
                             "after_next": cache_problems(home / "hub") + (
                                 [] if same else [f"arrays differ or failed: {again.stderr[-300:]}"]),
                             # the array cache's temporaries are not ours to clear: reported, not failed
                             "array_temporaries_after_next": folder_problems(home / "arrays")[1]})
                log(f"data {trial}: {rows[-1]}")
        finally:
            link.close()
    return rows
