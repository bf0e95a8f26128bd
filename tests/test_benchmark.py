"""benchmark.py's arithmetic (flops.py) and its output files (report/throughput.py); its
timings are reported, never asserted."""
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import loss_and_gradients, run_in_process
from numpy_nn.neural_network import NeuralNetwork
from perf import benchmark, flops
from report import throughput

ROOT = Path(__file__).resolve().parents[1]


def test_flops_per_sample_counts_every_matrix_product():
    """784-128-64-10: forward h @ W for 3 layers, backward h^T dz for 3 and dz W^T for 2, 2 FLOPs per multiply-add."""
    products = 784 * 128 + 128 * 64 + 64 * 10
    assert flops.flops_per_sample() == 2 * (3 * products - 784 * 128) == 454_400
    # forward 10x5 and 5x3; backward dW1 10x5, dW2 5x3, dh1 5x3 (no gradient for the input)
    assert flops.flops_per_sample((10, 5, 3)) == 2 * (10 * 5 + 5 * 3 + 10 * 5 + 5 * 3 + 5 * 3) == 290


def test_matmuls_only_does_the_products_of_a_real_step(monkeypatch):
    """The ceiling measurement multiplies exactly the shapes a training step multiplies."""
    seen = []
    real = np.ndarray.__matmul__

    class Spy(np.ndarray):
        def __matmul__(self, other):
            seen.append((self.shape, other.shape))
            return real(np.asarray(self), np.asarray(other)).view(Spy)

    x = np.random.default_rng(0).random((16, 784), dtype=np.float32).view(Spy)
    net = NeuralNetwork(seed=0)
    for name in net.params:
        net.params[name] = net.params[name].view(Spy)
    monkeypatch.setattr(benchmark, "NeuralNetwork", lambda seed: net)
    step, _ = benchmark.matmuls_only(x, 16)
    step()
    counted = sum(2 * a[0] * a[1] * b[1] for a, b in seen)
    assert counted == 16 * flops.flops_per_sample()
    assert sorted(seen) == sorted([((16, 784), (784, 128)), ((16, 128), (128, 64)), ((16, 64), (64, 10)),
                                   ((64, 16), (16, 10)), ((16, 10), (10, 64)), ((128, 16), (16, 64)),
                                   ((16, 64), (64, 128)), ((784, 16), (16, 128))])


def own_roofline(record, name, cpu_roofline):
    """The roofline a column's % is of: the GPU's for the CUDA columns, the CPU's otherwise."""
    if name.startswith("pytorch-cuda"):
        return record["hardware"]["gpu"]["roofline_samples_per_second"]
    return cpu_roofline


def test_gpu_rows_are_described_with_their_own_peak():
    """On a CUDA machine the record holds the GPU's peak and TF32 setting, and the table
    says what the CUDA columns are and what their % is of (a record made up here: this
    machine may have no GPU)."""
    row = {"batch_size": 128, "matmul_peak_gflops": 250.0, "threads": {"numpy": 2, "pytorch": 2},
           "samples_per_second": {"numpy": 1000.0, "pytorch-cpu": 900.0, "pytorch-cuda": 5e4,
                                  "pytorch-cuda-graph": 2e5},
           "fraction_of_peak": {"numpy": 0.1, "pytorch-cpu": 0.09, "pytorch-cuda": 0.01,
                                "pytorch-cuda-graph": 0.04},
           "numpy_over_pytorch_cpu": 1000 / 900}
    record = {"what": "test", "samples_per_repeat": 1000, "repeats": 1, "flops_per_sample": 454_400,
              "matmul_peak_gflops": 250.0, "roofline_samples_per_second": 550_000.0, "rows": [row],
              "hardware": {"cpu": "Test CPU", "cores": 2, "numpy": {"blas": "openblas", "blas_threads": 2},
                           "torch": {"blas": "mkl", "threads": 2},
                           "gpu": {"name": "Test GPU", "matmul_peak_gflops": 50_000.0, "tf32": False,
                                   "roofline_samples_per_second": 5e7}},
              "versions": {"python": "3.11"}}
    text = throughput.markdown(record)
    assert ("GPU: Test GPU. Its float32 matmul peak, measured the same way on an 8192 x 8192 product with "
            "TF32 off (full float32 products): 50,000 GFLOP/s, so its roofline is 50,000,000 samples/s") in text
    assert "pytorch-cuda-graph samples/s (% of peak)" in text and "200,000 (4.0%)" in text


