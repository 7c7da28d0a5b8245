"""One `DatasetInfo` per built-in data set: shape, classes, threat model, card budgets, where its images come from."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..eps import eps_label


@dataclass(frozen=True)
class HubSource:
    """Parquet files of a Hub data set repo; `revision` is pinned here and overridable (argument, then env var)."""

    repo_id: str
    files: dict[str, str]  # the project's split name ("train", "test") -> file in the repo
    revision: str
    image_column: str
    rows: dict[str, int]  # rows each file must hold
    max_bytes: int = 400 << 20  # refuse anything far larger than the real files (the largest is ~150 MB)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    display_name: str
    channels: int
    image_size: int
    classes: tuple[str, ...]
    eps: float  # the threat model's L-inf budget for images in [0, 1] (training and the app's default)
    pgd_step: float  # the training attack's step at that budget
    card_eps: tuple[float, ...]  # budgets every model card reports
    card_step: float | None  # PGD-10 step on the cards: fixed, or eps/4 when None
    mean: tuple[float, ...]  # per-channel training statistics, for the model's own Normalize layer
    std: tuple[float, ...]
    val_per_class: int  # validation images carved from each class of the training set (fixed seed)
    split_seed: int
    hub: HubSource | None = None
    has_sample: bool = False  # a bundled test sample ships in ssm_lab/datasets/sample/
    folder_files: tuple[str, ...] = field(default=())  # what an explicit data folder holds for it

    @property
    def eps_label(self) -> str:
        """The threat model's budget as people write it: '0.3', '8/255'."""
        return eps_label(self.eps, approx=False)

    def card_pgd_step(self, eps: float) -> float:
        return self.card_step if self.card_step is not None else eps / 4


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Commits seen pinned in public code that downloads these files (the Hub is not reachable from this machine);
# override with the revision argument or SSM_LAB_<NAME>_REVISION, e.g. SSM_LAB_MNIST_REVISION=main.
MNIST_REVISION = "77f3279092a1c1579b2250db8eafed0ad422088c"
CIFAR10_REVISION = "0b2714987fa478483af9968de7c934580d0bb9a2"
TINY_IMAGENET_REVISION = "main"  # its file names carry content hashes, which pin them

DATASETS = {
    "mnist": DatasetInfo(
        "mnist", "MNIST", 1, 28, tuple(str(d) for d in range(10)), 0.3, 0.04, (0.1, 0.3), None,
        (0.1307,), (0.3081,), 50, 5_000,
        hub=HubSource("ylecun/mnist", {"train": "mnist/train-00000-of-00001.parquet",
                                       "test": "mnist/test-00000-of-00001.parquet"},
                      MNIST_REVISION, "image", {"train": 60_000, "test": 10_000}),
        has_sample=True, folder_files=("mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz")),
    "cifar10": DatasetInfo(
        "cifar10", "CIFAR-10", 3, 32, CIFAR10_CLASSES, 8 / 255, 2 / 255, (8 / 255,), 2 / 255,
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 100, 10,
        hub=HubSource("uoft-cs/cifar10", {"train": "plain_text/train-00000-of-00001.parquet",
                                          "test": "plain_text/test-00000-of-00001.parquet"},
                      CIFAR10_REVISION, "img", {"train": 50_000, "test": 10_000}),
        has_sample=True, folder_files=("cifar10/train.zip", "cifar10/test.zip")),
    "tiny-imagenet": DatasetInfo(
        "tiny-imagenet", "Tiny-ImageNet", 3, 64, tuple(str(i) for i in range(200)), 8 / 255, 2 / 255,
        (8 / 255,), 2 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 5, 200,
        # the Hub's "valid" split is the labelled held-out set: the project's test split
        hub=HubSource("zh-plus/tiny-imagenet", {"train": "data/train-00000-of-00001-1359597a978bc4fa.parquet",
                                                "test": "data/valid-00000-of-00001-70d52db3c749a935.parquet"},
                      TINY_IMAGENET_REVISION, "image", {"train": 100_000, "test": 10_000})),
}
# the data sets with shipped models and a bundled sample: what the app, the cards and the CLI's choices offer
MODEL_DATASETS = tuple(name for name, info in DATASETS.items() if info.has_sample)


def dataset_info(name: str | None = None) -> DatasetInfo | dict[str, DatasetInfo]:
    """Channels, image size, class names and threat model of a built-in dataset (all of them when `name` is None)."""
    if name is None:
        return dict(DATASETS)
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; built-in datasets: {', '.join(DATASETS)}")
    return DATASETS[key]
