"""Exercise: a convolution's backward pass, through im2col.

Goal: from dLoss/dout, the gradients of the convolution's input, kernels and biases.

    python check.py --exercise conv_backward                                  # grades this file
    python numpy_nn/train.py --exercise conv_backward --model cnn --no-progress  # trains the CNN with it

Hints:
- The forward pass was one matrix product: out = cols @ Wm + b, cols (N*H'*W', C*kh*kw) holding
  one window per row, Wm (C*kh*kw, O) one kernel per column. Back through a product A @ B:
  dA = dout @ B^T and dB = A^T @ dout (docs/backprop.md#from-one-weight-to-the-matrix derives
  them). Check every shape.
- dW must come back in W's own layout O,C,kh,kw: Wm was W.reshape(O, -1).T.
- Each entry of cols is a copy of one input pixel: col2im(dcols, x_shape, kh, kw) adds each
  copy's gradient back onto its pixel (why it adds: docs/backprop.md#the-cnn).

Solution: the project's own, ../numpy_nn/layers.py, conv2d_backward.
"""
from numpy_nn.layers import col2im


def conv2d_backward(dout, cache):
    """dout N,O,H',W' -> (dx N,C,H,W, dW O,C,kh,kw, db O). cache = (x_shape, cols, W) from
    numpy_nn/layers.py conv2d_forward."""
    x_shape, cols, W = cache
    O, _, kh, kw = W.shape
    dout = dout.transpose(0, 2, 3, 1).reshape(-1, O)      # N*H'*W',O  the rows of cols @ Wm
    Wm = W.reshape(O, -1).T                               # C*kh*kw,O  each kernel a column
    dWm = ...  # TODO  C*kh*kw,O  out = cols Wm + b  =>  dWm = ?
    dW = ...  # TODO  O,C,kh,kw  dWm back in W's layout
    db = ...  # TODO  O  each bias was added to every output pixel
    dcols = ...  # TODO  N*H'*W',C*kh*kw  the gradient of every window's copy
    dx = ...  # TODO  N,C,H,W  the copies' gradients added back onto their pixels
    return dx, dW, db
