"""MNIST (and Fashion-MNIST) as NumPy arrays, and the mini-batches a training epoch walks through.

    from data_loader import load_mnist, batches
    x_train, y_train, x_test, y_test = load_mnist()   # (60000, 784) float32 in [0, 1], int64 labels
    for idx in batches(len(x_train), 128, rng):       # one epoch: every sample once, shuffled
        x, y = x_train[idx], y_train[idx]

Both trainers import this file, so the from-scratch side needs only NumPy and the
standard library to get its data. Where the data comes from (a cache in data/, mirrors,
checksums, an offline fallback) is data_fetch.py's business: it downloads MNIST once,
checks every array against a known SHA-256 digest and keeps it in data/MNIST/raw/.

Run `python data_loader.py [--dataset fashion-mnist]` to fetch, verify and summarise.
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np

from data_fetch import DATA_DIR, DATASETS, DataError, fetch  # noqa: F401  (DataError: what load_mnist raises)


def load_mnist(dataset="mnist", data_dir=None, log=None):
    """Return x_train, y_train, x_test, y_test: float32 (N, 784) pixels / 255 and int64 labels.

    dataset: "mnist" or "fashion-mnist"; data_dir: the cache's root (default: the repo's data/);
    log: called with a line for each source tried. A DataError says, in one line, what failed."""
    arrays, _ = fetch(dataset, data_dir, log)                  # {part: uint8 array}, verified
    x_train = arrays["train_images"].astype(np.float32) / np.float32(255)
    x_test = arrays["test_images"].astype(np.float32) / np.float32(255)
    y_train = arrays["train_labels"].astype(np.int64)
    y_test = arrays["test_labels"].astype(np.int64)
    return x_train, y_train, x_test, y_test


def batches(n, batch_size, rng):
    """Yield index arrays that cover range(n) once, in an order drawn from rng.

    Both trainers call this with a np.random.default_rng(seed), so for the same seed they
    see the same mini-batches in the same order. The last batch may be smaller.
    """
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


# ----------------------------------------------------------------------------- the command

def _say(line):
    """Print a line now. If whoever reads the output went away (`python data_loader.py | head -1`),
    what follows goes nowhere and the command goes on: the cache still gets written."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # what is still buffered drains into nothing
        os.close(devnull)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Fetch, verify and summarise MNIST.")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="mnist",
                        help="which dataset (default: %(default)s)")
    parser.add_argument("--data-dir", default=str(DATA_DIR),
                        help="root of the cache (default: the repo's data/ folder)")
    args = parser.parse_args(argv)
    try:
        arrays, source = fetch(args.dataset, args.data_dir, log=_say)
    except DataError as e:
        sys.exit(f"error: {e}")
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        counts = " ".join(f"{c}:{k}" for c, k in enumerate(np.bincount(y, minlength=10)))
        _say(f"{split:5s} images {x.shape} {x.dtype}, labels {y.shape} | per class {counts}")
    _say(f"verified against known SHA-256 digests; cached in "
         f"{Path(args.data_dir) / DATASETS[args.dataset]['folder'] / 'raw'}")


if __name__ == "__main__":
    main()
