"""Compare one gradient with the answer key, and name the classic mistake it looks like."""
import math

import numpy as np

from numpy_nn.batchnorm import EPS

# float64 keeps about 16 digits. The same sums taken in another order (NumPy's BLAS and
# PyTorch's kernels add in different orders) differ by about n * 1.1e-16 of the terms' size
# for n terms; the longest sums here have 1600 x 32 terms, so the two agree to ~1e-11 of the
# gradient's scale. A real mistake is off by whole entries: 1e-3 of the scale and far more.
CLOSE = 1e-9

# Where docs/backprop.md derives what each classic mistake gets wrong: its message ends
# with a pointer there
PAGE = "docs/backprop.md"
MATRIX = f"see {PAGE}#from-one-weight-to-the-matrix"
SOFTMAX = f"see {PAGE}#softmax-and-cross-entropy"
ACTIVATIONS = f"see {PAGE}#activations"
CNN = f"see {PAGE}#the-cnn"
UPDATES = f"see {PAGE}#the-updates"
BATCHNORM = f"see {PAGE}#batch-normalization"

# What each classic mistake of batch normalization's backward pass gets wrong (the gradients
# they give: batchnorm_mistakes)
BIASED = ("the biased and the unbiased variance mixed up: the forward pass normalises with the biased "
          "variance, divided by B (and so does its backward pass); the unbiased one, divided by B - 1, "
          "belongs in the running variance only")
BATCHNORM_MISTAKES = {
    # (named without their terms: finding those terms is the exercise)
    "constants": "the batch's mean and variance treated as constants: this is dzhat / std, zhat's direct path "
                 "alone. Every z_n also moves the batch's mean and variance, and through them every image's "
                 "zhat: work out dLoss/dmean and dLoss/dvar and add the two paths they open to dz",
    "no mean": "the mean's path is missing: every z_n moves the batch's mean (dmean/dz_n = 1/B), which every "
               "zhat subtracts; add dLoss/dmean times 1/B",
    "no variance": "the variance's path is missing: every z_n moves the batch's variance "
                   "(dvar/dz_n = 2 (z_n - mean) / B), which every zhat is divided by; add dLoss/dvar times that",
    "unbiased in the variance's path": BIASED,
    "unbiased std": BIASED,
    "unbiased everywhere": BIASED,
    "no gamma": "gamma is missing: y = gamma zhat + beta gives dzhat = dy gamma",
    "means over the units": "the means taken over the wrong axis: each unit is normalised with its own "
                            "mean and variance over the batch, so the paths' means run over the batch, axis=0",
    "dgamma without zhat": "this is dbeta, sum(dy): y = gamma zhat + beta gives dgamma = sum over the batch of dy zhat",
    "dbeta with zhat": "this is dgamma, sum(dy zhat): y = gamma zhat + beta gives dbeta = sum over the batch of dy",
}


class Verdict:
    """status: "exact" (the same bits), "close" (within CLOSE of the scale), "wrong",
    "shape", "type" (not numbers: a string, an array of objects, ...), "blank" (still `...`)
    or "missing" (never computed); diff: the largest
    absolute difference; rel: diff over the largest |entry| of the answer; hint: the classic
    mistake this looks like, or None; factor: for a wrong one that is the answer times one
    constant k (got = k want, to CLOSE), that k, else None."""

    def __init__(self, status, diff=None, rel=None, hint=None, factor=None):
        self.status, self.diff, self.rel, self.hint, self.factor = status, diff, rel, hint, factor

    @property
    def ok(self):
        return self.status in ("exact", "close")


def _described(value):
    """What a value is, in a few words, for a line that says it is not what belongs there."""
    if isinstance(value, str):
        return f"the string {value[:20]!r}"
    if isinstance(value, np.ndarray):
        return f"an array of {value.dtype}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} item{'' if len(value) == 1 else 's'}"
    if value is None:
        return "None"
    if isinstance(value, (bool, int, float, np.number, np.bool_)):
        return f"the {type(value).__name__} {value!r}"
    return f"a {type(value).__name__}"


def not_numbers(value, scalar=False):
    """None when the checks can compute with value: a NumPy array of numbers (or, with scalar,
    a number); else what it is instead, in a few words."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
        return None
    if scalar and isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return None
    return _described(value)


def _close(a, b):
    """a equals b to CLOSE of b's scale."""
    scale = np.max(np.abs(b)) if b.size else 0.0
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= CLOSE * max(scale, 1e-300)))


