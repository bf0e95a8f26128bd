"""How fast each implementation trains, against this machine's matrix-multiply limit.

    python perf/benchmark.py                      # batch sizes 32..512, about 80 s on 2 cores
    python perf/benchmark.py --threads 1 2        # the same, a row per BLAS thread count
    python perf/benchmark.py --model cnn          # the small CNN: batch sizes 64..256, about a minute

In one process run it measures: the single-precision matrix-multiply peak (NumPy, a large
square product, best of several); then, for each batch size, the training throughput
(samples/s over a fixed number of steps after warm-up, median of repeats) of the NumPy
network and of the PyTorch model on the CPU, and on CUDA when present: same network, same
optimizer (Adam), same data. The two implementations take turns within each repeat, so
both see the same machine load. The roofline is peak / (FLOPs per training sample): no
implementation can train faster than that on this machine. "matmuls only" times just the
matrix products of a step at the step's own shapes: how close BLAS itself gets to the
peak on matrices this small. With --threads, every row is measured at each thread count
(NumPy's OpenBLAS and PyTorch both set to it), the counts taking turns within each repeat.

With --model cnn the network is numpy_nn/fast_cnn.py's FastCNN (the trainer's default) and its
PyTorch twin (pytorch_nn/cnn.py, laid out channels last as pytorch_nn/fast_step.py lays it
out), started from the same weights; "matmuls only" is then the im2col products of its
convolutions and the linear layer's, and one step at batch 128 is timed layer by layer
(forward and backward) in both. Last, the Adam step alone, in both, on a fresh state and on
one as training leaves it (some of m subnormal), the NumPy one also without the trainer's
subnormal flush (numpy_nn/fast_optimizers.py), and
(MLP only) --augment's cost: a batch of 128 warped by numpy_nn/augment.py and by its PyTorch
twin, beside a NumPy MLP step at that batch, and the floor under any NumPy warp: its four
gathers alone.

Writes results/benchmark.json, results/benchmark.md and results/throughput.png (with
--model cnn: benchmark_cnn.json, benchmark_cnn.md and throughput_cnn.png). The FLOP counts
behind the roofline are in flops.py; the tables and the picture are written by
report/throughput.py from the JSON record alone.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]  # the repo
sys.path.insert(0, str(ROOT))
from data_fetch import write_atomic  # noqa: E402
from data_loader import DataError, batches, load_mnist  # noqa: E402
from harness.flags import DEFAULT_RANGES  # noqa: E402
from harness.metrics_file import cpu_model, numpy_blas  # noqa: E402
from harness.threads import openblas_threads, set_openblas_threads  # noqa: E402
from numpy_nn import build as numpy_build  # noqa: E402
from numpy_nn.augment import SIDE, Augment  # noqa: E402
from numpy_nn.cnn import CNN, IMAGE_SHAPE  # noqa: E402
from numpy_nn.fast_cnn import FastCNN  # noqa: E402
from numpy_nn.fast_layers import conv2d_backward, conv2d_forward, maxpool2d_backward, maxpool2d_forward  # noqa: E402
from numpy_nn.neural_network import NeuralNetwork  # noqa: E402
from numpy_nn.parallel import Halves  # noqa: E402
from numpy_nn.train import train_step  # noqa: E402
from numpy_nn.utils import cross_entropy_with_grad, relu_grad  # noqa: E402
from perf.flops import cnn_flops_per_sample, cnn_products, flops_per_sample  # noqa: E402
from report.throughput import markdown, plot, threads_cell  # noqa: E402

# Per model: the defaults of --batch-sizes, --samples and --repeats, and the batch sizes
# whose steps are also timed part by part. The CNN does ~30x the MLP's arithmetic per
# sample, so it gets fewer samples and repeats: its whole run takes about a minute on 2 cores.
DEFAULTS = {
    "mlp": {"batch_sizes": [32, 64, 128, 256, 512], "samples": 15_000, "repeats": 9, "phases_at": (64, 512)},
    "cnn": {"batch_sizes": [64, 128, 256], "samples": 2_560, "repeats": 5, "phases_at": (128,)},
}
# OpenBLAS's and PyTorch's worker threads keep spinning for a while after their library's
# last call. In one process, the library that runs next then shares the 2 cores with the
# other's spinning threads (measured here: PyTorch at batch 64 went from 49k to 30k
# samples/s right after NumPy). A pause before each timing lets them go to sleep.
QUIET_S = 0.3
WARMUP_STEPS = 10  # untimed steps first: caches, allocator, lazy initialisation


def matmul_peak(n=2048, repeats=7):
    """Best GFLOP/s of a float32 (n x n) @ (n x n) product: 2 n^3 floating-point operations."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b, out = a.copy(), np.empty_like(a)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def gpu_matmul_peak(n=8192, repeats=7):
    """The same for torch on the CUDA GPU: best GFLOP/s of a float32 (n x n) @ (n x n) product,
    timed between synchronisations. n is larger than the CPU's 2048: a GPU needs that much
    work to fill its units. Whether TF32 (10-bit mantissas in the products) is allowed
    decides which peak this is: gpu_record() says."""
    import torch
    a = torch.randn(n, n, device="cuda")
    b, out = a.clone(), torch.empty_like(a)
    best = float("inf")
    for _ in range(repeats + 1):  # the first one also pays cuBLAS's start-up: discarded by min
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.matmul(a, b, out=out)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def gpu_record(per_sample):
    """What the record says of the GPU: its name, its float32 matmul peak, TF32, the roofline."""
    import torch
    peak = gpu_matmul_peak()
    return {"name": torch.cuda.get_device_name(), "matmul_peak_gflops": peak,
            "tf32": torch.backends.cuda.matmul.allow_tf32,  # False, PyTorch's default: full float32
            "roofline_samples_per_second": peak * 1e9 / per_sample}


