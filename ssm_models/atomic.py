"""One atomic file write for the whole project: readers see the old complete file or the new one, never a torn one."""
from __future__ import annotations

import errno
import glob
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from .errors import UserError


class DiskFullError(UserError, OSError):
    """A write failed for lack of space; the previous file at the path is intact."""


def atomic_write(path: str | os.PathLike, content: bytes | str | Callable[[BinaryIO], object],
                 mode: int = 0o644) -> Path:
    """Write `content` (bytes, text as UTF-8, or a function given a binary stream) to `path` atomically.

    The data goes to a temporary file beside the target, is flushed and fsynced, then renamed over the target, so a
    crash or SIGKILL at any moment leaves either the previous file or the complete new one; the directory entry is
    fsynced too, so the rename itself survives a power cut. On any failure the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            if callable(content):
                content(stream)
            else:
                stream.write(content.encode("utf-8") if isinstance(content, str) else content)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp_name, mode)  # mkstemp's private 0600 would hide shared files from other users
        os.replace(tmp_name, path)
    except BaseException as exc:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(exc.errno, f"no space left to write {path}; the previous file there is intact. "
                                           "Free some space and run the same command again to resume") from exc
        raise
    _fsync_directory(path.parent)
    return path


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete the temporary files `atomic_write` left in `directory` (for the target `name`, else any) when a process
    was killed mid-write: SIGKILL gives it no chance to clean up. Call it only while holding the directory's
    run lock, or a live writer's temporary could go. Returns what was removed."""
    removed = []
    for tmp in Path(directory).glob(f".{'*' if name is None else glob.escape(name)}.*.tmp"):
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
