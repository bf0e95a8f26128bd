"""The NumPy network and its PyTorch twin do the same work: proved against torch autograd
and torch.optim, layer by layer, step by step, and over whole training runs.

Tolerances: float64 results agree to ~1e-12 (the order of floating-point operations
differs between the two libraries, nothing else), on any CPU. The BLAS kernel, and with it
the last bits of every float32 sum, differs from CPU to CPU: a float32 forward pass is held to
a bound derived from float32 rounding (conftest.py), and whole float32 runs, where training
amplifies those last bits, to a statistical claim (stated beside the test).
"""
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import (
    U32,
    activation_error,
    affine_error,
    assert_twins_within_bound,
    loss_and_gradients,
    relative_error,
    run_trainer_main,
)
from data_loader import batches
from numpy_nn.fast_optimizers import FAST_OPTIMIZERS
from numpy_nn.neural_network import NeuralNetwork
from numpy_nn.train import evaluate as np_evaluate
from numpy_nn.utils import ACTIVATIONS, OPTIMIZERS, cosine_lr, softmax
from pytorch_nn.model import MLP, load_model
from pytorch_nn.numpy_weights import load_numpy_params, numpy_params
from pytorch_nn.train import evaluate as torch_evaluate
from pytorch_nn.train import make_optimizer

REPO = Path(__file__).resolve().parents[1]
SIZES = (784, 128, 64, 10)


def random_twins(dtype, seed=0, sizes=SIZES, activation="relu"):
    """A NumPy network with random non-zero weights AND biases, and its PyTorch twin."""
    net = NeuralNetwork(sizes, seed=seed, dtype=dtype, activation=activation)
    rng = np.random.default_rng(seed + 100)
    for name, p in net.params.items():
        p[...] = rng.standard_normal(p.shape) * (0.1 if name.startswith("b") else np.sqrt(2 / p.shape[0]))
    model = MLP(sizes, activation=activation).to(torch.float64 if dtype == np.float64 else torch.float32)
    load_numpy_params(model, net.params)
    return net, model


def torch_l2_loss(model, x, y, l2):
    """The objective written out for autograd: mean cross-entropy + (l2/2) sum(W^2)."""
    loss = torch.nn.functional.cross_entropy(model(x), y)
    return loss + 0.5 * l2 * sum((layer.weight ** 2).sum() for layer in model.layers())


# ----------------------------------------------------------------------------- forward

def test_forward_logits_and_probabilities_agree_in_float64(mnist):
    """Same weights in, same logits and softmax probabilities out: in float64 only the order
    of the sums differs, ~1e-16 of the logits' scale; 1e-12 fails for any real difference."""
    x = mnist[0][:256].astype(np.float64)
    net, model = random_twins(np.float64)
    logits_np, _ = net.forward(x)
    with torch.inference_mode():
        logits_t = model(torch.from_numpy(x)).numpy()
    probs_t = torch.softmax(torch.from_numpy(logits_t), dim=1).numpy()
    err_logits = np.abs(logits_np - logits_t).max() / np.abs(logits_t).max()
    err_probs = np.abs(softmax(logits_np) - probs_t).max()
    print(f"float64: max rel diff logits {err_logits:.2e}, max abs diff probs {err_probs:.2e}")
    assert err_logits < 1e-12 and err_probs < 1e-12


