"""The NumPy CNN (numpy_nn/cnn.py, and FastCNN, numpy_nn/fast_cnn.py) against its PyTorch
twin (pytorch_nn/cnn.py): same logits, same gradients, weights that load across, and a
short training run that learns; FastCNN equal to CNN, and --layers choosing between them.

Tolerances: in float64 the twins differ only in the order of their additions, ~1e-15 of
each array's scale; 1e-10 leaves room for that and still catches any real mistake (a wrong
flatten order or a misrouted gradient is an error of order 1). float32 bounds are stated
where they are used.
"""
import copy
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from checker.network import central_difference
from conftest import activation_error, affine_error, assert_twins_within_bound, loss_and_gradients
from data_loader import batches
from numpy_nn.cnn import CNN, IMAGE_SHAPE, PARAM_SHAPES, is_cnn_file, saved_model_kind
from numpy_nn.fast_cnn import FastCNN
from numpy_nn.layers import conv2d_forward, maxpool2d_forward
from numpy_nn.neural_network import NeuralNetwork
from numpy_nn.utils import OPTIMIZERS, cross_entropy, relu
from pytorch_nn.cnn import CNN as TorchCNN
from pytorch_nn.cnn import load_model
from pytorch_nn.numpy_weights import load_numpy_params, numpy_params