def test_short_benchmark_writes_consistent_files(tmp_path, monkeypatch):
    """A tiny run: the JSON's ratios and fractions follow from its own rates, the table and
    the picture are written."""
    monkeypatch.setattr(benchmark, "QUIET_S", 0)  # no pauses: only the timings change, never asserted
    benchmark.main(["--batch-sizes", "16", "64", "--samples", "256", "--repeats", "1", "--out-dir", str(tmp_path)])
    record = json.loads((tmp_path / "benchmark.json").read_text())
    assert record["flops_per_sample"] == 454_400
    for row in record["rows"]:
        rates = row["samples_per_second"]
        assert set(rates) >= {"numpy", "matmuls only", "pytorch-cpu"}
        assert abs(row["numpy_over_pytorch_cpu"] - rates["numpy"] / rates["pytorch-cpu"]) < 1e-12
        roofline = row["matmul_peak_gflops"] * 1e9 / 454_400
        for name, rate in rates.items():
            assert abs(row["fraction_of_peak"][name] - rate / own_roofline(record, name, roofline)) < 1e-12
    assert "microseconds_per_step" in record["rows"][1]  # batch 64 is timed phase by phase
    assert "| 64 |" in (tmp_path / "benchmark.md").read_text()
    assert (tmp_path / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # without --threads the libraries keep their own counts, which every row records
    assert record["threads_swept"] is None
    own = benchmark.use_threads(None)
    assert all(row["threads"] == own for row in record["rows"])
    assert "| batch | peak GFLOP/s |" in (tmp_path / "benchmark.md").read_text()
    # the Adam step alone, fresh and as training leaves it, in both, and its table row
    adam = record["adam_step_microseconds"]
    assert set(adam) == {"numpy", "numpy --layers plain", "pytorch-cpu"}
    assert all(v["fresh"] > 0 and v["trained"] > 0 for v in adam.values())
    ratio = adam["numpy"]["trained"] / adam["numpy"]["fresh"]
    row = f"| numpy | {adam['numpy']['fresh']:.0f} | {adam['numpy']['trained']:.0f} | {ratio:.2f}x |"
    assert row in (tmp_path / "benchmark.md").read_text()
    # --augment's cost at batch 128, beside a NumPy MLP step: shares that follow from the times
    augment = record["augment_microseconds"]
    us = augment["microseconds"]
    assert augment["batch_size"] == 128
    assert set(us) == {"numpy MLP step", "numpy augment", "numpy augment, thickness 0.5",
                       "pytorch-cpu augment", "pytorch-cpu augment, thickness 0.5", benchmark.GATHERS}
    for name, share in augment["share_of_numpy_step"].items():
        assert abs(share - us[name] / us["numpy MLP step"]) < 1e-12 and us[name] > 0
    row = f"| numpy augment | {us['numpy augment']:.0f} | {100 * augment['share_of_numpy_step']['numpy augment']:.0f}% |"
    assert row in (tmp_path / "benchmark.md").read_text()


def test_augment_cost_is_reported_as_a_share_of_a_step():
    """benchmark.md's --augment section from a record made up here: the table of times and
    their shares of a NumPy MLP step; no section in a record without it (the CNN's, older ones)."""
    us = {"numpy MLP step": 1000.0, "numpy augment": 300.0, "pytorch-cpu augment": 150.0}
    costs = {"batch_size": 128, "calls": 20,
             "threads": {"numpy": 2, "pytorch": 2}, "microseconds": us,
             "share_of_numpy_step": {name: v / 1000.0 for name, v in us.items()}}
    text = "\n".join(benchmark.augment_markdown({"augment_microseconds": costs, "repeats": 9}))
    assert "## --augment's cost at batch 128 (microseconds per batch)" in text
    assert "| numpy augment | 300 | 30% |" in text and "| pytorch-cpu augment | 150 | 15% |" in text
    assert benchmark.augment_markdown({"repeats": 9}) == []


def test_the_gathers_floor_reads_each_pixels_four_neighbours():
    """The benchmark's floor row times what warp() must read: each pixel, and the ones right,
    below and below right of it (0 past the edge), here checked against np.pad and slicing."""
    batch = np.random.default_rng(0).random((3, 784)).astype(np.float32)
    here, right, below, both = benchmark._four_gathers(batch)()
    padded = np.pad(batch.reshape(3, 28, 28), ((0, 0), (0, 1), (0, 1)))
    for got, (r, c) in zip((here, right, below, both), ((0, 0), (0, 1), (1, 0), (1, 1))):
        np.testing.assert_array_equal(got, padded[:, r:r + 28, c:c + 28].reshape(3, 784))
    costs = {"batch_size": 128, "calls": 20,
             "threads": {"numpy": 2, "pytorch": 2},
             "microseconds": {"numpy MLP step": 1000.0, "numpy augment": 600.0, benchmark.GATHERS: 280.0},
             "share_of_numpy_step": {"numpy MLP step": 1.0, "numpy augment": 0.6, benchmark.GATHERS: 0.28}}
    text = "\n".join(benchmark.augment_markdown({"augment_microseconds": costs, "repeats": 9}))
    assert f"| {benchmark.GATHERS} | 280 | 28% |" in text
    assert "with nothing computed, took 28% of the step" in text


@pytest.mark.slow  # the benchmark once per thread count (the quick run has it once: above)
def test_thread_sweep_measures_each_count_and_reads_the_data_dir(tmp_path, monkeypatch):
    """--threads 1 2: a row per batch size and count, each recording the counts it ran with,
    a threads column in the table, the libraries' own counts back afterwards. --data-dir
    reaches the loader (here a folder linking to the repo's MNIST files)."""
    data = tmp_path / "elsewhere" / "MNIST" / "raw"
    data.mkdir(parents=True)
    for f in (ROOT / "data" / "MNIST" / "raw").iterdir():
        (data / f.name).symlink_to(f)
    asked, real_load = [], benchmark.load_mnist

    def load_mnist(**kwargs):
        asked.append(kwargs)
        return real_load(**kwargs)
    monkeypatch.setattr(benchmark, "load_mnist", load_mnist)
    monkeypatch.setattr(benchmark, "QUIET_S", 0)  # no pauses: only the timings change, never asserted
    own = benchmark.use_threads(None)
    out = tmp_path / "out"
    benchmark.main(["--batch-sizes", "64", "--threads", "1", "2", "--samples", "128", "--repeats", "1",
                    "--data-dir", str(tmp_path / "elsewhere"), "--out-dir", str(out)])
    assert asked == [{"data_dir": tmp_path / "elsewhere"}]
    record = json.loads((out / "benchmark.json").read_text())
    assert record["threads_swept"] == [1, 2]
    numpy_counts = [1, 2] if own["numpy"] is not None else [None, None]  # None: not an OpenBLAS
    assert [row["threads"] for row in record["rows"]] == [{"numpy": n, "pytorch": t}
                                                           for n, t in zip(numpy_counts, [1, 2])]
    assert all("microseconds_per_step" in row for row in record["rows"])
    table = (out / "benchmark.md").read_text()
    assert "| batch | threads | peak GFLOP/s |" in table and "| 64 | 2 |" in table
    assert "at batch 64, threads 1 (microseconds per step)" in table
    assert benchmark.use_threads(None) == own


def test_cnn_flops_per_sample_matches_a_hand_count():
    """The CNN's FLOPs per training sample, counted by hand from its layers: a 3x3
    convolution is (output pixels) x (kernels) x (3*3*input channels) multiply-adds, the
    linear layer 1600 x 10; backward costs each layer twice that (dW and dx) except conv1,
    which needs no dx (its input is the image). 2 FLOPs per multiply-add."""
    conv1 = 26 * 26 * 32 * (3 * 3 * 1)         # 28x28 -> 26x26, 32 kernels over 1 channel
    conv2 = 11 * 11 * 64 * (3 * 3 * 32)        # 13x13 (after the pool) -> 11x11, 64 kernels over 32
    linear = 64 * 5 * 5 * 10                   # 11x11 pooled to 5x5, 1600 features -> 10
    forward = 2 * (conv1 + conv2 + linear)
    backward = 2 * (conv1 + 2 * conv2 + 2 * linear)
    assert flops.cnn_flops_per_sample("forward") == forward == 4_881_920  # 4.88 MFLOP
    assert flops.cnn_flops_per_sample("backward") == backward
    assert flops.cnn_flops_per_sample() == forward + backward == 14_256_384  # 14.26 MFLOP
    assert round(60_000 * (forward + backward) / 1e12, 2) == 0.86              # TFLOP per epoch
    # the products scale with the batch, and each belongs to a part the layer table shows
    products = flops.cnn_products(batch_size=7)
    assert sum(2 * p.m * p.k * p.n for p in products) == 7 * (forward + backward)
    assert {p.part for p in products} <= set(benchmark.CNN_PARTS)


# In float64: the timed steps and the trainers' steps do the same arithmetic in other orders (other
# memory layouts, pooling before the ReLU), so they agree to float64 rounding, ~1e-16 of each
# gradient's scale; 1e-10 leaves a wide margin and fails for any wrong or skipped operation. (In
# float32 the same comparison depends on the CPU's BLAS kernel: under OpenBLAS's Sandybridge kernel
# one of 34,826 entries differed by 5.4e-5 relative.)
def test_timed_cnn_steps_compute_the_real_gradients():
    """The layer-by-layer steps the per-layer table times are the trainers' steps: the same
    gradients as numpy_nn's CNN and as PyTorch's plain forward and backward (float64)."""
    import torch

    from numpy_nn.cnn import CNN
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 784)), rng.integers(0, 10, 8)

    net = CNN(seed=0, dtype=np.float64)
    benchmark.timed_numpy_cnn_step(net, x, y, benchmark.Laps(benchmark.CNN_PARTS))
    timed = net.flat_grads.copy()
    reference = CNN(seed=0, dtype=np.float64)
    loss_and_gradients(reference, x, y)
    diff = np.abs(timed - reference.flat_grads).max()
    print(f"numpy: max difference {diff:.1e}")
    np.testing.assert_allclose(timed, reference.flat_grads, rtol=0, atol=1e-10 * np.abs(reference.flat_grads).max())

    model, opt, loss_fn, xt, yt = benchmark._torch_setup(x, y, "cpu", "cnn")
    model.double()                           # in place: the optimizer keeps the same parameters
    laps = benchmark.Laps(benchmark.CNN_PARTS)
    benchmark.timed_torch_cnn_step(model, loss_fn, opt, xt, yt, laps)
    timed = [p.grad.clone() for p in model.parameters()]
    opt.zero_grad()
    loss_fn(model(xt), yt).backward()
    for got, want in zip(timed, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10 * want.abs().max().item())
    backward = [part for part in benchmark.CNN_PARTS if part.endswith("backward")]
    assert all(laps.spent[part] > 0 for part in backward)  # every hook ran


