"""`python -m app [--host H] [--port P] [--share]`: serve the SSM Robustness Lab web app."""
from __future__ import annotations

import argparse
import os
import sys
import threading

from ssm_lab.allocator import keep_freed_memory
from ssm_lab.threads import torch_threads
from ssm_models.errors import UserError

from .gradio_compat import skip_gradio_stub_writing

TRUE = ("1", "true", "yes", "on")


def _env(*names: str, default: str | None = None) -> str | None:
    for name in names:
        if os.environ.get(name, "").strip():
            return os.environ[name].strip()
    return default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags win over SSM_LAB_HOST / SSM_LAB_PORT / SSM_LAB_SHARE, which win over GRADIO_SERVER_NAME / _PORT."""
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument("--host", default=_env("SSM_LAB_HOST", "GRADIO_SERVER_NAME", default="127.0.0.1"),
                        help="interface to listen on (default 127.0.0.1; 0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=int(_env("SSM_LAB_PORT", "GRADIO_SERVER_PORT", default="7860")),
                        help="port (default 7860)")
    parser.add_argument("--share", action="store_true",
                        default=(_env("SSM_LAB_SHARE", default="") or "").lower() in TRUE,
                        help="also open a temporary public gradio.live link")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be between 1 and 65535, got {args.port}")
    return args


def prepare_process() -> None:
    """Before gradio and torch are imported: torch's thread count, gradio's telemetry, gradio's stub writing."""
    # torch loads later (first request or warm-up), not here, where it would delay the first page by seconds;
    # its OpenMP pool takes its size from this variable when it loads
    os.environ["OMP_NUM_THREADS"] = str(torch_threads())
    # gradio's usage telemetry is opt-in here (as in the Dockerfile): no calls home, and a second less start-up
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    skip_gradio_stub_writing()
    keep_freed_memory()  # ctypes only: torch is not loaded by it


WARM_UP_AFTER_S = 5.0


def _warm_up() -> None:
    """Import the engine, load the preselected checkpoint and decode its first test image, which is what the
    page asks for first, unless a page arrives within WARM_UP_AFTER_S: its own requests then do that work, and a
    warm-up running beside them would only take the GIL from the page while it is being served."""
    from . import handlers

    if handlers.CLIENT_ARRIVED.wait(WARM_UP_AFTER_S):
        return
    try:
        import ssm_lab.analysis  # noqa: F401
        import ssm_lab.attacks  # noqa: F401
        import ssm_lab.plots  # noqa: F401
        import ssm_lab.single  # noqa: F401

        from .models import default_checkpoint
        from .request_types import PreviewRequest

        model = default_checkpoint()
        if model:
            dataset = handlers.select_model(model).dataset
            handlers.preview(PreviewRequest(model=model, source="dataset", dataset=dataset, index=0))
    except Exception as exc:  # noqa: BLE001 - the handlers report the same problem to the user when asked
        print(f"warm-up stopped early: {type(exc).__name__}: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        prepare_process()
    except UserError as exc:  # a bad SSM_LAB_TORCH_THREADS: say so as argparse would, not with a traceback
        print(f"python -m app: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    from .limits import LIMITS
    from .ui import CSS, build_demo

    demo = build_demo()
    demo.queue(default_concurrency_limit=LIMITS.concurrency, max_size=LIMITS.queue_size)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, show_error=True, css=CSS,
                max_file_size=LIMITS.upload_bytes, footer_links=["api", "gradio"],
                prevent_thread_lock=True)
    print(f"SSM Robustness Lab on http://{args.host}:{args.port}", flush=True)
    threading.Thread(target=_warm_up, name="warm-up", daemon=True).start()
    demo.block_thread()


if __name__ == "__main__":
    main()