def rel_diff(a, b):
    """max |a - b| / max |b|: the error measured against the array's scale."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    return float(np.abs(a - b).max() / np.abs(b).max())


def random_twins(dtype, seed=0, network=CNN):
    """A NumPy CNN (network: CNN or FastCNN) with random non-zero weights AND biases (zeros
    can hide a wrong backward pass), and its PyTorch twin holding the same numbers."""
    net = network(seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 100)
    for name, p in net.params.items():
        p[...] = rng.standard_normal(p.shape) * 0.1 if name.startswith("b") else p * 1.5
    model = TorchCNN().to(torch.float64 if dtype == np.float64 else torch.float32)
    load_numpy_params(model, net.params)
    return net, model


def torch_l2_loss(model, x, y, l2):
    """The objective written out for autograd: mean cross-entropy + (l2/2) sum(W^2)."""
    return F.cross_entropy(model(x), y) + 0.5 * l2 * sum((W ** 2).sum() for W in model.weights())


# ----------------------------------------------------------------------------- structure

def test_parameters_and_initialisation():
    """34,826 parameters in one flat buffer, the twin's count; He initialisation; the same
    starting numbers in float32 and float64."""
    net, net64 = CNN(seed=1), CNN(seed=1, dtype=np.float64)
    assert net.num_params == net.flat_params.size == 34_826 == sum(p.numel() for p in TorchCNN().parameters())
    assert {k: v.shape for k, v in net.params.items()} == PARAM_SHAPES
    assert all(np.shares_memory(net.params[k], net.flat_params) for k in net.params)
    assert all(np.shares_memory(net.grads[k], net.flat_grads) for k in net.grads)
    assert net.flat_params.dtype == np.float32 and np.array_equal(net.flat_params, net64.flat_params.astype(np.float32))
    for name, fan_in in [("W1", 9), ("W2", 288), ("W3", 1600)]:
        std, expected = net64.params[name].std(), np.sqrt(2 / fan_in)
        print(f"{name}: std {std:.4f}, He {expected:.4f}")
        assert abs(std - expected) < 0.25 * expected  # 288 draws for W1: the sample std is within ~8%
    assert not net.params["b1"].any() and not net.params["b2"].any() and not net.params["b3"].any()


def test_flat_rows_and_images_give_the_same_logits(mnist):
    net = CNN(dtype=np.float64)
    x = mnist[2][:8]
    assert np.array_equal(net.forward(x)[0], net.forward(x.reshape(-1, 1, 28, 28))[0])
    model = TorchCNN().double()
    with torch.inference_mode():
        t = torch.from_numpy(x.astype(np.float64))
        assert torch.equal(model(t), model(t.reshape(-1, 1, 28, 28)))


# ----------------------------------------------------------------------------- twins

@pytest.mark.parametrize("network", [CNN, FastCNN])
@pytest.mark.parametrize("l2", [0.0, 1e-2])
def test_logits_and_every_gradient_equal_torch(mnist, l2, network):
    """Same weights: same logits, loss and dW1..db3 as torch autograd (float64, 1e-10).
    The twin runs conv, ReLU, pool in the written order, as CNN does; FastCNN pools before
    the ReLU, so this also shows the two orders give the same gradients, ties included."""
    x, y = mnist[0][:64].astype(np.float64), mnist[1][:64]
    net, model = random_twins(np.float64, network=network)
    logits, _ = net.forward(x)
    loss, grads = loss_and_gradients(net, x, y, l2=l2)
    loss_t = torch_l2_loss(model, torch.from_numpy(x), torch.from_numpy(y), l2)
    loss_t.backward()
    with torch.no_grad():
        logits_t = model(torch.from_numpy(x)).numpy()
    grads_t = {}
    for i, layer in enumerate(model.layers(), start=1):
        grads_t[f"W{i}"] = layer.weight.grad.numpy().T if i == 3 else layer.weight.grad.numpy()
        grads_t[f"b{i}"] = layer.bias.grad.numpy()
    errs = {"logits": rel_diff(logits, logits_t), "objective": rel_diff(net.loss(x, y, l2), loss_t.item())}
    errs.update({f"d{k}": rel_diff(grads[k], grads_t[k]) for k in PARAM_SHAPES})
    print(f"l2={l2}: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
    assert max(errs.values()) < 1e-10
    assert abs(loss - F.cross_entropy(torch.from_numpy(logits_t), torch.from_numpy(y)).item()) < 1e-12


@pytest.mark.parametrize("network", [CNN, FastCNN])
def test_dropout_gradients_equal_torch_with_the_same_mask(mnist, network):
    """With dropout the NumPy CNN scales the 1600 features by the mask it keeps in the
    cache; torch given that very mask gives the same gradients (float64, 1e-10)."""
    x, y = mnist[0][:32].astype(np.float64), mnist[1][:32]
    net, model = random_twins(np.float64, seed=1, network=network)
    logits, cache = net.forward(x, dropout=0.5, rng=np.random.default_rng(0))
    mask = cache["mask"]
    assert set(np.unique(mask)) == {0.0, 2.0}                # inverted dropout: kept units scaled by 1/(1-p)
    loss, grads = loss_and_gradients(net, x, y, l2=1e-3, dropout=0.5, rng=np.random.default_rng(0))
    logits_t = model.out(model.features(torch.from_numpy(x)) * torch.from_numpy(mask))
    (F.cross_entropy(logits_t, torch.from_numpy(y)) + 0.5e-3 * sum((W ** 2).sum() for W in model.weights())).backward()
    errs = {"logits": rel_diff(logits, logits_t.detach().numpy()),
            "dW1": rel_diff(grads["W1"], model.conv1.weight.grad.numpy()),
            "dW2": rel_diff(grads["W2"], model.conv2.weight.grad.numpy()),
            "dW3": rel_diff(grads["W3"], model.out.weight.grad.numpy().T),
            "db3": rel_diff(grads["b3"], model.out.bias.grad.numpy())}
    print("dropout 0.5: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
    assert max(errs.values()) < 1e-10


def test_gradients_match_finite_differences(mnist):
    """Centred finite differences of the whole network's objective (dropout and L2 on, the
    mask fixed by reseeding) at 12 random entries of each parameter (float64). eps 1e-6:
    the error is ~1e-9 of the gradient's scale; held to 1e-6."""
    x, y = mnist[0][:8].astype(np.float64), mnist[1][:8]
    net, _ = random_twins(np.float64, seed=2)
    l2, p = 1e-2, 0.25
    _, grads = loss_and_gradients(net, x, y, l2=l2, dropout=p, rng=np.random.default_rng(5))
    grads = {k: g.copy() for k, g in grads.items()}

    def objective():
        logits, _ = net.forward(x, dropout=p, rng=np.random.default_rng(5))
        penalty = sum(float((net.params[k] ** 2).sum()) for k in ("W1", "W2", "W3"))
        return cross_entropy(logits, y) + 0.5 * l2 * penalty

    pick = np.random.default_rng(3)
    for name, param in net.params.items():
        idx = pick.choice(param.size, size=min(12, param.size), replace=False)
        numeric = np.array([central_difference(objective, param.reshape(-1), i, eps=1e-6) for i in idx])
        err = np.abs(grads[name].reshape(-1)[idx] - numeric).max() / np.abs(grads[name]).max()
        print(f"d{name}: max error vs finite differences {err:.1e} of the gradient's scale")
        assert err < 1e-6, name


