"""Generated uploads for fuzzing the image path: valid, tiny, special, truncated, bit-flipped, bombs, disguised."""
from __future__ import annotations

import io
import struct
import zlib

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
