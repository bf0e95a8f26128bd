"""numpy_nn/layers.py (the plain layers) checked against slow, obvious loops, centred finite
differences and PyTorch (torch.nn.functional.conv2d / max_pool2d with autograd), and
numpy_nn/fast_layers.py (the trainer's) checked equal to the plain layers and to the same
references.

Tolerances, all in float64: the fast convolution, the loops and torch add the same
products in different orders, so they agree to a few units of rounding (~1e-15 of the
array's largest entry); 1e-10 leaves room for that and catches any real mistake, which is
of order 1. Finite differences with eps 1e-6 err by about eps^2 (truncation) plus 1e-16 *
|loss| / eps (rounding) ~ 1e-9 of the largest entry here, so they are held to 1e-7. Max-pooling does no arithmetic
(it picks and copies), so it must equal torch exactly. Fast against plain: the same sums
(at most C*kh*kw = 288 products each) added in another order, so each differs by a few
hundred roundings of 1e-16 at most, ~1e-14 of the array's scale; held to 1e-12.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from checker.network import numerical_gradient
from numpy_nn import fast_layers
from numpy_nn import layers as plain_layers
from numpy_nn.layers import col2im, conv2d_backward, conv2d_forward, im2col, maxpool2d_backward, maxpool2d_forward

# (N, C, H, W, O): a batch of one, one channel, non-square images, odd and even sizes,
# and the network's own conv2 shape at a small batch.
SHAPES = [(1, 1, 5, 5, 1), (2, 3, 7, 6, 4), (3, 2, 6, 9, 5), (4, 5, 8, 8, 3), (2, 32, 13, 13, 64)]


# ----------------------------------------------------------------------------- references

def rel_diff(a, b):
    """max |a - b| / max |b|: the error measured against the array's scale. (An elementwise
    relative error would blow up on entries that happen to cancel to nearly zero.)"""
    assert a.shape == b.shape
    return float(np.abs(a - b).max() / np.abs(b).max())


def naive_conv2d_forward(x, W, b):
    """out[n,o,i,j] = b[o] + sum over the window of x[n, :, i:i+kh, j:j+kw] * W[o]."""
    N, _, H, Wd = x.shape
    O, _, kh, kw = W.shape
    out = np.zeros((N, O, H - kh + 1, Wd - kw + 1))
    for n in range(N):
        for o in range(O):
            for i in range(H - kh + 1):
                for j in range(Wd - kw + 1):
                    out[n, o, i, j] = np.sum(x[n, :, i:i + kh, j:j + kw] * W[o]) + b[o]
    return out


def naive_conv2d_backward(dout, x, W):
    """Every output pixel sends dout * W[o] back to its window and dout * window to W[o]."""
    dx, dW = np.zeros_like(x), np.zeros_like(W)
    N, O, Ho, Wo = dout.shape
    _, _, kh, kw = W.shape
    for n in range(N):
        for o in range(O):
            for i in range(Ho):
                for j in range(Wo):
                    dx[n, :, i:i + kh, j:j + kw] += dout[n, o, i, j] * W[o]
                    dW[o] += dout[n, o, i, j] * x[n, :, i:i + kh, j:j + kw]
    return dx, dW, dout.sum(axis=(0, 2, 3))


def fast_col2im(dcols, x_shape, kh, kw):
    """The adjoint of fast_layers.im2col, in one piece: add each row of dcols (N*H'*W',
    kh*kw*C) back onto the pixels of its window, nine strided-slice += for a 3x3 kernel.
    fast_layers.conv2d_backward does the same offset by offset; this unfused form was
    measured and dropped."""
    N, C, H, W = x_shape
    Ho, Wo = H - kh + 1, W - kw + 1
    dcols = dcols.reshape(N, Ho, Wo, kh, kw, C)
    dxh = np.zeros((N, H, W, C), dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            dxh[:, i:i + Ho, j:j + Wo, :] += dcols[:, :, :, i, j, :]
    return dxh.transpose(0, 3, 1, 2)


def col2im_dx(dout, W):
    """Candidate (a) unfused: dcols = dout Wm^T for the whole batch, then col2im."""
    O, C, kh, kw = W.shape
    N, _, Ho, Wo = dout.shape
    Wm = W.transpose(2, 3, 1, 0).reshape(kh * kw * C, O)
    dcols = dout.transpose(0, 2, 3, 1).reshape(-1, O) @ Wm.T
    return fast_col2im(dcols, (N, C, Ho + kh - 1, Wo + kw - 1), kh, kw)


def full_conv_dx(dout, W):
    """Candidate (b) for dx (see conv2d_backward): the "full" convolution of dout,
    zero-padded by k-1 on every side, with the kernels flipped in space and their in/out
    channels swapped."""
    O, C, kh, kw = W.shape
    padded = np.pad(dout, ((0, 0), (0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1)))  # N,O,H'+2(kh-1),W'+2(kw-1)
    flipped = W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)        # C,O,kh,kw
    dx, _ = conv2d_forward(padded, flipped, np.zeros(C, dout.dtype))
    return dx


def naive_maxpool2d(x):
    """2x2, stride 2, floor mode; the gradient mask marks the first maximum of each window
    in row-major order (np.argmax returns the first occurrence)."""
    N, C, H, W = x.shape
    out = np.zeros((N, C, H // 2, W // 2))
    first = np.zeros_like(x)
    for n in range(N):
        for c in range(C):
            for i in range(H // 2):
                for j in range(W // 2):
                    window = x[n, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                    out[n, c, i, j] = window.max()
                    k = np.argmax(window)
                    first[n, c, 2 * i + k // 2, 2 * j + k % 2] = 1
    return out, first


def random_conv(shape, seed):
    """Random non-zero input, weights, biases and upstream gradient, float64."""
    N, C, H, W, O = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W))
    Wt = rng.standard_normal((O, C, 3, 3)) / np.sqrt(9 * C)
    b = rng.standard_normal(O)
    dout = rng.standard_normal((N, O, H - 2, W - 2))
    return x, Wt, b, dout


def channels_last(a):
    """The same array (same shape, same values) stored N,H,W,C in memory, as the network keeps it."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def torch_grads(fn, *arrays, dout):
    """fn's output and the gradients of sum(fn(...) * dout) for each input, by autograd."""
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*ts)
    out.backward(torch.from_numpy(np.ascontiguousarray(dout)))
    return out.detach().numpy(), [t.grad.numpy() for t in ts]


