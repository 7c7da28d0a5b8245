"""Every work-around of gradio's internals in one place, each checked against the gradio version it was written for."""
from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.machinery
import importlib.metadata
import inspect
import os
import sys
import time
import warnings
from pathlib import Path

from ssm_lab.release_fence import untested_release_message
from ssm_models.atomic import atomic_write

# Each patch below was written against and measured on this release line (requirements.txt pins it).
TESTED_GRADIO = "6.31"


class UntestedGradioWarning(UserWarning):
    """gradio is not the release line these work-arounds were written for; they may no longer be needed or fit."""


def gradio_version() -> str:
    return importlib.metadata.version("gradio")


def untested_version_message(version: str) -> str | None:
    """None on the tested release line, else what to check; `version` is a gradio version string."""
    return untested_release_message("gradio", version, TESTED_GRADIO, "app/gradio_compat.py",
                                    "each work-around there (each names the upstream behaviour it replaces), then "
                                    "update TESTED_GRADIO")


def warn_if_untested() -> None:
    message = untested_version_message(gradio_version())
    if message:
        warnings.warn(message, UntestedGradioWarning, stacklevel=2)


def _target(module, name: str, parameters: tuple[str, ...]):
    """The gradio function a patch replaces, refused with a clear message if it is gone or its signature changed."""
    original = getattr(module, name, None)
    found = tuple(inspect.signature(original).parameters) if callable(original) else None
    if found != parameters:
        raise RuntimeError(f"gradio {gradio_version()} changed {module.__name__}.{name} (expected parameters "
                           f"{parameters}, found {found}); the work-around in app/gradio_compat.py was written for "
                           f"gradio {TESTED_GRADIO}.x and must be revisited")
    return original


# ----- before gradio is imported ---------------------------------------------------------------------------------
class _NoGradioStubs(importlib.abc.MetaPathFinder):
    """gradio rewrites the .pyi type stubs (editor hints) of its components each time it is imported: ast parsing
    and jinja rendering of every component's source, about half of `import gradio`. A server needs no stubs, so
    that step becomes a no-op; if gradio ever drops it, this changes nothing."""

    def find_spec(self, name, path, target=None):
        if name != "gradio.component_meta":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            original = getattr(module, "create_or_modify_pyi", None)
            if callable(original):
                @functools.wraps(original)
                def create_or_modify_pyi(*args, **kwargs) -> None:
                    return None

                create_or_modify_pyi.stubs_skipped = True
                module.create_or_modify_pyi = create_or_modify_pyi

        spec.loader.exec_module = exec_module
        return spec


def skip_gradio_stub_writing() -> None:
    """Call before gradio is first imported."""
    if "gradio" not in sys.modules and not any(isinstance(f, _NoGradioStubs) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoGradioStubs())


# ----- once gradio is imported -----------------------------------------------------------------------------------
def apply() -> None:
    warn_if_untested()
    atomic_image_cache()
    surviving_cache_cleanup()


def atomic_image_cache() -> None:
    """Make gradio's `save_pil_to_cache` write each image under a temporary name and rename it into place.

    gradio (6.x) names a cached image after the hash of its bytes and rewrites the file in place on every call. When
    two requests return the same picture at once (the same test image, or an all-white perturbation map when an
    image was already misclassified), one request truncates the file while the other's user is downloading it:
    measured with 6 clients previewing one image, 10 of 156 downloads were empty and one connection broke.
    Only the write changes; names, formats, the cache folder and gradio's profiling decorator are gradio's own."""
    from gradio import processing_utils as pu
    from gradio.profiling import traced_sync

    if getattr(getattr(pu, "save_pil_to_cache", None), "atomic", False):
        return
    original = _target(pu, "save_pil_to_cache", ("img", "cache_dir", "name", "format"))

    @traced_sync("postprocess_save_pil_to_cache")  # as gradio decorates its own
    @functools.wraps(original)
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

    if getattr(getattr(ru, "delete_files_created_by_app", None), "snapshots", False):
        return
    original = _target(ru, "delete_files_created_by_app", ("blocks", "age"))

    @functools.wraps(original)
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


_LAST_SWEEP = [0.0]


def sweep_upload_folder(now: float, max_age_s: float, period_s: float) -> None:
    """What gradio's own clean-up (delete_cache) leaves behind, which would pile up for as long as the server runs:
    - the one-file folders it makes for cached files stay when the files are deleted: removed once empty for
      `max_age_s` (rmdir refuses a folder that is not empty, so no cached file is touched here);
    - gr.File(type="filepath") leaves an empty, untracked `tmpXXXXXXXX` file at the top of the cache for every
      upload (gradio 6.x `File._process_single_file`): top-level files unchanged for `max_age_s` are deleted.
      Everything gradio serves lives in the folders; a top-level file is an upload being received (its time
      changes as it is written) or one of these.
    Runs at most once per `period_s`."""
    from gradio.utils import get_upload_folder

    if now - _LAST_SWEEP[0] < period_s:
        return
    _LAST_SWEEP[0] = now
    with contextlib.suppress(OSError), os.scandir(get_upload_folder()) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if now - entry.stat(follow_symlinks=False).st_mtime <= max_age_s:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    os.rmdir(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
