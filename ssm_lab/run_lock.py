"""One writer per output: an exclusive flock on a lock file, released by the kernel however its holder ends."""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from ssm_models.errors import UserError


class RunLockedError(UserError, OSError):
    """Another live process is writing the same output; two writers would interleave their files."""


@contextlib.contextmanager
def exclusive(lock_path: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold `lock_path` for the duration, or raise `RunLockedError` naming the holder at once (never wait).

    flock belongs to the open file: SIGKILL, a crash or the end of the process releases it, so no stale lock is
    ever left to clear by hand. The file itself stays (removing it would race with a process about to lock it).
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "a process that has not said who it is"
        os.close(fd)
        raise RunLockedError(f"{what} is already in use by {holder} (lock file {lock_path}); wait for that run to "
                             "finish or stop it, then run the same command again to resume, or choose another "
                             "output") from None
    except BaseException:
        os.close(fd)
        raise
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}\n".encode(), 0)
        yield lock_path
    finally:
        os.close(fd)  # releases the lock