# ----------------------------------------------------------------------------- convolution

@pytest.mark.parametrize("shape", SHAPES)
def test_conv_matches_naive_loops_and_torch(shape):
    """Forward and every gradient: fast == loops == torch, to 1e-10 relative (float64)."""
    x, W, b, dout = random_conv(shape, seed=sum(shape))
    if shape[1] > 5:                         # the loops are slow at 32 channels: a smaller batch
        x, dout = x[:1], dout[:1]
    out, cache = conv2d_forward(x, W, b)
    dx, dW, db = conv2d_backward(dout, cache)
    ref_out, (ref_dx, ref_dW, ref_db) = torch_grads(F.conv2d, x, W, b, dout=dout)
    naive_dx, naive_dW, naive_db = naive_conv2d_backward(dout, x, W)
    errs = {"out vs loops": rel_diff(out, naive_conv2d_forward(x, W, b)), "out vs torch": rel_diff(out, ref_out),
            "dx vs loops": rel_diff(dx, naive_dx), "dx vs torch": rel_diff(dx, ref_dx),
            "dW vs loops": rel_diff(dW, naive_dW), "dW vs torch": rel_diff(dW, ref_dW),
            "db vs loops": rel_diff(db, naive_db), "db vs torch": rel_diff(db, ref_db)}
    print(shape, {k: f"{v:.1e}" for k, v in errs.items()})
    assert out.shape == ref_out.shape and dx.shape == x.shape and dW.shape == W.shape
    assert max(errs.values()) < 1e-10


@pytest.mark.parametrize("shape", SHAPES)
def test_dx_equals_the_other_two_candidates(shape):
    """fast_layers' dx (col2im offset by offset) equals the two measured and dropped: the
    unfused col2im and the full convolution, to 1e-10 (float64; only the order of the
    additions differs)."""
    x, W, b, dout = random_conv(shape, seed=1)
    dx, _, _ = fast_layers.conv2d_backward(dout, fast_layers.conv2d_forward(x, W, b)[1])
    err_a, err_b = rel_diff(dx, col2im_dx(dout, W)), rel_diff(dx, full_conv_dx(dout, W))
    print(f"{shape}: dx vs unfused col2im {err_a:.1e}, vs full convolution {err_b:.1e}")
    assert max(err_a, err_b) < 1e-10


def test_conv_finite_differences():
    """dx, dW, db against centred finite differences of L = sum(out * dout) (float64, 1e-7)."""
    x, W, b, dout = random_conv((2, 3, 6, 5, 4), seed=2)
    dx, dW, db = conv2d_backward(dout, conv2d_forward(x, W, b)[1])
    loss = lambda: float(np.sum(conv2d_forward(x, W, b)[0] * dout))  # noqa: E731
    for name, mine, param in [("dx", dx, x), ("dW", dW, W), ("db", db, b)]:
        err = rel_diff(mine, numerical_gradient(loss, param, eps=1e-6))
        print(f"conv {name}: max relative error vs finite differences {err:.1e}")
        assert err < 1e-7, name