def factor(got, want):
    """k when got is want times one constant k (to CLOSE of the scale), else None. k is
    measured: the least-squares fit sum(got want) / sum(want^2)."""
    squares = float(np.sum(want * want))
    if got.shape != want.shape or squares == 0:
        return None
    k = float(np.sum(got * want)) / squares
    return k if k != 0 and _close(got, k * want) else None


def windows(x):
    """x N,C,H,W -> its 2x2 pooling windows N,C,H//2,W//2,4 (positions 00 01 10 11), laid out
    as numpy_nn/layers.py's max-pooling lays them out (an odd last row or column in none)."""
    N, C, H, W = x.shape
    Ho, Wo = H // 2, W // 2
    x = x[:, :, :2 * Ho, :2 * Wo].reshape(N, C, Ho, 2, Wo, 2)
    return x.transpose(0, 1, 2, 4, 3, 5).reshape(N, C, Ho, Wo, 4)


def batchnorm_mistakes(dy, z, gamma, eps=EPS):
    """The gradients batch normalization's classic mistakes give (their names: BATCHNORM_MISTAKES),
    from the right dy B,H at its output, its input z B,H and gamma H: for dz, the ones that
    leave out a path through the batch's statistics, mix up the biased and the unbiased
    variance or forget gamma; for dgamma and dbeta, each other's formula. The right ones:
        dz = (dzhat - mean(dzhat) - zhat mean(dzhat zhat)) / std,  dzhat = dy gamma,
        dgamma = sum(dy zhat), dbeta = sum(dy)    (means and sums over the batch)"""
    B = len(z)
    var = z.var(axis=0)                                     # H  biased
    std, std_u = np.sqrt(var + eps), np.sqrt(var * B / (B - 1) + eps)
    zhat, zhat_u = (z - z.mean(axis=0)) / std, (z - z.mean(axis=0)) / std_u
    dzhat = dy * gamma                                      # B,H

    def compact(dzhat, zhat, std, n=B):                     # the right form; n: the variance's divisor
        return (dzhat - dzhat.mean(axis=0) - zhat * (dzhat * zhat).sum(axis=0) / n) / std
    dz = {"constants": dzhat / std,
          "no mean": (dzhat - zhat * (dzhat * zhat).mean(axis=0)) / std,
          "no variance": (dzhat - dzhat.mean(axis=0)) / std,
          "unbiased in the variance's path": compact(dzhat, zhat, std, B - 1),
          "unbiased std": compact(dzhat, zhat_u, std_u),
          "unbiased everywhere": compact(dzhat, zhat_u, std_u, B - 1),
          "no gamma": compact(dy, zhat, std),
          # the means taken over the units (axis=1), each image's own, not over the batch
          "means over the units": (dzhat - dzhat.mean(axis=1, keepdims=True)
                                   - zhat * (dzhat * zhat).mean(axis=1, keepdims=True)) / std}
    return {"dz": dz, "dgamma": {"dgamma without zhat": dy.sum(axis=0)},
            "dbeta": {"dbeta with zhat": (dy * zhat).sum(axis=0)}}


def judge(name, got, want, batch, before=None, relu=False, rows=None, pooled=None, bn=None):
    """The verdict on gradient `name`: got (the learner's) against want (autograd's). batch:
    the batch size B (None where there is no loss's 1/B to blame, in a layer's own check);
    before: the right gradient just before the activation's derivative (for a dz), relu:
    whether that activation is ReLU, whose derivative is a 0/1 mask. For a bias's gradient,
    rows: the sizes of the axes it sums over, (B,) for a linear layer, (N, H', W') for a
    convolution. For a max-pooling's input gradient (dx, or its windows dwindows, or the
    mask saying where it goes), pooled: the right gradient at the pooling's output (dout). For
    batch normalization's dz, dgamma or dbeta, bn: {mistake: the gradient it gives}
    (batchnorm_mistakes' for that name)."""
    if got is None:
        return Verdict("missing", hint="never computed (or never written where the optimizer reads it)")
    if got is Ellipsis:
        return Verdict("blank", hint="still `...`: fill in its line")
    problem = not_numbers(got, scalar=True)    # a number where an array belongs: the shape's verdict
    if problem:
        return Verdict("type", hint=f"{problem}, where {'a number' if np.ndim(want) == 0 else 'a NumPy array of numbers'} "
                                    f"belongs")
    got = np.asarray(got, dtype=np.float64)
    if got.shape != want.shape:
        return Verdict("shape", hint=_shape_hint(name, got, want, batch, rows))
    diff = float(np.max(np.abs(got - want))) if got.size else 0.0
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    rel = diff / scale if scale else (0.0 if diff == 0 else np.inf)
    if np.array_equal(got, want):
        return Verdict("exact", diff, rel)
    if not np.all(np.isfinite(got)):
        return Verdict("wrong", diff, rel, "holds inf or NaN: something overflowed on the way here")
    if rel <= CLOSE:
        return Verdict("close", diff, rel)
    k = factor(got, want)
    hint = _batchnorm_hint(got, bn) or _value_hint(name, got, want, batch, before, relu, rows, pooled, k)
    return Verdict("wrong", diff, rel, hint, k)


