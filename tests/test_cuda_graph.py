"""The CUDA-graph step (pytorch_nn/fast_step.py) and --mode against the eager loop.

Without a GPU, the step runs eagerly (capture=False): the same code that a capture records
(the trainer's train_step on the batch, the cosine learning rate computed as a tensor
before it, capturable fused Adam), and its warm-up and undo. In float64 it must
give the eager loop's weights to 1e-12 of their scale: the two compute the learning rate
differently (a tensor formula against CosineAnnealingLR's recursive update, both float64),
which moves it by ~1e-16 per step, and nothing else differs. The tests that capture and
replay a real graph need CUDA and skip without it.
"""
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from conftest import run_trainer_main
from numpy_nn.neural_network import NeuralNetwork
from pytorch_nn.fast_step import GraphedStep
from pytorch_nn.model import MLP
from pytorch_nn.numpy_weights import load_numpy_params
from pytorch_nn.train import make_optimizer, train_step

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA GPU here: CUDA graphs need one")
ARGS = SimpleNamespace(optimizer="adam", lr=3e-3, weight_decay=1e-4)
BATCH, N = 32, 200      # 200 = 6 batches of 32 and a last one of 8: the eager path of GraphedStep
SESSION_RECORDING = SimpleNamespace(recording=True)  # a session whose diagnostics record this step


def setup(dtype, device="cpu", capturable=False, dropout=0.0):
    torch.manual_seed(0)
    model = load_numpy_params(MLP(dropout=dropout), NeuralNetwork(seed=0).params).to(device=device, dtype=dtype)
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.random((N, 784))).to(device=device, dtype=dtype)
    y = torch.from_numpy(rng.integers(0, 10, N)).to(device)
    return model, make_optimizer(model, ARGS, capturable=capturable), x, y


def batches(epochs):
    rng = np.random.default_rng(2)
    for _ in range(epochs):
        order = rng.permutation(N)
        for start in range(0, N, BATCH):
            yield torch.from_numpy(order[start:start + BATCH])