def test_fast_conv_without_dx_and_in_any_memory_layout():
    """fast_layers: need_dx=False gives the same dW, db and no dx; channels-last and ordinary
    NCHW memory give bit-identical results (the same products in the same order)."""
    x, W, b, dout = random_conv((3, 4, 9, 7, 5), seed=3)
    out, cache = fast_layers.conv2d_forward(x, W, b)
    dx, dW, db = fast_layers.conv2d_backward(dout, cache)
    none, dW2, db2 = fast_layers.conv2d_backward(dout, cache, need_dx=False)
    assert none is None and np.array_equal(dW, dW2) and np.array_equal(db, db2)
    out_cl, cache_cl = fast_layers.conv2d_forward(channels_last(x), W, b)
    dx_cl, dW_cl, db_cl = fast_layers.conv2d_backward(channels_last(dout), cache_cl)
    for mine, other in [(out, out_cl), (dx, dx_cl), (dW, dW_cl), (db, db_cl)]:
        assert np.array_equal(mine, other)


@pytest.mark.parametrize("layers", ["plain", "fast"])
def test_im2col_col2im_are_adjoint(layers):
    """<im2col(x), c> = <x, col2im(c)> for random x and c: col2im is the transpose of im2col,
    which is exactly what backpropagating through im2col needs (float64, 1e-12 relative)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 7, 6))
    if layers == "plain":
        cols = im2col(x, 3, 3)                               # N*H'*W',C*kh*kw
        adjoint = col2im
    else:
        cols = fast_layers.im2col(x, 3, 3)
        assert np.all(cols[:, -1] == 1)                      # the bias's input
        cols, adjoint = cols[:, :-1], fast_col2im            # N*H'*W',kh*kw*C  the windows
    c = rng.standard_normal(cols.shape)
    lhs, rhs = np.sum(cols * c), np.sum(x * adjoint(c, x.shape, 3, 3))
    print(f"{layers}: <im2col x, c> = {lhs:.6f}, <x, col2im c> = {rhs:.6f}")
    assert abs(lhs - rhs) < 1e-12 * abs(lhs)


@pytest.mark.parametrize("layers", [plain_layers, fast_layers], ids=["plain", "fast"])
def test_float32_stays_float32(layers):
    x, W, b, dout = (a.astype(np.float32) for a in random_conv((2, 3, 6, 6, 4), seed=5))
    out, cache = layers.conv2d_forward(x, W, b)
    assert {a.dtype for a in (out, *layers.conv2d_backward(dout, cache))} == {np.dtype(np.float32)}
    pooled, cache = layers.maxpool2d_forward(x)
    assert pooled.dtype == layers.maxpool2d_backward(pooled, cache).dtype == np.float32


# ----------------------------------------------------------------------------- max-pooling

@pytest.mark.parametrize("shape", [(2, 3, 6, 6), (2, 3, 11, 11), (1, 2, 7, 10), (3, 4, 13, 13)])
def test_maxpool_without_ties(shape):
    """Distinct values: pooling and its gradient equal the loops and torch exactly; the
    gradient also matches finite differences (float64, 1e-7). Odd sizes lose their last
    row/column, as in torch's floor mode."""
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape)
    out, cache = maxpool2d_forward(x)
    dout = rng.standard_normal(out.shape)
    dx = maxpool2d_backward(dout, cache)
    ref_out, (ref_dx,) = torch_grads(lambda t: F.max_pool2d(t, 2), x, dout=dout)
    naive_out, first = naive_maxpool2d(x)
    naive_dx = np.repeat(np.repeat(dout, 2, axis=2), 2, axis=3)
    naive_dx = np.pad(naive_dx, ((0, 0), (0, 0), (0, shape[2] % 2), (0, shape[3] % 2))) * first
    assert np.array_equal(out, ref_out) and np.array_equal(out, naive_out)
    assert np.array_equal(dx, ref_dx) and np.array_equal(dx, naive_dx)
    loss = lambda: float(np.sum(maxpool2d_forward(x)[0] * dout))  # noqa: E731
    err = rel_diff(dx, numerical_gradient(loss, x, eps=1e-6))
    print(f"{shape}: max-pool dx vs finite differences {err:.1e}; equal to torch and to the loops")
    assert err < 1e-7


