"""The web app's handlers as plain functions, on tiny checkpoints made here (no server, no browser)."""
from __future__ import annotations

import io
import json

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from PIL import Image

import ssm_models
from app import compare as C
from app import evaluation as E
from app import handlers as H
from app import inputs, learn, limits
from app.attack_menu import ATTACK_MENU, attack_settings
from app.common import arm_cancel, cancel_job
from app.models import MODELS
from app.request_types import (
    AttackRequest,
    CompareRequest,
    CostRequest,
    CurvesRequest,
    EvaluateRequest,
    PreviewRequest,
    TransferRequest,
)
from ssm_models.hub import save_pretrained

TINY = dict(d_model=16, n_layers=1, d_state=8, tokenizer="patch", patch_size=4)


def make_checkpoints(root) -> None:
    """Two MNIST models (with and without AdS) and one CIFAR-10 model, a few thousand parameters each."""
    torch.manual_seed(0)
    mnist = ssm_models.create_model("s4", image_size=28, **TINY,
                                    meta={"dataset": "mnist", "method": "st",
                                          "threat_model": {"norm": "Linf", "eps": 0.3}})
    save_pretrained(mnist, root / "mnist-s4-st", card={"metrics": {"clean": {"accuracy": 0.5}}})
    row = {f"{split}_{kind}_{metric}": 0.5 for split in ("train", "test") for kind in ("clean", "adv")
           for metric in ("acc", "loss")}
    curves = {"history": [{"epoch": 1, **row}, {"epoch": 2, **row}]}
    (root / "mnist-s4-st" / "curves.json").write_text(json.dumps(curves))
    save_pretrained(mnist, root / "mnist-s4-st" / "last")  # the training run's last epoch: not offered
    ads = ssm_models.create_model("s4", image_size=28, ads="relu", **TINY,
                                  meta={"dataset": "mnist", "method": "pgd-at"})
    save_pretrained(ads, root / "mnist-s4-ads", card={"metrics": {  # PGD-10 stored first: AutoAttack must still lead
        "clean": {"accuracy": 0.9, "n": 10000}, "pgd10": {"0.3": {"accuracy": 0.6, "n": 1000, "eps": 0.3}},
        "autoattack": {"0.3": {"accuracy": 0.4, "n": 1000, "eps": 0.3}}}})
    cifar = ssm_models.create_model("dss", image_size=32, in_channels=3, **TINY,
                                    meta={"dataset": "cifar10", "method": "st"})
    save_pretrained(cifar, root / "cifar-dss-st")


@pytest.fixture(scope="module", autouse=True)
def checkpoints(tmp_path_factory, serve_checkpoints):
    root = tmp_path_factory.mktemp("checkpoints")
    make_checkpoints(root)
    with serve_checkpoints(root):  # one torch thread, as the app runs, comes from conftest
        yield root


def quiet(*_args, **_kwargs) -> None:
    """Stands in for gr.Progress."""


def attack(**overrides):
    args = dict(model="mnist-s4-st", source="dataset", dataset="MNIST", index=0, upload=None, sketch=None,
                attack="PGD (Linf)", eps="0.3", steps=5, step_size=0, restarts=1, target="none", seed=0)
    args.update(overrides)
    return H.run_attack(AttackRequest(**args), progress=quiet)


def preview(source="dataset", index=0, **image):
    return H.preview(PreviewRequest(model="mnist-s4-st", source=source, dataset="MNIST", index=index, **image))


# ----- models --------------------------------------------------------------------------------------
def test_startup_lists_checkpoints_grouped_with_card_metrics():
    info = H.startup()
    names = [name for _, name in info["choices"]]
    assert names == ["cifar-dss-st", "mnist-s4-st", "mnist-s4-ads"]  # dataset, arch, standard training first
    assert info["value"] == "mnist-s4-st"
    assert info["group"] == ["mnist-s4-st", "mnist-s4-ads"]
    label = dict((v, k) for k, v in info["choices"])["mnist-s4-st"]
    assert "MNIST" in label
    assert "S4" in label
    assert "no AdS" in label
    assert "clean 50.0%" in label
    assert "AdS (relu)" in dict((v, k) for k, v in info["choices"])["mnist-s4-ads"]
    assert info["table"]["headers"][:5] == ["name", "dataset", "arch", "method", "AdS"]


