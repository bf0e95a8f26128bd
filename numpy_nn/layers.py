"""The layers of a convolutional network, in NumPy: 2-D convolution and 2x2 max-pooling.

Each layer has a forward function that returns (out, cache) and a backward function that
takes dLoss/dout and the cache and returns the gradients, as in neural_network.py. Images
are N,C,H,W (PyTorch's order) and conv weights O,C,kh,kw (nn.Conv2d's), so weights move
between numpy_nn and pytorch_nn without reshuffling.

Convolution is one matrix product (im2col): copy every kh x kw window of the input into a
row of a matrix `cols`, and the convolution is cols @ (the kernels as a matrix). Backward
is two more matrix products: dW from the same cols, and dcols, which col2im adds back onto
the pixels the windows were copied from.

This is the version to read. fast_layers.py computes the same numbers faster, and the
trainer uses it unless given --layers plain (then it trains with these).
"""
import numpy as np

# ----------------------------------------------------------------------------- im2col and col2im


def im2col(x, kh, kw):
    """x N,C,H,W -> cols (N*H'*W', C*kh*kw): one row per output pixel, holding its window
    (stride 1, no padding: H' = H - kh + 1, W' = W - kw + 1)."""
    N, C, H, W = x.shape
    Ho, Wo = H - kh + 1, W - kw + 1
    cols = np.empty((N, C, kh, kw, Ho, Wo), x.dtype)
    for i in range(kh):                                   # one strided slice per kernel offset:
        for j in range(kw):                               # 9 copies for a 3x3 kernel, no per-pixel loop
            cols[:, :, i, j] = x[:, :, i:i + Ho, j:j + Wo]  # N,C,H',W'  pixel (i, j) of every window
    cols = cols.transpose(0, 4, 5, 1, 2, 3)               # N,H',W',C,kh,kw  one window per output pixel
    return cols.reshape(N * Ho * Wo, C * kh * kw)          # N*H'*W',C*kh*kw


def col2im(dcols, x_shape, kh, kw):
    """im2col's way back, not its inverse: dcols (N*H'*W', C*kh*kw) -> dx N,C,H,W. Each entry
    of cols is a copy of one input pixel, so its gradient is added back onto that pixel; a pixel
    that sits in several windows collects the sum."""
    N, C, H, W = x_shape
    Ho, Wo = H - kh + 1, W - kw + 1
    dcols = dcols.reshape(N, Ho, Wo, C, kh, kw).transpose(0, 3, 4, 5, 1, 2)  # N,C,kh,kw,H',W'
    dx = np.zeros(x_shape, dcols.dtype)                   # N,C,H,W
    for i in range(kh):
        for j in range(kw):
            dx[:, :, i:i + Ho, j:j + Wo] += dcols[:, :, i, j]  # N,C,H',W'  back where im2col took them
    return dx


# ----------------------------------------------------------------------------- convolution

def conv2d_forward(x, W, b):
    """x N,C,H,W, W O,C,kh,kw, b O -> out N,O,H',W' (stride 1, no padding; like nn.Conv2d,
    this is a cross-correlation: out[n,o,i,j] = b[o] + sum_{c,p,q} W[o,c,p,q] x[n,c,i+p,j+q])."""
    N, C, H, Wd = x.shape
    O, _, kh, kw = W.shape
    Ho, Wo = H - kh + 1, Wd - kw + 1
    cols = im2col(x, kh, kw)                              # N*H'*W',C*kh*kw
    Wm = W.reshape(O, -1).T                               # C*kh*kw,O  each kernel a column, in cols' order
    out = cols @ Wm + b                                   # N*H'*W',O  every window . every kernel, + bias
    out = out.reshape(N, Ho, Wo, O).transpose(0, 3, 1, 2)  # N,O,H',W'
    return out, (x.shape, cols, W)


def conv2d_backward(dout, cache):
    """dout N,O,H',W' -> (dx N,C,H,W, dW O,C,kh,kw, db O)."""
    x_shape, cols, W = cache
    O, _, kh, kw = W.shape
    dout = dout.transpose(0, 2, 3, 1).reshape(-1, O)      # N*H'*W',O  the rows of cols @ Wm
    Wm = W.reshape(O, -1).T                               # C*kh*kw,O
    dWm = cols.T @ dout                                   # C*kh*kw,O  out = cols Wm + b => dWm = cols^T dout
    dW = dWm.T.reshape(W.shape)                           # O,C,kh,kw
    db = dout.sum(axis=0)                                 # O  each bias is added to every output pixel
    dcols = dout @ Wm.T                                   # N*H'*W',C*kh*kw  dcols = dout Wm^T
    dx = col2im(dcols, x_shape, kh, kw)                   # N,C,H,W
    return dx, dW, db


# ----------------------------------------------------------------------------- max-pooling
# When several positions of a window share the maximum (ReLU makes this common: a window of
# zeros), the gradient goes to the FIRST of them in row-major order, as PyTorch does in its usual
# B,C,H,W layout (pytorch_nn/cnn.py trains channels last, whose kernel may pick another; the
# weights' gradients still agree, as the ties come from blank patches, whose inputs are equal).

def _windows(x):
    """x N,C,H,W -> its 2x2 windows (stride 2) as N,C,H//2,W//2,4, each window's positions
    in row-major order 00 01 10 11. An odd last row or column belongs to no window
    (PyTorch's floor mode: 11 -> 5)."""
    N, C, H, W = x.shape
    Ho, Wo = H // 2, W // 2
    x = x[:, :, :2 * Ho, :2 * Wo].reshape(N, C, Ho, 2, Wo, 2)   # N,C,Ho,2,Wo,2
    return x.transpose(0, 1, 2, 4, 3, 5).reshape(N, C, Ho, Wo, 4)


def maxpool2d_forward(x):
    """x N,C,H,W -> out N,C,H//2,W//2: the maximum of each 2x2 window, stride 2."""
    windows = _windows(x)                                 # N,C,Ho,Wo,4
    out = windows.max(axis=-1)                            # N,C,Ho,Wo
    first = windows.argmax(axis=-1)                       # N,C,Ho,Wo  where the max is (argmax: the first)
    return out, (x.shape, first)


def maxpool2d_backward(dout, cache):
    """dout N,C,Ho,Wo -> dx N,C,H,W: d out / d x = 1 at each window's (first) maximum, 0
    at its other three positions."""
    x_shape, first = cache
    N, C, H, W = x_shape
    Ho, Wo = H // 2, W // 2
    mask = np.arange(4) == first[..., None]               # N,C,Ho,Wo,4  True at the maximum
    dwindows = mask * dout[..., None]                     # N,C,Ho,Wo,4  dout at the maximum, 0 elsewhere
    dwindows = dwindows.reshape(N, C, Ho, Wo, 2, 2).transpose(0, 1, 2, 4, 3, 5)  # N,C,Ho,2,Wo,2
    dx = np.zeros(x_shape, dout.dtype)                    # N,C,H,W  a dropped odd row/column gets 0
    dx[:, :, :2 * Ho, :2 * Wo] = dwindows.reshape(N, C, 2 * Ho, 2 * Wo)
    return dx