def float32_logit_bounds(net, x):
    """The MLP's exact logits on x (float64 arithmetic on the float32 weights and input) and a
    bound on how far any float32 computation of them can be, layer by layer (conftest.py)."""
    h, e = x.astype(np.float64), np.zeros(x.shape)
    for i in range(1, net.num_layers + 1):
        W, b = (net.params[f"{name}{i}"].astype(np.float64) for name in "Wb")
        z, e = h @ W + b, affine_error(h, e, W, b, W.shape[0])
        if i < net.num_layers:
            h = ACTIVATIONS[net.activation][0](z)
            e = activation_error(h, e)
    return z, e


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_float32_forward_of_both_twins_is_within_its_rounding_bound(mnist, activation):
    """In float32 each twin's logits are within the bound derived from float32 rounding of the
    exact logits (so within twice the bound of each other), on any CPU; the softmax moves each
    probability p by at most 2 p (1 - p) times the largest logit error (its Jacobian's row sum),
    plus its own rounding (exp, a sum of 10, a division: under 32 u of p)."""
    x = mnist[0][:256]
    net, model = random_twins(np.float32, activation=activation)
    exact, bound = float32_logit_bounds(net, x)
    logits_np, logits_t = assert_twins_within_bound(net, model, x, exact, bound, activation)
    p = softmax(exact)
    p_bound = 2 * p * (1 - p) * bound.max(axis=1, keepdims=True) + 32 * U32 * p
    for probs in (softmax(logits_np), torch.softmax(torch.from_numpy(logits_t), dim=1).numpy()):
        assert (np.abs(probs - p) <= p_bound + 2 * U32).all()  # + the float32 rounding of p itself


# ----------------------------------------------------------------------------- backward

@pytest.mark.parametrize("l2", [0.0, 1e-2])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_backward_equals_autograd(mnist, l2, activation):
    """Every hand-written gradient equals torch autograd's for one batch (float64, 1e-10),
    for each activation."""
    x, y = mnist[0][:128].astype(np.float64), mnist[1][:128]
    net, model = random_twins(np.float64, activation=activation)
    loss_np, grads = loss_and_gradients(net, x, y, l2=l2)
    loss_t = torch_l2_loss(model, torch.from_numpy(x), torch.from_numpy(y), l2)
    loss_t.backward()
    assert abs(net.loss(x, y, l2) - loss_t.item()) < 1e-12 * abs(loss_t.item())
    for i, layer in enumerate(model.layers(), start=1):
        for name, mine, theirs in [(f"W{i}", grads[f"W{i}"], layer.weight.grad.numpy().T),
                                   (f"b{i}", grads[f"b{i}"], layer.bias.grad.numpy())]:
            err = relative_error(mine, theirs)
            print(f"{activation} l2={l2} d{name}: max relative error {err:.2e}")
            assert err < 1e-10, name


# ----------------------------------------------------------------------------- optimizers

