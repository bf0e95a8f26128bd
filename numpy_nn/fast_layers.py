"""The fast versions of layers.py's convolution and 2x2 max-pooling, for the trainer.

layers.py is the version to read: the math, line by line. This file computes the same
numbers (tests/test_layers.py holds them equal in float64) faster: fast_cnn.py's training
step took 2.1-3.0 times less than cnn.py's (batch 128, float32, Adam; medians of 100 steps,
the two interleaved in one process, three runs on 2 cores shared with other jobs). The
tricks, each measured: channels-last memory, the bias folded into the matrix product,
col2im one kernel offset at a time, and pooling as a tournament that remembers its
winners. The same interface: forward returns (out, cache), backward takes dLoss/dout and
the cache. Images are N,C,H,W and conv weights O,C,kh,kw, as there.

Memory layout ("channels last"). The arrays have NCHW shapes, but the convolution keeps
them in N,H,W,C memory, as PyTorch's torch.channels_last does: then the rows of cols are
the output pixels and the product cols @ W comes out already in N,H,W,O memory, so no
layer ever transposes a large array; it only returns an NCHW-shaped view of it
(out.transpose(0, 3, 1, 2)). Every function gives the same numbers for any memory layout;
channels-last memory only makes them faster.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# ----------------------------------------------------------------------------- im2col


def im2col(x, kh, kw):
    """x N,C,H,W -> cols (N*H'*W', kh*kw*C + 1): one row per output pixel holding its
    window in (kh, kw, C) order, then a 1, the input the bias multiplies (H' = H - kh + 1,
    W' = W - kw + 1: stride 1, no padding)."""
    N, C, H, W = x.shape
    Ho, Wo, K = H - kh + 1, W - kw + 1, kh * kw * C
    xh = x.transpose(0, 2, 3, 1)                                  # N,H,W,C  a view (channels last)
    windows = sliding_window_view(xh, (kh, kw), axis=(1, 2))      # N,H',W',C,kh,kw  a view, no copy
    cols = np.empty((N * Ho * Wo, K + 1), x.dtype)                # N*H'*W',K+1
    cols[:, K] = 1                                                # the bias's input
    windows_in_cols = cols[:, :K].reshape(N, Ho, Wo, kh, kw, C)   # a view into cols
    windows_in_cols[...] = windows.transpose(0, 1, 2, 4, 5, 3)    # N,H',W',kh,kw,C  the one copy
    return cols


# ----------------------------------------------------------------------------- convolution
# The bias rides in the matrix product as one more weight, on an input that is always 1
# (the last column of cols): out = cols @ [W; b]. Backward then gets db from the same
# product as dW, as its last row. A separate out += b and dout.sum(axis=0) cost 1.4 ms
# more per batch of 128 on conv1's 26x26x32 outputs (product and bias 0.9 ms -> 0.5 ms;
# dW and db 1.8 ms -> 0.7 ms).

def conv2d_forward(x, W, b):
    """x N,C,H,W, W O,C,kh,kw, b O -> out N,O,H',W' (stride 1, no padding; like nn.Conv2d,
    this is a cross-correlation: out[n,o,i,j] = b[o] + sum_{c,p,q} W[o,c,p,q] x[n,c,i+p,j+q])."""
    N, C, H, _ = x.shape
    O, _, kh, kw = W.shape
    cols = im2col(x, kh, kw)                                      # N*H'*W',K+1  K = kh*kw*C
    Wm = W.transpose(2, 3, 1, 0).reshape(-1, O)                   # K,O  the kernels as columns
    Wb = np.concatenate([Wm, b[None, :]])                         # K+1,O  and the bias as the last row
    out = cols @ Wb                                               # N*H'*W',O  every window . every kernel, + bias
    Ho = H - kh + 1
    out = out.reshape(N, Ho, -1, O).transpose(0, 3, 1, 2)         # N,O,H',W'  a view of N,H',W',O memory
    return out, (x.shape, W.shape, cols, Wb)


def conv2d_backward(dout, cache, need_dx=True):
    """dout N,O,H',W' -> (dx N,C,H,W, dW O,C,kh,kw, db O). need_dx=False skips dx, which
    the first layer never needs (its input is the image); dx is then None."""
    x_shape, W_shape, cols, Wb = cache
    N, C, H, W = x_shape
    O, _, kh, kw = W_shape
    Ho, Wo = H - kh + 1, W - kw + 1
    dflat = dout.transpose(0, 2, 3, 1).reshape(-1, O)             # N*H'*W',O  a view when dout is channels-last
    dWb = cols.T @ dflat                                          # K+1,O  out = cols Wb => dWb = cols^T dout
    db = dWb[-1]                                                  # O  (the bias's input is 1: db = sum of dout)
    dW = np.ascontiguousarray(dWb[:-1].reshape(kh, kw, C, O).transpose(3, 2, 0, 1))  # O,C,kh,kw
    if not need_dx:
        return None, dW, db
    # dx by col2im: dcols = dout Wb^T holds, for every window, the gradient of each of its
    # kh*kw*C entries; each entry is a copy of an input pixel, so dx adds them back onto
    # the pixels they came from. Done one kernel offset (i, j) at a time: the (i, j) part
    # of dcols is dout @ W[:, :, i, j] (a 1x1 convolution), and it lands on the input
    # shifted by (i, j), one strided slice += for the whole batch.
    #
    # Measured at the real shape (batch 128, conv2: 32 -> 64 channels on 13x13, float32,
    # both cores, medians of 20, four runs): this loop, 4.2-4.5 ms. The whole dcols first
    # (one 2.7 ms product) then nine += slices of it: 5.4-6.6 ms; the nine small products
    # each give a 2 MB block that is added at once, where the one big product writes all
    # 18 MB of dcols and the adds read it back. dx as a "full" convolution of the
    # zero-padded dout with the flipped kernels: 15 ms; its product is larger (13x13 rows
    # per image by 64x9 columns, against 11x11 rows by 64 here) and its im2col first copies
    # 12.5 million numbers. Both others live in tests/test_layers.py as witnesses of this
    # dx. (np.add.at would be tens of times slower: numpy issue 5922.)
    Wk = Wb[:-1].reshape(kh, kw, C, O)                            # kh,kw,C,O  the kernels by offset
    dxh = np.zeros((N, H, W, C), dout.dtype)                      # N,H,W,C  channels last, like x
    for i in range(kh):
        for j in range(kw):
            dcols_ij = dflat @ Wk[i, j].T                         # N*H'*W',C  the (i, j) entries of every window
            dxh[:, i:i + Ho, j:j + Wo, :] += dcols_ij.reshape(N, Ho, Wo, C)  # back onto the pixels they copied
    return dxh.transpose(0, 3, 1, 2), dW, db                      # N,C,H,W


# ----------------------------------------------------------------------------- max-pooling
# A 2x2 window holds four positions; PyTorch scans them row by row, 00 01 / 10 11, and
# when several equal the maximum the gradient goes to the FIRST of them only. (ReLU makes
# such ties common: a window of zeros.) The forward pass finds the maximum as a small
# tournament that records who won: 00 against 01, 10 against 11, then top row against
# bottom row. A challenger wins only if strictly greater, so a tie goes to the earlier
# position, the one PyTorch picks.
#
# The four positions are four strided views of x, one per corner of the windows. The
# other way, x.reshape(N, C, H/2, 2, W/2, 2).max(axis=(3, 5)), finds only the maximum, not
# where it was, and took longer: 3.5 ms against 1.5 ms for the whole tournament (pool1:
# batch 128, 32x26x26, float32, channels-last memory; 41 ms against 2.3 ms in NCHW memory).


def _corner(x, di, dj):
    """Position (di, dj) of every 2x2 window of x (stride 2): a strided view N,C,H//2,W//2.
    An odd last row or column belongs to no window (PyTorch's floor mode: 11 -> 5)."""
    Ho, Wo = x.shape[2] // 2, x.shape[3] // 2
    return x[:, :, di:2 * Ho:2, dj:2 * Wo:2]


def maxpool2d_forward(x):
    """x N,C,H,W -> out N,C,H//2,W//2: the maximum of each 2x2 window, stride 2."""
    x00, x01, x10, x11 = (_corner(x, di, dj) for di, dj in ((0, 0), (0, 1), (1, 0), (1, 1)))  # N,C,Ho,Wo each
    top_right = x01 > x00                                       # N,C,Ho,Wo  the top row's max is at 01, not 00
    top = np.maximum(x00, x01)                                  #            the top row's max
    bottom_right = x11 > x10                                    #            the bottom row's max is at 11, not 10
    bottom = np.maximum(x10, x11)
    bottom_wins = bottom > top                                  #            the window's max is in the bottom row
    out = np.maximum(top, bottom, out=top)                      # N,C,Ho,Wo  the window's max
    return out, (x.shape, top_right, bottom_right, bottom_wins)


def maxpool2d_backward(dout, cache):
    """dout N,C,Ho,Wo -> dx N,C,H,W: each window's gradient goes to its (first) maximum,
    where d out / d x = 1; the other three positions get 0. The tournament in reverse:
    split dout between the two rows, then each row's share between its two positions."""
    x_shape, top_right, bottom_right, bottom_wins = cache
    N, C, H, W = x_shape
    dx = np.zeros((N, H, W, C), dout.dtype).transpose(0, 3, 1, 2)  # N,C,H,W  channels last; a dropped row/column gets 0
    # dout copied into the masks' memory order (channels last when x was): elementwise
    # operations between arrays stored in different orders jump through memory, 10x slower.
    d = np.empty_like(bottom_wins, dtype=dout.dtype)            # N,C,Ho,Wo  (empty_like keeps the memory order)
    d[...] = dout
    dbottom = d * bottom_wins                                   # N,C,Ho,Wo  dout where the max is in the bottom row
    dtop = d - dbottom                                          #            ... in the top row (exact: x - x = 0)
    np.multiply(dtop, top_right, out=_corner(dx, 0, 1))         # dx01 = dtop where 01 won
    np.subtract(dtop, _corner(dx, 0, 1), out=_corner(dx, 0, 0))  # dx00 = the rest of dtop
    np.multiply(dbottom, bottom_right, out=_corner(dx, 1, 1))   # dx11
    np.subtract(dbottom, _corner(dx, 1, 1), out=_corner(dx, 1, 0))  # dx10
    return dx
