"""Data parallelism: one mini-batch's gradient computed as two halves, on two cores at once.

The loss of a mini-batch is the mean of its samples' losses, so its gradient is the mean of
their gradients, and it can be computed in parts: split the batch, compute each part's mean
gradient, and add them weighted by the parts' sizes. This is how training is spread over
many GPUs ("data parallelism"); here it spreads the CNN over the CPU's cores.

Why the NumPy CNN needs it and PyTorch does not: NumPy hands only its matrix products to
OpenBLAS, which splits each over the cores, while its elementwise work (im2col's copy,
pooling, ReLU, col2im's additions: about half of a CNN step) runs on one core. PyTorch
spreads every operation over the cores itself. Two halves of the batch in two threads (NumPy
lets go of Python's lock inside its operations) keep both cores busy the whole step, each
half with a one-thread OpenBLAS. At batch 128 on 2 cores (results/reference/benchmark_cnn.md):
23 ms per step as one batch, 18 ms as two halves at once, PyTorch 16 ms. The MLP's step is
almost all matrix products, which OpenBLAS already spreads; for it two halves were slower
when we tried (0.34 ms a step against 0.56-0.64 ms, measured once), so it does not split.

The halves are the same computations whether they run at once or one after the other (on
one core), so splitting the batch over threads changes no number; and the number of parts
is fixed per model, whatever the cores. (OpenBLAS's own thread count can still change the
last bits of a product, as it always could.) Each half draws its dropout masks from a
random stream of its own, so two threads never race for one generator.
"""
import copy
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import threads

# Parts per batch, by model: fixed, so that the cores a run gets never change its arithmetic.
SHARDS = {"mlp": 1, "cnn": 2}


def replica(net):
    """A second view of net: the same weights (net.params, shared, so every optimizer step
    reaches it), but a gradient buffer of its own that its backward() fills."""
    twin = copy.copy(net)  # shallow: params and flat_params are net's own arrays
    twin.flat_grads = np.zeros_like(net.flat_grads)
    twin.grads, offset = {}, 0
    for name, grad in net.grads.items():  # the same layout as net.flat_grads
        twin.grads[name] = twin.flat_grads[offset:offset + grad.size].reshape(grad.shape)
        offset += grad.size
    return twin


class ShardedGradients:
    """net.gradients(x, y, l2, dropout) over `shards` parts of each batch, in threads when
    there are cores for them. Calling it fills net.flat_grads (and net.grads) with the
    whole batch's gradient and returns the whole batch's mean loss, as net.gradients does.
    With one part it is net.gradients itself, with dropout_rng itself."""

    def __init__(self, net, shards, dropout_rng):
        if shards == 1:
            self.replicas, self.rngs = [net], [dropout_rng]
        else:
            self.replicas = [replica(net) for _ in range(shards)]
            self.rngs = dropout_rng.spawn(shards)       # independent streams, one per part
        self.net, self.shards = net, shards
        self.pool = ThreadPoolExecutor(shards)
        self.parallel, self.cores = False, 1

    def use_cores(self, cores):
        """Share this run's cores (what threads.share_cores gave OpenBLAS) among the parts:
        with as many cores as parts, the parts run at once, each part's OpenBLAS on its share,
        for every step until use_cores is called again. So any other product in between
        (the diagnostics' probe images) also runs on one part's share: OpenBLAS's idle
        threads keep spinning for a while after a product that used them, and measured here,
        one spinning beside the two parts made the next four steps 28 ms instead of 16.
        Returns cores, the threads the run uses in all, for the record."""
        self.cores = cores or 1
        self.parallel = self.shards > 1 and self.cores >= self.shards
        if self.parallel:
            threads.set_openblas_threads(self.cores // self.shards)
        return cores

    def __call__(self, x, y, l2=0.0, dropout=0.0):
        edges = [len(x) * i // self.shards for i in range(self.shards + 1)]
        parts = [slice(a, b) for a, b in zip(edges, edges[1:]) if b > a]  # halves (a batch of 1: one part)

        def part_gradient(i):
            return self.replicas[i].gradients(x[parts[i]], y[parts[i]], l2, dropout, self.rngs[i])[0]
        if self.parallel and len(parts) > 1:
            losses = list(self.pool.map(part_gradient, range(len(parts))))
        else:
            losses = [part_gradient(i) for i in range(len(parts))]
        weights = [(part.stop - part.start) / len(x) for part in parts]  # each part's share of the mean
        np.multiply(self.replicas[0].flat_grads, weights[0], out=self.net.flat_grads)
        for w, twin in zip(weights[1:], self.replicas[1:]):
            self.net.flat_grads += w * twin.flat_grads      # grad = sum_i (n_i / n) grad_i
        return sum(w * loss for w, loss in zip(weights, losses))