def test_the_menu_label_leads_with_autoattack_and_its_n_before_pgd10():
    label = dict((v, k) for k, v in H.startup()["choices"])["mnist-s4-ads"]
    assert "[clean 90.0% (n=10,000), AutoAttack 40.0% (n=1,000), PGD-10 60.0% (n=1,000)]" in label, label


def test_the_model_card_leads_with_autoattack_and_calls_pgd10_secondary():
    card = H.select_model("mnist-s4-ads").card
    assert "AutoAttack 40.0% (n=1,000) (headline) · PGD-10 60.0% (n=1,000) (weaker, secondary)" in card, card
    assert card.index("| autoattack 0.3 |") < card.index("| pgd10 0.3 |"), card


def test_card_metrics_are_read_from_evaluation_reports_and_flat_files():
    from ssm_lab.catalogue import headline_metrics

    report = {"n": 100, "clean": {"accuracy": 0.98, "ci95": [0.9, 1.0]},
              "attacks": [{"attack": "pgd", "accuracy": 0.4}, {"attack": "autoattack", "accuracy": 0.3}]}
    assert headline_metrics(report) == {"clean": 0.98, "pgd": 0.4, "autoattack": 0.3}
    card = {"clean": {"accuracy": 0.99, "n": 10000}, "pgd10": {"0.3": {"accuracy": 0.2, "clean_on_sample":
                                                                        {"accuracy": 0.99}}},
            "autoattack": {"0.3": {"accuracy": 0.1, "version": "standard"}}, "seconds": 12.0}
    assert headline_metrics(card) == {"clean": 0.99, "pgd10 0.3": 0.2, "autoattack 0.3": 0.1}
    assert headline_metrics({"test_clean_acc": 0.9, "epochs": 20}) == {"test_clean_acc": 0.9}


def test_select_model_gives_card_eps_classes_and_dataset():
    mnist = H.select_model("mnist-s4-st")
    assert "S4" in mnist.card
    assert "50.00%" in mnist.card
    assert "threat model: norm=Linf, eps=0.3" in mnist.card
    assert (mnist.eps, mnist.classes[:3], mnist.dataset) == ("0.3", ["none", "0", "1"], "MNIST")
    assert isinstance(mnist.curves, go.Figure)
    assert len(mnist.curves.data) == 8  # train/test x clean/adv x acc/loss
    cifar = H.select_model("cifar-dss-st")
    assert (cifar.eps, cifar.classes[1], cifar.dataset, cifar.curves) == ("8/255", "airplane", "CIFAR-10", None)


@pytest.mark.parametrize("name", ["/etc", "../checkpoints/x", "~/models", "not a repo id!"])
def test_local_paths_and_junk_are_refused(name):
    with pytest.raises(gr.Error):
        H.select_model(name)


def test_lru_keeps_a_few_models():
    cache = type(MODELS)(capacity=2)
    first = cache.get("mnist-s4-st")
    cache.get("mnist-s4-ads")
    assert cache.get("mnist-s4-st") is first  # still cached, now most recent
    cache.get("cifar-dss-st")  # evicts mnist-s4-ads
    assert len(cache) == 2
    assert cache.get("mnist-s4-st") is first


def test_offline_hub_repo_gives_a_clear_message(hub_env):
    hub_env.set_offline(True)
    with pytest.raises(gr.Error, match="offline"):
        H.load_hub_model("some-org/some-model", "")


def test_hub_repo_is_downloaded_and_selectable(hub_server, checkpoints):
    for name in ("config.json", "model.safetensors"):
        hub_server.add_file("lab/tiny", name, (checkpoints / "mnist-s4-st" / name).read_bytes())
    value = H.load_hub_model("lab/tiny", "main")
    assert value == "lab/tiny@main"
    chosen = H.select_model(value)
    assert "lab/tiny@main" in chosen.card
    assert chosen.eps == "0.3"
    with pytest.raises(gr.Error, match="unknown repo"):
        H.load_hub_model("lab/missing", "")