ARGS = SimpleNamespace(optimizer="adam", lr=1e-3, weight_decay=0.0, layers="fast")  # as the trainers get them


def _numpy_setup(model="mlp"):
    """The network and optimizer numpy_nn/train.py builds."""
    net = FastCNN(seed=0) if model == "cnn" else NeuralNetwork(seed=0)
    return net, numpy_build.make_optimizer(net, ARGS)


def _torch_setup(x, y, device, model="mlp", capturable=False):
    """The model, optimizer, loss and data tensors pytorch_nn/train.py builds, starting from
    the NumPy network's weights (capturable: its optimizer for --mode graph)."""
    import torch

    from pytorch_nn import cnn
    from pytorch_nn.fast_step import channels_last
    from pytorch_nn.model import MLP
    from pytorch_nn.numpy_weights import load_numpy_params
    from pytorch_nn.train import make_optimizer
    if model == "cnn":  # laid out channels last, as the trainer's fast path lays it out
        net = channels_last(load_numpy_params(cnn.CNN(), CNN(seed=0).params).to(device))
    else:
        net = load_numpy_params(MLP(), NeuralNetwork(seed=0).params).to(device)
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    return net, make_optimizer(net, ARGS, capturable), torch.nn.CrossEntropyLoss(), xt, yt


def numpy_trainer(x, y, batch_size, model="mlp"):
    """A function that runs one NumPy training step (Adam) on the next batch: numpy_nn/train.py's
    train_step, as the trainer runs it (the CNN's batch as two halves at once, numpy_nn/parallel.py)."""
    net, opt = _numpy_setup(model)
    halves = Halves(net) if model == "cnn" else None
    args, rng = SimpleNamespace(dropout=0.0, weight_decay=0.0), np.random.default_rng(1)
    order = _endless_batches(len(x), batch_size)

    def step():
        idx = next(order)
        cores = openblas_threads()       # the count measure() set: the halves share it ...
        if halves:
            halves.use_cores(cores)
        train_step(halves or net, opt, x[idx], y[idx], args, rng)
        set_openblas_threads(cores)      # ... and give it back for whatever is timed next
    return step, lambda: None


def matmuls_only(x, batch_size):
    """Only the matrix products of a NumPy training step, on the same shapes: the most any
    implementation that hands its products to this BLAS can reach (the shape's own ceiling)."""
    net = NeuralNetwork(seed=0)
    Ws = [net.params[f"W{i}"] for i in range(1, net.num_layers + 1)]
    xb = x[:batch_size].copy()

    def step():
        hs = [xb]
        for W in Ws:                                 # forward: h @ W
            hs.append(hs[-1] @ W)
        dz = hs[-1]
        for i in range(len(Ws) - 1, -1, -1):         # backward: h^T dz, and dz W^T below layer 1
            hs[i].T @ dz
            if i:
                dz = dz @ Ws[i].T
    return step, lambda: None


def cnn_matmuls_only(batch_size):
    """The same for the CNN: only the products of cnn_products at this batch size (operands
    stored as the step stores them, random values), each result a new array as in the step."""
    rng = np.random.default_rng(0)

    def operand(rows, cols, transposed):
        if transposed:
            return rng.standard_normal((cols, rows), dtype=np.float32).T
        return rng.standard_normal((rows, cols), dtype=np.float32)
    pairs = [(operand(p.m, p.k, p.a_transposed), operand(p.k, p.n, p.b_transposed))
             for p in cnn_products(batch_size)]

    def step():
        for a, b in pairs:
            a @ b
    return step, lambda: None


