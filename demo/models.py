"""The trained networks the demo runs, found the way compare.py finds them.

A run counts when its metrics file is there and valid (metrics_file.load_metrics, through
report/runs.py load_runs) and a weights file has the SHA-256 that the file records (looked for where
compare.py looks: beside the metrics, then where the trainer wrote it). The weights are
loaded once; each Model then reads one 28x28 image at a time, in its own framework and dtype.
"""
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from harness.experiment import RESULTS_DIR, shown
from harness.metrics_file import MetricsError, file_sha256
from numpy_nn.cnn import CNN
from numpy_nn.neural_network import NeuralNetwork
from numpy_nn.utils import softmax
from report.run import with_results
from report.runs import (
    UNREADABLE,
    CompareError,
    how_to_make,
    load_runs,
    weights_candidates,
)

# The files the trainers write by default (harness/flags.py): the MLP's, then the CNN's.
NETWORKS = ("numpy", "pytorch", "numpy_cnn", "pytorch_cnn")


def default_runs(results_dir=RESULTS_DIR):
    """The four networks the page reads: each one's --augment run where there is one, else its
    plain run. Trained on warped copies, the networks read drawn digits better
    (results/reference/augment/summary.md: 98.0% of the drawn test digits against 96.6% for
    the CNN, 96.1% against 91.9% for the MLP). A network with neither run is asked for with
    --augment."""
    runs = []
    for name in NETWORKS:
        augmented, plain = (results_dir / f"{name}{kind}_metrics.json" for kind in ("_augment", ""))
        runs.append(plain if plain.exists() and not augmented.exists() else augmented)
    return runs


@dataclass
class Model:
    """One trained network, ready to read digits."""
    name: str          # as compare.py names the run: "NumPy", or "NumPy MLP" beside a CNN
    weights: str       # the file it was loaded from, as shown to the user
    read: Callable     # image (28, 28) float32 -> (10 probabilities, [hidden layers' activations])


def numpy_reader(path, kind, activation="relu"):
    """A NumPy network's read(): the probabilities, and for the MLP each hidden layer's ReLU
    outputs (128 and 64 numbers), which the page draws as heat strips. (The .npz names the
    MLP's activation and normalisation itself.)"""
    net = (CNN if kind == "cnn" else NeuralNetwork).load(path)

    def read(image):
        logits, cache = net.forward(image.reshape(1, 784))        # 1,10
        hidden = [cache[f"h{i}"][0] for i in range(1, net.num_layers)] if kind == "mlp" else []
        return softmax(logits.astype(np.float64))[0], hidden
    return read


def pytorch_reader(path, kind, activation="relu"):
    """A PyTorch network's read(): the probabilities (no hidden layers shown). A state_dict
    holds no activation (it has no weights): the MLP's is the run record's."""
    import torch  # only when a PyTorch run is there

    from pytorch_nn import cnn
    from pytorch_nn import model as mlp
    network = cnn.load_model(path) if kind == "cnn" else mlp.load_model(path, activation=activation)
    network.eval()                                   # as the trainer evaluates: dropout off

    def read(image):
        x = torch.from_numpy(image.reshape(1, 784)).to(network.out.weight.dtype)
        with torch.inference_mode():
            logits = network(x).double()                              # 1,10
        return torch.softmax(logits, dim=1)[0].numpy(), []
    return read


READERS = {"numpy": numpy_reader, "pytorch": pytorch_reader}


def own_weights(run):
    """The first weights file compare.py would try whose SHA-256 is the one the run records,
    or None."""
    for path in weights_candidates(run):
        if path.is_file() and file_sha256(path) == run.record["weights_sha256"]:
            return path
    return None


def unusable(run):
    """Why a run's network cannot read digits here, or None. (A run with results: not diverged.)"""
    if run.record["config"]["dataset"] != "mnist":
        return f"{shown(run.path)} was trained on {run.record['config']['dataset']}, not on digits"
    return None


def find_models(metrics_paths):
    """(models, notes): a Model for every run that has its own weights, and a one-line note for
    every metrics file that gives none, saying why (and, when missing, which command trains it).
    A metrics file that is there but broken raises MetricsError, as in compare.py."""
    present = [path for path in metrics_paths if path.exists()]
    notes = [f"{shown(path)} not found: {how_to_make(path)}" for path in metrics_paths
             if not path.exists()]
    runs = load_runs(present)
    notes += [f"{shown(run.path)} diverged: it has no weights" for run in runs if run.diverged]
    models = []
    for run in with_results(runs):
        weights = own_weights(run)
        problem = unusable(run) or (None if weights else
                                    f"no weights file has the SHA-256 that {shown(run.path)} "
                                    f"records (written over by a later run?): train it again")
        if problem:
            notes.append(problem)
            continue
        try:
            read = READERS[run.framework](weights, run.model, run.record["config"]["activation"])
        except UNREADABLE as e:
            notes.append(f"cannot load {shown(weights)} ({type(e).__name__}): train it again")
            continue
        models.append(Model(run.name, shown(weights), read))
    return models, notes


# ----------------------------------------------------------------------------- the commands' flags

def add_run_flags(parser):
    """The flags demo.py and predict.py share: which runs to load."""
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help="the folder whose default runs to load: numpy, pytorch, numpy_cnn and "
                             "pytorch_cnn, each from its _augment_metrics.json where there is one, else "
                             "its _metrics.json (default: the repo's results/)")
    parser.add_argument("--runs", type=Path, nargs="+", default=None, metavar="PATH",
                        help="metrics files of the runs to load instead, as compare.py --runs "
                             "(default: the four in --results-dir)")


def models_or_exit(args):
    """find_models for the flags above; a broken metrics file, or one that is not a regular
    file, is a one-line error."""
    runs = args.runs or default_runs(args.results_dir)
    for path in runs:                          # opening a FIFO waits for a writer, forever
        if path.exists() and not path.is_file():
            sys.exit(f"error: {shown(path)} is not a regular file (a folder, FIFO, device or socket): "
                     f"give a run's metrics file")
    try:
        return find_models(runs)
    except (CompareError, MetricsError) as e:
        sys.exit(f"error: {e}")