# ----- images --------------------------------------------------------------------------------------
def test_preview_shows_the_test_image_pixel_for_pixel():
    shown = preview(index=7)
    digit = inputs.load_test_split("MNIST").images[7, 0]  # (28, 28)
    assert shown.image.shape == (224, 224, 3)
    assert shown.image.dtype == np.uint8
    assert np.array_equal(shown.image[::8, ::8, 0], digit)  # 8x nearest-neighbour enlargement, no smoothing
    assert "true class" in shown.note


def test_cifar_image_for_an_mnist_model_is_converted_and_unlabelled():
    arr, label, text = inputs.model_input("dataset", 1, 28, dataset="CIFAR-10", index=0, model_dataset="mnist")
    assert arr.shape == (1, 28, 28)
    assert label is None
    assert "converted" in text


def test_upload_preview_is_what_the_model_sees(tmp_path):
    path = tmp_path / "photo.jpg"
    rgb = np.zeros((60, 100, 3), dtype=np.uint8)
    rgb[:, 50:] = 255
    Image.fromarray(rgb).save(path)
    shown = preview("upload", upload=str(path), fit="squash")
    from ssm_lab.images import load_image

    expected = load_image(path, 1, 28)[0]  # (28, 28) after resize and grayscale
    assert np.array_equal(shown.image[::8, ::8, 0], expected)
    assert "uploaded" in shown.note
    assert shown.note.count("label") == 1
    assert "clean prediction" in shown.note  # said once, not also "no label"
    assert "used as it is" in shown.note, shown.note


def test_an_upload_to_an_mnist_model_is_framed_as_a_digit_by_default(tmp_path):
    from ssm_lab.image_fit import fit_image
    from testkit.drawn_digits import save_drawing

    path = save_drawing(tmp_path / "seven.png", background="white")
    shown = preview("upload", upload=path)
    assert np.array_equal(shown.image[::8, ::8, 0], fit_image(path, 1, 28, "digit")[0])
    assert "framed as a digit" in shown.note, shown.note


def test_an_upload_to_a_cifar_model_is_squashed_or_centre_cropped(tmp_path):
    from ssm_lab.image_fit import fit_image

    path = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 90, 3), dtype=np.uint8)).save(path)
    for fit, words in (("auto", "squashed"), ("crop", "centre-cropped")):
        arr, _, text = inputs.model_input("upload", 3, 32, upload=str(path), model_dataset="cifar10", fit=fit)
        assert np.array_equal(arr, fit_image(path, 3, 32, "squash" if fit == "auto" else fit)), fit
        assert words in text, text


def test_a_blank_upload_says_no_digit_found_and_how_to_go_on(tmp_path):
    path = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(path)
    with pytest.raises(gr.Error, match="no digit found.*use the image as it is"):
        preview("upload", upload=str(path))


def test_bad_uploads_get_specific_messages(tmp_path, monkeypatch):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(gr.Error, match="readable|corrupt"):
        preview("upload", upload=str(broken))
    monkeypatch.setattr(inputs, "LIMITS", limits.Limits(upload_bytes=100))
    big = tmp_path / "big.png"
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buffer, "PNG")
    big.write_bytes(buffer.getvalue())
    with pytest.raises(gr.Error, match="SSM_LAB_MAX_UPLOAD_BYTES"):
        preview("upload", upload=str(big))
    with pytest.raises(gr.Error, match="no uploaded image"):
        preview("upload", upload=None)


def test_drawing_becomes_a_centred_white_on_black_digit():
    canvas = np.zeros((280, 280, 4), dtype=np.uint8)  # transparent canvas, black ink, off-centre
    canvas[20:120, 30:45, 3] = 255
    digit = inputs.model_input("drawing", 1, 28, sketch=canvas, model_dataset="mnist")[0][0]  # (28, 28)
    assert digit.dtype == np.uint8
    assert digit.max() > 200
    assert digit[0, 0] == 0
    rows, cols = np.nonzero(digit > 30)
    assert rows.max() - rows.min() + 1 <= 21  # fitted into MNIST's 20x20 box
    weights = digit.astype(float)
    centre = (np.arange(28) @ weights.sum(1) / weights.sum(), np.arange(28) @ weights.sum(0) / weights.sum())
    assert abs(centre[0] - 14) < 1.5
    assert abs(centre[1] - 14) < 1.5
    with pytest.raises(gr.Error, match="empty"):
        preview("drawing", sketch={"composite": np.zeros((280, 280, 4), np.uint8)})


