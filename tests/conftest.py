"""Put the repo root on sys.path so tests can `import data_loader` (and the trainers) from any
cwd; the fixtures and helpers the tests share (`from conftest import ...`)."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def loss_and_gradients(net, x, y, l2=0.0, dropout=0.0, rng=None):
    """One forward and backward pass of a NumPy network on a batch, as the trainer's train_step
    makes them, without the update: returns the mean cross-entropy and net.grads (the same
    numbers as one vector in net.flat_grads)."""
    from numpy_nn.utils import cross_entropy_with_grad
    logits, cache = net.forward(x, dropout, rng)
    loss, dlogits = cross_entropy_with_grad(logits, y)
    net.backward(dlogits, cache, l2)
    return loss, net.grads


def relative_error(a, b):
    """max |a - b| / max(|a|, |b|), elementwise, with a floor so zeros compare sanely."""
    return float(np.max(np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-8)))


@pytest.fixture
def one_blas_thread(monkeypatch):
    """NumPy's OpenBLAS on one thread for the whole test, set as a user would (the trainers'
    policy then leaves it alone): a test comparing two runs bit for bit must not see their
    share of the cores change between them when a trainer starts elsewhere on the machine
    (another thread count adds a product's parts in another order)."""
    from harness import threads
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    before = threads.openblas_threads()
    threads.set_openblas_threads(1)
    yield
    if before:
        threads.set_openblas_threads(before)


FEW_DIGITS = 500  # the robustness sets' size in tests that only read compare.py's other output


@pytest.fixture(autouse=True, scope="session")
def few_robustness_digits():
    """compare.py measures every run with weights on 10,000 perturbed and 10,000 drawn test
    digits (report/robustness.py): about 15 s for a CNN. In tests, which read compare's other
    output (names, tables, pictures), it measures the first FEW_DIGITS of each set instead;
    tests/test_robustness.py checks the measure itself on subsets it builds."""
    import compare
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compare, "load_robustness_sets", _few_robustness_sets)
        yield


def _few_robustness_sets(data_dir):
    import compare
    from report.robustness import robustness_sets
    key = str(data_dir)
    if key not in _FEW_SETS:
        x_test, y_test = compare.load_test_set("mnist", data_dir)
        _FEW_SETS[key] = robustness_sets(x_test[:FEW_DIGITS], y_test[:FEW_DIGITS])
    return _FEW_SETS[key]


_FEW_SETS = {}


# ----------------------------------------------------------------------------- float32 bounds
# A float32 result is compared with the exact one through a bound derived from its rounding,
# never a tolerance picked to pass: whatever order a CPU's BLAS kernel adds the products in, a
# dot product of n terms computed in floating point is within gamma(n) * sum |a_i b_i| of the
# exact value (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., section 3.1),
# and an FMA only makes the error smaller.
U32, U64 = 2.0 ** -24, 2.0 ** -53      # the unit roundoffs of float32 and float64
ACTIVATION_ULPS = 4                     # float32 exp/tanh in NumPy's and PyTorch's SIMD code: a few ulps


def gamma(n, u=U32):
    """n u / (1 - n u): the relative error bound of a sum of n rounded terms."""
    return n * u / (1 - n * u)


def affine_error(h, e, W, b, fan_in, affine=lambda h, W, b: h @ W + b):
    """Bound on |computed affine(h, W, b) - exact|, elementwise, where the computed h (float32)
    is within e of the exact h: the rounding of this layer's sums (fan_in products and the bias,
    in float32, and in the float64 reference they are compared with) plus the error carried in,
    affine(e, |W|, 0). h, e, W, b: float64 arrays; affine: h @ W + b, or a convolution."""
    g = gamma(fan_in + 1) + gamma(fan_in + 1, U64)
    return g * affine(np.abs(h) + e, np.abs(W), np.abs(b)) + affine(e, np.abs(W), np.zeros_like(b))


def activation_error(h, e):
    """Bound after an activation: ReLU, tanh and sigmoid change by at most as much as their
    input does (slope at most 1), and the float32 function itself adds ACTIVATION_ULPS ulps of
    its output (an ulp of h is at most 2 u |h|)."""
    return e + ACTIVATION_ULPS * 2 * U32 * np.abs(h)


# ----------------------------------------------------------------------------- the checker's tests

def planted(function, old, new):
    """A copy of function with the line holding `old` changed to hold `new`: a learner's slip,
    compiled as `<planted NAME>` with its lines where the checker can show them."""
    import inspect
    import linecache
    import textwrap
    source = textwrap.dedent(inspect.getsource(function))
    assert source.count(old) == 1, f"{old!r} is not one place in {function.__qualname__}"
    source = source.replace(old, new)
    filename = f"<planted {function.__qualname__}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)  # so lines can be shown
    namespace = dict(function.__globals__)
    exec(compile(source, filename, "exec"), namespace)
    return namespace[function.__name__]
