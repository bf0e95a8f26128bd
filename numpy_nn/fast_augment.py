"""--augment, one batch ahead: the next batch is warped in a thread of its own while the
network trains on this one.

Why: the MLP's step leaves a core idle much of the time (NumPy's elementwise work runs on one
core; OpenBLAS spreads only the matrix products), and warping a batch (numpy_nn/augment.py)
costs about as much as the step itself, which no single-thread rewrite of the warp brought
under a quarter of it. NumPy lets go of Python's lock inside its operations, so a second
thread can warp batch k+1 on the idle core while the step on batch k runs.

The numbers are the same: Ahead calls the same Augment, on the same images, in the same order
(one batch in flight at a time, so its random draws come in the trainer's order), and checks
that each batch it is handed is the one it prepared. A stop (Ctrl-C) leaves at most one
batch being warped; it finishes in a millisecond, and the thread ends with the program. An
error in the thread is raised in the trainer, at the call that wanted that batch.

NumPy and the standard library only.
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class Ahead:
    """augment(images), computed one batch ahead. Session.batches tells it each epoch's batches
    (epoch(order): the index arrays, in order); then each call augment(x[idx]), made in that
    order, returns the batch warped in the background while the previous step ran."""

    def __init__(self, augment, x):
        self.augment, self.x = augment, x
        self.pool = ThreadPoolExecutor(1)                  # one batch in flight: draws stay in order
        self.batches, self.next = iter(()), None

    def _warp(self, idx):
        images = self.x[idx]
        return images, self.augment(images)

    def _start_next(self):
        idx = next(self.batches, None)
        self.next = None if idx is None else self.pool.submit(self._warp, idx)

    def epoch(self, order):
        """The epoch's batches, in the order the trainer will ask for them: start the first."""
        self.batches = iter(order)
        self._start_next()

    def __call__(self, images):
        if self.next is None:
            raise RuntimeError("augment ahead: asked for a batch no epoch announced")
        expected, warped = self.next.result()              # waits for it, or raises its error
        self._start_next()                                 # the next batch, while this one trains
        if images.shape != expected.shape or not np.array_equal(images, expected):
            raise RuntimeError("augment ahead: handed another batch than the one prepared")
        return warped


def ahead(augment, x_train, session):
    """The trainer's augmentation: with --augment, Ahead on the session's batches; without,
    the Augment as it is (it returns each batch unchanged)."""
    if not augment.ranges:
        return augment
    prepared = Ahead(augment, x_train)
    session.ahead = prepared.epoch
    return prepared
