"""Exercise: one step of Adam.

Goal: update every parameter in place by Adam's rule, as torch.optim.Adam does.

    python check.py --exercise adam_step            # grades this file
    python numpy_nn/train.py --exercise adam_step   # trains with your Adam (--optimizer adam, the default)

Hints:
- m = b1 m + (1 - b1) g, the running mean of the gradients; v = b2 v + (1 - b2) g^2, of their
  squares. Both update in place (m and v are self.m and self.v, kept from step to step).
- m and v start at zero, so early on they are too small: dividing by (1 - b^t) undoes that
  (docs/backprop.md#the-updates works it out, with Adam's numbers at step 1).
- The step: p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps), every weight its own
  step size. self.params is the network's flat parameter array: update it in place (-=).

Solution: the project's own, ../numpy_nn/utils.py, Adam.step.
"""
import math

import numpy as np


def step(self, grads):
    """One update of self.params (flat) from grads (flat, the same shape). self is the Adam
    optimizer: self.lr, self.betas = (b1, b2), self.eps, self.m, self.v, self.t (steps taken)."""
    (b1, b2), g, m, v = self.betas, grads, self.m, self.v
    self.t += 1
    m *= b1
    m += ...  # TODO  so that m = b1 m + (1 - b1) g
    v *= b2
    v += ...  # TODO  so that v = b2 v + (1 - b2) g^2
    step_size = ...  # TODO  lr, bias-corrected for m: divided by 1 - b1^t
    denom = ...  # TODO  sqrt(v), bias-corrected (divided by sqrt(1 - b2^t)), plus eps
    self.params -= ...  # TODO  p -= step_size m / denom
