"""numpy_nn/parallel.py: a batch's gradient computed in parts, at once or one after another,
is the whole batch's gradient.

Tolerance: in float64 the parts change only the order of the additions (a sum over 64 + 64
samples, then a weighted sum of the two, instead of one sum over 128), which moves a result
by a few units of 2^-52 ~ 2.2e-16 of its scale; 1e-13 leaves room for that and still
catches a wrong weighting (an error of order 1) or a part left out (order 1/2).
"""
import numpy as np
import pytest

import threads
from numpy_nn.cnn import CNN
from numpy_nn.neural_network import NeuralNetwork
from numpy_nn.parallel import SHARDS, ShardedGradients, replica


def rel_diff(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def data(n, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.random((n, 784)).astype(dtype), rng.integers(0, 10, n)


@pytest.mark.parametrize("batch", [128, 97, 2, 1])  # even, odd, the smallest split, no split
def test_parts_give_the_whole_batch_gradient(batch):
    x, y = data(batch)
    whole = CNN(seed=3, dtype=np.float64)
    loss, _ = whole.gradients(x, y, l2=1e-3)
    net = CNN(seed=3, dtype=np.float64)
    sharded = ShardedGradients(net, SHARDS["cnn"], np.random.default_rng(0))
    sharded.use_cores(2)
    assert abs(sharded(x, y, l2=1e-3) - loss) <= 1e-13 * loss
    assert rel_diff(net.flat_grads, whole.flat_grads) <= 1e-13


def test_at_once_or_one_after_another_the_same_numbers():
    """The parts are the same computations on either path, so the numbers are identical, bit
    for bit, in float32 too, dropout included (each part draws from its own stream): splitting
    the batch over threads changes no number. Both paths run OpenBLAS with one thread per
    part: its thread count alone can change the last bits of a product (measured here: 2
    threads round some float32 and float64 products differently from 1), as it always could."""
    x, y = data(128, dtype=np.float32)
    before = threads.openblas_threads()
    results = []
    try:
        for cores in (2, 1):
            net = CNN(seed=0)
            sharded = ShardedGradients(net, 2, np.random.default_rng(7))
            sharded.use_cores(cores)
            assert sharded.parallel == (cores == 2)
            threads.set_openblas_threads(1)  # one thread per part on both paths
            losses = [sharded(x, y, dropout=0.5) for _ in range(3)]  # three draws of the masks
            results.append((losses, net.flat_grads.copy()))
    finally:
        if before:
            threads.set_openblas_threads(before)
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_the_parts_draw_different_dropout_masks():
    """Each part has its own random stream; the same stream in both would drop the same
    units in both halves of every batch."""
    net = CNN(seed=0, dtype=np.float64)
    sharded = ShardedGradients(net, 2, np.random.default_rng(7))
    masks = [net_.forward(np.zeros((4, 784)), 0.5, rng)[1]["mask"]
             for net_, rng in zip(sharded.replicas, sharded.rngs)]
    assert not np.array_equal(*masks)


def test_one_part_is_the_network_itself():
    """The MLP is not split: the same calls on the same random stream as net.gradients, so
    its runs are exactly what they were before parts existed."""
    x, y = data(64)
    net, ref = NeuralNetwork(seed=1, dtype=np.float64), NeuralNetwork(seed=1, dtype=np.float64)
    sharded = ShardedGradients(net, SHARDS["mlp"], np.random.default_rng(5))
    sharded.use_cores(2)
    assert not sharded.parallel and sharded.replicas == [net]
    loss = sharded(x, y, 1e-4, 0.2)
    ref_loss, _ = ref.gradients(x, y, 1e-4, 0.2, np.random.default_rng(5))
    assert loss == ref_loss
    np.testing.assert_array_equal(net.flat_grads, ref.flat_grads)


def test_a_replica_shares_the_weights_not_the_gradients():
    net = CNN(seed=0)
    twin = replica(net)
    net.flat_params += 1                                   # an optimizer step, in place
    np.testing.assert_array_equal(twin.params["W2"], net.params["W2"])
    twin.grads["W2"][...] = 5
    assert not net.flat_grads.any()
    assert twin.flat_grads.sum() == 5 * twin.grads["W2"].size  # the views are into its own buffer


def test_the_parts_share_the_cores_for_every_step():
    """With 2 cores the two parts get one OpenBLAS thread each, set once and kept for every
    step (and for any product between steps, so that no idle OpenBLAS thread spins beside
    the parts); with 1 core OpenBLAS is left as it is."""
    if threads.openblas_threads() is None:
        pytest.skip("NumPy's OpenBLAS cannot be asked for its thread count here")
    before = threads.openblas_threads()
    try:
        threads.set_openblas_threads(2)
        sharded = ShardedGradients(CNN(seed=0), 2, np.random.default_rng(0))
        assert sharded.use_cores(1) == 1 and threads.openblas_threads() == 2
        assert sharded.use_cores(2) == 2 and threads.openblas_threads() == 1
        sharded(*data(8, dtype=np.float32))
        assert threads.openblas_threads() == 1
    finally:
        threads.set_openblas_threads(before)