@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_optimizer_steps_equal_torch_optim(mnist, optimizer, schedule):
    """Several steps of the hand-written optimizer, with L2 and the schedule, leave the
    weights where torch.optim (+ CosineAnnealingLR) leaves them (float64, 1e-10)."""
    lr = {"sgd": 0.1, "momentum": 0.05, "adam": 3e-3}[optimizer]
    l2, steps, bs = 1e-3, 8, 64
    x, y = mnist[0][:steps * bs].astype(np.float64), mnist[1][:steps * bs]
    net, model = random_twins(np.float64)
    opt_np = OPTIMIZERS[optimizer](net.flat_params, lr)
    opt_t = make_optimizer(model, SimpleNamespace(optimizer=optimizer, lr=lr, weight_decay=l2))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_t, T_max=steps) if schedule == "cosine" else None
    for step, idx in enumerate(batches(len(x), bs, np.random.default_rng(0))):
        if sched:
            opt_np.lr = cosine_lr(lr, step, steps)
            assert math.isclose(opt_np.lr, opt_t.param_groups[0]["lr"], rel_tol=1e-12, abs_tol=1e-18)
        loss_and_gradients(net, x[idx], y[idx], l2=l2)
        opt_np.step(net.flat_grads)
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]))
        opt_t.zero_grad(set_to_none=True)
        loss.backward()
        opt_t.step()
        if sched:
            sched.step()
        theirs = numpy_params(model)
        # Each tensor's difference against its own scale, not entry by entry: a weight that
        # passes near 0 during the steps (one was 1.6e-7) would turn an absolute difference of
        # float64 rounding (1e-18) into a "relative error" of 1e-10 and more, which failed here
        # once the thread policy changed the sums' order. Measured: Adam 1.1e-13 of the
        # tensor's scale after 8 steps, SGD and momentum 3e-16.
        err = max(np.abs(net.params[k] - theirs[k]).max() / np.abs(theirs[k]).max() for k in theirs)
        assert err < 1e-10, f"step {step + 1}: max difference {err:.2e} of the weights' scale"
    moved = np.abs(net.params["W1"] - random_twins(np.float64)[0].params["W1"]).max()
    print(f"{optimizer}/{schedule}: {steps} steps, weights moved up to {moved:.2e}, max rel diff {err:.2e}")
    assert moved > 1e-3  # the steps really did something


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_the_trainers_optimizers_equal_utils_update_rules_bit_for_bit(mnist, optimizer):
    """The optimizers the trainer runs (numpy_nn/fast_optimizers.py: utils.py's, with the
    subnormals flushed from their state) leave the weights and the state exactly where
    utils.py's update rules as written leave them, bit for bit, over steps of a real
    training run in float64 (no entry comes near a subnormal there)."""
    lr = {"sgd": 0.1, "momentum": 0.05, "adam": 3e-3}[optimizer]
    steps, bs = 30, 64
    x, y = mnist[0][:steps * bs].astype(np.float64), mnist[1][:steps * bs]
    nets = [random_twins(np.float64)[0] for _ in range(2)]
    plain, fast = OPTIMIZERS[optimizer](nets[0].flat_params, lr), FAST_OPTIMIZERS[optimizer](nets[1].flat_params, lr)
    assert type(fast) is not type(plain)
    for idx in batches(len(x), bs, np.random.default_rng(0)):
        for net, opt in zip(nets, (plain, fast)):
            loss_and_gradients(net, x[idx], y[idx], l2=1e-3)
            opt.step(net.flat_grads)
        np.testing.assert_array_equal(nets[1].flat_params, nets[0].flat_params)
    for state in ("m", "v", "velocity"):
        if getattr(plain, state, None) is not None:
            np.testing.assert_array_equal(getattr(fast, state), getattr(plain, state))
    assert np.abs(nets[0].flat_params - random_twins(np.float64)[0].flat_params).max() > 1e-3  # they moved


