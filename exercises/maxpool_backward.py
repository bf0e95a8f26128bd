"""Exercise: 2x2 max-pooling's backward pass.

Goal: send each window's gradient to the position that held its maximum, and 0 elsewhere.

    python check.py --exercise maxpool_backward                                  # grades this file
    python numpy_nn/train.py --exercise maxpool_backward --model cnn --no-progress  # trains the CNN with it

Hints:
- The forward pass kept `first`, N,C,Ho,Wo: for each window, which of its 4 positions (row-major:
  00 01 10 11) held the maximum, the first one when several tie. Why the gradient goes to the
  maximum alone, and the rule for ties: docs/backprop.md#the-cnn.
- np.arange(4) == first[..., None] broadcasts to N,C,Ho,Wo,4: True at each window's maximum.
- An odd last row or column belonged to no window: its gradient is 0.

Solution: the project's own, ../numpy_nn/layers.py, maxpool2d_backward.
"""
import numpy as np


def maxpool2d_backward(dout, cache):
    """dout N,C,Ho,Wo -> dx N,C,H,W. cache = (x_shape, first) from numpy_nn/layers.py
    maxpool2d_forward."""
    x_shape, first = cache
    N, C, H, W = x_shape
    Ho, Wo = H // 2, W // 2
    mask = ...  # TODO  N,C,Ho,Wo,4  True at each window's (first) maximum
    dwindows = ...  # TODO  N,C,Ho,Wo,4  dout at the maximum, 0 at the other three
    dwindows = dwindows.reshape(N, C, Ho, Wo, 2, 2).transpose(0, 1, 2, 4, 3, 5)  # N,C,Ho,2,Wo,2
    dx = ...  # TODO  N,C,H,W  zeros in dout's dtype: what no window covers stays 0
    dx[:, :, :2 * Ho, :2 * Wo] = ...  # TODO  the windows laid back out as rows and columns
    return dx