def tied_windows():
    """Windows where several positions share the maximum, the case ReLU makes common."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 9, 8))
    x[0, 0] = 0.0                                    # whole windows of zeros (ReLU's dead regions)
    x[0, 1, :4, :4] = 1.5                            # four equal maxima per window
    x[0, 2, 0:2, 0:2] = [[1.0, 1.0], [0.0, 0.0]]     # tie in the top row
    x[0, 2, 2:4, 0:2] = [[0.0, 0.0], [2.0, 2.0]]     # tie in the bottom row
    x[0, 2, 4:6, 0:2] = [[3.0, 0.0], [3.0, 0.0]]     # tie between the rows, left column
    x[0, 2, 6:8, 0:2] = [[0.0, 4.0], [4.0, 0.0]]     # tie on the anti-diagonal
    x[0, 2, 0:2, 2:4] = [[0.0, 5.0], [0.0, 5.0]]     # tie between the rows, right column
    x[0, 2, 2:4, 2:4] = [[-1.0, 6.0], [6.0, 6.0]]    # three of four
    x[1] = np.maximum(x[1], 0.0)                     # ReLU'd noise: random ties at zero
    return x


@pytest.mark.parametrize("layers", [plain_layers, fast_layers], ids=["plain", "fast"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_maxpool_ties_send_the_gradient_to_the_first_maximum_as_torch(layout, layers):
    """On tied windows the gradient goes to ONE position, the first in row-major order,
    and equals torch's max_pool2d backward exactly (float64, no arithmetic involved), in
    both the plain and the fast layers."""
    x = tied_windows()
    if layout == "channels_last":
        x = channels_last(x)
    out, cache = layers.maxpool2d_forward(x)
    dout = np.random.default_rng(7).standard_normal(out.shape)
    dx = layers.maxpool2d_backward(dout, cache)
    ref_out, (ref_dx,) = torch_grads(lambda t: F.max_pool2d(t, 2), np.ascontiguousarray(x), dout=dout)
    naive_out, first = naive_maxpool2d(x)
    print(f"{layout}: {int((dx != 0).sum())} gradients placed for {out.size} windows; "
          f"max |dx - torch dx| = {np.abs(dx - ref_dx).max():.1e}")
    assert np.array_equal(out, ref_out) and np.array_equal(out, naive_out)
    assert np.array_equal(dx, ref_dx)
    assert np.array_equal(dx != 0, first.astype(bool))       # exactly one position per window
    assert np.array_equal(dx[0, 1, :2, :2], [[dout[0, 1, 0, 0], 0], [0, 0]])


# ----------------------------------------------------------------------------- fast == plain

@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("shape", SHAPES)
def test_fast_conv_equals_plain(shape, layout):
    """fast_layers' convolution gives the plain one's out, dx, dW and db to 1e-12 of each
    array's scale (float64: the same sums in another order, see the module docstring), in
    either memory layout, and dW, db also with need_dx=False."""
    x, W, b, dout = random_conv(shape, seed=sum(shape) + 1)
    if layout == "channels_last":
        x, dout = channels_last(x), channels_last(dout)
    out, cache = conv2d_forward(x, W, b)
    dx, dW, db = conv2d_backward(dout, cache)
    fast_out, fast_cache = fast_layers.conv2d_forward(x, W, b)
    fast_dx, fast_dW, fast_db = fast_layers.conv2d_backward(dout, fast_cache)
    _, dW_only, db_only = fast_layers.conv2d_backward(dout, fast_cache, need_dx=False)
    errs = {"out": rel_diff(fast_out, out), "dx": rel_diff(fast_dx, dx), "dW": rel_diff(fast_dW, dW),
            "db": rel_diff(fast_db, db), "dW no dx": rel_diff(dW_only, dW), "db no dx": rel_diff(db_only, db)}
    print(shape, layout, {k: f"{v:.1e}" for k, v in errs.items()})
    assert max(errs.values()) < 1e-12


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("x", [tied_windows(), np.random.default_rng(8).integers(-2, 3, (4, 6, 13, 11)).astype(float)],
                         ids=["tied_windows", "small_integers"])
def test_fast_maxpool_equals_plain(x, layout):
    """The tournament gives exactly the plain pooling's output and gradient (float64; both
    pick and copy, no arithmetic), ties included: small integers tie in most windows."""
    if layout == "channels_last":
        x = channels_last(x)
    out, cache = maxpool2d_forward(x)
    dout = np.random.default_rng(9).standard_normal(out.shape)
    dx = maxpool2d_backward(dout, cache)
    fast_out, fast_cache = fast_layers.maxpool2d_forward(x)
    fast_dx = fast_layers.maxpool2d_backward(dout, fast_cache)
    windows = np.ascontiguousarray(x[:, :, :out.shape[2] * 2, :out.shape[3] * 2])
    ties = int((np.sum(windows.reshape(*out.shape[:2], out.shape[2], 2, out.shape[3], 2)
                       == out[:, :, :, None, :, None], axis=(3, 5)) > 1).sum())
    print(f"{layout}: {ties} of {out.size} windows have a tied maximum")
    assert ties > 0
    assert np.array_equal(fast_out, out) and np.array_equal(fast_dx, dx)