@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
@pytest.mark.parametrize("dtype, steps", [(np.float32, 1000), (np.float64, 500)])
def test_optimizer_state_flushes_subnormals_and_still_equals_torch_optim(optimizer, dtype, steps):
    """Weights whose gradient is exactly 0 after step 1 (a dead unit) have Adam's m (and the
    momentum velocity) shrink by 0.9 a step: past the smallest normal float (np.finfo.tiny)
    after ~1000 steps in float32, or in float64 from a first gradient of 1e-290 after ~400.
    The trainer's NumPy optimizers (numpy_nn/fast_optimizers.py) set such values to 0
    (subnormal arithmetic is slow on many CPUs); utils.py's as written and torch.optim, fused
    as the trainer makes it, keep them. The weights still agree: a flushed value was worth
    < lr * tiny / eps (Adam) or lr * tiny (momentum) of a step."""
    rng = np.random.default_rng(8)
    n, lr = 64, 1e-3
    grads = rng.normal(size=(steps, n)) * np.geomspace(1e-6, 1.0, n)
    grads[1:, ::2] = 0.0                      # every other weight: a gradient at step 1, then none
    if dtype == np.float64:
        grads[0, ::2] *= 1e-290               # else 6,700 steps to reach float64's subnormals
    grads = grads.astype(dtype)
    p = rng.normal(size=n).astype(dtype)
    opt = FAST_OPTIMIZERS[optimizer](p, lr)
    plain_p = p.copy()
    plain = OPTIMIZERS[optimizer](plain_p, lr)
    tp = torch.tensor(p.copy(), requires_grad=True)
    opt_t = make_optimizer(SimpleNamespace(named_parameters=lambda: [("weight", tp)]),
                           SimpleNamespace(optimizer=optimizer, lr=lr, weight_decay=0.0))
    for g in grads:
        opt.step(g)
        plain.step(g)
        tp.grad = torch.from_numpy(g.copy())
        opt_t.step()
    ours, theirs = (opt.m, "exp_avg") if optimizer == "adam" else (opt.velocity, "momentum_buffer")
    kept = plain.m if optimizer == "adam" else plain.velocity
    theirs = opt_t.state[tp][theirs].numpy()
    tiny = np.finfo(dtype).tiny
    subnormal = lambda a: int(((a != 0) & (np.abs(a) < tiny)).sum())
    err = relative_error(p, tp.detach().numpy())
    gap = np.abs(p - tp.detach().numpy()).max()
    print(f"{optimizer} {np.dtype(dtype).name}, {steps} steps: subnormals in the state: numpy "
          f"{subnormal(ours)}, torch {subnormal(theirs)}; weights max rel diff {err:.2e}, abs {gap:.2e}")
    assert subnormal(theirs) == n // 2        # the state the test is about really arises
    assert subnormal(kept) == n // 2          # utils.py's update rules as written keep them too
    assert subnormal(ours) == 0 and (optimizer != "adam" or subnormal(opt.v) == 0)
    np.testing.assert_array_equal(plain_p, p)  # flushed or not, the same weights: the flushed values rounded away
    np.testing.assert_array_equal(ours[::2], 0)
    if dtype == np.float64:
        assert err < 1e-10                    # the order of operations only, as above
    else:
        # The gradients do not depend on the weights here, so nothing amplifies a difference:
        # each step rounds p once (half an ulp) and each side's update differs by a few ulps of
        # the update (<< an ulp of p), so the gap grows by at most an ulp of max |p| a step.
        # Measured (Adam): 2 ulps (2.4e-7) after 1000 steps.
        assert gap <= steps * np.spacing(np.abs(p).max())

# ----------------------------------------------------------------------------- cross-loading

def test_weights_cross_load_with_identical_accuracy(mnist, tmp_path):
    """NumPy weights run in the PyTorch model, and PyTorch weights in the NumPy network, give
    the same predictions on the whole test set, through the files each trainer writes."""
    _, _, x_test, y_test = mnist
    net, model = random_twins(np.float32, seed=3)
    net.save(tmp_path / "w.npz")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    from_np = load_numpy_params(MLP(SIZES), NeuralNetwork.load(tmp_path / "w.npz").params)
    from_t = NeuralNetwork(SIZES)
    for k, v in numpy_params(load_model(tmp_path / "w.pt")).items():
        from_t.params[k][...] = v
    xt, yt = torch.from_numpy(x_test), torch.from_numpy(y_test)
    acc = {"numpy": np_evaluate(net, x_test, y_test)[1], "numpy->torch": torch_evaluate(from_np, xt, yt)[1],
           "torch": torch_evaluate(model, xt, yt)[1], "torch->numpy": np_evaluate(from_t, x_test, y_test)[1]}
    print(acc)
    assert len(set(acc.values())) == 1
    with torch.inference_mode():
        assert (from_np(xt).argmax(1).numpy() == net.predict(x_test)).all()


# ----------------------------------------------------------------------------- whole runs

# The float64 whole-run tests compare the twins' records with each other, epoch by epoch: what
# they prove holds on any test set, so there the trainers evaluate the first TEST_IMAGES test
# images instead of all 10,000 (the accuracies are compared to the image all the same).
TEST_IMAGES = 2000