@pytest.mark.parametrize("layers", ["fast", "plain"])
def test_pytorch_cnn_trains_channels_last_and_equals_the_plain_layout_in_float64(mnist, layers):
    """The PyTorch trainer's fast path (pytorch_nn/fast_step.py faster, --layers fast) lays the
    CNN's activations out channels last (B,H,W,C in memory: PyTorch's CPU convolution and
    max-pool run faster on it), --layers plain leaves cnn.py's B,C,H,W; and that layout changes
    no number beyond rounding: logits and every gradient equal those of the same weights laid
    out B,C,H,W (contiguous), in float64, to 1e-13 of their scale (the same sums of a few
    hundred products each, added in another order: ~1e-16 each)."""
    from types import SimpleNamespace

    from pytorch_nn.fast_step import faster
    from pytorch_nn.train import train_step
    _, model = random_twins(np.float64)
    plain = copy.deepcopy(model)
    args = SimpleNamespace(model="cnn", layers=layers, mode="eager")
    parameters = list(model.parameters())
    assert faster(args, train_step, model, None, None, None) == (train_step, None)
    assert all(p is q for p, q in zip(model.parameters(), parameters))  # an optimizer made before still holds them
    x, y = torch.from_numpy(mnist[0][:64].astype(np.float64)), torch.from_numpy(mnist[1][:64])
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, out: outputs.append(out))
             for m in (model.conv1, model.conv2, model.relu, model.pool)]
    F.cross_entropy(model(x), y).backward()
    for hook in hooks:
        hook.remove()
    assert len(outputs) == 6                  # conv, relu, pool, twice
    layout = torch.channels_last if layers == "fast" else torch.contiguous_format
    for out in outputs:
        assert out.dim() == 4 and out.is_contiguous(memory_format=layout), out.stride()
    F.cross_entropy(plain(x), y).backward()
    diff = (model(x) - plain(x)).abs().max().item()
    print(f"logits: max |channels last - plain| = {diff:.1e}")
    assert diff <= 1e-13 * plain(x).abs().max().item()
    for (name, p), q in zip(model.named_parameters(), plain.parameters()):
        assert (p.grad - q.grad).abs().max().item() <= 1e-13 * q.grad.abs().max().item(), name


@pytest.mark.parametrize("cores", [1, 2], ids=["one-core", "two-cores"])
def test_evaluate_equals_one_full_batch_in_float64(mnist, cores):
    """Both trainers' evaluate() (bites of EVAL_BATCH; the NumPy CNN as the trainer runs it, in
    Halves, on several cores at once) give what one full-batch forward pass gives: the same
    accuracy, and the same mean cross-entropy up to the rounding of summing per-bite means
    (float64, 1e-13)."""
    from harness import threads
    from numpy_nn.parallel import Halves
    from numpy_nn.train import EVAL_BATCH
    from numpy_nn.train import evaluate as np_evaluate
    from pytorch_nn.train import evaluate as torch_evaluate
    n = 2 * EVAL_BATCH + 37                   # a last bite that is not full
    x, y = mnist[0][:n].astype(np.float64), mnist[1][:n]
    net, model = random_twins(np.float64)
    before = threads.openblas_threads()
    try:
        halves = Halves(net)
        halves.use_cores(cores)
        got_np = np_evaluate(halves, x, y)
    finally:
        threads.set_openblas_threads(before or 1)
    logits, _ = net.forward(x)
    want_np = (cross_entropy(logits, y), float(np.mean(logits.argmax(1) == y)))
    got_t = torch_evaluate(model, torch.from_numpy(x), torch.from_numpy(y))
    with torch.inference_mode():
        logits_t = model(torch.from_numpy(x))
    want_t = (F.cross_entropy(logits_t, torch.from_numpy(y)).item(),
              (logits_t.argmax(1) == torch.from_numpy(y)).double().mean().item())
    for got, want in [(got_np, want_np), (got_t, want_t)]:
        assert got[1] == want[1]
        assert abs(got[0] - want[0]) < 1e-13 * want[0]


