"""The PyTorch twin on its own: the model, its starting weights, the device choice, and
the trainer's command line (the same validation and divergence handling as numpy_nn's): its
main(argv) in this process for the refusals (conftest.run_trainer_main), and one short run as
a user runs it, in a process of its own from inside pytorch_nn/."""
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import run_trainer_main
from numpy_nn.neural_network import NeuralNetwork
from pytorch_nn.model import MLP, load_model
from pytorch_nn.numpy_weights import load_numpy_params, numpy_params
from pytorch_nn.train import pick_device

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "pytorch_nn" / "train.py"


def out_flags(tmp_path):
    return ["--no-progress", "--metrics", str(tmp_path / "m.json"), "--weights", str(tmp_path / "w.pt")]


def run(args, tmp_path):
    """The trainer's main(argv) in this process: its exit status, stdout and stderr."""
    return run_trainer_main("pytorch", *out_flags(tmp_path), *args)


def run_process(args, tmp_path, cwd):
    """The trainer as a user runs it: a Python process of its own, from cwd."""
    return subprocess.run([sys.executable, str(TRAIN), *out_flags(tmp_path), *args],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def assert_one_line_error(done, code, *words):
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[-1].startswith(("error:", "train.py: error:")) or "error:" in lines[-1], lines
    for word in words:
        assert word in lines[-1], lines[-1]


# ----------------------------------------------------------------------------- the model

def test_model_shapes_and_parameter_count():
    """784-128-64-10: 109,386 parameters, registered by nn.Module without any bookkeeping."""
    model = MLP()
    assert [tuple(p.shape) for p in model.parameters()] == [(128, 784), (128,), (64, 128), (64,), (10, 64), (10,)]
    assert sum(p.numel() for p in model.parameters()) == 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10 == 109_386
    assert model(torch.zeros(5, 784)).shape == (5, 10)


def test_numpy_init_is_copied_exactly():
    """--init numpy: the model holds bit-for-bit the NumPy network's weights for the seed."""
    net = NeuralNetwork(seed=7)
    model = load_numpy_params(MLP(), net.params)
    for name, value in numpy_params(model).items():
        assert np.array_equal(value, net.params[name]), name


def test_torch_default_init_is_kaiming_uniform():
    """--init torch: nn.Linear's default draws weights from U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    torch.manual_seed(0)
    w = MLP().hidden[0].weight.detach().numpy()
    bound = 1 / math.sqrt(784)
    assert np.abs(w).max() <= bound
    # uniform on [-b, b] has standard deviation b / sqrt(3); 100k draws pin it to ~0.3%
    assert abs(w.std() / (bound / math.sqrt(3)) - 1) < 0.01


def test_dropout_only_in_training_mode():
    """nn.Dropout zeroes about p of the hidden units in train(), none in eval()."""
    torch.manual_seed(0)
    model = MLP(dropout=0.5)
    x = torch.rand(64, 784)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))
        model.train()
        h = model.dropout(torch.ones(10_000))
    # zeros ~ Binomial(10000, 0.5): standard deviation 50, so 5 sigma is 250
    assert abs((h == 0).sum().item() - 5000) < 250
    assert set(h.unique().tolist()) <= {0.0, 2.0}  # survivors scaled by 1 / (1 - p)


def test_saved_state_dict_round_trip(tmp_path):
    """load_model rebuilds the layer sizes from the weights, including non-default ones."""
    model = MLP((784, 32, 16, 8, 10))
    torch.save(model.state_dict(), tmp_path / "w.pt")
    loaded = load_model(tmp_path / "w.pt")
    assert loaded.sizes == (784, 32, 16, 8, 10)
    x = torch.rand(4, 784)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# ----------------------------------------------------------------------------- devices

def test_float64_weights_load_without_rounding(tmp_path):
    """A float64 run's state_dict comes back bit for bit (it was once loaded into a float32
    model first, and rounded)."""
    model = MLP((784, 16, 10)).double()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    loaded = load_model(tmp_path / "w.pt")
    for name, value in model.state_dict().items():
        assert loaded.state_dict()[name].dtype == torch.float64
        assert torch.equal(loaded.state_dict()[name], value), name


def test_auto_device_is_cpu_without_an_accelerator():
    """--device auto falls back to the CPU when there is no accelerator."""
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert pick_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_is_a_one_line_error(tmp_path):
    """--device cuda without CUDA: exit 2, one line naming the devices that exist."""
    done = run(["--device", "cuda", "--limit", "100", "--epochs", "1"], tmp_path)
    assert_one_line_error(done, 2, "cuda is not available", "devices that exist: cpu")
    assert not (tmp_path / "m.json").exists()


# ----------------------------------------------------------------------------- the CLI

@pytest.mark.parametrize("flags, words", [
    (["--epochs", "0"], ["--epochs", "positive"]),
    (["--batch-size", "-5"], ["--batch-size", "positive"]),
    (["--lr", "0"], ["--lr", "positive"]),
    (["--lr", "nan"], ["--lr"]),
    (["--dropout", "1"], ["--dropout", "[0, 1)"]),
    (["--hidden", "64", "0"], ["--hidden", "positive"]),
    (["--hidden", "abc"], ["--hidden", "not an integer"]),
    (["--dtype", "half"], ["--dtype", "invalid choice"]),
    (["--limit", "60001"], ["--limit", "60000"]),
    (["--init", "xavier"], ["--init"]),
])
def test_bad_flags_are_one_line_errors(tmp_path, flags, words):
    """Each bad value: argparse's one-line error, exit 2, nothing written."""
    done = run(flags, tmp_path)
    assert_one_line_error(done, 2, *words)
    assert not (tmp_path / "m.json").exists()


def test_short_run_from_inside_the_folder(tmp_path, mnist):
    """`cd pytorch_nn && python train.py` works; the metrics record the device and the run."""
    done = run_process(["--limit", "5000", "--epochs", "2", "--device", "cpu"], tmp_path, cwd=REPO / "pytorch_nn")
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "m.json").read_text())
    assert record["framework"] == "pytorch" and record["status"] == "completed"
    assert record["hardware"]["device"] == "cpu" and record["versions"]["torch"] == torch.__version__
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    # measured here with 5000 samples and 2 epochs: 90.61% for seed 0 (90.29-90.96% over
    # seeds 0-3, identical in the NumPy twin); the floor sits a point below the lowest
    assert record["final_test_acc"] > 0.89
    model = load_model(tmp_path / "w.pt")
    from pytorch_nn.train import evaluate
    _, _, x_test, y_test = mnist
    assert evaluate(model, torch.from_numpy(x_test), torch.from_numpy(y_test))[1] == record["final_test_acc"]


def test_windowed_divergence_check_names_the_first_bad_batch():
    """On an accelerator the losses are read 100 at a time: the first bad one is still named."""
    from harness.experiment import TrainingDiverged
    from harness.session import check_losses
    args = SimpleNamespace(optimizer="sgd", lr=0.1)
    check_losses(list(torch.tensor([2.3, 1.1, 0.4])), 1, 1, args)  # all finite: nothing happens
    with pytest.raises(TrainingDiverged, match="at epoch 2, batch 103:"):
        check_losses(list(torch.tensor([0.5, 0.7, float("nan"), float("inf")])), 101, 2, args)
