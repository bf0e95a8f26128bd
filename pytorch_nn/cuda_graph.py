"""The training step as a CUDA graph: recorded once, replayed for every batch (--mode graph).

Why. On a GPU this network's step is about thirty small kernels (the count issue 11
reported: each layer's products, activations, the loss, autograd's backward, the
optimizer), and each takes longer for
Python and the driver to launch than for the GPU to run. The GPU then waits on the host:
the step is launch-bound, not compute-bound. A CUDA graph records the kernels of one step,
with their arguments and memory addresses, and replays the lot with one launch.

What a replay needs (PyTorch's notes on CUDA graphs, "whole-network capture"):
- The same memory every time. So the batch is picked on the GPU by an index tensor that
  stays put: each step copies the next batch's indices into it, and the recorded gather
  reads the images through it.
- Nothing on the host. A recorded step cannot read a Python number that changes: Adam
  with capturable=True keeps its step count on the GPU, and the learning rate is a GPU
  tensor that the step itself sets from the cosine formula and a step counter on the GPU.
- Dropout works unchanged: PyTorch's random generator is graph-safe, and each replay
  draws new masks.
- A warm-up first, for the lazy one-off work (cuBLAS's handles, the optimizer's state);
  its steps are then undone, in place, so the run is the eager loop's step for step.

Same seed and batches, the same numbers as the eager loop, within float32 rounding: the
learning rate is computed on the GPU instead of in Python (tests/test_cuda_graph.py).
"""
import contextlib
import math

import torch

WARMUP_STEPS = 3  # PyTorch's example warms up with 3 iterations on a side stream


class GraphedStep:
    """forward, backward, learning rate and optimizer step for a batch of indices idx (a
    tensor on the device); returns the batch's loss (a tensor). Batches of batch_size
    replay the recorded graph; a smaller last batch of an epoch, and a step the diagnostics
    record, run the same code eagerly.

    optimizer: torch.optim.Adam(..., lr=<a tensor on the device>, fused=True, capturable=True).
    cosine: the learning rate goes from lr to 0 over total_steps as CosineAnnealingLR's.
    capture=False runs every step eagerly, the same code, and warm_up=True then warms up
    and undoes it all the same: the tests check both on the CPU."""

    def __init__(self, model, optimizer, loss_fn, x_train, y_train, batch_size, total_steps,
                 cosine, capture=True, warm_up=None):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.x_train, self.y_train, self.batch_size = x_train, y_train, batch_size
        self.lrs = [group["lr"] for group in optimizer.param_groups]  # tensors, set in the step
        self.lr0 = self.lrs[0].clone()                                # the peak learning rate
        self.total_steps, self.cosine = total_steps, cosine
        self.count = torch.zeros((), dtype=torch.float64, device=x_train.device)  # steps taken
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=x_train.device)  # the batch, by index
        self.graph = None
        if warm_up is None:
            warm_up = capture              # PyTorch's recipe: warm up before a capture
        if warm_up:
            self._warm_up()
        if capture:
            self.graph = torch.cuda.CUDAGraph()
            optimizer.zero_grad(set_to_none=True)  # backward allocates .grad inside the graph's memory
            with torch.cuda.graph(self.graph):
                self.loss = self._step(self.idx)

    def _step(self, idx, watch=None):
        """One step, every operation on the device (watch: the diagnostics, eager steps only)."""
        loss = self.loss_fn(self.model(self.x_train[idx]), self.y_train[idx])
        loss.backward()                    # .grad was None: backward writes it, no stale sum
        if self.cosine:                    # lr_t = lr0 (1 + cos(pi t / T)) / 2, as CosineAnnealingLR
            lr = self.lr0 * (1 + torch.cos(math.pi * self.count / self.total_steps)) / 2
            for group_lr in self.lrs:
                group_lr.copy_(lr)
        if watch:
            watch.before_update(loss.item())
        self.optimizer.step()
        if watch:
            watch.after_update()
        self.count += 1
        return loss

    def __call__(self, idx, watch=None):
        """watch: pytorch_nn/diagnostics.py's Watch on a step it records. That step runs
        eagerly (the same code): its figures need the gradients and the weights between
        backward and the update, which a replay never hands back to Python."""
        if self.graph is not None and len(idx) == self.batch_size and watch is None:
            self.idx.copy_(idx)
            self.graph.replay()
            return self.loss               # overwritten by the next replay: read it before then
        self.optimizer.zero_grad(set_to_none=True)
        return self._step(idx, watch)

    def _warm_up(self):
        """A few steps on a side stream (PyTorch's recipe before capture), then undone in
        place: the weights copied back, Adam's state (step count and both moving averages)
        back to its start, zeros, the counter and the random generator as they were."""
        params = list(self.model.parameters())
        saved = [p.detach().clone() for p in params]
        rng = torch.cuda.get_rng_state() if self.idx.is_cuda else torch.get_rng_state()
        side = torch.cuda.Stream() if self.idx.is_cuda else None
        if side:
            side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side) if side else contextlib.nullcontext():
            for _ in range(WARMUP_STEPS):
                self.optimizer.zero_grad(set_to_none=True)
                self._step(self.idx)
        if side:
            torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            for p, value in zip(params, saved):
                p.copy_(value)
            for state in self.optimizer.state.values():
                for value in state.values():
                    value.zero_()             # a fresh Adam: step 0, zero averages
            self.count.zero_()
            for group_lr in self.lrs:
                group_lr.copy_(self.lr0)
        if self.idx.is_cuda:
            torch.cuda.set_rng_state(rng)
        else:
            torch.set_rng_state(rng)

