"""The ssm-lab command line: real subcommands on a tiny checkpoint, specific errors for bad arguments."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ssm_lab.cli import main
from ssm_models import create_model
from ssm_models.hub import save_pretrained
from testkit.drawn_digits import save_drawing


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("s4", d_model=16, d_state=8, n_layers=1, image_size=28, tokenizer="patch", patch_size=4,
                         meta={"dataset": "mnist", "method": "st"})
    path = tmp_path_factory.mktemp("ck") / "tiny"
    save_pretrained(model, path)
    return path


def test_evaluate_writes_a_report(checkpoint, tmp_path):
    out = tmp_path / "report.json"
    assert main(["evaluate", str(checkpoint), "--dataset", "mnist", "--attack", "fgsm", "--attack", "pgd",
                 "--steps", "2", "--eps", "0.1", "--n", "20", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["n"] == 20
    assert [a["attack"] for a in rep["attacks"]] == ["fgsm", "pgd"]
    assert rep["data"]["dataset"] == "mnist"
    assert "source" in rep["data"]
    html = tmp_path / "r.html"
    assert main(["report", str(out), "--html", str(html)]) == 0
    assert "Wilson" in html.read_text()


def test_attack_one_image(checkpoint, tmp_path):
    img = save_drawing(tmp_path / "digit.png")
    out = tmp_path / "out"
    assert main(["attack", str(checkpoint), "--image", str(img), "--attack", "pgd", "--eps", "8/255",
                 "--steps", "3", "--out-dir", str(out)]) == 0
    card = json.loads((out / "run_card.json").read_text())
    assert card["params"]["eps"] == pytest.approx(8 / 255)
    assert card["eps_label"] == "8/255"
    assert "survives_8bit_png" in card["results"]
    adv = np.load(out / "adversarial.npy")
    assert adv.shape == (1, 28, 28)
    assert adv.dtype == np.float32
    png = np.asarray(Image.open(out / "adversarial.png"))
    assert png.shape == (28, 28)
    assert np.abs(png / 255.0 - adv[0]).max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize("fit, expected", [([], "digit"), (["--fit", "squash"], "squash")])
def test_attack_frames_an_mnist_image_as_a_digit_unless_told_not_to(checkpoint, tmp_path, fit, expected):
    from ssm_lab.image_fit import fit_image

    img = save_drawing(tmp_path / "seven.png")
    out = tmp_path / "out"
    assert main(["attack", str(checkpoint), "--image", img, "--attack", "fgsm", "--out-dir", str(out), *fit]) == 0
    card = json.loads((out / "run_card.json").read_text())
    assert card["image_fit"] == expected, card["image_fit"]
    seen = fit_image(img, 1, 28, expected)[0] / 255  # (28, 28): what the attack must have started from
    distance = float(np.abs(np.load(out / "adversarial.npy")[0] - seen).max())
    assert distance <= card["params"]["eps"] + 1e-6, f"the adversarial image is {distance:.3f} from the {expected} fit"


def test_analyze_and_report(checkpoint, tmp_path):
    out = tmp_path / "analysis.json"
    assert main(["analyze", str(checkpoint), "--n", "8", "--steps", "2", "--eps", "0.1", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["splits"]) == {"train", "test"}
    assert doc["splits"]["test"]["n"] == 8
    evaluation = tmp_path / "evaluation.json"
    assert main(["evaluate", str(checkpoint), "--attack", "fgsm", "--attack", "pgd", "--steps", "2", "--n", "4",
                 "--out", str(evaluation)]) == 0
    assert main(["report", str(out), str(evaluation), "--html", str(tmp_path / "a.html")]) == 0
    page = (tmp_path / "a.html").read_text()
    assert f"<h2>Error scaling: {checkpoint}</h2>" in page
    assert "test split: n=8, pgd-2, eps=0.1 (~25.5" in page
    assert "<td>fgsm</td>" in page
    assert "<td>pgd (steps=2)</td>" in page
    assert "{}" not in page.split("<h2>")[-1]


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "{ck}", "--eps", "-1"], "eps must not be negative"),
    (["evaluate", "{ck}", "--n", "0"], "argument --n: value must be positive, got 0"),
    (["evaluate", "{ck}", "--n", "2.5"], "argument --n: value must be a whole number, got 2.5"),
    (["evaluate", "{ck}", "--eps", "nan"], "eps is NaN"),
    (["evaluate", "{ck}", "--attack", "telepathy", "--n", "5"], "unknown attack"),
    (["evaluate", "/no/such/dir"], "error"),
    (["evaluate", "{ck}", "--dataset", "cifar10", "--n", "4"], "takes 1x28x28 images, cifar10 has 3x32x32; use "
                                                                "--dataset mnist"),
    (["analyze", "{ck}", "--dataset", "cifar10", "--n", "4"], "takes 1x28x28 images"),
    (["attack", "{ck}", "--image", "/no/such.png", "--out-dir", "x"], "no such image"),
    (["attack", "{ck}", "--image", "{blank}", "--out-dir", "x"], "no digit found"),
    (["attack", "{ck}", "--image", "x.png", "--out-dir", "x", "--fit", "stretch"], "invalid choice: 'stretch'"),
    (["attack", "{ck}", "--image", "x.png", "--out-dir", "x", "--attack", "pgd", "--attack", "fgsm"],
     "one attack on one image, got --attack pgd --attack fgsm; use evaluate"),
])
def test_bad_arguments_fail_clearly(checkpoint, argv, message, capsys, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("L", (40, 40), 255).save(blank)
    argv = [a.replace("{ck}", str(checkpoint)).replace("{blank}", str(blank)) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse type errors exit with 2
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_every_option_is_explained_and_no_help_says_default_none(capsys):
    import argparse

    from ssm_lab.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for command, parser in commands.items():
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, (command, action.dest)
                assert action.help.strip(), (command, action.dest)
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "(default: None)" not in text, command
        assert "(default: False)" not in text, command


def test_an_unknown_option_is_refused(checkpoint, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(checkpoint), "--no-such-option"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_list_shows_each_checkpoint_with_its_card_metrics_at_the_threat_model(checkpoint, tmp_path, capsys):
    root = tmp_path / "root"
    save_pretrained(create_model("s4", d_model=16, d_state=8, n_layers=1, image_size=28, tokenizer="patch",
                                 patch_size=4, meta={"dataset": "mnist", "method": "pgd-at"}), root / "robust",
                    card={"metrics": {"dataset": "mnist", "clean": {"accuracy": 0.91, "n": 10000},
                                      "pgd10": {"0.1": {"accuracy": 0.8, "n": 1000, "eps": 0.1},
                                                "0.3": {"accuracy": 0.42, "n": 1000, "eps": 0.3}},
                                      "autoattack": {"0.3": {"accuracy": 0.25, "n": 200, "eps": 0.3}}}})
    save_pretrained(create_model("s4", d_model=16, d_state=8, n_layers=1, image_size=28, tokenizer="patch",
                                 patch_size=4, meta={"dataset": "mnist", "method": "pgd-at"}), root / "robust" / "last")
    save_pretrained(create_model("s4", d_model=16, d_state=8, n_layers=1, image_size=28,
                                 meta={"dataset": "mnist", "method": "st"}), root / "plain")
    save_pretrained(create_model("s4", d_model=16, d_state=8, n_layers=1, image_size=28,
                                 meta={"dataset": "mnist", "method": "st"}), root / "odd")
    (root / "odd" / "metrics.json").write_text(json.dumps({  # another tool's fields: no n, eps as text, a list
        "clean": {"accuracy": 0.5}, "pgd10": {"0.3": {"accuracy": 0.1, "eps": "0.3"}}, "autoattack": [1, 2]}))
    assert main(["list", "--root", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("architectures: ")
    assert "mamba" in out[0]
    rows = {line.split()[0]: line.split() for line in out[3:]}
    assert set(rows) == {"odd", "plain", "robust"}  # the run's last epoch (robust/last) is not a model to offer
    assert rows["odd"][1:] == ["MNIST", "S4", "standard", "-", "50.0%", "-", "-", "0.3"]
    assert rows["robust"][1:] == ["MNIST", "S4", "PGD-AT", "-", "91.0%", "(n=10,000)", "25.0%", "(n=200)", "42.0%",
                                  "(n=1,000)", "0.3"]  # AutoAttack leads; 0.3, not 0.1: MNIST's threat model
    assert rows["plain"][1:] == ["MNIST", "S4", "standard", "-", "-", "-", "-", "0.3"]
    assert main(["list", "--root", str(tmp_path / "empty")]) == 0
    assert "no checkpoints with weights" in capsys.readouterr().out


def test_attack_names_cifar10_classes_and_evaluate_uses_the_checkpoint_dataset(tmp_path, capsys):
    from ssm_lab.data import dataset_info, model_classes

    CIFAR10_CLASSES = dataset_info("cifar10").classes

    torch.manual_seed(0)
    path = tmp_path / "cifar"
    model = create_model("s4", d_model=16, d_state=8, n_layers=1, image_size=32, in_channels=3, tokenizer="patch",
                         patch_size=8, meta={"dataset": "cifar10", "method": "st"})
    save_pretrained(model, path)
    assert model_classes(model) == list(CIFAR10_CLASSES)
    assert model_classes(create_model("s4", d_model=16, d_state=8, n_layers=1, image_size=8, num_classes=3)) == [
        "0", "1", "2"]
    img = tmp_path / "grey.png"
    Image.fromarray(np.full((20, 20), 90, dtype=np.uint8)).save(img)  # greyscale, any size: converted to 3x32x32
    assert main(["attack", str(path), "--image", str(img), "--attack", "fgsm", "--out-dir", str(tmp_path / "o")]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["label"] in CIFAR10_CLASSES
    assert results["adversarial_prediction"] in CIFAR10_CLASSES
    out = tmp_path / "report.json"
    assert main(["evaluate", str(path), "--attack", "fgsm", "--n", "10", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["data"]["dataset"] == "cifar10"
    assert report["threat_model"]["eps_label"] == "8/255"


def test_compute_commands_set_torch_threads(checkpoint, tmp_path, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("SSM_LAB_TORCH_THREADS", raising=False)
    argv = ["evaluate", str(checkpoint), "--attack", "fgsm", "--n", "4", "--out", str(tmp_path / "r.json")]
    try:
        torch.set_num_threads(2)
        assert main(argv) == 0
        assert torch.get_num_threads() == 1  # the default, whatever torch had
        assert main(argv + ["--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("SSM_LAB_TORCH_THREADS", "2")
        torch.set_num_threads(1)
        assert main(argv) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_train_keeps_torchs_thread_count_unless_told(tmp_path, monkeypatch):
    from ssm_lab.threads import torch_threads

    monkeypatch.delenv("SSM_LAB_TORCH_THREADS", raising=False)
    assert torch_threads(default=None) is None
    assert torch_threads() == 1
    assert torch_threads(3) == 3
    monkeypatch.setenv("SSM_LAB_TORCH_THREADS", "2")
    assert torch_threads(default=None) == 2


def test_an_evaluate_error_is_the_last_line_not_a_progress_bar_redrawn_after_it(checkpoint, tmp_path, capsys):
    state = tmp_path / "state.json"
    state.write_text("{half a state")  # fails inside the run, once the progress bar is on screen
    assert main(["evaluate", str(checkpoint), "--attack", "pgd", "--steps", "2", "--n", "4", "--state",
                 str(state)]) == 2
    lines = [line.strip() for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.strip()]
    assert lines[-1].startswith("ssm-lab evaluate: error:"), lines[-3:]


@pytest.mark.parametrize("value, says", [("0", "at least 1"), ("two", "a number"), ("1.5", "whole number"),
                                         ("100000", "MAX_THREADS")])
def test_a_bad_thread_count_in_the_environment_is_refused_naming_the_variable(monkeypatch, value, says):
    from ssm_lab.threads import ThreadCountError, torch_threads

    monkeypatch.setenv("SSM_LAB_TORCH_THREADS", value)
    with pytest.raises(ThreadCountError, match=f"SSM_LAB_TORCH_THREADS.*{says}|{says}.*SSM_LAB_TORCH_THREADS"):
        torch_threads()


def test_a_bad_thread_count_stops_the_cli_with_a_message_not_a_traceback(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SSM_LAB_TORCH_THREADS", "0")
    code = main(["evaluate", str(checkpoint), "--n", "4", "--out", str(tmp_path / "r.json")])
    assert code == 2
    assert "SSM_LAB_TORCH_THREADS must be at least 1" in capsys.readouterr().err