def torch_trainer(x, y, batch_size, device, model_name="mlp"):
    """The same for the PyTorch model: pytorch_nn/train.py's train_step."""
    import torch

    from pytorch_nn.train import train_step
    model, opt, _, xt, yt = _torch_setup(x, y, device, model_name)
    order = _endless_batches(len(x), batch_size)

    def step():
        idx = torch.from_numpy(next(order)).to(device, non_blocking=True)
        train_step(model, opt, xt[idx], yt[idx])
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    return step, sync


def torch_graph_trainer(x, y, batch_size, model_name="mlp"):
    """The same for pytorch_nn/train.py's --mode graph on CUDA: each step a replay of
    train_step recorded as a CUDA graph (pytorch_nn/fast_step.py)."""
    import torch

    from pytorch_nn.fast_step import GraphedStep
    from pytorch_nn.train import train_step
    model, opt, _, xt, yt = _torch_setup(x, y, "cuda", model_name, capturable=True)
    graphed = GraphedStep(train_step, model, opt, batch_size, total_steps=10 ** 9, cosine=True)
    order = _endless_batches(len(x), batch_size)

    def step():
        idx = torch.from_numpy(next(order)).to("cuda", non_blocking=True)
        graphed(model, opt, xt[idx], yt[idx])
    return step, torch.cuda.synchronize


def _endless_batches(n, batch_size):
    """Full batches in the trainers' shuffled order, epoch after epoch."""
    if batch_size > n:  # no full batch at all: the loop below would look for one forever
        raise ValueError(f"batch size {batch_size} is larger than the {n:,} samples")
    rng = np.random.default_rng(0)
    while True:
        for idx in batches(n - n % batch_size, batch_size, rng):
            yield idx


def use_threads(n):
    """Make NumPy's OpenBLAS and PyTorch use n threads each (None: leave them as they are);
    return the counts now in use."""
    import torch
    if n is not None:
        set_openblas_threads(n)
        torch.set_num_threads(n)
    return {"numpy": openblas_threads(), "pytorch": torch.get_num_threads()}


