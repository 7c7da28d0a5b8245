"""Build the bundled test-set sample (100 images per class of MNIST and CIFAR-10) from a data folder.

Usage: python scripts/build_sample.py [DATA_DIR]   (default: ../shared/data beside the project)
Writes ssm_lab/datasets/sample/<name>-test-sample.npz and the README.md beside them (provenance and indices).
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

from ssm_lab.datasets.base import carve_per_class
from ssm_lab.datasets.cifar10 import cached_split
from ssm_lab.datasets.mnist import read_test_set
from ssm_lab.datasets.sample import PER_CLASS, SAMPLE_SEED, sample_path
from ssm_models.atomic import atomic_write

ROOT = Path(__file__).resolve().parents[1]


def write_sample(name: str, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Pick PER_CLASS images of every class by test-set index (seeded) and store them with their indices."""
    indices = carve_per_class(labels, PER_CLASS, SAMPLE_SEED)  # sorted official test-set indices
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images[indices], labels=labels[indices].astype(np.int64), indices=indices)
    path = sample_path(name)
    atomic_write(path, buffer.getvalue())
    print(f"{name}: {len(indices)} images, {path.stat().st_size / 1e6:.2f} MB -> {path.relative_to(ROOT)}")
    return indices


README_HEAD = """# Bundled test-set sample

What an offline machine with no data folder and no Hub cache evaluates on: 100 images per class of each official
test set (1,000 per data set), chosen by test-set index with a fixed seed (`carve_per_class(labels, 100, seed=0)`
in `ssm_lab/datasets/base.py`), stored as uint8 arrays with their labels and indices in compressed `.npz` files.
Rebuild with `python scripts/build_sample.py ../shared/data` (the development data folder).

- `mnist-test-sample.npz`: from the official MNIST test set (`t10k-images-idx3-ubyte`, the same pixels as the
  Hub's `ylecun/mnist` test split). An index is the position in the official test set (0-9,999).
- `cifar10-test-sample.npz`: from a public **JPEG conversion** of the CIFAR-10 test set
  (`test/<class>/<NNNN>.jpg`, 1,000 per class), so its pixels differ slightly from the original PNG/binary
  pixels the Hub's `uoft-cs/cifar10` holds. The conversion numbers files per class (0000-0999) and does not
  record the official test-set index; whether its numbers follow the official order within each class could not
  be checked here (no original copy on this machine). So an index here is `1000 * class + NNNN` (class in
  CIFAR-10's order: airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck), i.e. the image
  `test/<class>/<NNNN>.jpg` of the conversion, not an official test-set index.

Numbers computed on this sample say so ("bundled sample (1,000)") and are not comparable with full-test-set
figures; each shipped model card records its clean accuracy on it (`clean_bundled_sample`).
"""


def write_readme(indices: dict[str, np.ndarray]) -> None:
    lines = [README_HEAD]
    for name, chosen in indices.items():
        lines += [f"## {name} indices", "", "```", *(" ".join(map(str, chosen[i:i + 20])) for i in
                                                    range(0, len(chosen), 20)), "```", ""]
    atomic_write(sample_path("mnist").parent / "README.md", "\n".join(lines))


def main() -> None:
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data"
    indices = {"mnist": write_sample("mnist", *read_test_set(data / "mnist"))}
    # the zip is read in (class, file number) order: index = 1000 * class + NNNN of test/<class>/<NNNN>.jpg
    indices["cifar10"] = write_sample("cifar10", *cached_split(data / "cifar10" / "test.zip", "test"))
    write_readme(indices)


if __name__ == "__main__":
    main()
