"""benchmark.py's arithmetic and its output files (its timings are reported, never asserted)."""
import json
from pathlib import Path

import numpy as np

import benchmark
from numpy_nn.neural_network import NeuralNetwork

ROOT = Path(__file__).resolve().parents[1]


def test_flops_per_sample_counts_every_matrix_product():
    """784-128-64-10: forward h @ W for 3 layers, backward h^T dz for 3 and dz W^T for 2, 2 FLOPs per multiply-add."""
    products = 784 * 128 + 128 * 64 + 64 * 10
    assert benchmark.flops_per_sample() == 2 * (3 * products - 784 * 128) == 454_400
    # forward 10x5 and 5x3; backward dW1 10x5, dW2 5x3, dh1 5x3 (no gradient for the input)
    assert benchmark.flops_per_sample((10, 5, 3)) == 2 * (10 * 5 + 5 * 3 + 10 * 5 + 5 * 3 + 5 * 3) == 290


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
    flops = sum(2 * a[0] * a[1] * b[1] for a, b in seen)
    assert flops == 16 * benchmark.flops_per_sample()
    assert sorted(seen) == sorted([((16, 784), (784, 128)), ((16, 128), (128, 64)), ((16, 64), (64, 10)),
                                   ((64, 16), (16, 10)), ((16, 10), (10, 64)), ((128, 16), (16, 64)),
                                   ((16, 64), (64, 128)), ((784, 16), (16, 128))])


def test_short_benchmark_writes_consistent_files(tmp_path):
    """A tiny run: the JSON's ratios and fractions follow from its own rates, the table and
    the picture are written."""
    benchmark.main(["--batch-sizes", "16", "64", "--samples", "256", "--repeats", "1", "--out-dir", str(tmp_path)])
    record = json.loads((tmp_path / "benchmark.json").read_text())
    assert record["flops_per_sample"] == 454_400
    for row in record["rows"]:
        rates = row["samples_per_second"]
        assert set(rates) >= {"numpy", "matmuls only", "pytorch-cpu"}
        assert abs(row["numpy_over_pytorch_cpu"] - rates["numpy"] / rates["pytorch-cpu"]) < 1e-12
        roofline = row["matmul_peak_gflops"] * 1e9 / 454_400
        for name, rate in rates.items():
            assert abs(row["fraction_of_peak"][name] - rate / roofline) < 1e-12
    assert "microseconds_per_step" in record["rows"][1]  # batch 64 is timed phase by phase
    assert "| 64 |" in (tmp_path / "benchmark.md").read_text()
    assert (tmp_path / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # without --threads the libraries keep their own counts, which every row records
    assert record["threads_swept"] is None
    own = benchmark.use_threads(None)
    assert all(row["threads"] == own for row in record["rows"])
    assert "| batch | peak GFLOP/s |" in (tmp_path / "benchmark.md").read_text()


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