def measure(trainers, batch_size, steps, repeats, thread_counts=(None,)):
    """{thread count: (median samples/s of each trainer, median matmul peak measured between
    them)}. Each repeat, for each thread count in turn, times the peak and then every trainer
    once, so all of them see the same machine (which, shared with others, can slow down by
    half for seconds at a time)."""
    rates = {n: {name: [] for name in trainers} for n in thread_counts}
    peaks = {n: [] for n in thread_counts}
    for n in thread_counts:
        use_threads(n)
        for name, (step, sync) in trainers.items():  # warm-up: caches, allocator, lazy init
            for _ in range(max(WARMUP_STEPS, steps // 5)):
                step()
            sync()
    for _ in range(repeats):
        for n in thread_counts:
            use_threads(n)
            peaks[n].append(matmul_peak(repeats=3))
            for name, (step, sync) in trainers.items():
                time.sleep(QUIET_S)
                for _ in range(3):  # untimed: wake this library's threads and the clock back up
                    step()
                sync()
                t0 = time.perf_counter()
                for _ in range(steps):
                    step()
                sync()
                rates[n][name].append(steps * batch_size / (time.perf_counter() - t0))
    return {n: ({name: statistics.median(r) for name, r in rates[n].items()}, statistics.median(peaks[n]))
            for n in thread_counts}


# Of Adam's m after 3 epochs of the default MLP run, the share that is subnormal (5,875 of
# 109,386): weights whose gradient stopped, their m shrunk by 0.9 a step below float32's
# smallest normal number. Arithmetic on those is slow on many CPUs (numpy_nn/fast_optimizers.py).
TRAINED_SUBNORMAL_SHARE = 0.054


def optimizer_steps(n_params, repeats, steps=20):
    """Microseconds per Adam step (median of repeats, each `steps` steps), NumPy and PyTorch
    CPU, as the trainers build them, and NumPy's as utils.py writes it (--layers plain: no
    subnormal flush), on a fresh state and on one as training leaves it:
    TRAINED_SUBNORMAL_SHARE of m subnormal, with gradient 0 there."""
    import torch

    from pytorch_nn.train import make_optimizer
    rng = np.random.default_rng(0)
    grads = (rng.standard_normal(n_params) * 1e-3).astype(np.float32)
    dead = rng.random(n_params) < TRAINED_SUBNORMAL_SHARE
    grads[dead] = 0.0
    m = grads * 0.5
    m[dead] = np.finfo(np.float32).tiny / 4                       # subnormal
    v = grads * grads + 1e-12

    def numpy_step(trained, layers="fast"):
        params = np.zeros(n_params, np.float32)
        opt = numpy_build.make_optimizer(SimpleNamespace(flat_params=params),
                                         SimpleNamespace(**{**vars(ARGS), "layers": layers}))
        if trained:
            opt.m[...], opt.v[...], opt.t = m, v, 1000
        return lambda: opt.step(grads)

    def torch_step(trained):
        p = torch.zeros(n_params, requires_grad=True)
        opt = make_optimizer(SimpleNamespace(named_parameters=lambda: [("weight", p)]), ARGS)
        p.grad = torch.from_numpy(grads)
        opt.step()                                                # creates the state
        if trained:
            state = opt.state[p]
            state["exp_avg"].copy_(torch.from_numpy(m))
            state["exp_avg_sq"].copy_(torch.from_numpy(v))
            state["step"].fill_(1000)
        return opt.step
    makers = {"numpy": numpy_step, "numpy --layers plain": lambda trained: numpy_step(trained, "plain"),
              "pytorch-cpu": torch_step}
    times = {(name, state): [] for name in makers for state in ("fresh", "trained")}
    for _ in range(repeats):                                      # taking turns, as measure() does
        for name, state in times:
            step = makers[name](state == "trained")
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            times[name, state].append(1e6 * (time.perf_counter() - t0) / steps)
    return {name: {state: statistics.median(times[name, state]) for state in ("fresh", "trained")}
            for name in makers}


# --augment's cost (numpy_nn/augment.py) is timed on a batch of the trainers' default size,
# beside a NumPy MLP training step at that batch: the share of a step it adds.
AUGMENT_BATCH = 128


GATHERS = "numpy: warp()'s four gathers alone"


def _four_gathers(batch):
    """What any bilinear warp in NumPy must do at least: read each output pixel's four
    neighbours, four np.take calls over the batch's B*784 pixels as augment.warp() makes them,
    here at the identity map's indices (the same memory order as a small warp's)."""
    B, side = len(batch), SIDE
    P = side + 3                                           # warp()'s padded side
    padded = np.zeros((B, P, P), batch.dtype)
    padded[:, 1:side + 1, 1:side + 1] = batch.reshape(B, side, side)
    flat = padded.reshape(-1)
    rows, cols = np.mgrid[:side, :side].reshape(2, -1)
    index = (np.arange(B)[:, None] * P + rows + 1) * P + cols + 1
    return lambda: [np.take(flat[step:], index) for step in (0, 1, P, P + 1)]


def augment_costs(x, y, repeats, calls=20):
    """Microseconds per batch (median of repeats, each `calls` calls) of --augment on a batch
    of AUGMENT_BATCH: NumPy's Augment and the PyTorch twin's on the CPU, with the
    default ranges and with --thickness 0.5, beside one NumPy MLP training step at that batch
    (numpy_trainer's, as the rows time it). All take turns within each repeat, as measure()'s
    trainers do, so they see the same machine load."""
    import torch

    from pytorch_nn.augment import TorchAugment
    bs = AUGMENT_BATCH
    batch = x[next(_endless_batches(len(x), bs))]          # bs,784 float32, as the trainers give it
    tensor = torch.from_numpy(batch)
    step, _ = numpy_trainer(x, y, bs)
    timed = {"numpy MLP step": step}
    for thickness in (0.0, 0.5):
        args = SimpleNamespace(augment={**DEFAULT_RANGES, "thickness": thickness}, seed=0)
        label = f", thickness {thickness:g}" if thickness else ""
        timed["numpy augment" + label] = lambda augment=Augment(args): augment(batch)
        timed["pytorch-cpu augment" + label] = lambda augment=TorchAugment(args): augment(tensor)
    timed[GATHERS] = _four_gathers(batch)
    for run in timed.values():                             # warm-up: caches, allocator, lazy init
        for _ in range(WARMUP_STEPS):
            run()
    times = {name: [] for name in timed}
    for _ in range(repeats):
        for name, run in timed.items():
            time.sleep(QUIET_S)                            # the other library's threads go to sleep
            t0 = time.perf_counter()
            for _ in range(calls):
                run()
            times[name].append(1e6 * (time.perf_counter() - t0) / calls)
    us = {name: statistics.median(t) for name, t in times.items()}
    return {"batch_size": bs, "calls": calls, "threads": use_threads(None), "microseconds": us,
            "share_of_numpy_step": {name: v / us["numpy MLP step"] for name, v in us.items()}}


def augment_markdown(record):
    """benchmark.md's section on --augment's cost (markdown lines; none in records without it)."""
    costs = record.get("augment_microseconds")
    if not costs:
        return []
    bs = costs["batch_size"]
    lines = ["", f"## --augment's cost at batch {bs} (microseconds per batch)", "",
             f"Warping a batch of {bs} training images, each by its own random map (numpy_nn/augment.py "
             f"from scratch, pytorch_nn/augment.py its twin on the CPU; default ranges, and with "
             f"--thickness 0.5), beside one NumPy MLP training step at batch {bs}; each timed over "
             f"{costs['calls']} calls, taking turns, median of {record['repeats']} repeats; threads "
             f"{threads_cell(costs)}.", "",
             "| | microseconds | share of a NumPy MLP step |", "|---|---:|---:|"]
    for name, us in costs["microseconds"].items():
        lines.append(f"| {name} | {us:.0f} | {100 * costs['share_of_numpy_step'][name]:.0f}% |")
    if GATHERS in costs["share_of_numpy_step"]:
        lines += ["", f"The last row is a floor for any bilinear warp in NumPy: reading each pixel's four "
                  f"neighbours, with nothing computed, took {100 * costs['share_of_numpy_step'][GATHERS]:.0f}% "
                  f"of the step."]
    return lines


def numpy_phases(x, y, batch_size, steps):
    """Microseconds per NumPy training step spent in each phase (one pass of `steps` steps)."""
    net, opt = _numpy_setup()
    order = _endless_batches(len(x), batch_size)
    spent = dict.fromkeys(["gather batch", "forward", "loss + dlogits", "backward", "optimizer"], 0.0)
    for i in range(WARMUP_STEPS + steps):
        t = [time.perf_counter()]
        idx = next(order)
        xb, yb = x[idx], y[idx]
        t.append(time.perf_counter())
        logits, cache = net.forward(xb)
        t.append(time.perf_counter())
        _, dlogits = cross_entropy_with_grad(logits, yb)
        t.append(time.perf_counter())
        net.backward(dlogits, cache)
        t.append(time.perf_counter())
        opt.step(net.flat_grads)
        t.append(time.perf_counter())
        for name, start, end in zip(spent, t, t[1:]):
            spent[name] += (end - start) * (i >= WARMUP_STEPS)
    return {name: 1e6 * seconds / steps for name, seconds in spent.items()}


def torch_phases(x, y, batch_size, steps):
    """The same for PyTorch on the CPU, where every operation finishes before it returns."""
    import torch
    model, opt, loss_fn, xt, yt = _torch_setup(x, y, "cpu")
    order = _endless_batches(len(x), batch_size)
    spent = dict.fromkeys(["gather batch", "forward + loss", "backward (autograd)", "optimizer"], 0.0)
    for i in range(WARMUP_STEPS + steps):
        t = [time.perf_counter()]
        idx = torch.from_numpy(next(order))
        xb, yb = xt[idx], yt[idx]
        t.append(time.perf_counter())
        loss = loss_fn(model(xb), yb)
        t.append(time.perf_counter())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t.append(time.perf_counter())
        opt.step()
        t.append(time.perf_counter())
        for name, start, end in zip(spent, t, t[1:]):
            spent[name] += (end - start) * (i >= WARMUP_STEPS)
    return {name: 1e6 * seconds / steps for name, seconds in spent.items()}


# The parts of a CNN training step, in the order of the network as written (conv, ReLU,
# pool); backward in reverse. The loss is one part: NumPy computes it and dlogits in one call.
CNN_PARTS = ("gather batch",
             "conv1 forward", "relu1 forward", "pool1 forward",
             "conv2 forward", "relu2 forward", "pool2 forward", "linear forward",
             "loss (forward + backward)",
             "linear backward", "pool2 backward", "relu2 backward", "conv2 backward",
             "pool1 backward", "relu1 backward", "conv1 backward",
             "optimizer")


class Laps:
    """A stopwatch for the parts of a step: lap(part) charges the time since the last lap
    to that part; skip() lets time pass uncharged."""

    def __init__(self, parts):
        self.spent = dict.fromkeys(parts, 0.0)
        self.last = time.perf_counter()

    def lap(self, part):
        now = time.perf_counter()
        self.spent[part] += now - self.last
        self.last = now

    def skip(self):
        self.last = time.perf_counter()


def timed_numpy_cnn_step(net, xb, yb, laps):
    """The forward and backward pass of numpy_nn/fast_cnn.py's FastCNN (no dropout, no L2),
    written out call by call as FastCNN.forward and .backward make them, with a lap after
    each layer; fills net.grads. (FastCNN pools before its ReLU, see its docstring.)"""
    p, g = net.params, net.grads
    x = xb.reshape(-1, *IMAGE_SHAPE)                                   # B,1,28,28
    z1, conv1 = conv2d_forward(x, p["W1"], p["b1"])                    # B,32,26,26  im2col + product
    laps.lap("conv1 forward")
    h1, pool1 = maxpool2d_forward(z1)                                  # B,32,13,13
    laps.lap("pool1 forward")
    h1 = np.maximum(h1, 0, out=h1)                                     # ReLU, in place
    laps.lap("relu1 forward")
    z2, conv2 = conv2d_forward(h1, p["W2"], p["b2"])                   # B,64,11,11
    laps.lap("conv2 forward")
    h2, pool2 = maxpool2d_forward(z2)                                  # B,64,5,5
    laps.lap("pool2 forward")
    h2 = np.maximum(h2, 0, out=h2)
    laps.lap("relu2 forward")
    f = h2.reshape(len(x), -1)                                         # B,1600
    logits = f @ p["W3"] + p["b3"]                                     # B,10
    laps.lap("linear forward")
    _, dlogits = cross_entropy_with_grad(logits, yb)
    laps.lap("loss (forward + backward)")
    np.matmul(f.T, dlogits, out=g["W3"])                               # 1600,10
    dlogits.sum(axis=0, out=g["b3"])
    dh2 = (dlogits @ p["W3"].T).reshape(h2.shape)                      # B,64,5,5
    laps.lap("linear backward")
    dh2 *= relu_grad(h2)
    laps.lap("relu2 backward")
    dz2 = maxpool2d_backward(dh2, pool2)                               # B,64,11,11
    laps.lap("pool2 backward")
    dh1, g["W2"][...], g["b2"][...] = conv2d_backward(dz2, conv2)      # B,32,13,13  dW, and dx by col2im
    laps.lap("conv2 backward")
    dh1 *= relu_grad(h1)
    laps.lap("relu1 backward")
    dz1 = maxpool2d_backward(dh1, pool1)                               # B,32,26,26
    laps.lap("pool1 backward")
    _, g["W1"][...], g["b1"][...] = conv2d_backward(dz1, conv1, need_dx=False)  # dW only
    laps.lap("conv1 backward")
    return g


def timed_torch_cnn_step(model, loss_fn, opt, xb, yb, laps):
    """The same for pytorch_nn/cnn.py's CNN on the CPU, where every operation finishes
    before it returns: forward calls the modules one by one, as CNN.forward does, with a
    lap after each; zero_grad counts as optimizer time. Backward is one loss.backward(),
    split where autograd reaches each layer: a hook on a tensor runs just before autograd
    differentiates the operation that made it, so the time from the hook on a layer's
    output to the hook on its input is that layer's backward (with the accumulation of its
    weights' gradients); conv1's runs from the hook on its output until backward returns."""
    a1 = model.conv1(xb.reshape(-1, *IMAGE_SHAPE))                     # B,32,26,26
    laps.lap("conv1 forward")
    r1 = model.relu(a1)
    laps.lap("relu1 forward")
    p1 = model.pool(r1)                                                # B,32,13,13
    laps.lap("pool1 forward")
    a2 = model.conv2(p1)                                               # B,64,11,11
    laps.lap("conv2 forward")
    r2 = model.relu(a2)
    laps.lap("relu2 forward")
    p2 = model.pool(r2)                                                # B,64,5,5
    laps.lap("pool2 forward")
    logits = model.out(model.dropout(model.flatten(p2)))               # B,10
    laps.lap("linear forward")
    loss = loss_fn(logits, yb)
    laps.lap("loss (forward + backward)")
    opt.zero_grad(set_to_none=True)
    laps.lap("optimizer")
    for tensor, part in ((logits, "loss (forward + backward)"), (p2, "linear backward"),
                         (r2, "pool2 backward"), (a2, "relu2 backward"), (p1, "conv2 backward"),
                         (r1, "pool1 backward"), (a1, "relu1 backward")):
        tensor.register_hook(lambda grad, part=part: laps.lap(part))
    laps.skip()                                                        # setting the hooks is not the step's
    loss.backward()
    laps.lap("conv1 backward")
    return loss


def numpy_cnn_layers(x, y, batch_size, steps):
    """Microseconds per NumPy CNN training step spent in each of CNN_PARTS (one pass of
    `steps` steps after the warm-up)."""
    net, opt = _numpy_setup("cnn")
    order = _endless_batches(len(x), batch_size)
    for i in range(WARMUP_STEPS + steps):
        if i in (0, WARMUP_STEPS):
            laps = Laps(CNN_PARTS)                                     # forget the warm-up
        idx = next(order)
        xb, yb = x[idx], y[idx]
        laps.lap("gather batch")
        timed_numpy_cnn_step(net, xb, yb, laps)
        opt.step(net.flat_grads)
        laps.lap("optimizer")
    return {part: 1e6 * seconds / steps for part, seconds in laps.spent.items()}


def torch_cnn_layers(x, y, batch_size, steps):
    """The same for the PyTorch CNN on the CPU."""
    import torch
    model, opt, loss_fn, xt, yt = _torch_setup(x, y, "cpu", "cnn")
    order = _endless_batches(len(x), batch_size)
    for i in range(WARMUP_STEPS + steps):
        if i in (0, WARMUP_STEPS):
            laps = Laps(CNN_PARTS)
        idx = torch.from_numpy(next(order))
        xb, yb = xt[idx], yt[idx]
        laps.lap("gather batch")
        timed_torch_cnn_step(model, loss_fn, opt, xb, yb, laps)
        opt.step()
        laps.lap("optimizer")
    return {part: 1e6 * seconds / steps for part, seconds in laps.spent.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=sorted(DEFAULTS), default="mlp",
                   help="mlp: the fully connected network; cnn: the small convolutional one")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help="batch sizes to measure; default: 32 64 128 256 512 for the MLP, 64 128 256 "
                        "for the CNN")
    p.add_argument("--samples", type=int, default=None,
                   help="training samples per timed repeat (steps = samples / batch size); default: "
                        "15,000 for the MLP, 2,560 for the CNN")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats per batch size: short and many, so a burst of load from "
                        "other tenants of this machine moves the median little; default: 9 for the "
                        "MLP, 5 for the CNN")
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="BLAS thread counts to measure, each batch size at each (NumPy's OpenBLAS "
                        "and PyTorch both set to it); default: leave the libraries' own counts")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="folder holding MNIST/raw/ (default: the repo's data/)")
    p.add_argument("--out-dir", type=Path, default=ROOT / "results", help="where the results go")
    args = p.parse_args(argv)
    defaults = DEFAULTS[args.model]
    for name in ("batch_sizes", "samples", "repeats"):
        if getattr(args, name) is None:
            setattr(args, name, defaults[name])
    if min(args.batch_sizes) < 1 or args.samples < 1 or args.repeats < 1 or min(args.threads or [1]) < 1:
        p.error("batch sizes, --samples, --repeats and --threads must be positive")

    import torch

    from harness.session import torch_hardware
    try:
        x, y, _, _ = load_mnist(data_dir=args.data_dir)
    except DataError as e:
        sys.exit(f"error: {e}")
    if max(args.batch_sizes) > len(x):  # each step takes a full batch of distinct samples
        p.error(f"batch size {max(args.batch_sizes)} is larger than the {len(x):,} training samples")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    cnn = args.model == "cnn"
    if cnn:
        per_sample, epoch = cnn_flops_per_sample(), len(x)
        print(f"{per_sample / 1e6:.3f} MFLOP per training sample (forward "
              f"{cnn_flops_per_sample('forward') / 1e6:.3f}), {epoch * per_sample / 1e12:.3f} TFLOP per "
              f"{epoch:,}-sample epoch; the roofline is the matmul peak (measured between the timings "
              f"of each row) / that")
        phases = {"numpy": numpy_cnn_layers, "pytorch-cpu": torch_cnn_layers}
    else:
        per_sample = flops_per_sample()
        print(f"{per_sample / 1e6:.3f} MFLOP per training sample; the roofline is the matmul peak "
              f"(measured between the timings of each row) / that")
        phases = {"numpy": numpy_phases, "pytorch-cpu": torch_phases}
    gpu = gpu_record(per_sample) if "cuda" in devices else None
    if gpu:
        print(f"GPU {gpu['name']}: float32 matmul peak {gpu['matmul_peak_gflops']:,.0f} GFLOP/s (TF32 "
              f"{'on' if gpu['tf32'] else 'off'}), roofline {gpu['roofline_samples_per_second']:,.0f} samples/s")
    thread_counts = args.threads or [None]
    own_threads = use_threads(None)  # the libraries' own counts, put back after the sweep
    rows = []
    for bs in args.batch_sizes:
        steps = max(1, args.samples // bs)
        trainers = {"numpy": numpy_trainer(x, y, bs, args.model),
                    "matmuls only": cnn_matmuls_only(bs) if cnn else matmuls_only(x, bs)}
        for device in devices:
            trainers[f"pytorch-{device}"] = torch_trainer(x, y, bs, device, args.model)
        if "cuda" in devices:
            trainers["pytorch-cuda-graph"] = torch_graph_trainer(x, y, bs, args.model)
        for n, (rates, peak) in measure(trainers, bs, steps, args.repeats, thread_counts).items():
            roofline = peak * 1e9 / per_sample
            rooflines = {k: gpu["roofline_samples_per_second"] if k.startswith("pytorch-cuda") else roofline
                         for k in rates}  # each implementation against its own processor's peak
            row = {"batch_size": bs, "threads": use_threads(n), "steps": steps, "matmul_peak_gflops": peak,
                   "roofline_samples_per_second": roofline, "samples_per_second": rates,
                   "fraction_of_peak": {k: v / rooflines[k] for k, v in rates.items()},
                   "numpy_over_pytorch_cpu": rates["numpy"] / rates["pytorch-cpu"]}
            if cnn:  # seconds per pass over the training set at these rates
                row["epoch_seconds"] = {k: epoch / v for k, v in rates.items()}
                row["roofline_epoch_seconds"] = epoch / roofline
            if bs in defaults["phases_at"]:
                row["microseconds_per_step"] = {}
                for name, timer in phases.items():
                    time.sleep(QUIET_S)
                    row["microseconds_per_step"][name] = timer(x, y, bs, steps)
                row["microseconds_per_step"]["matmuls only"] = 1e6 * bs / rates["matmuls only"]
            rows.append(row)
            label = f"batch {bs:4d}" + (f", threads {n:2d}" if n else "")
            print(f"{label} (peak {peak:3.0f} GFLOP/s): "
                  + " | ".join(f"{k} {v:9,.0f}/s ({100 * v / rooflines[k]:4.1f}%)" for k, v in rates.items())
                  + f" | numpy/pytorch-cpu {row['numpy_over_pytorch_cpu']:.2f}x")
    n_params = _numpy_setup(args.model)[0].flat_params.size
    adam = optimizer_steps(n_params, args.repeats)
    print(f"Adam step ({n_params:,} parameters), fresh / trained state: "
          + " | ".join(f"{k} {v['fresh']:.0f} / {v['trained']:.0f} us" for k, v in adam.items()))
    augment = None if cnn else augment_costs(x, y, args.repeats)  # a share of an MLP step
    if augment:
        print(f"--augment, batch {augment['batch_size']}: " + " | ".join(
            f"{k} {v:.0f} us ({100 * augment['share_of_numpy_step'][k]:.0f}%)" for k, v in augment["microseconds"].items()))
    if args.threads:  # the record's hardware section reports the libraries' own counts
        set_openblas_threads(own_threads["numpy"])
        torch.set_num_threads(own_threads["pytorch"])
    peak = statistics.median(row["matmul_peak_gflops"] for row in rows)

    record = {
        "what": ("training throughput, Adam, CNN (conv 3x3 1->32, pool, conv 3x3 32->64, pool, "
                 "linear 1600->10) float32, median of repeats" if cnn else
                 "training throughput, Adam, 784-128-64-10 float32, median of repeats"),
        "matmul_peak_gflops": peak, "flops_per_sample": per_sample,
        "roofline_samples_per_second": peak * 1e9 / per_sample,
        "samples_per_repeat": args.samples, "repeats": args.repeats,
        "threads_swept": args.threads, "rows": rows,
        "hardware": {"cpu": cpu_model(), "cores": os.cpu_count(),
                     "gpu": gpu,
                     "numpy": numpy_blas(),
                     "torch": {"blas": torch_hardware(torch.device("cpu"))["blas"],
                               "threads": torch.get_num_threads()}},
        "versions": {"python": sys.version.split()[0], "numpy": np.__version__, "torch": torch.__version__},
        "warmup_steps": WARMUP_STEPS,
        "adam_step_microseconds": adam, "adam_trained_subnormal_share": TRAINED_SUBNORMAL_SHARE,
    }
    if augment:
        record["augment_microseconds"] = augment
    if cnn:  # the MLP's record stays as it was
        record.update({"model": "cnn", "forward_flops_per_sample": cnn_flops_per_sample("forward"),
                       "epoch_samples": epoch})
    # report/throughput.py's table, then ours
    table = markdown(record, cnn_products) + "".join(f"{line}\n" for line in augment_markdown(record))
    out, suffix = args.out_dir, "_cnn" if cnn else ""
    names = [f"benchmark{suffix}.json", f"benchmark{suffix}.md", f"throughput{suffix}.png"]
    try:
        write_atomic({out / names[0]: (json.dumps(record, indent=2) + "\n").encode(),
                      out / names[1]: table.encode(), out / names[2]: plot(record)})
    except OSError as e:
        sys.exit(f"error: cannot write to {out} ({e.strerror or e})")
    print(f"wrote {out / names[0]}, {names[1]} and {names[2]}")


if __name__ == "__main__":
    main()
