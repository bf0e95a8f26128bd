"""Exercise: softmax cross-entropy and its gradient.

Goal: the mean cross-entropy of softmax(logits) against the labels y, and dLoss/dlogits.

    python check.py --exercise softmax_cross_entropy            # grades this file
    python numpy_nn/train.py --exercise softmax_cross_entropy   # trains with your loss, once it passes

Hints:
- log softmax(z) = z - log(sum_j e^z_j). Subtract each row's maximum first: nothing changes
  mathematically, but e^z can no longer overflow (try a logit of 1000). Why nothing changes:
  docs/backprop.md#softmax-and-cross-entropy.
- logp[np.arange(n), y] picks each row's entry at its true class.
- d(mean CE)/dlogits = (softmax(logits) - onehot(y)) / n: the softmax's Jacobian collapses to
  p - onehot, and the mean puts the 1/n there (derived in the same section).
- No loops: every line is a whole-array operation.

Solution: the project's own, ../numpy_nn/utils.py, cross_entropy_with_grad (with log_softmax above it).
"""
import numpy as np


def cross_entropy_with_grad(logits, y):
    """logits B,C and labels y B -> (the mean cross-entropy as a float, dlogits B,C)."""
    n = len(y)
    shifted = ...  # TODO  B,C  logits minus each row's max (keepdims=True keeps it B,1)
    logp = ...  # TODO  B,C  log softmax: shifted minus the log of each row's sum of e^shifted
    loss = ...  # TODO  scalar  the mean over the batch of -log p(true class)
    dlogits = ...  # TODO  B,C  the probabilities softmax(logits), from logp
    dlogits[np.arange(n), y] -= ...  # TODO  p - onehot(y): what comes off at the true class?
    dlogits /= ...  # TODO  the loss is a mean over the batch
    return float(loss), dlogits