def run_trainer(framework, flags, tmp_path, test_images=TEST_IMAGES):
    """A trainer's main(argv) in this process (conftest.run_trainer_main), evaluating on the
    first test_images test images (None: all); returns the metrics record."""
    out = tmp_path / framework
    done = run_trainer_main(framework, "--no-progress", "--metrics", out / "m.json", "--weights", out / "w",
                            *flags, test_images=test_images)
    assert done.returncode == 0, done.stderr
    return json.loads((out / "m.json").read_text())


def twin_flags(optimizer, lr, dtype, seed=0):
    """A short run: --limit 10000, 3 epochs, cosine."""
    return ["--limit", "10000", "--epochs", "3", "--optimizer", optimizer, "--lr", lr,
            "--schedule", "cosine", "--seed", str(seed), "--dtype", dtype]


def largest_loss_difference(a, b):
    """The largest relative difference of two records' per-epoch train and test losses."""
    return max(abs(ea[key] - eb[key]) / abs(eb[key])
               for ea, eb in zip(a["epochs"], b["epochs"], strict=True) for key in ("train_loss", "test_loss"))


def twin_runs(tmp_path, optimizer, lr, dtype, test_images=TEST_IMAGES):
    """The same short run from both trainers, and the largest relative difference of their
    per-epoch train and test losses."""
    flags = twin_flags(optimizer, lr, dtype)
    a = run_trainer("numpy", flags, tmp_path, test_images)
    b = run_trainer("pytorch", flags + ["--device", "cpu"], tmp_path, test_images)
    return a, b, largest_loss_difference(a, b)


TWIN_RUNS = [("sgd", "0.1"), ("momentum", "0.02"), ("adam", "1e-3")]
# The quick run proves the twins equal over a whole run with plain SGD; the slow run adds the
# other two optimizers (each also proved equal to torch.optim step by step, in the quick run)
FLOAT64_TWIN_RUNS = [TWIN_RUNS[0], *(pytest.param(*run, marks=pytest.mark.slow) for run in TWIN_RUNS[1:])]


# Measured in float64 (Haswell, Sandybridge and Prescott OpenBLAS kernels): the largest
# relative loss difference was 2e-16 to 6e-16, and every epoch's test accuracy was equal to the
# sample. float64 carries ~16 digits, so 237 steps of differently-ordered sums stay ~1e-15
# apart; 1e-9 leaves six orders of margin and still fails for any real difference in the math.
@pytest.mark.parametrize("optimizer, lr", FLOAT64_TWIN_RUNS)
def test_trainers_are_twins_in_float64(tmp_path, optimizer, lr):
    """Same seed and flags in float64: the twins agree on every epoch's losses to 1e-9 relative
    and on test accuracy to the sample, on any CPU."""
    a, b, worst = twin_runs(tmp_path, optimizer, lr, "float64")
    print(f"float64 {optimizer}: largest relative loss difference {worst:.1e}")
    assert worst < 1e-9
    for ea, eb in zip(a["epochs"], b["epochs"], strict=True):
        assert round(ea["test_acc"] * TEST_IMAGES) == round(eb["test_acc"] * TEST_IMAGES), ea["epoch"]


# The CNN twins in float64, one short epoch: measured here, the largest relative loss
# difference was ~1e-15 and test accuracy equal to the sample. The bound is the MLP's, for the
# same reason (float64, only the order of the sums differs); a wrong flatten order, pooling
# tie or convolution gradient would move the losses by far more.
@pytest.mark.slow
def test_cnn_trainers_are_twins_in_float64(tmp_path):
    flags = ["--model", "cnn", "--limit", "2000", "--epochs", "1", "--batch-size", "64",
             "--dropout", "0", "--seed", "1", "--dtype", "float64"]
    a, b = run_trainer("numpy", flags, tmp_path), run_trainer("pytorch", flags + ["--device", "cpu"], tmp_path)
    assert a["config"]["model"] == b["config"]["model"] == "cnn"
    worst = largest_loss_difference(a, b)
    print(f"float64 cnn: largest relative loss difference {worst:.1e}")
    assert worst < 1e-9
    assert round(a["final_test_acc"] * TEST_IMAGES) == round(b["final_test_acc"] * TEST_IMAGES)


