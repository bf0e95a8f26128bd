"""A run as the table and the pictures see it: its record, and the names it is shown under."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class RunResult:
    """One metrics file, read and checked, with the names it is shown under."""
    path: Path
    record: dict
    name: str             # legends, table: "NumPy", or "NumPy (lr_1e-3)" when a framework repeats
    key: str              # file names: "numpy", or "numpy_lr_1e-3"
    weights: Path = None  # the saved weights, once found and checked to be this run's

    @property
    def framework(self):
        return self.record["framework"]

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


def with_results(runs):
    """The runs that have something to show: all but the diverged ones."""
    return [run for run in runs if not run.diverged]


def divergence(run):
    """Where a diverged run stopped, e.g. "epoch 1, batch 5 (loss nan)"."""
    where = run.record["diverged"]
    return f"epoch {where['epoch']}, batch {where['batch']} (loss {where['loss']})"
