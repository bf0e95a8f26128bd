"""Compare one gradient with the answer key, and name the classic mistake it looks like."""
import numpy as np

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
UPDATES = f"see {PAGE}#the-updates"


class Verdict:
    """status: "exact" (the same bits), "close" (within CLOSE of the scale), "wrong",
    "shape", "type" (not numbers: a string, an array of objects, ...), "blank" (still `...`)
    or "missing" (never computed); diff: the largest
    absolute difference; rel: diff over the largest |entry| of the answer; hint: the classic
    mistake this looks like, or None."""

    def __init__(self, status, diff=None, rel=None, hint=None):
        self.status, self.diff, self.rel, self.hint = status, diff, rel, hint

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


def judge(name, got, want, batch, before=None, relu=False):
    """The verdict on gradient `name`: got (the learner's) against want (autograd's). batch:
    the batch size B; before: the right gradient just before the activation's derivative
    (for a dz), relu: whether that activation is ReLU, whose derivative is a 0/1 mask."""
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
        return Verdict("shape", hint=_shape_hint(name, got, want, batch))
    diff = float(np.max(np.abs(got - want))) if got.size else 0.0
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    rel = diff / scale if scale else (0.0 if diff == 0 else np.inf)
    if np.array_equal(got, want):
        return Verdict("exact", diff, rel)
    if not np.all(np.isfinite(got)):
        return Verdict("wrong", diff, rel, "holds inf or NaN: something overflowed on the way here")
    if rel <= CLOSE:
        return Verdict("close", diff, rel)
    return Verdict("wrong", diff, rel, _value_hint(name, got, want, batch, before, relu))


def _shape_hint(name, got, want, batch):
    shapes = f"shape {got.shape}, expected {want.shape}"
    if got.ndim == 2 and got.shape == want.shape[::-1]:
        return (f"{shapes}: transposed. dW holds one slope per entry of W, so it has W's shape: "
                f"z = h W + b gives dW = h^T dz (h_prev.T @ dz), not dz^T h; {MATRIX}")
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


def _value_hint(name, got, want, batch, before, relu):
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
    if _close(got, want * batch):
        return (f"{batch} times too large, the batch size: the loss is a mean, so "
                f"dlogits = (softmax - onehot) / B; the 1/B is missing; {SOFTMAX}")
    if _close(got, want / batch):
        return (f"{batch} times too small, the batch size: divided by B twice (dlogits already "
                f"holds the mean's 1/B; nothing after it divides again); {SOFTMAX}")
    if got.ndim == 2 and got.shape[0] == got.shape[1] and _close(got.T, want):
        return f"transposed: dW = h_prev.T @ dz, not dz.T @ h_prev; {MATRIX}"
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
