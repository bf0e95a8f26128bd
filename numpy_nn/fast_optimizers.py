"""utils.py's optimizers, with one thing added for speed: each step ends by setting to 0 the
entries of the optimizer's state that have decayed into the subnormal floats. The update
rules are utils.py's own, called unchanged (a learner's Adam.step too: --exercise
adam_step); the trainer uses these unless given --layers plain.

Why. A weight whose gradient stays 0 (a dead unit, a pixel never inked) has Adam's m, and
the momentum velocity, shrink by 0.9 every step, down past the smallest normal float
(np.finfo(dtype).tiny, 1.2e-38 in float32) into the subnormal numbers, which many CPUs add
and multiply on a slow path. Three epochs of the default MLP run leave 5.4% of utils.py's m
subnormal (and none of this one's). Measured on a 2-core Intel Xeon shared with other jobs:
perf/benchmark.py's Adam step on such a state took 940-1,010 us as utils.py writes it (285-295
us on a fresh state) and 390 us here (400-560 us on a fresh state: the flush is one more pass
over m); three runs of 15 repeats. The default run's epochs 4-10 took a median 0.82-0.84 s
with --layers plain and 0.53-0.58 s without (two undisturbed runs each). A flushed value was
worth less than lr * tiny / eps of a step (Adam), or lr * tiny (momentum): below 1e-30.

The numbers are utils.py's, bit for bit, wherever no entry turns subnormal: in float32 that
takes hundreds of steps of a gradient exactly 0, in float64 thousands
(tests/test_equivalence.py holds both versions equal, and equal to torch.optim).
"""
import numpy as np

from numpy_nn.utils import SGD, Adam


def flush_subnormals(a):
    """Set a's subnormal entries (0 < |a| < the smallest normal float) to 0, in place."""
    a *= np.abs(a) >= np.finfo(a.dtype).tiny


class FastSGD(SGD):
    """SGD (with momentum: its velocity flushed after each step)."""

    def step(self, grads):
        super().step(grads)
        if self.momentum:
            flush_subnormals(self.velocity)


class FastAdam(Adam):
    """Adam, its m flushed after each step (v, which shrinks by 0.999 a step, would need
    tens of thousands of steps of a zero gradient to get there)."""

    def step(self, grads):
        super().step(grads)
        flush_subnormals(self.m)


FAST_OPTIMIZERS = {  # utils.OPTIMIZERS' choices and settings
    "sgd": lambda params, lr: FastSGD(params, lr=lr),
    "momentum": lambda params, lr: FastSGD(params, lr=lr, momentum=0.9),
    "adam": lambda params, lr: FastAdam(params, lr=lr),
}
