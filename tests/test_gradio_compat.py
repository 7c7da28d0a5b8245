"""The gradio work-arounds: fenced to the tested release line, refusing a changed target, keeping decorators."""
from __future__ import annotations

import warnings

import pytest
from gradio import processing_utils, profiling, route_utils

from app import gradio_compat


def test_the_installed_gradio_is_the_release_line_the_work_arounds_were_written_for():
    assert gradio_compat.untested_version_message(gradio_compat.gradio_version()) is None


def test_another_gradio_version_gets_a_message_naming_both_versions():
    message = gradio_compat.untested_version_message("7.0.1")
    assert message is not None
    assert "gradio 7.0.1" in message, message
    assert f"{gradio_compat.TESTED_GRADIO}.x" in message, message


def test_a_version_that_only_shares_a_prefix_is_not_the_tested_line():
    assert gradio_compat.untested_version_message(gradio_compat.TESTED_GRADIO + "1.0") is not None


def test_applying_on_an_untested_version_warns(monkeypatch):
    monkeypatch.setattr(gradio_compat, "gradio_version", lambda: "9.9.9")
    with pytest.warns(gradio_compat.UntestedGradioWarning, match="gradio 9.9.9"):
        gradio_compat.apply()


def test_applying_on_the_tested_version_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gradio_compat.apply()


def test_a_target_whose_signature_changed_is_refused_with_a_clear_message(monkeypatch):
    def save_pil_to_cache(img, cache_dir, name="image", format="webp", quality=90):  # noqa: A002
        return ""

    monkeypatch.setattr(processing_utils, "save_pil_to_cache", save_pil_to_cache)
    with pytest.raises(RuntimeError, match=r"changed gradio.processing_utils.save_pil_to_cache .*revisited"):
        gradio_compat.atomic_image_cache()


def test_a_missing_target_is_refused_with_a_clear_message(monkeypatch):
    monkeypatch.delattr(route_utils, "delete_files_created_by_app")
    with pytest.raises(RuntimeError, match=r"delete_files_created_by_app .*found None"):
        gradio_compat.surviving_cache_cleanup()


def test_the_image_cache_replacement_keeps_gradios_profiling_decorator_and_name(monkeypatch):
    original = processing_utils.save_pil_to_cache
    while getattr(original, "atomic", False):  # applied earlier in this process: start from gradio's own
        original = original.__wrapped__
    monkeypatch.setattr(processing_utils, "save_pil_to_cache", original)
    phases = []

    def traced_sync(phase):
        phases.append(phase)
        return lambda fn: fn

    monkeypatch.setattr(profiling, "traced_sync", traced_sync)
    gradio_compat.atomic_image_cache()
    assert phases == ["postprocess_save_pil_to_cache"]
    assert processing_utils.save_pil_to_cache.__name__ == "save_pil_to_cache"
    assert processing_utils.save_pil_to_cache.__wrapped__ is original


def test_the_clean_up_replacement_keeps_gradios_name_and_docs(monkeypatch):
    original = route_utils.delete_files_created_by_app
    while getattr(original, "snapshots", False):
        original = original.__wrapped__
    monkeypatch.setattr(route_utils, "delete_files_created_by_app", original)
    gradio_compat.surviving_cache_cleanup()
    patched = route_utils.delete_files_created_by_app
    assert patched is not original
    assert (patched.__name__, patched.__doc__) == (original.__name__, original.__doc__)


def test_the_upload_folder_sweep_removes_only_old_top_level_files_and_empty_folders(tmp_path, monkeypatch):
    import os

    import gradio.utils

    monkeypatch.setattr(gradio.utils, "get_upload_folder", lambda: str(tmp_path))
    monkeypatch.setattr(gradio_compat, "_LAST_SWEEP", [0.0])
    old_file, young_file = tmp_path / "tmpold", tmp_path / "tmpyoung"
    empty, full = tmp_path / "empty", tmp_path / "full"
    for path in (old_file, young_file):
        path.write_bytes(b"")
    empty.mkdir()
    full.mkdir()
    (full / "image.webp").write_bytes(b"x")
    now = 10_000.0
    for path in (old_file, empty, full):
        os.utime(path, (now - 100, now - 100))
    os.utime(young_file, (now - 10, now - 10))
    gradio_compat.sweep_upload_folder(now, max_age_s=50, period_s=60)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "tmpyoung"]
    old_file.write_bytes(b"")
    os.utime(old_file, (now - 100, now - 100))
    gradio_compat.sweep_upload_folder(now + 30, max_age_s=50, period_s=60)  # within the period: no second sweep
    assert old_file.exists()


def test_the_stub_hook_leaves_other_modules_to_the_normal_finders():
    assert gradio_compat._NoGradioStubs().find_spec("json", None) is None