def logits_of_saved_twins(tmp_path, x):
    """float64 logits of the NumPy run's and the PyTorch run's saved weights on x."""
    net = NeuralNetwork.load(tmp_path / "numpy" / "w", dtype=np.float64)
    model = load_model(tmp_path / "pytorch" / "w").double()
    with torch.inference_mode():
        return net.forward(x.astype(np.float64))[0], model(torch.from_numpy(x).double()).numpy()


# float32 twins cannot agree exactly: OpenBLAS and MKL add the same products in different
# orders, so every float32 sum differs in its last bits (unit roundoff 6e-8), differently on
# each CPU (the BLAS kernel is chosen per CPU), and each training step feeds the next: training
# amplifies those last bits, by how much depends on the kernel and the optimizer, and no bound
# follows from the rounding alone. So the claim is statistical: the twins stay far closer to
# each other than a run with another seed is to either of them. Measured on a 2-core Intel Xeon
# (3 epochs of 10,000 images) under four OpenBLAS kernels (SkylakeX, this CPU's own; Prescott,
# Sandybridge, Zen), the twins' largest relative loss difference was 2.2e-8 to 2.8e-5, against
# 3.6e-2 to 2.3e-1 from seed 1 (at most 7.8e-4 of it, Adam under Prescott); their largest logit
# difference at most 1.0e-2, against 7.5 to 9.8 (1.0e-3 of it, Adam under Zen, the kernel an AMD
# EPYC gets, where the bound this replaced, 1e-4 of the largest logit, failed). A tenth leaves a
# margin of 100 over the worst seen, while a real difference in the math (another batch order,
# a wrong gradient) moves a run as far as a new seed does.
# Accuracy is compared through the logits: a test image can change its prediction only if its
# top two logits are closer than twice the largest difference between the two networks' logits,
# so the two runs' correct counts differ by at most the number of such images, on any CPU.
@pytest.mark.slow
@pytest.mark.parametrize("optimizer, lr", TWIN_RUNS)
def test_float32_twins_stay_far_closer_than_another_seed(tmp_path, mnist, optimizer, lr):
    """Same seed and flags in float32: the twins' losses, every epoch, and their final logits
    differ by less than a tenth of what a run with seed 1 differs by; their test accuracies by no
    more than the images their logit difference could flip."""
    a, b, worst = twin_runs(tmp_path, optimizer, lr, "float32", test_images=None)  # as measured: all 10,000
    seed_1 = run_trainer("numpy", twin_flags(optimizer, lr, "float32", seed=1), tmp_path / "seed_1", None)
    worst_seed = largest_loss_difference(a, seed_1)
    _, _, x_test, y_test = mnist
    logits_a, logits_b = logits_of_saved_twins(tmp_path, x_test)
    logits_seed = NeuralNetwork.load(tmp_path / "seed_1" / "numpy" / "w", dtype=np.float64).forward(
        x_test.astype(np.float64))[0]
    diff, diff_seed = np.abs(logits_a - logits_b).max(), np.abs(logits_a - logits_seed).max()
    print(f"float32 {optimizer}: largest relative loss difference {worst:.1e} between the twins, "
          f"{worst_seed:.1e} from seed 1; logits {diff:.1e} and {diff_seed:.1e}")
    assert worst < 0.1 * worst_seed
    assert diff < 0.1 * diff_seed
    top2 = np.sort(logits_b, axis=1)[:, -2:]
    borderline = int((top2[:, 1] - top2[:, 0] <= 2 * diff).sum())
    correct_a, correct_b = (round(r["final_test_acc"] * len(y_test)) for r in (a, b))
    print(f"{borderline} borderline images, correct {correct_a} vs {correct_b}")
    assert abs(correct_a - correct_b) <= borderline
