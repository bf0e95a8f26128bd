"""numpy_nn/parallel.py: a batch computed in halves, at once or one after another, gives the
whole batch's loss and gradient, through the trainer's own train_step.

Tolerance: in float64 the halves change only the order of the additions (a sum over 64 + 64
samples, then the two halves' sums added, instead of one sum over 128), which moves a result
by a few units of 2^-52 ~ 2.2e-16 of its scale; 1e-13 leaves room for that and still
catches a wrong weighting (an error of order 1), a part left out (order 1/2) or an L2 term
counted twice (order l2 W / dW).
"""
from types import SimpleNamespace

import numpy as np
import pytest

from harness import threads
from numpy_nn.cnn import CNN
from numpy_nn.parallel import Halves, faster, replica
from numpy_nn.train import train_step
from numpy_nn.utils import SGD, cross_entropy_with_grad


def rel_diff(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def data(n, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.random((n, 784)).astype(dtype), rng.integers(0, 10, n)


def gradient(model, x, y, l2=0.0, dropout=0.0, rng=None):
    """The forward, loss and backward of train_step, without the update."""
    logits, cache = model.forward(x, dropout, rng)
    loss, dlogits = cross_entropy_with_grad(logits, y)
    model.backward(dlogits, cache, l2)
    return loss


@pytest.mark.parametrize("batch", [128, 97, 2, 1])  # even, odd, the smallest split, no split
def test_halves_give_the_whole_batch_gradient(batch):
    x, y = data(batch)
    whole = CNN(seed=3, dtype=np.float64)
    loss = gradient(whole, x, y, l2=1e-3)
    net = CNN(seed=3, dtype=np.float64)
    halves = Halves(net)
    halves.use_cores(2)
    assert abs(gradient(halves, x, y, l2=1e-3) - loss) <= 1e-13 * loss
    assert halves.flat_grads is net.flat_grads
    assert rel_diff(net.flat_grads, whole.flat_grads) <= 1e-13


def test_train_step_on_halves_is_train_step_on_the_whole_batch():
    """The trainer's train_step on the CNN as faster() hands it to the loop (in Halves) and on
    the network itself: the same loss and the same weights after an SGD step (with an L2 term,
    which belongs to the batch once), to float64 rounding."""
    x, y = data(64)
    args = SimpleNamespace(model="cnn", dropout=0.0, weight_decay=1e-3)
    whole, net = CNN(seed=1, dtype=np.float64), CNN(seed=1, dtype=np.float64)
    session = SimpleNamespace(use_cores=None)
    model = faster(args, net, session)
    assert isinstance(model, Halves) and model.flat_params is net.flat_params
    session.use_cores(2)
    loss = train_step(model, SGD(model.flat_params, lr=0.1), x, y, args, None)
    whole_loss = train_step(whole, SGD(whole.flat_params, lr=0.1), x, y, args, None)
    assert abs(loss - whole_loss) <= 1e-13 * whole_loss
    assert rel_diff(net.flat_params, whole.flat_params) <= 1e-13


def test_at_once_or_one_after_another_the_same_numbers():
    """The halves are the same computations on either path, so the numbers are identical, bit
    for bit, in float32 too, dropout included (each half draws from its own stream): splitting
    the batch over threads changes no number. Both paths run OpenBLAS with one thread per
    part: its thread count alone can change the last bits of a product (measured here: 2
    threads round some float32 and float64 products differently from 1), as it always could."""
    x, y = data(128, dtype=np.float32)
    before = threads.openblas_threads()
    results = []
    try:
        for cores in (2, 1):
            net = CNN(seed=0)
            halves = Halves(net)
            halves.use_cores(cores)
            assert halves.parallel == (cores == 2)
            threads.set_openblas_threads(1)  # one thread per part on both paths
            rng = np.random.default_rng(7)
            losses = [gradient(halves, x, y, dropout=0.5, rng=rng) for _ in range(3)]  # three draws of the masks
            results.append((losses, net.flat_grads.copy()))
    finally:
        if before:
            threads.set_openblas_threads(before)
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_the_halves_draw_different_dropout_masks():
    """Each half has its own random stream; the same stream in both would drop the same
    units in both halves of every batch."""
    halves = Halves(CNN(seed=0, dtype=np.float64))
    _, (parts, caches) = halves.forward(np.zeros((8, 784)), 0.5, np.random.default_rng(7))
    assert len(parts) == 2 and not np.array_equal(caches[0]["mask"], caches[1]["mask"])


def test_the_mlp_is_not_split():
    """faster() gives the MLP's loop the network itself: its runs are exactly what they were
    before halves existed."""
    session, net = SimpleNamespace(use_cores=None), object()
    assert faster(SimpleNamespace(model="mlp"), net, session) is net
    assert session.use_cores is None


def test_a_replica_shares_the_weights_not_the_gradients():
    net = CNN(seed=0)
    twin = replica(net)
    net.flat_params += 1                                   # an optimizer step, in place
    np.testing.assert_array_equal(twin.params["W2"], net.params["W2"])
    twin.grads["W2"][...] = 5
    assert not net.flat_grads.any()
    assert twin.flat_grads.sum() == 5 * twin.grads["W2"].size  # the views are into its own buffer


def test_the_halves_share_the_cores_for_every_step():
    """With 2 cores the two halves get one OpenBLAS thread each, set once and kept for every
    step (and for any product between steps, so that no idle OpenBLAS thread spins beside
    the halves); with 1 core OpenBLAS is left as it is."""
    if threads.openblas_threads() is None:
        pytest.skip("NumPy's OpenBLAS cannot be asked for its thread count here")
    before = threads.openblas_threads()
    try:
        threads.set_openblas_threads(2)
        halves = Halves(CNN(seed=0))
        assert halves.use_cores(1) == 1 and threads.openblas_threads() == 2
        assert halves.use_cores(2) == 2 and threads.openblas_threads() == 1
        gradient(halves, *data(8, dtype=np.float32))
        assert threads.openblas_threads() == 1
    finally:
        threads.set_openblas_threads(before)
