"""Data parallelism: one mini-batch computed as two halves, on two cores at once.

The loss of a mini-batch is the mean of its samples' losses, so its gradient is a sum over
the samples too, and it can be computed in parts: split the batch, run each part forward
and backward, and add the parts' gradients. This is how training is spread over many GPUs
("data parallelism"); here it spreads the CNN over the CPU's cores.

Halves does it behind the network's own interface (forward, backward, flat_grads), so the
trainer's train_step runs unchanged on it: forward runs each half's forward in a thread of
its own, the loss is computed on the whole batch's logits as always, and backward runs each
half's backward on its rows of dlogits (already divided by the whole batch's size, so the
halves' gradients simply add up).

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

from harness import threads
from numpy_nn.utils import flat_buffer

SHARDS = 2  # parts per batch: fixed, so that the cores a run gets never change its arithmetic


def replica(net):
    """A second view of net: the same weights (net.params, shared, so every optimizer step
    reaches it), but a gradient buffer of its own that its backward() fills."""
    twin = copy.copy(net)  # shallow: params and flat_params are net's own arrays
    shapes = {name: grad.shape for name, grad in net.grads.items()}  # the layout of net.flat_grads
    twin.flat_grads, twin.grads = flat_buffer(shapes, net.flat_grads.dtype)
    return twin


class Halves:
    """net, computed as SHARDS parts of each batch, in threads when there are cores for them.
    forward(x, dropout, rng) and backward(dlogits, cache, l2) are net's; backward leaves the
    whole batch's gradient in net.flat_grads (and net.grads), which self.flat_grads is. Every
    other attribute (params, flat_params, save, ...) is net's own."""

    def __getattr__(self, name):
        return getattr(self.net, name)

    def __init__(self, net, shards=SHARDS):
        self.net, self.shards = net, shards
        self.replicas = [replica(net) for _ in range(shards)]
        self.flat_grads = net.flat_grads
        self.rngs = None                                    # one random stream per part, from the first rng
        self.pool = ThreadPoolExecutor(shards)
        self.parallel = False

    def use_cores(self, cores):
        """Share this run's cores (what threads.share_cores gave OpenBLAS) among the parts:
        with as many cores as parts, the parts run at once, each part's OpenBLAS on its share,
        for every step until use_cores is called again. So any other product in between
        (the diagnostics' probe images) also runs on one part's share: OpenBLAS's idle
        threads keep spinning for a while after a product that used them, and measured here,
        one spinning beside the two parts made the next four steps 28 ms instead of 16.
        Returns cores, the threads the run uses in all, for the record."""
        self.parallel = self.shards > 1 and (cores or 1) >= self.shards
        if self.parallel:
            threads.set_openblas_threads((cores or 1) // self.shards)
        return cores

    def _each(self, work, n):
        """work(i) for each part i < n: in threads when the cores allow, else in turn."""
        if self.parallel and n > 1:
            return list(self.pool.map(work, range(n)))
        return [work(i) for i in range(n)]

    def forward(self, x, dropout=0.0, rng=None, training=False):
        edges = [len(x) * i // self.shards for i in range(self.shards + 1)]
        parts = [slice(a, b) for a, b in zip(edges, edges[1:]) if b > a]  # halves (a batch of 1: one part)
        if rng is not None and self.rngs is None:
            self.rngs = rng.spawn(self.shards)              # independent streams, one per part
        rngs = self.rngs or [None] * self.shards
        outputs = self._each(lambda i: self.replicas[i].forward(x[parts[i]], dropout, rngs[i], training), len(parts))
        logits = np.concatenate([logits for logits, _ in outputs])
        return logits, (parts, [cache for _, cache in outputs])

    def backward(self, dlogits, cache, l2=0.0):
        parts, caches = cache
        # the L2 term's gradient l2 * W belongs to the whole batch once: to the first part's
        self._each(lambda i: self.replicas[i].backward(dlogits[parts[i]], caches[i], l2 if i == 0 else 0.0),
                   len(parts))
        np.copyto(self.net.flat_grads, self.replicas[0].flat_grads)
        for twin in self.replicas[1:len(parts)]:
            self.net.flat_grads += twin.flat_grads          # grad = sum over the parts
        return self.net.grads


def faster(args, net, session):
    """The network as the trainer runs it: the CNN (fast or plain: the same numbers, dropout's
    masks included) as Halves of each batch, in training and in evaluation, with the cores the
    session gives it at each epoch's start; the MLP as it is."""
    if args.model != "cnn":
        return net
    halves = Halves(net)
    session.use_cores = halves.use_cores
    return halves
