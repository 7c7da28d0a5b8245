"""The project's one atomic write: complete files only, temporary files cleaned up, a full disk named clearly."""
import errno
import os

import pytest

from ssm_models.atomic import DiskFullError, atomic_write, remove_stale_temporaries
from ssm_models.errors import UserError


def test_atomic_write_accepts_bytes_text_and_a_writer(tmp_path):
    atomic_write(tmp_path / "a.bin", b"\x00\x01")
    atomic_write(tmp_path / "b.txt", "héllo")
    atomic_write(tmp_path / "c.bin", lambda stream: stream.write(b"xyz"))
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "c.bin").read_bytes() == b"xyz"


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "state.json"
    atomic_write(target, "old")

    def broken(stream):
        stream.write(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_full_disk_raises_a_user_error_naming_the_path(tmp_path):
    target = tmp_path / "model.safetensors"
    atomic_write(target, b"previous")

    def no_space(stream):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(DiskFullError) as caught:
        atomic_write(target, no_space)
    assert isinstance(caught.value, UserError)
    assert str(target) in str(caught.value)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_stale_temporaries_of_a_killed_writer_are_removed_and_nothing_else(tmp_path):
    atomic_write(tmp_path / "state.json", "complete")
    stale = [tmp_path / ".state.json.k3j2.tmp", tmp_path / ".model.safetensors.a1b2.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    (tmp_path / "notes.tmp").write_text("not ours: no leading dot")
    assert remove_stale_temporaries(tmp_path, "state.json") == [stale[0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.safetensors.a1b2.tmp", "notes.tmp", "state.json"]
    assert remove_stale_temporaries(tmp_path) == [stale[1]]
    assert (tmp_path / "state.json").read_text() == "complete"
