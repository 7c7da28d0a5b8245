"""What the app opens on: the first data set with shipped models (MNIST), its threat model's budget, and PGD."""
from __future__ import annotations

from ssm_lab.datasets.info import DATASETS, MODEL_DATASETS

OPENING_DATASET = DATASETS[MODEL_DATASETS[0]]
DATASET = OPENING_DATASET.display_name  # its menu name, 'MNIST'
EPS = OPENING_DATASET.eps_label  # '0.3', as the eps fields show it
ATTACK = "PGD (Linf)"  # the attack menu's label of the attack every comparison in the field starts from
