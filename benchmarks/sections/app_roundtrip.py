"""Section 7: the web app as people meet it: start-up, first page render in chromium, PGD-10 round trips."""
from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from app import opening
from testkit.app_process import free_port, stop, wait_until_serving

from ..harness import Timing, measure_interleaved
from ..results import Row, Target
from .common import REPO, Settings, Stopwatch, new_section

KEY = "app-roundtrip"
TITLE = "The web app: start-up, first page render in chromium, PGD-10 round trip through gradio_client"
START_TARGET_S, RENDER_TARGET_S, ROUNDTRIP_TARGET_S = 10.0, 3.0, 1.0  # from the issue
START_TIMEOUT_S = 120  # a start slower than this is a failure, not a figure
CHROMIUM = "/usr/bin/chromium"  # Debian's: Playwright cannot download its own browsers here
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
ATTACK = dict(source="dataset", dataset=opening.DATASET, index=0, upload=None, sketch=None, attack="PGD (Linf)",
              eps=opening.EPS, steps=10, step_size=0, restarts=1, target="none", seed=0)
APP_UI = "#run-attack"  # the Attack tab's Run button: the page is usable once it shows
# the floor any gradio server pays: one Textbox, started and opened exactly like the app
MINIMAL_APP = ("import sys, gradio as gr\nwith gr.Blocks() as demo:\n    gr.Textbox(elem_id='box')\n"
               "demo.launch(server_name='127.0.0.1', server_port=int(sys.argv[1]))")
MINIMAL_UI = "#box"
# polled on every animation frame; returns the page's clock (ms since navigation start) once true
VISIBLE_JS = ("s => { const e = document.querySelector(s); "
              "return e && e.getClientRects().length ? performance.now() : 0; }")
TEXTS_JS = ("pairs => pairs.every(([s, t]) => (document.querySelector(s)?.innerText || '').includes(t))"
            " ? performance.now() : 0")