def test_random_and_class_picks_stay_in_the_class():
    index = H.pick_class("MNIST", "3")
    assert inputs.load_test_split("MNIST").labels[index] == 3
    assert all(inputs.load_test_split("MNIST").labels[H.pick_random("MNIST", "5")] == 5 for _ in range(5))


# ----- attack --------------------------------------------------------------------------------------
def test_pgd_attack_returns_images_figures_and_lossless_downloads():
    out = attack()
    assert out.clean.shape == out.adversarial.shape == out.perturbation.shape == (224, 224, 3)
    assert all(isinstance(f, go.Figure) and len(f.data) > 0 for f in (out.topk, out.trace, out.scaling, out.tokens))
    assert "PGD (Linf)" in out.summary
    assert "survives 8-bit PNG" in out.summary
    png, npy, card_path = out.files
    x = inputs.load_test_split("MNIST").images[0, 0].astype(np.float32) / 255
    adv_exact = np.load(npy)  # (1, 28, 28) float32
    assert adv_exact.shape == (1, 28, 28)
    assert np.abs(adv_exact[0] - x).max() <= 0.3 + 1e-6
    assert np.array_equal(np.asarray(Image.open(png)), np.round(adv_exact[0] * 255).astype(np.uint8))
    saved = json.loads(open(card_path).read())
    assert saved["attack"] == "pgd"
    assert saved["params"]["steps"] == 5
    assert saved["seed"] == 0
    assert saved["model"]["source"] == "mnist-s4-st"  # no server paths in what users download
    assert out.card["results"]["label"] == str(inputs.load_test_split("MNIST").labels[0])


def test_attack_is_reproducible_with_a_seed():
    first, second = attack(seed=3).card["results"], attack(seed=3).card["results"]
    assert first["linf"] == second["linf"]
    assert first["l2"] == second["l2"]


@pytest.mark.parametrize("overrides, message", [
    (dict(steps=10_000), "SSM_LAB_MAX_STEPS"),
    (dict(restarts=99), "SSM_LAB_MAX_RESTARTS"),
    (dict(eps="1.5"), "eps=1.5 is above the limit of 1"),
    (dict(eps="eight"), "eps must be a number or k/255"),
    (dict(steps=2.5), "whole number"),
    (dict(attack="APGD-CE", target="3"), "no targeted mode"),
    (dict(attack="Nope"), "unknown attack"),
    (dict(index=10_000_000), "index=10000000 is above"),
])
def test_invalid_requests_are_refused_with_clear_messages(overrides, message):
    with pytest.raises(gr.Error, match=message):
        attack(**overrides)


def test_cost_is_shown_before_and_capped(monkeypatch):
    request = CostRequest(model="mnist-s4-st", attack="PGD (Linf)", eps="0.3", steps=10, restarts=2)
    text = H.estimate_cost(request)
    assert "forward" in text
    assert "backward" in text
    assert "20 backward" in text
    monkeypatch.setattr("app.limits.LIMITS", limits.Limits(passes=10))
    with pytest.raises(gr.Error, match="SSM_LAB_MAX_PASSES"):
        H.estimate_cost(request)


def test_targeted_attack_uses_the_class_name():
    name, params = attack_settings("PGD (Linf)", MODELS.get("cifar-dss-st"), eps="8/255", steps=3, target="cat")
    assert name == "pgd"
    assert params["targeted"]
    assert params["target"] == 3
    assert params["eps"] == pytest.approx(8 / 255)
    assert attack_settings("Square", MODELS.get("mnist-s4-st"), eps="0.1", steps=4)[1]["queries"] == 100


def test_cancel_stops_a_running_attack_and_keeps_its_best_point():
    calls = []

    def cancel_on_first_progress(*_args, **_kwargs):
        calls.append(1)
        cancel_job("attack")

    out = H.run_attack(AttackRequest(model="mnist-s4-st", steps=200), progress=cancel_on_first_progress)
    assert out.card["results"]["cancelled"] is True
    assert "cancelled" in out.summary
    assert len(calls) < 20  # it stopped long before 200 steps
    assert cancel_job("attack").startswith("Nothing to cancel")