# ----------------------------------------------------------------------------- fast == plain

# Tolerance for FastCNN against CNN in float64: the two add the same products in other
# orders (the bias inside or outside the product, dx by kernel offset or all at once), so
# each result differs by rounding only, ~1e-16 per operation times the few hundred terms of
# a sum, ~1e-14 of the array's scale (measured: at most ~2e-15); held to 1e-12.
FAST_EQUALS_PLAIN = 1e-12


def test_fast_cnn_equals_plain_cnn(mnist):
    """FastCNN (fast layers, pool before ReLU) and CNN (plain layers, in the architecture's
    order) give the same logits, loss and every gradient to 1e-12 of its scale (float64), with
    random non-zero weights, dropout and L2, on real digits: their blank borders make whole
    pooling windows tie (the count is printed and must be large)."""
    x, y = mnist[0][:64].astype(np.float64), mnist[1][:64]
    plain, _ = random_twins(np.float64, seed=6)
    fast = FastCNN(dtype=np.float64)
    fast.flat_params[...] = plain.flat_params
    logits, cache = plain.forward(x, dropout=0.3, rng=np.random.default_rng(1))
    fast_logits, fast_cache = fast.forward(x, dropout=0.3, rng=np.random.default_rng(1))
    assert np.array_equal(cache["mask"], fast_cache["mask"])
    a1 = np.maximum(cache["z1"], 0)[:, :, :26, :26].reshape(64, 32, 13, 2, 13, 2)
    ties = int((np.sum(a1 == cache["h1"][:, :, :, None, :, None], axis=(3, 5)) > 1).sum())
    loss, grads = loss_and_gradients(plain, x, y, l2=1e-2, dropout=0.3, rng=np.random.default_rng(2))
    fast_loss, fast_grads = loss_and_gradients(fast, x, y, l2=1e-2, dropout=0.3, rng=np.random.default_rng(2))
    errs = {"logits": rel_diff(fast_logits, logits), "h1": rel_diff(fast_cache["h1"], cache["h1"]),
            "h2": rel_diff(fast_cache["h2"], cache["h2"]), "loss": rel_diff(fast_loss, loss)}
    errs.update({f"d{k}": rel_diff(fast_grads[k], grads[k]) for k in PARAM_SHAPES})
    print(f"{ties} of {cache['h1'].size} pool1 windows tie; " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
    assert ties > 1000
    assert max(errs.values()) < FAST_EQUALS_PLAIN


def test_layers_flag_builds_the_network_and_is_recorded():
    """--layers fast (the default) trains FastCNN, --layers plain the plain CNN; the choice
    lands in the run record's config. The PyTorch trainer takes the flag too and records it."""
    from harness.flags import build_parser
    from harness.metrics_file import Run
    from numpy_nn.build import build_network
    parse = build_parser("numpy", "test").parse_args
    assert type(build_network(parse(["--model", "cnn"]), 784)) is FastCNN
    args = parse(["--model", "cnn", "--layers", "plain"])
    assert type(build_network(args, 784)) is CNN
    assert Run("numpy", args, {}, {"device": "cpu", "blas": "?", "blas_threads": 1}, 1, 1).record["config"]["layers"] == "plain"
    assert build_parser("pytorch", "test").parse_args(["--layers", "plain"]).layers == "plain"


def test_training_with_plain_and_fast_layers_gives_the_same_weights(mnist):
    """The trainer's own train() for 8 steps of Adam (batch 32, dropout 0.25, L2, float64,
    the batch in two halves as always), once per --layers: the weights end equal to 1e-9 of
    each array's scale. Why 1e-9, not 1e-12: each step's gradients differ by rounding, ~1e-15
    of their scale (above), and Adam's step lr m / (sqrt(v) + 1e-8) can turn a difference d
    in a gradient entry near 1e-8 into a step difference up to lr d / 1e-8: with lr 3e-3 and
    gradients of scale ~0.1, ~3e-11 a step, ~1e-9 of the weights' scale over 8 steps at
    worst. Measured: at most ~6e-15; a wrong layer would differ by far more than 1e-9."""
    from harness.flags import build_parser
    from numpy_nn.train import train
    x_train, y_train, x_test, y_test = mnist
    weights = {}
    for layers in ("plain", "fast"):
        args = build_parser("numpy", "test").parse_args(
            ["--model", "cnn", "--layers", layers, "--epochs", "1", "--batch-size", "32", "--dtype", "float64",
             "--dropout", "0.25", "--weight-decay", "1e-3", "--no-progress", "--no-diagnostics"])
        net, run = train(args, x_train[:256], y_train[:256], x_test[:64], y_test[:64])
        net = getattr(net, "net", net)                     # the CNN trains in Halves (parallel.py)
        assert type(net) is (CNN if layers == "plain" else FastCNN) and run.record["config"]["layers"] == layers
        weights[layers] = net.params
    start = CNN(seed=0, dtype=np.float64).params
    errs = {k: rel_diff(weights["fast"][k], weights["plain"][k]) for k in PARAM_SHAPES}
    moved = min(rel_diff(weights["plain"][k], start[k]) for k in ("W1", "W2", "W3"))
    print(f"weights moved by >= {moved:.1e} of their scale; fast vs plain: "
          + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
    assert moved > 1e-3                                      # the steps did change the weights
    assert max(errs.values()) < 1e-9


# ----------------------------------------------------------------------------- files

def test_weights_cross_load_with_identical_predictions(mnist, tmp_path):
    """NumPy CNN weights run in the torch model, and torch weights in the NumPy CNN, give
    the same predictions on 200 real test images, through the files each side writes.
    float64: logits within 1e-10 of their scale, so no prediction can flip unless two
    logits tie to 1e-10 (checked: the smallest top-two margin is printed). (200 images, not
    1,000: a weight put in the wrong place changes the logits of any image, and the plain
    CNN's float64 forward pass, run twice here, took 15 s for 1,000 on a busy 2-core machine.)"""
    x, y = mnist[2][:200].astype(np.float64), mnist[3][:200]
    net, model = random_twins(np.float64, seed=3)
    net.save(tmp_path / "cnn.npz")
    torch.save(model.state_dict(), tmp_path / "cnn.pt")
    from_np = load_numpy_params(TorchCNN().double(), CNN.load(tmp_path / "cnn.npz").params)
    from_t = CNN(dtype=np.float64)
    for k, v in numpy_params(load_model(tmp_path / "cnn.pt")).items():
        from_t.params[k][...] = v
    logits = net.forward(x)[0]
    with torch.inference_mode():
        logits_np_in_t = from_np(torch.from_numpy(x)).numpy()
    logits_t_in_np = from_t.forward(x)[0]
    top2 = np.sort(logits, axis=1)[:, -2:]
    print(f"logits: numpy->torch {rel_diff(logits_np_in_t, logits):.1e}, torch->numpy "
          f"{rel_diff(logits_t_in_np, logits):.1e}; smallest top-two margin {np.min(top2[:, 1] - top2[:, 0]):.1e}; "
          f"accuracy {np.mean(logits.argmax(1) == y):.4f}")
    assert rel_diff(logits_np_in_t, logits) < 1e-10 and np.array_equal(logits_t_in_np, logits)
    assert np.array_equal(logits_np_in_t.argmax(1), net.predict(x))
    assert np.array_equal(from_t.predict(x), net.predict(x))


def float32_logit_bounds(net, x):
    """The CNN's exact logits on x (float64 arithmetic on the float32 weights and input) and a
    bound on how far any float32 computation of them can be, layer by layer (conftest.py).
    Max-pooling adds no rounding, and moves by at most the largest error in its window."""
    p = {name: value.astype(np.float64) for name, value in net.params.items()}
    conv = lambda h, W, b: conv2d_forward(h, W, b)[0]
    h = x.reshape(-1, *IMAGE_SHAPE).astype(np.float64)
    e = np.zeros(h.shape)
    for i in (1, 2):
        W, b = p[f"W{i}"], p[f"b{i}"]
        z, e = conv(h, W, b), affine_error(h, e, W, b, W[0].size, conv)
        h = relu(z)
        e = activation_error(h, e)
        (h, _), (e, _) = maxpool2d_forward(h), maxpool2d_forward(e)
    f, e = h.reshape(len(h), -1), e.reshape(len(h), -1)
    return f @ p["W3"] + p["b3"], affine_error(f, e, p["W3"], p["b3"], f.shape[1])


def test_float32_twins_are_within_their_rounding_bound(mnist):
    """float32: each twin's logits are within the bound derived from float32 rounding of the
    exact logits, on any CPU (a worst-case bound, loose: the float64 tests are the ones that catch
    a small mistake; this one shows float32 changes nothing beyond its rounding). So the twins'
    predictions may differ only where the top two logits are closer than twice the bound."""
    x = mnist[2][:500]
    net, model = random_twins(np.float32, seed=4)
    exact, bound = float32_logit_bounds(net, x)
    logits, logits_t = assert_twins_within_bound(net, model, x, exact, bound, "float32")
    margin = np.diff(np.sort(exact, axis=1)[:, -2:], axis=1)[:, 0]
    close = margin <= 2 * bound.max(axis=1)
    print(f"{int(close.sum())} near-ties; {int((logits.argmax(1) != logits_t.argmax(1)).sum())} predictions differ")
    assert np.array_equal(logits.argmax(1)[~close], logits_t.argmax(1)[~close])


def test_save_load_and_telling_the_files_apart(tmp_path):
    net = CNN(seed=5)
    net.save(tmp_path / "cnn.npz")
    NeuralNetwork(seed=5).save(tmp_path / "mlp.npz")
    assert is_cnn_file(tmp_path / "cnn.npz") and not is_cnn_file(tmp_path / "mlp.npz")
    assert saved_model_kind(tmp_path / "mlp.npz") == "mlp"
    back = CNN.load(tmp_path / "cnn.npz")
    assert back.dtype == np.float32 and np.array_equal(back.flat_params, net.flat_params)
    assert CNN.load(tmp_path / "cnn.npz", dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError, match="MLP weights, not CNN") as e:
        CNN.load(tmp_path / "mlp.npz")
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- learning

# Measured here (5,000 training images, 1 epoch, batch 64, Adam lr 2e-3, float32; accuracy
# on the first 2,000 test images): seeds 0-4 gave 92.2%, 92.2%, 93.3%, 90.9%, 92.3%, in
# about 1 s each. The floor, 85%, sits well below every seed (and leaves room for other
# BLAS kernels rounding differently); a broken layer (wrong gradient, wrong flatten) stays
# near chance or far below 85%. Slow: the plain CNN's epoch took 16 s on a busy 2-core machine;
# the quick run proves its gradients (against torch and finite differences) and that the
# trainer's steps move its weights as the fast layers' do.
@pytest.mark.slow
def test_short_training_run_learns(mnist):
    x_train, y_train, x_test, y_test = mnist
    x_train, y_train, x_test, y_test = x_train[:5000], y_train[:5000], x_test[:2000], y_test[:2000]
    net = CNN(seed=0)
    opt = OPTIMIZERS["adam"](net.flat_params, 2e-3)
    t0 = time.perf_counter()
    for idx in batches(len(x_train), 64, np.random.default_rng(0)):
        loss_and_gradients(net, x_train[idx], y_train[idx])
        opt.step(net.flat_grads)
    acc = float(np.mean(net.predict(x_test) == y_test))
    print(f"1 epoch on 5,000 images: test accuracy {acc:.4f} in {time.perf_counter() - t0:.1f} s")
    assert acc > 0.85
