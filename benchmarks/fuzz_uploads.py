"""Upload fuzzing of the image path: `python -m benchmarks.fuzz_uploads [--count N]` runs N generated files."""
from __future__ import annotations

import argparse
import collections
import re
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from testkit.upload_corpus import CATEGORIES, VALID_CATEGORIES, make_case


def _reset_peak_rss() -> bool:
    """Linux resets VmHWM when 5 is written to clear_refs, which turns the peak RSS into a per-request figure."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def run_one(data: bytes, channels: int, size: int, tmp: Path) -> dict:
    """Run one upload through the app's handler; the outcome, seconds and peak RSS growth in MiB."""
    from app.inputs import upload_image
    from ssm_lab.images import ImageInputError

    path = tmp / "upload.png"  # every file is named .png whatever it holds, as a disguised upload would be
    path.write_bytes(data)
    resettable = _reset_peak_rss()
    before = _rss_kib("VmRSS")
    t0 = time.perf_counter()
    try:
        arr = upload_image(str(path), channels, size)
        ok = arr.dtype == np.uint8 and arr.shape == (channels, size, size)
        outcome = {"result": "ok" if ok else f"CRASH bad array {arr.dtype} {arr.shape}"}
    except (ImageInputError, ValueError) as exc:  # LimitError is a ValueError too
        message = str(exc)
        outcome = {"result": "refused" if message.strip() else "CRASH empty message", "message": message}
    except Exception as exc:  # noqa: BLE001 - anything else is the crash this run is looking for
        outcome = {"result": f"CRASH {type(exc).__name__}: {exc}"}
    outcome["seconds"] = time.perf_counter() - t0
    outcome["peak_mib"] = max(0, _rss_kib("VmHWM") - before) / 1024 if resettable else float("nan")
    return outcome


def message_kind(message: str) -> str:
    """A rejection message without its variable details (sizes, PIL's parenthesised reason, numbers)."""
    text = re.sub(r"\(.*\)", "(...)", message)
    return re.sub(r"\d[\d,.x]*", "N", text)


def run(count: int, seed: int = 0) -> dict:
    per_category = collections.Counter()
    results = collections.Counter()
    messages = collections.Counter()
    crashes = []
    worst = {"seconds": 0.0, "slowest": "", "peak_mib": 0.0, "largest": ""}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(count):
            category = CATEGORIES[i % len(CATEGORIES)]
            kind, data = make_case(category, seed * 1_000_003 + i)
            channels, size = (1, 28) if i % 2 else (3, 32)
            out = run_one(data, channels, size, Path(tmp))
            result = out["result"]
            if category in VALID_CATEGORIES and result != "ok":
                result = f"CRASH valid file refused: {out.get('message', result)}"
            per_category[category] += 1
            results[(category, result.split(":")[0] if result.startswith("CRASH") else result)] += 1
            if result.startswith("CRASH"):
                crashes.append((category, kind, i, result))
            if "message" in out:
                messages[message_kind(out["message"])] += 1
            if out["seconds"] > worst["seconds"]:
                worst.update(seconds=out["seconds"], slowest=f"{category}/{kind} #{i}")
            if out["peak_mib"] > worst["peak_mib"]:  # NaN (no per-request peak on this OS) never compares greater
                worst.update(peak_mib=out["peak_mib"], largest=f"{category}/{kind} #{i}")
    return {"count": count, "per_category": per_category, "results": results, "messages": messages,
            "crashes": crashes, "worst": worst}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # PIL warns about every corrupt EXIF block; the outcomes are what count here
    t0 = time.time()
    report = run(args.count, args.seed)
    print(f"{report['count']} generated uploads in {time.time() - t0:.0f} s")
    print("per category (ok / refused / crash):")
    for category in CATEGORIES:
        counts = {r: n for (c, r), n in report["results"].items() if c == category}
        crash = sum(n for r, n in counts.items() if r.startswith("CRASH"))
        print(f"  {category:10s} {report['per_category'][category]:5d}: ok {counts.get('ok', 0)}, "
              f"refused {counts.get('refused', 0)}, crashes {crash}")
    print(f"crashes: {len(report['crashes'])}")
    for crash in report["crashes"][:20]:
        print("  ", crash)
    print("rejection messages:")
    for text, n in report["messages"].most_common():
        print(f"  {n:5d}  {text}")
    worst = report["worst"]
    print(f"max seconds per request: {worst['seconds']:.3f} ({worst['slowest']})")
    print(f"max peak RSS growth per request: {worst['peak_mib']:.1f} MiB ({worst['largest']})")
    return 1 if report["crashes"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