def test_cancel_reaches_a_queued_attack():
    arm_cancel("attack")
    assert cancel_job("attack").startswith("Cancelling")
    with pytest.raises(gr.Error, match="cancelled before it started"):
        attack()


# ----- compare, transfer, evaluate, curves ---------------------------------------------------------
def test_compare_runs_the_same_attack_on_each_model():
    out = C.compare_models(CompareRequest(models=["mnist-s4-st", "mnist-s4-ads"], index=1, attack="FGSM", steps=1),
                           progress=quiet)
    assert len(out.gallery) == 4
    assert [row[0] for row in out.table["data"]] == ["mnist-s4-st", "mnist-s4-ads"]
    assert {trace.name for trace in out.scaling.data} == {"mnist-s4-st", "mnist-s4-ads"}
    with pytest.raises(gr.Error, match="SSM_LAB_MAX_COMPARE_MODELS"):
        C.compare_models(CompareRequest(models=[f"org/model{i}" for i in range(9)], attack="FGSM", steps=1))


def test_transfer_matrix_and_dataset_mismatch():
    out = C.transfer(TransferRequest(models=["mnist-s4-st", "mnist-s4-ads"], n=6, attack="FGSM", steps=1),
                     progress=quiet)
    figure, result = out.figure, out.result
    assert result["models"] == ["mnist-s4-st", "mnist-s4-ads"]
    assert len(result["matrix"]) == 2
    assert all(cell["n"] == 6 for row in result["matrix"] for cell in row)
    assert isinstance(figure, go.Figure)
    assert figure.layout.yaxis.autorange == "reversed"  # white-box on the diagonal
    assert list(figure.data[0].y) == list(figure.data[0].x) == result["models"]
    with pytest.raises(gr.Error, match="one dataset"):
        C.transfer(TransferRequest(models=["mnist-s4-st", "cifar-dss-st"], n=4, attack="FGSM", steps=1))


def test_evaluate_reports_accuracies_confusion_and_json():
    out = E.evaluate_model(EvaluateRequest(model="mnist-s4-st", n=10, attacks=["FGSM", "PGD (Linf)"], steps=3),
                           progress=quiet)
    assert "| clean |" in out.text
    assert "fgsm" in out.text
    assert "pgd" in out.text
    assert "95% CI" in out.text
    assert out.report["n"] == 10
    assert [a["attack"] for a in out.report["attacks"]] == ["fgsm", "pgd"]
    assert int(np.asarray(out.confusion.data[0].z).sum()) == 10
    saved = json.loads(open(out.report_file).read())
    assert len(saved["attacks"][1]["predictions"]) == 10
    assert saved["model"]["source"] == "mnist-s4-st"
    assert "path" not in saved["model"]  # no server paths
    assert saved.get("model_info", {}).get("name", "mnist-s4-st") == "mnist-s4-st"
    with pytest.raises(gr.Error, match="separately"):
        E.evaluate_model(EvaluateRequest(model="mnist-s4-st", n=4, attacks=["FGSM", "CW (L2)"], steps=3))
    with pytest.raises(gr.Error, match="SSM_LAB_MAX_EVAL_N"):
        E.evaluate_model(EvaluateRequest(model="mnist-s4-st", n=10**6, attacks=["FGSM"], steps=3))


def test_eps_curves_one_line_per_model():
    out = E.eps_curves(CurvesRequest(models=["mnist-s4-st", "mnist-s4-ads"], n=6, attack="FGSM",
                                     eps_values="0, 0.1, 0.3", steps=1), progress=quiet)
    figure, curves = out.figure, out.curves
    assert [t.name for t in figure.data] == ["mnist-s4-st", "mnist-s4-ads"]
    assert [row["eps"] for row in curves["curves"]["mnist-s4-st"]] == [0.0, 0.1, 0.3]
    with pytest.raises(gr.Error, match="Linf"):
        E.eps_curves(CurvesRequest(models=["mnist-s4-st"], n=4, attack="CW (L2)", eps_values="0.1", steps=1))
    with pytest.raises(gr.Error, match="SSM_LAB_MAX_EPS_POINTS"):
        E.eps_curves(CurvesRequest(models=["mnist-s4-st"], n=4, attack="FGSM", steps=1,
                                   eps_values=",".join(str(i / 100) for i in range(20))))


