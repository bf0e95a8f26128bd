"""A run as the table and the pictures see it: its record, its model, and the names it is
shown under."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from numpy_nn.cnn import PARAM_SHAPES as CNN_SHAPES

FRAMEWORK_NAMES = {"numpy": "NumPy", "pytorch": "PyTorch"}
MODEL_NAMES = {"mlp": "MLP", "cnn": "CNN"}   # config["model"], as the trainers' --model takes it
IMAGE_PIXELS = 784                           # the MLP's inputs: MNIST's and Fashion-MNIST's 28x28 pixels


def model_layers(record):
    """A run's layers: "784-128-64-10" for an MLP (its layer sizes, input to output), "32-64
    conv" for the CNN (the filters of its two conv layers)."""
    config = record["config"]
    if config["model"] == "cnn":
        return f"{CNN_SHAPES['W1'][0]}-{CNN_SHAPES['W2'][0]} conv"
    if config["hidden"] is None:  # no trainer of ours writes this; say what is known
        return ""
    return "-".join(str(size) for size in (IMAGE_PIXELS, *config["hidden"], 10))


def model_name(record):
    """The network a run trained: "MLP 784-128-64-10" or "CNN 32-64 conv"."""
    return f"{MODEL_NAMES[record['config']['model']]} {model_layers(record)}".strip()


@dataclass
class RunResult:
    """One metrics file, read and checked, with the names it is shown under."""
    path: Path
    record: dict
    name: str             # legends, table: "NumPy", "NumPy CNN" or "NumPy (lr_1e-3)" (name_runs)
    key: str              # file names: the metrics file's stem, "numpy" or "lr_1e-3" (run_keys)
    weights: Path = None  # the saved weights, once found and checked to be this run's
    robustness: dict = None  # {"perturbed": accuracy, "drawn": accuracy} from them (compare.py)

    @property
    def framework(self):
        return self.record["framework"]

    @property
    def model(self):
        """"mlp" or "cnn"."""
        return self.record["config"]["model"]

    @property
    def interrupted(self):
        return self.record["status"] == "interrupted"

    @property
    def diverged(self):
        """The loss became NaN: the run has no result to show (no accuracy, no weights)."""
        return self.record["status"] == "diverged"

    @property
    def label(self):
        """The name, marked when the run was stopped before its last epoch or diverged."""
        if self.interrupted or self.diverged:
            return f"{self.name} ({self.record['status']})"
        return self.name

    def series(self, field):
        """One per-epoch number, e.g. "test_acc", as an array in epoch order."""
        return np.array([epoch[field] for epoch in self.record["epochs"]])


def run_keys(paths, out_dir=None):
    """The name each run's files carry: its metrics file's stem, less "_metrics"
    (results/numpy_metrics.json is "numpy", lr_1e-3.json is "lr_1e-3"). Two runs with one
    stem add their folder's name ("numpy_kept"), then their place if even that repeats. So
    does a run whose name belongs to another metrics file in out_dir, the folder the pictures
    go to: results/numpy_metrics.json owns "numpy" there, and its pictures are never written
    over by another folder's numpy_metrics.json."""
    stems = [path.stem.removesuffix("_metrics") or path.stem for path in paths]
    keys = []
    for stem, path in zip(stems, paths):
        owner = Path(out_dir) / f"{stem}_metrics.json" if out_dir is not None else None
        owned_by_another = owner is not None and owner.exists() and not owner.samefile(path)
        keys.append(f"{stem}_{path.resolve().parent.name}" if owned_by_another or stems.count(stem) > 1
                    else stem)
    return [f"{key}_{i + 1}" if keys.count(key) > 1 else key for i, key in enumerate(keys)]


def name_runs(records, paths, out_dir=None):
    """(name, key) per run: the name for legends and the table, the key for file names
    (run_keys). The name is the framework; then, when a CNN is among the runs, the model
    ("NumPy CNN", "NumPy MLP": a legend must say which is which); then the file's stem when
    that still repeats ("NumPy (lr_1e-3)"); then the run's place when even that does."""
    with_model = any(record["config"]["model"] != "mlp" for record in records)
    bases = []
    for record in records:
        name = FRAMEWORK_NAMES[record["framework"]]
        if with_model:
            name = f"{name} {MODEL_NAMES[record['config']['model']]}"
        bases.append(name)
    names = []
    for i, (name, path) in enumerate(zip(bases, paths)):
        if bases.count(name) > 1:
            name = f"{name} ({path.stem.removesuffix('_metrics') or path.stem})"
        if name in names:  # the same file name in two folders
            name = f"{name} #{i + 1}"
        names.append(name)
    return list(zip(names, run_keys(paths, out_dir)))


def picture_name(kind, *runs, suffix=".png"):
    """The file a picture drawn from these runs is written to: "learning_numpy.png" for one
    run, "learning_relu_vs_sigmoid.png" for several (an overlay), from the runs' keys."""
    return f"{kind}_{'_vs_'.join(run.key for run in runs)}{suffix}"


def plural(n, word):
    """"1 epoch", "3 epochs", "1,135 mistakes": a count and its noun, agreeing."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def with_results(runs):
    """The runs that have something to show: all but the diverged ones."""
    return [run for run in runs if not run.diverged]


def divergence(run):
    """Where a diverged run stopped, e.g. "epoch 1, batch 5 (loss nan)"."""
    where = run.record["diverged"]
    return f"epoch {where['epoch']}, batch {where['batch']} (loss {where['loss']})"