def eager_run(dtype, epochs=2, device="cpu"):
    """pytorch_nn/train.py's eager loop: losses and final weights."""
    model, opt, x, y = setup(dtype, device)
    steps = epochs * -(-N // BATCH)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    loss_fn, losses = nn.CrossEntropyLoss(), []
    for idx in batches(epochs):
        idx = idx.to(device)
        loss = loss_fn(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        scheduler.step()
        losses.append(loss.item())
    return losses, [p.detach().cpu() for p in model.parameters()]


def graphed_run(dtype, epochs=2, device="cpu", capture=False, warm_up=None):
    model, opt, x, y = setup(dtype, device, capturable=True)
    steps = epochs * -(-N // BATCH)
    step = GraphedStep(train_step, model, opt, BATCH, steps, cosine=True, capture=capture, warm_up=warm_up)
    losses = []
    for idx in batches(epochs):
        idx = idx.to(device)
        losses.append(step(model, opt, x[idx], y[idx]).item())
    return losses, [p.detach().cpu() for p in model.parameters()]


def rel_diff(a, b):
    return max(float((p - q).abs().max() / q.abs().max()) for p, q in zip(a, b))


@pytest.mark.parametrize("warm_up", [False, True])
def test_the_recorded_step_is_the_eager_loop_in_float64(warm_up):
    """Same batches, same numbers, and a warm-up leaves no trace (weights, Adam's state,
    the step counter and the learning rate are all put back)."""
    eager_losses, eager_weights = eager_run(torch.float64)
    losses, weights = graphed_run(torch.float64, warm_up=warm_up)
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-12)
    assert rel_diff(weights, eager_weights) <= 1e-12


def test_the_learning_rate_follows_the_cosine_inside_the_step():
    model, opt, x, y = setup(torch.float64, capturable=True)
    step = GraphedStep(train_step, model, opt, BATCH, 4, cosine=True, capture=False)
    seen = []
    for idx in list(batches(1))[:4]:
        step(model, opt, x[idx], y[idx])
        seen.append(opt.param_groups[0]["lr"].item())
    # the rate step t = 0, 1, 2, 3 used: lr0 (1 + cos(pi t / 4)) / 2, from lr0 down towards 0
    expected = [3e-3 * (1 + np.cos(np.pi * t / 4)) / 2 for t in range(4)]
    np.testing.assert_allclose(seen, expected, rtol=1e-15, atol=1e-18)


def test_a_step_the_diagnostics_record_runs_eagerly_with_the_eager_gradients():
    """A step the session's diagnostics record runs eagerly (the Watch reads the gradients and
    the weights from Python, which a replay never hands back), leaves the step's gradients in
    .grad after the update, and is the eager loop's step."""
    model, opt, x, y = setup(torch.float64, capturable=True)
    step = GraphedStep(train_step, model, opt, BATCH, 7, cosine=True, capture=False, session=SESSION_RECORDING)
    idx = next(batches(1))
    before = [p.detach().clone() for p in model.parameters()]
    loss = step(model, opt, x[idx], y[idx])
    reference = setup(torch.float64)[0]
    reference_loss = nn.CrossEntropyLoss()(reference(x[idx]), y[idx])
    reference_loss.backward()
    assert loss.item() == pytest.approx(reference_loss.item(), rel=1e-15)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-13, atol=0)
    assert all(not torch.equal(b, p.detach()) for b, p in zip(before, model.parameters()))  # updated


def test_graph_mode_needs_cuda_and_says_so(tmp_path):
    if CUDA:
        pytest.skip("this machine has CUDA: --mode graph is allowed here")
    done = run_trainer_main("pytorch", "--mode", "graph",
                            "--metrics", tmp_path / "m.json", "--weights", tmp_path / "w.pt")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith(
        "argument --mode: graph records CUDA graphs and needs a CUDA GPU; this run's device is cpu "
        "(try --mode eager)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_compile_mode_trains_the_same_numbers_in_float64(tmp_path):
    """--mode compile: torch.compile's code for the same model gives the eager run's losses
    (float64, where only the order of additions can differ: 1e-9 as in the twin tests).
    Slow: torch.compile compiles for tens of seconds, in a process of the trainer's own (the
    eager run in this one)."""
    flags = ["--dtype", "float64", "--limit", "256", "--epochs", "1", "--batch-size", "64",
             "--no-progress", "--device", "cpu"]
    records = {}
    for mode in ("eager", "compile"):
        metrics, weights = tmp_path / f"{mode}.json", tmp_path / f"{mode}.pt"
        if mode == "eager":
            done = run_trainer_main("pytorch", *flags, "--mode", mode, "--metrics", metrics, "--weights", weights)
        else:
            done = subprocess.run([sys.executable, str(REPO / "pytorch_nn" / "train.py"), *flags, "--mode", mode,
                                   "--metrics", str(metrics), "--weights", str(weights)],
                                  capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        records[mode] = json.loads(metrics.read_text())
    assert records["compile"]["config"]["mode"] == "compile"
    for key in ("train_loss", "test_loss"):
        eager, compiled = (records[m]["epochs"][0][key] for m in ("eager", "compile"))
        assert abs(compiled - eager) <= 1e-9 * eager, key


# ----------------------------------------------------------------------------- on a GPU

@needs_cuda
def test_replayed_graph_gives_the_eager_numbers_in_float32():
    """Recorded and replayed on the GPU: the eager run's losses within float32 rounding.
    Over 14 steps the two differ only in how the learning rate is computed (float64 on the
    GPU against float64 in Python, then rounded to float32: at most 1 ulp, 6e-8), so 1e-5
    of each loss leaves a wide margin and still catches a step replayed on stale data."""
    eager_losses, eager_weights = eager_run(torch.float32, device="cuda")
    losses, weights = graphed_run(torch.float32, device="cuda", capture=True)
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-5)
    assert rel_diff(weights, eager_weights) <= 1e-5


@needs_cuda
def test_dropout_draws_new_masks_on_every_replay():
    model, opt, x, y = setup(torch.float32, "cuda", capturable=True, dropout=0.5)
    step = GraphedStep(train_step, model, opt, BATCH, 10, cosine=False)
    opt.param_groups[0]["lr"].zero_()      # no learning: the weights stay, only the masks change
    opt.param_groups[1]["lr"].zero_()
    idx = torch.arange(BATCH, device="cuda")
    losses = {step(model, opt, x[idx], y[idx]).item() for _ in range(3)}
    assert len(losses) == 3