# ----- limits, learn, layout -----------------------------------------------------------------------
def test_eps_parsing_and_env_caps(monkeypatch):
    assert limits.parse_eps("8/255") == pytest.approx(8 / 255)
    assert limits.parse_eps(" 0.3 ") == 0.3
    assert limits.parse_eps_list("0.3, 0, 8/255, 0") == [0.0, pytest.approx(8 / 255), 0.3]
    monkeypatch.setenv("SSM_LAB_MAX_STEPS", "7")
    assert limits.Limits.from_env().steps == 7
    monkeypatch.setenv("SSM_LAB_MAX_STEPS", "lots")
    with pytest.raises(limits.LimitError, match="SSM_LAB_MAX_STEPS"):
        limits.Limits.from_env()


def test_every_lesson_has_a_runnable_preset():
    entries = H.startup()["entries"]
    for lesson in learn.LESSONS:
        assert lesson.preset.attack in ATTACK_MENU
        assert lesson.text.strip()
        assert learn.pick_model(entries, lesson.preset.prefer) is not None
    assert set(learn.ads_pair(entries)) == {"mnist-s4-st", "mnist-s4-ads"}


def test_the_learn_tab_shows_the_lab_figures_beside_the_paper_in_the_ads_and_autoattack_lessons():
    from app.ui import build_demo

    texts = [block.value for block in build_demo().blocks.values() if isinstance(block, gr.Markdown)]
    notes = [text for text in texts if isinstance(text, str) and "**What the paper reports:**" in text]
    assert len(notes) == 2, notes
    # these test checkpoints hold no PGD-AT model without AdS to compare with: the note says so
    assert any("no shipped pair of checkpoints differs only in AdS" in text for text in notes), notes


def test_the_upload_takes_files_webcam_shots_and_pasted_images_unmirrored():
    from app.ui import build_demo

    demo = build_demo()
    upload = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "upload-image")
    assert upload.sources == ["upload", "webcam", "clipboard"], upload.sources
    assert upload.webcam_options.mirror is False  # a digit held up to the camera must not be read mirrored
    assert upload.image_mode is None  # the file itself, alpha and all, reaches the framing


def test_layout_names_every_action():
    from app.ui import build_demo

    demo = build_demo()
    names = {fn.api_name for fn in demo.fns.values() if fn.api_name}
    expected = {"startup", "select_model", "load_hub_model", "preview", "random_image", "first_of_class", "cost",
                "attack", "cancel_attack", "compare", "transfer", "cancel_compare", "evaluate", "eps_curves",
                "cancel_evaluate"} | {f"preset_{lesson.key}" for lesson in learn.LESSONS}
    assert expected <= names
    images = [block for block in demo.blocks.values() if isinstance(block, (gr.Image, gr.Gallery))]
    assert images
    assert all(block.format == "png" for block in images)  # perturbations are never served as webp


def test_presets_fill_the_attack_tab_with_a_matching_model():
    from app.ui import _preset_values

    for lesson in learn.LESSONS:
        values = _preset_values(lesson)()
        model, dataset, source, index, attack_name, eps = values[:6]
        assert model in {"mnist-s4-st", "mnist-s4-ads"}
        assert (dataset, source) == ("MNIST", "dataset")
        assert attack_name == lesson.preset.attack
        assert eps == lesson.preset.eps
        if lesson.preset.compare:
            assert set(values[-1]) == {"mnist-s4-st", "mnist-s4-ads"}


