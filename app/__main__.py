"""`python -m app [--host H] [--port P] [--share]`: serve the SSM Robustness Lab web app."""
from __future__ import annotations

import argparse
import os
import sys
import threading

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


def torch_threads() -> int:
    """Threads per request: 1 unless SSM_LAB_TORCH_THREADS says otherwise. Requests run side by side (one per
    core) and batch-1 attacks on small models are dominated by thread hand-offs: on a busy 2-core machine PGD ran
    about 10x faster with 1 thread than with 2."""
    raw = os.environ.get("SSM_LAB_TORCH_THREADS", "").strip()
    return max(1, int(raw)) if raw.isdigit() else 1


def _warm_up() -> None:
    """Import the engine while the first page loads, so the first click does not pay for torch's import."""
    try:
        import torch

        torch.set_num_threads(torch_threads())
        import ssm_lab.analysis  # noqa: F401
        import ssm_lab.attacks  # noqa: F401
        import ssm_lab.plots  # noqa: F401
        import ssm_lab.single  # noqa: F401
        from ssm_models import hub  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - the handlers will report the same problem to the user
        print(f"warm-up import failed: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from .limits import LIMITS
    from .ui import CSS, build_demo

    demo = build_demo()
    demo.queue(default_concurrency_limit=LIMITS.concurrency, max_size=LIMITS.queue_size)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, show_error=True, css=CSS,
                max_file_size=LIMITS.upload_bytes, footer_links=["api", "gradio"],
                prevent_thread_lock=True)
    print(f"SSM Robustness Lab on http://{args.host}:{args.port}", flush=True)
    # torch and the engine load only now: importing them beside gradio would delay the first page
    threading.Thread(target=_warm_up, name="warm-up", daemon=True).start()
    demo.block_thread()


if __name__ == "__main__":
    main()
