"""How fast each implementation trains, against this machine's matrix-multiply limit.

    python benchmark.py                      # batch sizes 32..512, about a minute on 2 cores

In one process run it measures: the single-precision matrix-multiply peak (NumPy, a large
square product, best of several); then, for each batch size, the training throughput
(samples/s over a fixed number of steps after warm-up, median of repeats) of the NumPy
network and of the PyTorch model on the CPU, and on CUDA when present: same network, same
optimizer (Adam), same data. The two implementations take turns within each repeat, so
both see the same machine load. The roofline is peak / (FLOPs per training sample): no
implementation can train faster than that on this machine. "matmuls only" times just the
matrix products of a step at the step's own shapes: how close BLAS itself gets to the
peak on matrices this small.

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

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from data_loader import DataError, batches, load_mnist, write_atomic  # noqa: E402
from experiment import cpu_model, numpy_blas  # noqa: E402
from numpy_nn.neural_network import LAYER_SIZES, NeuralNetwork  # noqa: E402
from numpy_nn.utils import Adam  # noqa: E402


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


def numpy_trainer(x, y, batch_size):
    """A function that runs one NumPy training step (Adam) on the next batch."""
    net = NeuralNetwork(seed=0)
    opt = Adam(net.flat_params, lr=1e-3)
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
    from pytorch_nn.model import MLP, load_numpy_params
    model = load_numpy_params(MLP(), NeuralNetwork(seed=0).params).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
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


def measure(trainers, batch_size, steps, repeats):
    """Median samples/s of each trainer; each repeat times every trainer once, in turn."""
    rates = {name: [] for name in trainers}
    for name, (step, sync) in trainers.items():  # warm-up: caches, allocator, lazy init
        for _ in range(max(10, steps // 5)):
            step()
        sync()
    for _ in range(repeats):
        for name, (step, sync) in trainers.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            sync()
            rates[name].append(steps * batch_size / (time.perf_counter() - t0))
    return {name: statistics.median(r) for name, r in rates.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512],
                   help="batch sizes to measure")
    p.add_argument("--samples", type=int, default=15_000,
                   help="training samples per timed repeat (steps = samples / batch size)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per batch size (median)")
    p.add_argument("--out-dir", type=Path, default=ROOT / "results", help="where the results go")
    args = p.parse_args(argv)
    if min(args.batch_sizes) < 1 or args.samples < 1 or args.repeats < 1:
        p.error("batch sizes, --samples and --repeats must be positive")

    import torch
    from pytorch_nn.train import hardware
    try:
        x, y, _, _ = load_mnist()
    except DataError as e:
        sys.exit(f"error: {e}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    peak = matmul_peak()
    per_sample = flops_per_sample()
    roofline = peak * 1e9 / per_sample
    print(f"float32 matmul peak {peak:.0f} GFLOP/s; {per_sample / 1e6:.3f} MFLOP per training "
          f"sample -> roofline {roofline:,.0f} samples/s")
    rows = []
    for bs in args.batch_sizes:
        steps = max(1, args.samples // bs)
        trainers = {"numpy": numpy_trainer(x, y, bs), "matmuls only": matmuls_only(x, bs)}
        for device in devices:
            trainers[f"pytorch-{device}"] = torch_trainer(x, y, bs, device)
        rates = measure(trainers, bs, steps, args.repeats)
        row = {"batch_size": bs, "steps": steps, "samples_per_second": rates,
               "fraction_of_peak": {k: v / roofline for k, v in rates.items()},
               "numpy_over_pytorch_cpu": rates["numpy"] / rates["pytorch-cpu"]}
        rows.append(row)
        print(f"batch {bs:4d}: " + " | ".join(f"{k} {v:9,.0f}/s ({100 * v / roofline:4.1f}% of peak)"
                                               for k, v in rates.items())
              + f" | numpy/pytorch-cpu {row['numpy_over_pytorch_cpu']:.2f}x")

    record = {
        "what": "training throughput, Adam, 784-128-64-10 float32, median of repeats",
        "matmul_peak_gflops": peak, "flops_per_sample": per_sample, "roofline_samples_per_second": roofline,
        "samples_per_repeat": args.samples, "repeats": args.repeats, "rows": rows,
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


def markdown(record):
    """The table of benchmark.json, for people."""
    names = list(record["rows"][0]["samples_per_second"])
    hw = record["hardware"]
    lines = [
        "# Training throughput",
        "",
        f"{record['what']}; {record['samples_per_repeat']} samples per timed repeat, "
        f"median of {record['repeats']}. CPU: {hw['cpu']}, {hw['cores']} cores; NumPy BLAS "
        f"{hw['numpy']['blas']} ({hw['numpy']['blas_threads']} threads); torch BLAS "
        f"{hw['torch']['blas']} ({hw['torch']['threads']} threads). Versions: "
        + ", ".join(f"{k} {v}" for k, v in record["versions"].items()) + ".",
        "",
        f"float32 matmul peak: {record['matmul_peak_gflops']:.0f} GFLOP/s. One training sample "
        f"costs {record['flops_per_sample'] / 1e6:.3f} MFLOP, so the roofline is "
        f"{record['roofline_samples_per_second']:,.0f} samples/s.",
        "",
        "| batch | " + " | ".join(f"{n} samples/s (% of peak)" for n in names) + " | NumPy / PyTorch CPU |",
        "|---:|" + "---:|" * (len(names) + 1),
    ]
    for row in record["rows"]:
        cells = [f"{row['samples_per_second'][n]:,.0f} ({100 * row['fraction_of_peak'][n]:.1f}%)" for n in names]
        lines.append(f"| {row['batch_size']} | " + " | ".join(cells) + f" | {row['numpy_over_pytorch_cpu']:.2f}x |")
    return "\n".join(lines) + "\n"


def plot(record):
    """samples/s against batch size per implementation, with the roofline; PNG bytes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = record["rows"]
    sizes = [r["batch_size"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in rows[0]["samples_per_second"]:
        ax.plot(sizes, [r["samples_per_second"][name] for r in rows], "o-", label=name)
    ax.axhline(record["roofline_samples_per_second"], color="k", ls="--",
               label=f"roofline: {record['matmul_peak_gflops']:.0f} GFLOP/s peak / "
                     f"{record['flops_per_sample'] / 1e6:.2f} MFLOP per sample")
    ax.set_xscale("log", base=2)
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
