"""How fast each implementation trains, against this machine's matrix-multiply limit.

    python benchmark.py                      # batch sizes 32..512, about 80 s on 2 cores
    python benchmark.py --threads 1 2        # the same, a row per BLAS thread count

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

Writes results/benchmark.json, results/benchmark.md and results/throughput.png.
"""
import argparse
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from data_loader import DataError, batches, load_mnist, write_atomic  # noqa: E402
from metrics_file import cpu_model, numpy_blas  # noqa: E402
from numpy_nn.neural_network import LAYER_SIZES, NeuralNetwork  # noqa: E402
from numpy_nn.utils import OPTIMIZERS, cross_entropy_with_grad  # noqa: E402
from threads import openblas_threads, set_openblas_threads  # noqa: E402

PHASES_AT = (64, 512)  # batch sizes whose steps are also timed phase by phase
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


def flops_per_sample(sizes=LAYER_SIZES):
    """Multiply-adds of one training sample, counted as 2 FLOPs each: the forward product
    h @ W, and in backward dW = h^T dz and dh = dz W^T (not needed for the input layer)."""
    products = [fan_in * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
    return 2 * (3 * sum(products) - products[0])


ARGS = SimpleNamespace(optimizer="adam", lr=1e-3, weight_decay=0.0)  # as the trainers get them


def _numpy_setup():
    """The network and optimizer numpy_nn/train.py builds."""
    net = NeuralNetwork(seed=0)
    return net, OPTIMIZERS[ARGS.optimizer](net.flat_params, ARGS.lr)


def _torch_setup(x, y, device):
    """The model, optimizer, loss and data tensors pytorch_nn/train.py builds."""
    import torch
    from pytorch_nn.model import MLP, load_numpy_params
    from pytorch_nn.train import make_optimizer
    model = load_numpy_params(MLP(), NeuralNetwork(seed=0).params).to(device)
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    return model, make_optimizer(model, ARGS), torch.nn.CrossEntropyLoss(), xt, yt


def numpy_trainer(x, y, batch_size):
    """A function that runs one NumPy training step (Adam) on the next batch."""
    net, opt = _numpy_setup()
    order = _endless_batches(len(x), batch_size)

    def step():
        idx = next(order)
        net.gradients(x[idx], y[idx])
        opt.step(net.flat_grads)
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


def torch_trainer(x, y, batch_size, device):
    """The same for the PyTorch model: the code of pytorch_nn/train.py's inner loop."""
    import torch
    model, opt, loss_fn, xt, yt = _torch_setup(x, y, device)
    order = _endless_batches(len(x), batch_size)

    def step():
        idx = torch.from_numpy(next(order)).to(device, non_blocking=True)
        loss = loss_fn(model(xt[idx]), yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    return step, sync


def _endless_batches(n, batch_size):
    """Full batches in the trainers' shuffled order, epoch after epoch."""
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512],
                   help="batch sizes to measure")
    p.add_argument("--samples", type=int, default=15_000,
                   help="training samples per timed repeat (steps = samples / batch size)")
    p.add_argument("--repeats", type=int, default=9,
                   help="timed repeats per batch size: short and many, so a burst of load from "
                        "other tenants of this machine moves the median little")
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="BLAS thread counts to measure, each batch size at each (NumPy's OpenBLAS "
                        "and PyTorch both set to it); default: leave the libraries' own counts")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="folder holding MNIST/raw/ (default: the repo's data/)")
    p.add_argument("--out-dir", type=Path, default=ROOT / "results", help="where the results go")
    args = p.parse_args(argv)
    if min(args.batch_sizes) < 1 or args.samples < 1 or args.repeats < 1 or min(args.threads or [1]) < 1:
        p.error("batch sizes, --samples, --repeats and --threads must be positive")

    import torch
    from pytorch_nn.train import hardware
    try:
        x, y, _, _ = load_mnist(data_dir=args.data_dir)
    except DataError as e:
        sys.exit(f"error: {e}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    per_sample = flops_per_sample()
    print(f"{per_sample / 1e6:.3f} MFLOP per training sample; the roofline is the matmul peak "
          f"(measured between the timings of each row) / that")
    thread_counts = args.threads or [None]
    own_threads = use_threads(None)  # the libraries' own counts, put back after the sweep
    rows = []
    for bs in args.batch_sizes:
        steps = max(1, args.samples // bs)
        trainers = {"numpy": numpy_trainer(x, y, bs), "matmuls only": matmuls_only(x, bs)}
        for device in devices:
            trainers[f"pytorch-{device}"] = torch_trainer(x, y, bs, device)
        for n, (rates, peak) in measure(trainers, bs, steps, args.repeats, thread_counts).items():
            roofline = peak * 1e9 / per_sample
            row = {"batch_size": bs, "threads": use_threads(n), "steps": steps, "matmul_peak_gflops": peak,
                   "roofline_samples_per_second": roofline, "samples_per_second": rates,
                   "fraction_of_peak": {k: v / roofline for k, v in rates.items()},
                   "numpy_over_pytorch_cpu": rates["numpy"] / rates["pytorch-cpu"]}
            if bs in PHASES_AT:
                time.sleep(QUIET_S)
                numpy_us = numpy_phases(x, y, bs, steps)
                time.sleep(QUIET_S)
                row["microseconds_per_step"] = {"numpy": numpy_us,
                                                "pytorch-cpu": torch_phases(x, y, bs, steps),
                                                "matmuls only": 1e6 * bs / rates["matmuls only"]}
            rows.append(row)
            label = f"batch {bs:4d}" + (f", threads {n:2d}" if n else "")
            print(f"{label} (peak {peak:3.0f} GFLOP/s): "
                  + " | ".join(f"{k} {v:9,.0f}/s ({100 * v / roofline:4.1f}%)" for k, v in rates.items())
                  + f" | numpy/pytorch-cpu {row['numpy_over_pytorch_cpu']:.2f}x")
    if args.threads:  # the record's hardware section reports the libraries' own counts
        set_openblas_threads(own_threads["numpy"])
        torch.set_num_threads(own_threads["pytorch"])
    peak = statistics.median(row["matmul_peak_gflops"] for row in rows)

    record = {
        "what": "training throughput, Adam, 784-128-64-10 float32, median of repeats",
        "matmul_peak_gflops": peak, "flops_per_sample": per_sample,
        "roofline_samples_per_second": peak * 1e9 / per_sample,
        "samples_per_repeat": args.samples, "repeats": args.repeats,
        "threads_swept": args.threads, "rows": rows,
        "hardware": {"cpu": cpu_model(), "cores": os.cpu_count(),
                     "gpu": torch.cuda.get_device_name() if "cuda" in devices else None,
                     "numpy": numpy_blas(),
                     "torch": {"blas": hardware(torch.device("cpu"))["blas"],
                               "threads": torch.get_num_threads()}},
        "versions": {"python": sys.version.split()[0], "numpy": np.__version__, "torch": torch.__version__},
    }
    out = args.out_dir
    try:
        write_atomic(out / "benchmark.json", (json.dumps(record, indent=2) + "\n").encode())
        write_atomic(out / "benchmark.md", markdown(record).encode())
        write_atomic(out / "throughput.png", plot(record))
    except OSError as e:
        sys.exit(f"error: cannot write to {out} ({e.strerror or e})")
    print(f"wrote {out / 'benchmark.json'}, benchmark.md and throughput.png")


def _threads(row):
    """A row's thread counts as a table cell: "2", or "1 / 2" when NumPy's and PyTorch's differ."""
    counts = row["threads"]
    if counts["numpy"] == counts["pytorch"]:
        return str(counts["numpy"])
    return f"{counts['numpy']} / {counts['pytorch']}"


def markdown(record):
    """The tables of benchmark.json, for people."""
    names = list(record["rows"][0]["samples_per_second"])
    hw = record["hardware"]
    swept = bool(record.get("threads_swept"))  # then a row per batch size and thread count
    lines = [
        "# Training throughput",
        "",
        f"Written by `python benchmark.py`. {record['what']}; {record['samples_per_repeat']:,} "
        f"samples per timed repeat, median of {record['repeats']}. CPU: {hw['cpu']}, "
        f"{hw['cores']} cores; NumPy BLAS {hw['numpy']['blas']} ({hw['numpy']['blas_threads']} "
        f"threads); torch BLAS {hw['torch']['blas']} ({hw['torch']['threads']} threads). Versions: "
        + ", ".join(f"{k} {v}" for k, v in record["versions"].items()) + ".",
        "",
        f"One training sample costs {record['flops_per_sample'] / 1e6:.3f} MFLOP. The float32 "
        f"matmul peak is measured between the timings of each row (median over the run: "
        f"{record['matmul_peak_gflops']:.0f} GFLOP/s, so the roofline is "
        f"{record['roofline_samples_per_second']:,.0f} samples/s); % is of the row's own roofline.",
    ]
    if swept:
        lines += ["", "Thread counts measured (NumPy's OpenBLAS and PyTorch both set to each, taking "
                  "turns within every repeat): " + ", ".join(map(str, record["threads_swept"])) + "."]
    lines += [
        "",
        "| batch | " + "threads | " * swept + "peak GFLOP/s | "
        + " | ".join(f"{n} samples/s (% of peak)" for n in names) + " | NumPy / PyTorch CPU |",
        "|---:|" + "---:|" * swept + "---:|" + "---:|" * (len(names) + 1),
    ]
    for row in record["rows"]:
        cells = [f"{row['samples_per_second'][n]:,.0f} ({100 * row['fraction_of_peak'][n]:.1f}%)" for n in names]
        lines.append(f"| {row['batch_size']} | " + f"{_threads(row)} | " * swept
                     + f"{row['matmul_peak_gflops']:.0f} | " + " | ".join(cells)
                     + f" | {row['numpy_over_pytorch_cpu']:.2f}x |")
    for row in record["rows"]:
        phases = row.get("microseconds_per_step")
        if not phases:
            continue
        at = f"batch {row['batch_size']}" + f", threads {_threads(row)}" * swept
        lines += ["", f"## Where a step's time goes at {at} (microseconds per step)",
                  "", f"The matrix products alone (\"matmuls only\") take {phases['matmuls only']:.0f} us "
                  f"per step at this batch size.", ""]
        for name in ("numpy", "pytorch-cpu"):
            total = sum(phases[name].values())
            lines.append(f"- {name}: " + ", ".join(f"{k} {v:.0f}" for k, v in phases[name].items())
                         + f"; total {total:.0f}")
    return "\n".join(lines) + "\n"


def plot(record):
    """samples/s against batch size per implementation, with the roofline; PNG bytes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    swept = record.get("threads_swept") or [None]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, n in enumerate(swept):
        rows = record["rows"][i::len(swept)]  # main() writes each batch size's thread counts in turn
        sizes = [r["batch_size"] for r in rows]
        style, suffix = ["-", ":", "-.", "--"][i % 4], f", threads {n}" if n else ""
        for name, colour in zip(rows[0]["samples_per_second"], colours):
            ax.plot(sizes, [r["samples_per_second"][name] for r in rows], "o", ls=style, color=colour,
                    label=name + suffix)
        roofline = (f"roofline{suffix}" if n else
                    f"roofline: matmul peak (median {record['matmul_peak_gflops']:.0f} GFLOP/s) / "
                    f"{record['flops_per_sample'] / 1e6:.2f} MFLOP per sample")
        ax.plot(sizes, [r["roofline_samples_per_second"] for r in rows], color="k",
                ls=style if n else "--", label=roofline)
    ax.set_xscale("log", base=2)
    sizes = sorted({r["batch_size"] for r in record["rows"]})
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("training samples / second")
    ax.set_title(f"Training throughput, Adam, float32\n{record['hardware']['cpu']}, "
                 f"{record['hardware']['cores']} cores")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


if __name__ == "__main__":
    main()