def test_short_cnn_benchmark_writes_consistent_files(tmp_path, monkeypatch):
    """--model cnn, tiny: its own file names (the MLP's are not touched), the CNN's FLOP
    count, ratios and epoch times that follow from the rates, every part of the per-layer
    split timed in both implementations, and each row's epoch against the roofline's."""
    monkeypatch.setattr(benchmark, "WARMUP_STEPS", 1)
    benchmark.main(["--model", "cnn", "--batch-sizes", "128", "--samples", "128", "--repeats", "1",
                    "--out-dir", str(tmp_path)])
    assert sorted(f.name for f in tmp_path.iterdir()) == ["benchmark_cnn.json", "benchmark_cnn.md",
                                                          "throughput_cnn.png"]
    record = json.loads((tmp_path / "benchmark_cnn.json").read_text())
    per_sample = 14_256_384
    assert record["model"] == "cnn" and record["flops_per_sample"] == per_sample
    assert record["epoch_samples"] == 60_000
    [row] = record["rows"]
    rates = row["samples_per_second"]
    assert row["batch_size"] == 128 and set(rates) >= {"numpy", "matmuls only", "pytorch-cpu"}
    assert abs(row["numpy_over_pytorch_cpu"] - rates["numpy"] / rates["pytorch-cpu"]) < 1e-12
    roofline = row["matmul_peak_gflops"] * 1e9 / per_sample
    assert abs(row["roofline_epoch_seconds"] - 60_000 / roofline) < 1e-9
    for name, rate in rates.items():
        assert abs(row["fraction_of_peak"][name] - rate / own_roofline(record, name, roofline)) < 1e-12
        assert abs(row["epoch_seconds"][name] - 60_000 / rate) < 1e-9
    phases = row["microseconds_per_step"]
    for name in ("numpy", "pytorch-cpu"):
        assert list(phases[name]) == list(benchmark.CNN_PARTS)
        assert all(us > 0 for us in phases[name].values()), phases[name]
    assert phases["matmuls only"] == 1e6 * 128 / rates["matmuls only"]

    table = (tmp_path / "benchmark_cnn.md").read_text()
    assert "| 128 | " in table and "| conv2 backward | " in table
    seconds, ideal = row["epoch_seconds"]["numpy"], row["roofline_epoch_seconds"]
    assert f"epoch at batch 128: {seconds:.1f} s, {seconds / ideal:.1f}x the roofline ({ideal:.1f} s" in table
    assert f" | {row['numpy_over_pytorch_cpu']:.2f}x |" in table
    assert "target" not in table.lower()  # the numbers in the code's own terms, no bar from elsewhere
    assert (tmp_path / "throughput_cnn.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_batch_larger_than_the_training_set_is_refused_in_one_line():
    """There is no full batch of 100,000 among 60,000 samples: the run used to look for one
    forever. Now it stops at once, as argparse stops a bad flag (benchmark.py's main(argv), in
    this process)."""
    out = run_in_process(benchmark.main, ROOT / "perf" / "benchmark.py", ["--batch-sizes", "64", "100000"])
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1] == ("benchmark.py: error: batch size 100000 is larger than "
                                           "the 60,000 training samples")
    assert "Traceback" not in out.stderr and out.stdout == ""
    with pytest.raises(ValueError, match="larger than the 100 samples"):
        next(benchmark._endless_batches(100, 128))