def test_command_line_and_environment(monkeypatch):
    from app.__main__ import parse_args
    from ssm_lab.threads import torch_threads

    for name in ("SSM_LAB_HOST", "SSM_LAB_PORT", "SSM_LAB_SHARE", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        monkeypatch.delenv(name, raising=False)
    args = parse_args([])
    assert (args.host, args.port, args.share) == ("127.0.0.1", 7860, False)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "9000")
    monkeypatch.setenv("SSM_LAB_HOST", "0.0.0.0")
    monkeypatch.setenv("SSM_LAB_SHARE", "yes")
    args = parse_args([])
    assert (args.host, args.port, args.share) == ("0.0.0.0", 9000, True)
    monkeypatch.setenv("SSM_LAB_PORT", "9100")
    assert parse_args(["--port", "9200"]).port == 9200
    assert parse_args([]).port == 9100
    with pytest.raises(SystemExit):
        parse_args(["--port", "70000"])
    monkeypatch.delenv("SSM_LAB_TORCH_THREADS", raising=False)
    assert torch_threads() == 1
    monkeypatch.setenv("SSM_LAB_TORCH_THREADS", "2")
    assert torch_threads() == 2


def test_summary_says_where_pgd_stopped_and_the_trace_ends_there():
    seen = set()
    # the first test images the untrained model gets right, whichever test set this machine has (full or sample)
    for index, eps in [(i, e) for i in range(40) for e in ("0.3", "0.02", "1/255")]:
        if seen == {"all", "early", "failed", "succeeded"}:
            break
        out = attack(eps=eps, steps=5, index=index)
        summary, trace = out.summary, out.trace
        rows = len(trace.data[0].y)  # traced iterates, then the returned point
        line = next(text for text in summary.splitlines() if text.startswith("- iterations:"))
        png = next(text for text in summary.splitlines() if text.startswith("- survives 8-bit PNG:"))
        assert ("n/a: the attack did not succeed" in png) == ("the attack failed" in summary), (summary, png)
        seen.add("failed" if "the attack failed" in summary else "succeeded")
        if "all 5 steps" in line:
            assert rows == 5 + 1, (line, rows)
            seen.add("all")
        else:
            step = 0 if "random start" in line else int(line.split("iterate ")[1].split(" ")[0])
            assert rows == step + 2, (line, rows)
            assert "ends there" in line, (line, rows)
            assert trace.data[0].y[step] == trace.data[0].y[-1]  # the returned point is that iterate
            assert list(trace.data[0].x) == [str(i) for i in range(step + 1)] + ["returned"]
            seen.add("early")
    assert seen == {"all", "early", "failed", "succeeded"}  # every wording is exercised


def test_evaluation_defaults_follow_the_models_dataset():
    cifar = E.evaluation_defaults("cifar-dss-st")
    assert (cifar.dataset, cifar.eps, cifar.curve_eps) == ("CIFAR-10", "8/255", E.CURVE_EPS["CIFAR-10"])
    mnist = E.evaluation_defaults("mnist-s4-ads")
    assert (mnist.dataset, mnist.eps, mnist.curve_eps) == ("MNIST", "0.3", E.CURVE_EPS["MNIST"])
    assert all(len(limits.parse_eps_list(text)) == 5 for text in E.CURVE_EPS.values())  # valid defaults


def test_evaluate_tab_budgets_change_only_across_datasets():
    from app.endpoints import follow_evaluate_model

    assert follow_evaluate_model("cifar-dss-st", "MNIST") == ("CIFAR-10", "8/255", E.CURVE_EPS["CIFAR-10"])
    same = follow_evaluate_model("mnist-s4-st", "MNIST")  # same dataset: what the user typed stays
    assert same == ("MNIST", gr.update(), gr.update())


def test_a_library_attack_traces_its_clean_start_and_its_result():
    trace = attack(attack="APGD-CE", steps=3).trace
    assert list(trace.data[0].x) == ["clean", "returned"]


def test_trace_labels_with_restarts():
    from ssm_lab.plots import iterate_labels

    # restart 1 stopped after iterate 1 (its point compared at "end"), restart 2 ran iterates 0-2; then the result
    trace = {"restart": [0, 0, 0, 1, 1, 1, 1, 0], "step": [0, 1, 3, 0, 1, 2, 3, 0],
             "final": [False] * 7 + [True]}
    assert iterate_labels(trace, steps=3) == ["r1:0", "r1:1", "r1:end", "r2:0", "r2:1", "r2:2", "r2:end", "returned"]
    assert iterate_labels(trace, steps=3, iterates=False) == ["clean"] * 7 + ["returned"]
