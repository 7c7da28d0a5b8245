"""What the app opens on: the first data set with shipped models (MNIST) and its threat model's budget."""
from __future__ import annotations

from ssm_lab.datasets.info import DATASETS, MODEL_DATASETS

OPENING_DATASET = DATASETS[MODEL_DATASETS[0]]
DATASET = OPENING_DATASET.display_name  # its menu name, 'MNIST'
EPS = OPENING_DATASET.eps_label  # '0.3', as the eps fields show it
