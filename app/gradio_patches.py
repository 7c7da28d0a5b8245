"""Work-arounds for two gradio (6.x) races: cached images written in place, and a clean-up pass that dies for good."""
from __future__ import annotations

import os
import time
from pathlib import Path

from ssm_models.atomic import atomic_write


def apply() -> None:
    atomic_image_cache()
    surviving_cache_cleanup()


def atomic_image_cache() -> None:
    """Make gradio's `save_pil_to_cache` write each image under a temporary name and rename it into place.

    gradio (6.x) names a cached image after the hash of its bytes and rewrites the file in place on every call. When
    two requests return the same picture at once (the same test image, or an all-white perturbation map when an
    image was already misclassified), one request truncates the file while the other's user is downloading it:
    measured with 6 clients previewing one image, 10 of 156 downloads were empty and one connection broke.
    Only the write changes; names, formats and the cache folder are gradio's own."""
    from gradio import processing_utils as pu

    if getattr(pu.save_pil_to_cache, "atomic", False):
        return

    def save_pil_to_cache(img, cache_dir, name: str = "image", format: str = "webp") -> str:  # noqa: A002
        data = pu.encode_pil_to_bytes(img, format)
        folder = Path(cache_dir) / pu.hash_bytes(data)
        folder.mkdir(exist_ok=True, parents=True)
        path = (folder / f"{name}.{format}").resolve()
        if path.exists():  # same name, same bytes: touch it so the cache clean-up ages it from this use
            try:
                os.utime(path)
                return str(path)
            except OSError:
                pass
        return str(atomic_write(path, data))

    save_pil_to_cache.atomic = True
    pu.save_pil_to_cache = save_pil_to_cache


def surviving_cache_cleanup() -> None:
    """Make gradio's clean-up pass (`delete_files_created_by_app`, run every period by `delete_cache`) iterate over
    snapshots of its file sets.

    gradio iterates the live sets, which request threads extend meanwhile; "Set changed size during iteration" then
    ends its scheduled loop, silently, and no cached file is deleted again until the server restarts (the 500-request
    soak in RELIABILITY.md kept every file after the first few minutes). Also forgets files that are already gone
    instead of keeping their paths for ever."""
    from gradio import route_utils as ru

    if getattr(ru.delete_files_created_by_app, "snapshots", False):
        return

    def delete_files_created_by_app(blocks, age: int | None) -> None:
        keep = set()
        for component in list(blocks.blocks.values()):
            keep.update(getattr(component, "keep_in_cache", set()))
        now = time.time()
        for temp_set in list(blocks.temp_file_sets):
            gone = set()
            for file in list(temp_set):  # list() of a set is one step under the GIL: a consistent snapshot
                if file in keep:
                    continue
                try:
                    if age is None or now - os.lstat(file).st_ctime > age:
                        os.remove(file)
                        gone.add(file)
                except FileNotFoundError:
                    gone.add(file)
                except OSError:
                    continue
            temp_set -= gone

    delete_files_created_by_app.snapshots = True
    ru.delete_files_created_by_app = delete_files_created_by_app