@dataclass
class Start:
    """One measured start of a server process."""

    started: float  # perf_counter at process start
    http_s: float  # process start to the first HTTP 200
    http_cpu_s: float  # the server's CPU seconds by then
    http_rss_mb: float
    render_s: float | None = None  # navigation start to the main element visible
    render_cpu_s: float | None = None
    ready_s: float | None = None  # process start to the preselected card and image shown
    ready_cpu_s: float | None = None


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _server_env(settings: Settings) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "SSM_LAB_TORCH_THREADS": str(settings.threads)}
    for name in ("SSM_LAB_HOST", "SSM_LAB_PORT", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        env.pop(name, None)
    return env


@contextlib.contextmanager
def running(command: list[str], env: dict, log_path: Path):
    """Start `command + [port]`, wait for its first HTTP 200; yields (url, process, Start)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(command + [str(port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_serving(proc, url, START_TIMEOUT_S, log_path, interval_s=0.02)
            start = Start(started, time.perf_counter() - started, process_cpu_s(proc.pid), process_rss_mb(proc.pid))
            yield url, proc, start
        finally:
            stop(proc)


def open_page(browser, url: str, proc, start: Start, ui: str, ready: list[tuple[str, str]] | None = None) -> None:
    """Open the page in a fresh tab right away; fill in the render (and ready) figures of `start`."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        cpu_before = process_cpu_s(proc.pid)
        opened = time.perf_counter()
        page.goto(url, wait_until="commit")  # do not wait for `load`: the UI may show before it
        wait = dict(polling="raf", timeout=START_TIMEOUT_S * 1000)
        start.render_s = page.wait_for_function(VISIBLE_JS, arg=ui, **wait).json_value() / 1000
        start.render_cpu_s = process_cpu_s(proc.pid) - cpu_before
        if ready:
            shown_ms = page.wait_for_function(TEXTS_JS, arg=ready, **wait).json_value()
            start.ready_s = opened - start.started + shown_ms / 1000
            start.ready_cpu_s = process_cpu_s(proc.pid)
    finally:
        page.close()


@dataclass
class Trips:
    """Round trips of one kind of client: wall samples with the server's CPU, and the client's own CPU."""

    timing: Timing
    client_cpu_s: float  # median per request


def roundtrips(url: str, proc, warmup: int, repeats: int) -> tuple[dict[str, Trips], str, float]:
    """PGD-10 requests through gradio_client on the preselected checkpoint, in turns from a client as the README
    makes it (it downloads the result files) and one that leaves them on the server; also the model's name and
    the server's RSS after all requests."""
    from gradio_client import Client

    with tempfile.TemporaryDirectory() as downloads:
        clients = {"default": Client(url, verbose=False, download_files=downloads),
                   "no_download": Client(url, verbose=False, download_files=False)}
        model = clients["default"].predict(api_name="/startup")[0]["value"]
        wall = {name: [] for name in clients}
        cpu = {name: [] for name in clients}
        own = {name: [] for name in clients}
        for i in range(warmup + repeats):
            for name in (list(clients) if i % 2 == 0 else list(clients)[::-1]):
                server_before, own_before, began = process_cpu_s(proc.pid), time.process_time(), time.perf_counter()
                _clean, _adv, _delta, summary, *_rest = clients[name].predict(model=model, **ATTACK, api_name="/attack")
                elapsed = time.perf_counter() - began
                server_cpu, own_cpu = process_cpu_s(proc.pid) - server_before, time.process_time() - own_before
                if "PGD (Linf)" not in summary:
                    raise RuntimeError(f"unexpected /attack answer: {summary[:200]!r}")
                if i >= warmup:
                    wall[name].append(elapsed)
                    cpu[name].append(server_cpu)
                    own[name].append(own_cpu)
    trips = {name: Trips(Timing(wall[name], warmup, cpu_samples=cpu[name]), statistics.median(own[name]))
             for name in clients}
    return trips, model, process_rss_mb(proc.pid)


def in_process(model_name: str, repeats: int) -> dict[str, Timing]:
    """The same PGD-10 in this process: the engine call the server makes, and the server's whole handler."""
    from app.handlers import engine_settings, model_x, run_attack
    from app.models import MODELS
    from app.request_types import AttackRequest
    from ssm_lab.single import attack_single

    model = MODELS.get(model_name)
    request = AttackRequest(model=model_name, **ATTACK)
    x, label, _ = model_x(model, request)
    name, params = engine_settings(request, model)
    seed = params.pop("seed")
    return measure_interleaved({"engine": lambda: attack_single(model, x, label, name, seed=seed, **params),
                                "handler": lambda: run_attack(request)}, repeats, memory=False)


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _timing(section, name: str, starts: list[Start], wall: str, cpu: str) -> Timing:
    return section.add_timing(name, Timing([getattr(s, wall) for s in starts], 0,
                                           cpu_samples=[getattr(s, cpu) for s in starts]))


def run(settings: Settings):
    from playwright.sync_api import sync_playwright

    section = new_section(KEY, TITLE, settings)
    starts_n = settings.repeats(3, 1)
    warmup, repeats = (2, 20) if not settings.quick else (1, 2)
    env = _server_env(settings)
    ready = [("#model-card", "trained with"), ("#preview-note", f"test image #{ATTACK['index']}")]
    ours, peers = [], []
    with Stopwatch(section), tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            for i in range(starts_n):
                if not settings.quick:  # the peer only in full runs: the smoke test needs the machinery, not it
                    with running([sys.executable, "-c", MINIMAL_APP], env, Path(tmp) / "minimal.log") as served:
                        open_page(browser, served[0], served[1], served[2], MINIMAL_UI)
                        peers.append(served[2])
                with running([sys.executable, "-m", "app", "--port"], env, Path(tmp) / "app.log") as served:
                    url, proc, start = served
                    open_page(browser, url, proc, start, APP_UI, ready)
                    ours.append(start)
                    if i == starts_n - 1:  # the last server, page closed, serves the round trips
                        trips, model_name, rss_mb = roundtrips(url, proc, warmup, repeats)
        finally:
            browser.close()
        local = in_process(model_name, repeats)
    t_http, t_render = _timing(section, "start_http", ours, "http_s", "http_cpu_s"), \
        _timing(section, "first_render", ours, "render_s", "render_cpu_s")
    t_ready = _timing(section, "page_ready", ours, "ready_s", "ready_cpu_s")
    readme, bare = (section.add_timing(f"roundtrip_{k}", v.timing) for k, v in trips.items())
    t_engine, t_handler = (section.add_timing(f"in_process_{k}", v) for k, v in local.items())
    peer_http = _median(p.http_s for p in peers)
    peer_render = _median(p.render_s for p in peers)
    starts_text = f"{starts_n} start(s)" + (", alternating with the peer's" if peers else "")
    section.rows += [
        Row(key="start-http", what="`python -m app`: process start to the first HTTP 200", unit="s",
            ours=t_http.median, ours_cpu=t_http.cpu_median, peer=peer_http,
            peer_name="a minimal gradio app (one Textbox)" if peers else "", ratio_kind="overhead" if peers else None,
            targets=[Target("ours", "<=", START_TARGET_S, "s")], repeats=starts_text + " (median)",
            memory=f"app RSS {_median(s.http_rss_mb for s in ours):.0f} MB when it answers"),
        Row(key="first-render", what="first page render in headless chromium: navigation start to the Attack "
            "tab's Run button visible, opened as soon as the server answers", unit="s", ours=t_render.median,
            ours_cpu=t_render.cpu_median, peer=peer_render, peer_name="the same for the minimal app's Textbox"
            if peers else "", ratio_kind="overhead" if peers else None,
            targets=[Target("ours", "<=", RENDER_TARGET_S, "s")], repeats=starts_text + " (median)"),
        Row(key="page-ready", what="process start to the page showing the preselected checkpoint's card and its "
            "first test image (page opened as soon as the server answers)", unit="s", ours=t_ready.median,
            ours_cpu=t_ready.cpu_median, stretch=[Target("ours", "<=", START_TARGET_S, "s")],
            repeats=starts_text + " (median)"),
        Row(key="pgd10-vs-engine", what="PGD-10 on one MNIST test image through gradio_client as the README "
            "makes it (`/attack`, preselected checkpoint, result files downloaded) vs the engine's call in-process",
            unit="s", ours=readme.median, ours_cpu=readme.cpu_median, peer=t_engine.median,
            peer_name="`ssm_lab.single.attack_single` in-process", ratio_kind="overhead",
            targets=[Target("ours", "<=", ROUNDTRIP_TARGET_S, "s")],
            repeats=f"{repeats} after {warmup} warm-up, in turns with the next row's client; peer {repeats}",
            memory=f"app RSS {rss_mb:.0f} MB after {2 * (warmup + repeats)} requests"),
        Row(key="pgd10-vs-handler", what="the same round trip vs the server's whole `/attack` handler in-process",
            unit="s", ours=readme.median, ours_cpu=readme.cpu_median, peer=t_handler.median,
            peer_name="`app.handlers.run_attack` in-process", ratio_kind="overhead", repeats=f"{repeats} each"),
        Row(key="pgd10-no-download", what="the same with `Client(url, download_files=False)` (result files left "
            "on the server) vs the handler in-process", unit="s", ours=bare.median, ours_cpu=bare.cpu_median,
            peer=t_handler.median, peer_name="`app.handlers.run_attack` in-process", ratio_kind="overhead",
            repeats=f"{repeats} each"),
    ]
    section.notes += _notes(settings, model_name, peers, trips, t_handler)
    return section


def _notes(settings: Settings, model_name: str, peers: list, trips: dict[str, Trips], t_handler: Timing) -> list[str]:
    readme, bare = trips["default"], trips["no_download"]
    notes = [
        f"Each start runs `python -m app --port <free>` (`SSM_LAB_TORCH_THREADS={settings.threads}`, "
        "`HF_HUB_OFFLINE=1`, the shipped `checkpoints/`) and polls `GET /` every 20 ms. The CPU column is the "
        "server process's own CPU seconds (user + system from /proc) up to that point, or per request: on this "
        "shared machine wall time also counts the other jobs' turns on the cores, CPU time does not.",
        "First render: Debian's chromium through Playwright, already running, opens the page in a new tab as soon as "
        "the server answers; the figure is the page's own clock (`performance.now()`, from navigation start) on "
        f"the first animation frame where `{APP_UI}` is laid out. Page ready: on the same page, the frame where "
        "the preselected checkpoint's card says \"trained with\" and the preview says which test image it shows, "
        "counted from process start; its CPU figure is the server's total by then.",
        f"Round trip: `gradio_client.Client(url).predict(model=<the /startup preselection, {model_name}>, "
        f"source='dataset', dataset='{ATTACK['dataset']}', index=0, attack='PGD (Linf)', eps='{ATTACK['eps']}', "
        "steps=10, ..., "
        "api_name='/attack')` as in the README: the client downloads six result files per request (three images, "
        "the adversarial PNG and NPY, the run card); the four plots come inline. Per request (medians): "
        f"{readme.timing.median:.3f} s wall, {readme.timing.cpu_median:.3f} s of the server's CPU, "
        f"{readme.client_cpu_s:.3f} s of the client's. gradio_client opens a new httpx client for each download, "
        "and with certificate checks on (even for plain http) each one loads the CA bundle, tens of ms of CPU; "
        f"with `download_files=False`: {bare.timing.median:.3f} s wall, {bare.timing.cpu_median:.3f} s server "
        f"CPU, {bare.client_cpu_s:.3f} s client CPU. The rest of the wall time is transport and waiting for a "
        "core. Both clients take turns, request by request.",
        f"Peers in-process on the same checkpoint and image: the engine call the handler makes (`attack_single`: "
        f"clean, PGD-10, adversarial and 8-bit predictions) and the whole handler ({t_handler.median:.3f} s: that "
        "call, the error-scaling probes, four plotly figures, PNG/NPY/run-card files). Round trip over handler is "
        "what gradio and the client add.",
    ]
    if peers:
        notes.append("Start-up peer: a minimal gradio Blocks app (one Textbox) launched with the same command line "
                     "shape and environment; it pays gradio's rewriting of its own .pyi stubs on import, which the "
                     "app skips (`app/__main__.py`), so it is a floor for gradio as installed, not for our code.")
    else:
        notes.append("Quick mode: one start, no minimal-gradio peer, two timed round trips.")
    return notes
