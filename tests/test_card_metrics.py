"""Card metrics: AutoAttack and PGD-10 on the same images, the paired masking gap, resumable fields."""
import pytest
import torch

from ssm_lab.card_metrics import CARD_CODE, card_metrics, masking_entry, robust_flags, square_extra_drop
from ssm_lab.eps import eps_label
from ssm_lab.intervals import excludes_zero, hybrid_score_difference, paired_difference, separated
from ssm_models import create_model

N = 12


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("s4", d_model=8, d_state=4, n_layers=1, image_size=28, tokenizer="patch", patch_size=7,
                        meta={"dataset": "mnist", "method": "st"})


@pytest.fixture(scope="module")
def measured(tiny):
    logs, saved = [], []
    metrics = card_metrics(tiny, "mnist", n=N, eps=(0.3,), log=logs.append, save=lambda m: saved.append(dict(m)))
    return metrics, logs, saved


def test_hybrid_score_interval_matches_newcombes_worked_example():
    diff, ci = hybrid_score_difference(56, 70, 48, 80)  # Newcombe (1998), Statistics in Medicine 17, 873: method 10
    assert round(diff, 4) == 0.2
    assert [round(v, 4) for v in ci] == [0.0524, 0.3339]


def test_paired_interval_is_narrower_than_the_independent_one_when_the_outcomes_agree():
    first = [True] * 60 + [False] * 40
    second = [True] * 50 + [False] * 50  # every image robust under the second is robust under the first
    paired = paired_difference(first, second)["ci95"]
    _, independent = hybrid_score_difference(60, 100, 50, 100)
    assert paired[1] - paired[0] < independent[1] - independent[0], (paired, independent)
    assert excludes_zero(paired), paired
    assert not excludes_zero(independent), independent


def test_paired_difference_refuses_outcomes_of_different_images():
    with pytest.raises(ValueError, match="same images: got 3 and 2"):
        paired_difference([True, False, True], [True, False])


def test_intervals_separate_only_when_they_do_not_overlap():
    assert separated([0.5, 0.6], [0.3, 0.45])
    assert not separated([0.5, 0.6], [0.3, 0.5])


def test_autoattack_and_pgd10_are_measured_on_the_same_n_images_with_their_outcomes(measured):
    metrics, _, _ = measured
    label = eps_label(0.3)
    aa, pgd = metrics["autoattack"][label], metrics["pgd10"][label]
    assert (aa["n"], pgd["n"]) == (N, N)
    assert sum(robust_flags(aa)) == aa["correct"]
    assert sum(robust_flags(pgd)) == pgd["correct"]
    assert (aa["code"], pgd["code"], aa["seed"]) == (CARD_CODE, CARD_CODE, 0)


def test_the_masking_gap_is_pgd10_minus_autoattack_with_a_paired_interval(measured):
    metrics, _, _ = measured
    label = eps_label(0.3)
    gap = metrics["masking"][label]
    expected = metrics["pgd10"][label]["accuracy"] - metrics["autoattack"][label]["accuracy"]
    assert gap["gap"] == pytest.approx(expected)
    assert gap["ci95"][0] <= gap["gap"] <= gap["ci95"][1], gap


def test_every_measured_field_is_saved_as_soon_as_it_is_done(measured):
    _, _, saved = measured
    assert eps_label(0.3) in saved[1]["autoattack"], [sorted(s) for s in saved]
    assert "pgd10" not in saved[1], [sorted(s) for s in saved]


def test_a_second_run_keeps_the_fields_measured_with_the_same_n_seed_and_code(tiny, measured):
    metrics, _, _ = measured
    logs = []
    again = card_metrics(tiny, "mnist", n=N, eps=(0.3,), previous=metrics, log=logs.append)
    assert sum("kept" in line for line in logs) == 2, logs
    assert again["autoattack"] == metrics["autoattack"]


def test_attacks_only_re_measures_the_attack_fields_and_keeps_every_other_field(tiny, measured):
    metrics, _, _ = measured
    previous = {**metrics, "clean_bundled_sample": {"accuracy": 0.5, "n": 1000}}
    logs = []
    again = card_metrics(tiny, "mnist", n=N, eps=(0.3,), previous=previous, attacks_only=True, log=logs.append)
    assert not any("kept" in line for line in logs), logs
    assert again["clean_bundled_sample"] == {"accuracy": 0.5, "n": 1000}


def test_an_entry_measured_at_another_n_is_measured_again(tiny, measured):
    metrics, _, _ = measured
    again = card_metrics(tiny, "mnist", n=N - 2, eps=(0.3,), previous=metrics, log=lambda m: None)
    assert again["autoattack"][eps_label(0.3)]["n"] == N - 2


def test_square_extra_drop_is_the_points_square_took_after_the_white_box_attacks():
    after = {"clean": 0.9, "apgd-ce": 0.5, "apgd-t": 0.42, "fab-t": 0.42, "square": 0.4}
    assert square_extra_drop(after) == pytest.approx(2.0)
    assert square_extra_drop({"clean": 0.9, "apgd-ce": 0.0}) is None


def test_masking_entry_counts_the_images_only_one_attack_missed():
    pgd = {"robust": "1100", "eps": 0.3}
    aa = {"robust": "1001", "eps": 0.3, "square_extra_drop": 1.5}
    entry = masking_entry(pgd, aa)
    assert (entry["pgd_only"], entry["autoattack_only"], entry["square_extra_drop"]) == (1, 1, 1.5)


def test_a_run_killed_after_a_field_resumes_from_the_saved_fields_and_leaves_no_state(tiny, tmp_path):
    saved = []

    def save_then_die(metrics):
        saved.append({k: (dict(v) if isinstance(v, dict) else v) for k, v in metrics.items()})
        if "autoattack" in metrics:
            raise KeyboardInterrupt  # killed right after the AutoAttack field was written

    with pytest.raises(KeyboardInterrupt):
        card_metrics(tiny, "mnist", n=N, eps=(0.3,), state_dir=tmp_path / "state", save=save_then_die,
                     log=lambda m: None)
    logs = []
    resumed = card_metrics(tiny, "mnist", n=N, eps=(0.3,), previous=saved[-1], state_dir=tmp_path / "state",
                           log=logs.append)
    assert [line.split(" (")[0] for line in logs if "kept" in line] == ["autoattack eps 0.3"], logs
    assert resumed["pgd10"][eps_label(0.3)]["n"] == N
    assert list((tmp_path / "state").iterdir()) == []  # the attacks' own state files are removed once done


def test_fields_measured_on_other_test_images_are_not_kept(tiny, measured):
    metrics, _, _ = measured
    logs = []
    card_metrics(tiny, "mnist", n=N, eps=(0.3,), previous={**metrics, "test_sha256": "0" * 64}, log=logs.append)
    assert not any("kept" in line for line in logs), logs


def test_attacks_only_keeps_the_other_fields_of_a_card_written_before_the_test_digest(tiny, measured):
    metrics, _, _ = measured
    legacy = {k: v for k, v in metrics.items() if k != "test_sha256"}
    again = card_metrics(tiny, "mnist", n=N, eps=(0.3,), previous={**legacy, "clean_bundled_sample": {"n": 7}},
                         attacks_only=True, log=lambda m: None)
    assert again["clean_bundled_sample"] == {"n": 7}
