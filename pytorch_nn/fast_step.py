"""The training step, faster: recorded once as a CUDA graph and replayed (--mode graph), or
compiled by torch.compile (--mode compile). Both run train.py's own train_step. And, in
every mode, the CNN laid out channels last (unless --layers plain).

Why channels last. cnn.py's CNN keeps PyTorch's usual B,C,H,W memory. Its conv weights, and
so every activation after them, laid out channels last instead (B,H,W,C in memory; shapes
and indexing stay B,C,H,W) is the layout PyTorch's CPU convolution (oneDNN) and max-pool
run fastest in: on a 2-core Intel Xeon (shared with other jobs), a training step at batch
128 took 1.36 times as long in B,C,H,W memory on 2 threads (1.45 on one), and evaluating
2,560 images 2.65 times as long (2.70 on one): medians of 21 interleaved rounds. The
numbers are the same up to rounding (tests/test_cnn.py).

Why a CUDA graph. On a GPU this network's step is many small kernels (each layer's
products, activations, the loss, autograd's backward, the optimizer), and each takes longer
for Python and the driver to launch than for the GPU to run. The GPU then waits on the
host: the step is launch-bound, not compute-bound. A CUDA graph records the kernels of one
step, with their arguments and memory addresses, and replays the lot with one launch.

What a replay needs (PyTorch's notes on CUDA graphs, "whole-network capture"):
- The same memory every time. So each batch is copied into input tensors that stay put,
  which the recorded step reads.
- Nothing on the host. A recorded step cannot read a Python number that changes: Adam
  with capturable=True keeps its step count on the GPU, and the learning rate is a GPU
  tensor that the step itself sets from the cosine formula and a step counter on the GPU
  (so the trainer's CosineAnnealingLR, which would read it back every step, stands aside).
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


def faster(args, train_step, model, optimizer, scheduler, session):
    """(the step the loop calls, the scheduler it steps) for --mode: eager, train_step and
    the scheduler as they are; compile, train_step on torch.compile's model; graph, a
    GraphedStep that sets the cosine learning rate itself. The CNN is laid out channels
    last first (channels_last), unless --layers plain."""
    if args.model == "cnn" and args.layers == "fast":
        channels_last(model)
    if args.mode == "compile":
        fast_model = compiled(model, session.device)
        return (lambda model, *rest: train_step(fast_model, *rest)), scheduler
    if args.mode == "graph":
        return GraphedStep(train_step, model, optimizer, args.batch_size, session.total_steps,
                           args.schedule == "cosine", session=session), None
    return train_step, scheduler


def channels_last(model):
    """model (the CNN) laid out channels last, in place (see the module docstring): every
    parameter stays the same tensor object, so an optimizer made before still holds them."""
    return model.to(memory_format=torch.channels_last)


def compiled(model, device):
    """--mode compile: torch.compile's version of model.forward, for the training steps
    (evaluation runs the model as it is, at other batch sizes). On CUDA in the mode
    "reduce-overhead", which records CUDA graphs of its own, as GraphedStep does by hand.
    The first steps pay for the compilation: the first epoch's time says how much."""
    return torch.compile(model, mode="reduce-overhead" if device.type == "cuda" else "default")


class GraphedStep:
    """train_step(model, optimizer, x, y), with the learning rate, as one CUDA graph: called
    as train_step is, returns the batch's loss (a tensor on the device). Batches of
    batch_size replay the recorded graph; a smaller last batch of an epoch, and a step the
    diagnostics record (session.recording), run the same code eagerly.

    optimizer: torch.optim.Adam(..., lr=<a tensor on the device>, fused=True, capturable=True).
    cosine: the learning rate goes from lr to 0 over total_steps as CosineAnnealingLR's.
    capture=False runs every step eagerly, the same code, and warm_up=True then warms up
    and undoes it all the same: the tests check both on the CPU."""

    def __init__(self, train_step, model, optimizer, batch_size, total_steps, cosine,
                 capture=True, warm_up=None, session=None):
        self.train_step, self.model, self.optimizer = train_step, model, optimizer
        self.batch_size, self.session = batch_size, session
        param = next(model.parameters())
        self.lrs = [group["lr"] for group in optimizer.param_groups]  # tensors, set in the step
        self.lr0 = self.lrs[0].clone()                                # the peak learning rate
        self.total_steps, self.cosine = total_steps, cosine
        self.count = torch.zeros((), dtype=torch.float64, device=param.device)  # steps taken
        self.x = None                      # the recorded step's batch, made at the first full batch
        self.y = torch.zeros(batch_size, dtype=torch.long, device=param.device)
        self.graph, self.capture = None, capture
        self.warm_up = capture if warm_up is None else warm_up        # PyTorch's recipe before a capture

    def _record(self, x):
        """The first full batch: the input buffers shaped as it is, the warm-up, the capture."""
        self.x = torch.zeros_like(x)
        if self.warm_up:
            self._warm_up()
        if self.capture:
            self.graph = torch.cuda.CUDAGraph()
            self.optimizer.zero_grad(set_to_none=True)  # backward allocates .grad inside the graph's memory
            with torch.cuda.graph(self.graph):
                self.loss = self._step(self.x, self.y)

    def _step(self, x, y):
        """One step, every operation on the device."""
        if self.cosine:                    # lr_t = lr0 (1 + cos(pi t / T)) / 2, as CosineAnnealingLR
            lr = self.lr0 * (1 + torch.cos(math.pi * self.count / self.total_steps)) / 2
            for group_lr in self.lrs:
                group_lr.copy_(lr)
        loss = self.train_step(self.model, self.optimizer, x, y)
        self.count += 1
        return loss

    def __call__(self, model, optimizer, x, y):
        if len(x) == self.batch_size and self.x is None:
            self._record(x)
        recording = self.session is not None and self.session.recording
        if self.graph is not None and len(x) == self.batch_size and not recording:
            self.x.copy_(x)
            self.y.copy_(y)
            self.graph.replay()
            return self.loss               # overwritten by the next replay: read it before then
        return self._step(x, y)

    def _warm_up(self):
        """A few steps on a side stream (PyTorch's recipe before capture), then undone in
        place: the weights copied back, Adam's state (step count and both moving averages)
        back to its start, zeros, the counter and the random generator as they were."""
        params = list(self.model.parameters())
        saved = [p.detach().clone() for p in params]
        rng = torch.cuda.get_rng_state() if self.y.is_cuda else torch.get_rng_state()
        side = torch.cuda.Stream() if self.y.is_cuda else None
        if side:
            side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side) if side else contextlib.nullcontext():
            for _ in range(WARMUP_STEPS):
                self._step(self.x, self.y)
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
        if self.y.is_cuda:
            torch.cuda.set_rng_state(rng)
        else:
            torch.set_rng_state(rng)