def _batchnorm_hint(got, mistakes):
    """The classic batch-normalization mistake whose gradient got is, or None."""
    for mistake, wrong in (mistakes or {}).items():
        if _close(got, wrong):
            return f"{BATCHNORM_MISTAKES[mistake]}; {BATCHNORM}"
    return None


def _shape_hint(name, got, want, batch, rows=None):
    shapes = f"shape {got.shape}, expected {want.shape}"
    if name == "dWm" and got.shape == want.shape[::-1]:
        return (f"{shapes}: transposed. dWm has Wm's shape C*kh*kw,O (one kernel per column): "
                f"out = cols Wm + b gives dWm = cols^T dout (cols.T @ dout), not dout^T cols; {CNN}")
    if name == "dcols" and got.shape == want.shape[::-1]:
        return (f"{shapes}: the product's operands are swapped. dcols has cols' shape N*H'*W',C*kh*kw "
                f"(one row per window): out = cols Wm + b gives dcols = dout Wm^T (dout @ Wm.T); "
                f"Wm dout^T is its transpose; {CNN}")
    if name.startswith("dW") and want.ndim == 4 and got.ndim == 2 and got.size == want.size:
        O = want.shape[0]
        layout = ("still dWm's layout C*kh*kw,O: transpose it, then reshape" if got.shape == (want.size // O, O)
                  else "still a matrix: reshape it")
        return f"{shapes}: {layout} to W's own layout O,C,kh,kw: dWm.T.reshape(W.shape); {CNN}"
    if got.ndim == 2 and got.shape == want.shape[::-1]:
        return (f"{shapes}: transposed. dW holds one slope per entry of W, so it has W's shape: "
                f"z = h W + b gives dW = h^T dz (h_prev.T @ dz), not dz^T h; {MATRIX}")
    if want.ndim == 1 and name.startswith(("dgamma", "dbeta")):
        which = "gamma scales" if name.startswith("dgamma") else "beta shifts"
        summed = "dy zhat" if name.startswith("dgamma") else "dy"
        if rows and got.shape == rows:
            return (f"{shapes}: summed over the wrong axis. {which} its unit in every image of the batch, "
                    f"so its gradient sums {summed} over the batch: axis=0; {BATCHNORM}")
        if got.ndim == 2 and rows and got.shape[0] == rows[0]:
            return f"{shapes}: not summed over the batch: {summed} summed over axis=0; {BATCHNORM}"
        if got.ndim == 0:
            return f"{shapes}: summed over every axis; sum {summed} over the batch only: axis=0; {BATCHNORM}"
        return shapes
    if want.ndim == 1 and name.startswith("db") and rows and len(rows) == 3:
        pixels = math.prod(rows)                  # a convolution's dout: one row per output pixel
        if got.shape == (pixels,) or (got.ndim >= 2 and got.shape[0] == pixels):
            what = "summed over the wrong axis" if got.ndim == 1 else "not summed over the rows"
            return (f"{shapes}: {what}. dout is N*H'*W',O, one row per output pixel of every image, and "
                    f"each bias is added at every one of them: dout.sum(axis=0); {CNN}")
    if want.ndim == 1 and name.startswith("db"):
        if got.shape == (batch,):
            return (f"{shapes}: summed over the wrong axis. A bias is added to every row of the "
                    f"batch, so its gradient sums dz over the batch: axis=0; {MATRIX}")
        if got.ndim >= 2 and got.shape[0] == batch:
            return (f"{shapes}: not summed over the batch. A bias is added to every row, so its "
                    f"gradient is the sum of dz over the batch: dz.sum(axis=0); {MATRIX}")
        if got.ndim == 0:
            return f"{shapes}: summed over every axis; sum over the batch only: axis=0; {MATRIX}"
    return shapes


def _value_hint(name, got, want, batch, before, relu, rows=None, pooled=None, k=None):
    if name == "loss":
        if _close(got, want * batch):
            return (f"{batch} times too large, the batch size: the loss is the mean over the batch, "
                    f"not the sum; {SOFTMAX}")
        if _close(got, -want):
            return f"the sign is flipped: the loss is -log p of the true class (log p < 0, the loss > 0); {SOFTMAX}"
        return None
    if not np.any(got) and np.any(want):
        return "all zeros: never written where the optimizer reads it (the network's grads)?"
    if _close(got, -want):
        return f"the sign is flipped: a gradient points uphill, the update subtracts it; {UPDATES}"
    if (rows and name.startswith("db") and not name.startswith("dbeta") and k and k > 0
            and abs(1 / k - math.prod(rows)) <= CLOSE * math.prod(rows)):
        return _mean_hint(k, rows)
    if batch and _close(got, want * batch):
        return (f"{batch} times too large, the batch size: the loss is a mean, so "
                f"dlogits = (softmax - onehot) / B; the 1/B is missing; {SOFTMAX}")
    if batch and _close(got, want / batch):
        return (f"{batch} times too small, the batch size: divided by B twice (dlogits already "
                f"holds the mean's 1/B; nothing after it divides again); {SOFTMAX}")
    if got.ndim == 2 and got.shape[0] == got.shape[1] and _close(got.T, want):
        return f"transposed: dW = h_prev.T @ dz, not dz.T @ h_prev; {MATRIX}"
    if name.startswith("dW") and want.ndim == 4 and _close(got, want.reshape(want.shape[0], -1).T.reshape(want.shape)):
        return ("reshaped without its transpose: dWm is C*kh*kw,O, one kernel per column (Wm = W.reshape(O, -1).T), "
                "so back in W's layout O,C,kh,kw it is dWm.T.reshape(W.shape); dWm.reshape(W.shape) deals each "
                f"kernel's entries out across all the kernels; {CNN}")
    if pooled is not None:
        hint = _pool_hint(name, got, pooled)
        if hint:
            return hint
    if before is not None:
        if _close(got, before):
            return ("the activation's derivative is missing: this is the gradient before it; "
                    "multiply by f'(z)" + (" (ReLU's: the mask z > 0)" if relu else "") + f"; {ACTIVATIONS}")
        if relu:
            passes = before != 0
            ratio = got[passes] / before[passes]
            if np.all(np.isclose(ratio, 0, atol=1e-12) | np.isclose(ratio, 1, rtol=1e-9)):
                wrong = int(np.sum(np.isclose(ratio, 1, rtol=1e-9) != (want[passes] != 0)))
                return (f"the ReLU mask was taken from the wrong tensor: {wrong} of {got.size} "
                        f"entries pass or block the gradient where z > 0 says otherwise; "
                        f"the mask is this layer's own z > 0 (read off its a = relu(z)); {ACTIVATIONS}")
    return None


def _mean_hint(k, rows):
    """A bias's gradient that is the mean of its rows where their sum belongs: 1/k of them."""
    measured = f"1/{1 / k:.6g} of the right one"
    if len(rows) == 1:
        return (f"{measured}, 1/B with B = {rows[0]}: a mean over the batch where the sum belongs. The bias "
                f"is added to every row, so its gradient sums dz over the rows, dz.sum(axis=0) (the "
                f"loss's 1/B is already in dlogits); {MATRIX}")
    sizes = "*".join(map(str, rows))
    return (f"{measured}, 1/(N*H'*W') = 1/({sizes}): a mean over dout's N*H'*W' rows where the sum "
            f"belongs. Each bias is added at every output pixel of every image, so its gradient sums "
            f"dout over all of them, dout.sum(axis=0); {CNN}")


def _pool_hint(name, got, dout):
    """Max-pooling's gradient (name: the mask, dwindows or dx) sent to every position of its
    window, or shared out evenly (average pooling's), where the maximum alone belongs."""
    if got.ndim not in (4, 5) or (got.ndim == 4 and (got.shape[2] // 2, got.shape[3] // 2) != dout.shape[2:]):
        return None
    spread = got if got.ndim == 5 else windows(got)         # N,C,Ho,Wo,4
    if spread.shape[:4] != dout.shape:
        return None
    every = np.ones(spread.shape) if name == "mask" else np.broadcast_to(dout[..., None], spread.shape)
    rule = ("only the maximum moved the output (slope 1 there, 0 at the other three), so each window's "
            "gradient goes to its (first) maximum alone: " +
            ("mask = np.arange(4) == first[..., None]" if name == "mask" else
             "dwindows = mask * dout[..., None], the mask True at the maximum"))
    if _close(spread, every):
        what = "True at all 4 positions of every window" if name == "mask" else \
            "dout sent to every position of its window"
        return f"{what}: {rule}; {CNN}"
    if name != "mask" and _close(spread, every / 4):
        return (f"dout shared out evenly over its window, a quarter to each position (average pooling's "
                f"gradient): {rule}; {CNN}")
    return None
