"""Put the repo root on sys.path so tests can `import data_loader` (and the trainers) from any
cwd; the fixtures and helpers the tests share (`from conftest import ...`)."""
import sys

import numpy as np
import pytest
from pathlib import Path

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
