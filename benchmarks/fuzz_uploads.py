"""Upload fuzzing of the image path: `python -m benchmarks.fuzz_uploads [--count N]` runs N generated files."""
from __future__ import annotations

import argparse
import collections
import io
import re
import struct
import tempfile
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")
MODES = ("L", "RGB", "RGBA", "P", "1", "LA")
# categories whose files are well-formed images: they must decode, never be refused
VALID_CATEGORIES = ("valid", "tiny", "special")
CATEGORIES = ("valid", "tiny", "special", "truncated", "bitflip", "header", "bomb", "disguised", "random")
BOMB_SIDES = (20_000, 40_000, 65_535)


def _save(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG" and img.mode not in ("L", "RGB", "CMYK"):
        img = img.convert("RGB")
    if fmt == "WEBP" and img.mode not in ("RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in img.mode else "RGB")
    if fmt == "BMP" and img.mode in ("LA", "RGBA"):
        img = img.convert("RGB")
    if fmt == "GIF" and img.mode in ("LA", "RGBA"):
        img = img.convert("P")
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def random_image(rng: np.random.Generator, side_max: int = 48) -> tuple[str, bytes]:
    """A well-formed image of a random format, mode and size."""
    fmt = str(rng.choice(FORMATS))
    mode = str(rng.choice(MODES))
    w, h = (int(v) for v in rng.integers(1, side_max + 1, size=2))
    pixels = rng.integers(0, 256, size=(h, w, 4), dtype=np.uint8)  # (H, W, 4)
    img = Image.fromarray(pixels, mode="RGBA").convert(mode)
    return fmt, _save(img, fmt)


def special_image(rng: np.random.Generator) -> tuple[str, bytes]:
    """The awkward but legitimate files: CMYK JPEG, 16-bit PNG, palette+alpha, animation, EXIF rotation, float TIFF."""
    kind = int(rng.integers(0, 8))
    w, h = (int(v) for v in rng.integers(1, 40, size=2))
    rgb = Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), mode="RGB")  # (H, W, 3)
    if kind == 0:
        return "cmyk-jpeg", _save(rgb.convert("CMYK"), "JPEG")
    if kind == 1:
        deep = rng.integers(0, 65536, size=(h, w), dtype=np.uint16)  # (H, W)
        return "png16", _save(Image.fromarray(deep), "PNG")  # uint16 -> mode I;16
    if kind == 2:
        pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        return "palette-alpha-png", _save(pal, "PNG", transparency=int(rng.integers(0, 16)))
    if kind == 3:
        frames = [rgb.rotate(90 * i).convert("P") for i in range(int(rng.integers(2, 5)))]
        buf = io.BytesIO()
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
        return "animated-gif", buf.getvalue()
    if kind == 4:
        exif = Image.Exif()
        exif[0x0112] = int(rng.integers(1, 9))  # Orientation
        return "exif-jpeg", _save(rgb, "JPEG", exif=exif.tobytes())
    if kind == 5:
        floats = rng.normal(size=(h, w)).astype(np.float32)  # (H, W)
        return "float-tiff", _save(Image.fromarray(floats), "TIFF")
    if kind == 6:
        return "rgba-webp", _save(rgb.convert("RGBA"), "WEBP")
    return "la-png", _save(rgb.convert("LA"), "PNG")


def png_bomb(width: int, height: int) -> bytes:
    """A small PNG whose IHDR claims width x height (CRC recomputed, so only the size check can stop it)."""
    data = bytearray(_save(Image.new("L", (1, 1)), "PNG"))
    ihdr = 8 + 8  # signature, then chunk length + type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])) & 0xFFFFFFFF
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def gif_bomb(width: int, height: int) -> bytes:
    """A GIF whose logical screen and first image descriptor claim width x height."""
    data = bytearray(_save(Image.new("P", (1, 1)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    desc = data.index(b",")  # image descriptor: ',' left top width height
    data[desc + 5:desc + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def bmp_bomb(width: int, height: int) -> bytes:
    data = bytearray(_save(Image.new("RGB", (1, 1)), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def jpeg_bomb(width: int, height: int) -> bytes:
    data = bytearray(_save(Image.new("RGB", (8, 8)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


BOMBS = {"png": png_bomb, "gif": gif_bomb, "bmp": bmp_bomb, "jpeg": jpeg_bomb}

DISGUISES = {
    "text": b"hello, this is not an image\n" * 4,
    "pdf": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
    "html": b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>",
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="20000" height="20000"><rect/></svg>',
    "png-magic-only": b"\x89PNG\r\n\x1a\n",
    "empty": b"",
}


def _zip_bytes() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("image.png", b"x" * 100)
    return buf.getvalue()


def make_case(category: str, seed: int) -> tuple[str, bytes]:
    """(sub-kind, file bytes) of one generated upload; the same (category, seed) always gives the same file."""
    rng = np.random.default_rng(seed)
    if category == "valid":
        return random_image(rng)
    if category == "tiny":
        fmt = str(rng.choice(FORMATS))
        return f"1x1-{fmt}", _save(Image.new(str(rng.choice(("L", "RGB", "RGBA"))), (1, 1)), fmt)
    if category == "special":
        return special_image(rng)
    if category == "truncated":
        fmt, data = random_image(rng)
        return fmt, data[:int(rng.integers(0, len(data)))]
    if category in ("bitflip", "header"):
        fmt, data = random_image(rng)
        data = bytearray(data)
        span = min(len(data), 64) if category == "header" else len(data)
        for pos in rng.integers(0, span, size=int(rng.integers(1, 9))):
            data[pos] = int(rng.integers(0, 256))
        return fmt, bytes(data)
    if category == "bomb":
        kind = str(rng.choice(list(BOMBS)))
        w, h = (int(rng.choice(BOMB_SIDES)) for _ in range(2))
        return f"{kind}-bomb", BOMBS[kind](w, h)
    if category == "disguised":
        kind = str(rng.choice([*DISGUISES, "zip"]))
        return kind, _zip_bytes() if kind == "zip" else DISGUISES[kind]
    if category == "random":
        return "random", rng.integers(0, 256, size=int(rng.integers(1, 512)), dtype=np.uint8).tobytes()
    raise ValueError(f"unknown category {category!r}")


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
