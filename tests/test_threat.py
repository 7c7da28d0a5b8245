"""The threat model a checkpoint starts its attacks from: its own stated one, else its data set's DatasetInfo."""
from types import SimpleNamespace

import pytest

from ssm_lab.attacks import DEFAULT_EPS
from ssm_lab.datasets.info import DATASETS
from ssm_lab.threat import model_threat
from ssm_models.config import ModelConfig


def _model(meta: dict):
    return SimpleNamespace(config=ModelConfig(meta=meta))  # model_threat reads the config alone


def test_a_stated_threat_model_wins_over_the_dataset():
    stated = {"dataset": "mnist", "threat_model": {"norm": "Linf", "eps": 0.1, "step_size": 0.01, "steps": 10}}
    assert model_threat(_model(stated)) == (0.1, 0.01)


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_a_model_stating_no_budget_gets_its_datasets_threat_model(dataset):
    assert model_threat(_model({"dataset": dataset})) == (DATASETS[dataset].eps, None)


def test_a_zero_stated_budget_counts_as_none():
    assert model_threat(_model({"dataset": "cifar10", "threat_model": {"eps": 0}}))[0] == DATASETS["cifar10"].eps


def test_the_dataset_argument_overrides_the_meta():
    assert model_threat(_model({"dataset": "mnist"}), "CIFAR10")[0] == DATASETS["cifar10"].eps


def test_an_unknown_dataset_falls_back_to_the_linf_default():
    assert model_threat(_model({"dataset": "svhn"}))[0] == DEFAULT_EPS["Linf"]
