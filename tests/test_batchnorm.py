"""Batch normalization (numpy_nn/batchnorm.py, --norm batch): the hand-written layer against
PyTorch's nn.BatchNorm1d and autograd and against finite differences, the MLP with it against
its PyTorch twin (one step and whole short runs), evaluation that does not depend on the batch,
and the running statistics through every place a network goes (save and load, the twin's
files, compare.py, predict.py and the demo's page).

Tolerances: float64 throughout, where the two libraries differ only in the order of their
sums: ~1e-16 of the scale per operation. The layer's results are held to 1e-12 of their
scale; a training run, which carries each step's rounding into the next, to 1e-9 relative on
its losses (as tests/test_equivalence.py holds the twins without BN). A wrong formula (a path
through the batch's statistics left out, the biased variance where the unbiased belongs) is
off by 1e-3 and more.
"""
import contextlib
import json

import numpy as np
import pytest
import torch
from torch import nn

from checker.network import numerical_gradient
from data_loader import batches
from harness import experiment
from numpy_nn import train as numpy_train
from numpy_nn.batchnorm import EPS, MOMENTUM, batchnorm_backward, batchnorm_forward
from numpy_nn.neural_network import NeuralNetwork
from numpy_nn.utils import OPTIMIZERS, cross_entropy_with_grad
from pytorch_nn import train as torch_train
from pytorch_nn.model import MLP, load_model
from pytorch_nn.numpy_weights import load_numpy_params, numpy_buffers, numpy_params
from pytorch_nn.train import make_optimizer

SIZES = (784, 64, 32, 10)
CLOSE = 1e-12   # of the scale, for one float64 pass (see the module docstring)


def scaled_error(mine, theirs):
    """max |mine - theirs| over theirs' largest entry."""
    theirs = np.asarray(theirs)
    return float(np.max(np.abs(np.asarray(mine) - theirs)) / np.max(np.abs(theirs)))


def layer_input(seed=0, B=16, H=7):
    """A batch z B,H of units with their own scales and offsets, one constant over the batch
    (its variance 0: only eps keeps 1 / std finite), and gamma, beta away from 1 and 0."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((B, H)) * rng.uniform(0.1, 5, H) + rng.uniform(-3, 3, H)
    z[:, 2] = 1.25
    return z, rng.normal(1, 0.5, H), rng.normal(0, 0.5, H), rng


def torch_layer(gamma, beta):
    """nn.BatchNorm1d, in float64, with this gamma and beta (its weight and bias)."""
    layer = nn.BatchNorm1d(len(gamma), eps=EPS, momentum=MOMENTUM).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(gamma))
        layer.bias.copy_(torch.from_numpy(beta))
    return layer


# ----------------------------------------------------------------------------- the layer

def test_nn_batchnorm1d_has_the_eps_and_momentum_numpy_uses():
    """The constants the NumPy layer copies are nn.BatchNorm1d's defaults, which the twin uses."""
    layer = nn.BatchNorm1d(3)
    assert (layer.eps, layer.momentum) == (EPS, MOMENTUM) == (1e-5, 0.1)


def test_forward_train_eval_and_running_statistics_equal_nn_batchnorm1d():
    """Over 5 training batches the outputs and the running mean and variance equal
    nn.BatchNorm1d's (the variance unbiased: B / (B - 1) var), and in evaluation both normalise
    with the running statistics."""
    z0, gamma, beta, rng = layer_input()
    layer = torch_layer(gamma, beta)
    mean, var = np.zeros(z0.shape[1]), np.ones(z0.shape[1])
    for step in range(5):
        z = z0 + rng.standard_normal(z0.shape) * (step > 0)   # the first batch has the constant unit
        y, _ = batchnorm_forward(z, gamma, beta, mean, var, training=True)
        y_t = layer(torch.from_numpy(z)).detach().numpy()
        assert scaled_error(y, y_t) < CLOSE, step
        assert scaled_error(mean, layer.running_mean.numpy()) < CLOSE, step
        assert scaled_error(var, layer.running_var.numpy()) < CLOSE, step
    batch_var = z.var(axis=0)
    assert not np.allclose(var, 0.9 * var + 0.1 * batch_var)  # (the unbiased and biased updates differ)
    layer.eval()
    z = rng.standard_normal((3, z0.shape[1]))
    y, cache = batchnorm_forward(z, gamma, beta, mean, var, training=False)
    assert cache is None
    assert scaled_error(y, layer(torch.from_numpy(z)).detach().numpy()) < CLOSE
    assert scaled_error(y, gamma * (z - mean) / np.sqrt(var + EPS) + beta) < CLOSE


def test_training_refuses_a_batch_of_one_as_torch_does():
    z, gamma, beta, _ = layer_input(B=1)
    with pytest.raises(ValueError, match="2 or more"):
        batchnorm_forward(z, gamma, beta, np.zeros(7), np.ones(7), training=True)
    with pytest.raises(ValueError):
        torch_layer(gamma, beta)(torch.from_numpy(z))


def test_backward_equals_autograd():
    """dz, dgamma and dbeta equal autograd's through nn.BatchNorm1d in training mode."""
    z, gamma, beta, rng = layer_input(seed=1)
    dy = rng.standard_normal(z.shape)
    _, cache = batchnorm_forward(z, gamma, beta, np.zeros(7), np.ones(7), training=True)
    dz, dgamma, dbeta = batchnorm_backward(dy, cache)
    layer, tz = torch_layer(gamma, beta), torch.tensor(z, requires_grad=True)
    layer(tz).backward(torch.from_numpy(dy))
    for name, mine, theirs in (("dz", dz, tz.grad), ("dgamma", dgamma, layer.weight.grad),
                               ("dbeta", dbeta, layer.bias.grad)):
        err = scaled_error(mine, theirs.numpy())
        print(f"{name}: {err:.1e} of the scale")
        assert err < CLOSE, name


def test_backward_equals_finite_differences():
    """The same gradients by central differences of the loss sum(R * y), R fixed: no chain rule
    involved. A central difference is off by ~eps^2 f''' plus the loss's rounding over 2 eps
    (1e-16 * 10 / 2e-6, ~1e-9 absolute, on gradients of size ~1): 1e-6 of the scale leaves
    a margin, and a left-out path through the statistics is off by far more (the variance's
    path alone moves dz by 0.1 of its scale here)."""
    z, gamma, beta, rng = layer_input(seed=2, B=6, H=4)
    z[:, 2] = z[0, 2] + rng.standard_normal(6) * 1e-3     # nearly constant: 1 / std large, but smooth
    R = rng.standard_normal(z.shape)

    def loss():
        return float((R * batchnorm_forward(z, gamma, beta, np.zeros(4), np.ones(4), training=True)[0]).sum())
    _, cache = batchnorm_forward(z, gamma, beta, np.zeros(4), np.ones(4), training=True)
    dz, dgamma, dbeta = batchnorm_backward(R, cache)
    for name, analytic, x in (("dz", dz, z), ("dgamma", dgamma, gamma), ("dbeta", dbeta, beta)):
        numeric = numerical_gradient(loss, x)
        err = scaled_error(analytic, numeric)
        print(f"{name}: {err:.1e} of the scale")
        assert err < 1e-6, name
    treated_as_constants = R * gamma / cache[2]
    assert scaled_error(treated_as_constants, dz) > 1e-2   # the test can tell the classic mistake


# ----------------------------------------------------------------------------- the network

def random_twins(activation="relu", seed=0, sizes=SIZES):
    """A batch-normalised NumPy MLP with random weights, gamma, beta and running statistics
    (none of them at its starting value), and its PyTorch twin holding the same."""
    net = NeuralNetwork(sizes, seed=seed, dtype=np.float64, activation=activation, norm="batch")
    rng = np.random.default_rng(seed + 100)
    for name, p in net.params.items():
        p[...] = {"g": rng.normal(1, 0.3, p.shape), "b": rng.normal(0, 0.3, p.shape)}.get(
            name[0], rng.standard_normal(p.shape) * np.sqrt(2 / p.shape[0]))
    for name, b in net.buffers.items():
        b[...] = rng.uniform(0.5, 2, b.shape) if "var" in name else rng.normal(0, 1, b.shape)
    model = load_numpy_params(MLP(sizes, activation=activation, norm="batch").double(), net.params, net.buffers)
    return net, model


def test_a_normalised_layer_has_gamma_and_beta_and_no_bias_in_both_twins():
    net, model = random_twins()
    assert list(net.params) == ["W1", "gamma1", "beta1", "W2", "gamma2", "beta2", "W3", "b3"]
    assert list(net.buffers) == ["running_mean1", "running_var1", "running_mean2", "running_var2"]
    assert all(layer.bias is None for layer in model.hidden) and model.out.bias is not None
    fresh = NeuralNetwork(SIZES, norm="batch")
    assert (fresh.params["gamma1"] == 1).all() and (fresh.params["beta1"] == 0).all()
    assert (fresh.buffers["running_mean1"] == 0).all() and (fresh.buffers["running_var1"] == 1).all()
    assert net.flat_params.size == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("l2", [0.0, 1e-2])
def test_mlp_gradients_and_both_modes_equal_the_twin(mnist, activation, l2):
    """One batch: the training-mode logits, every gradient (gamma and beta included, the L2
    term on the W's only, as torch.optim's weight decay on the twin's Linear weights), the
    running statistics the step leaves, and the evaluation-mode logits."""
    x, y = mnist[0][:64].astype(np.float64), mnist[1][:64]
    net, model = random_twins(activation)
    logits, cache = net.forward(x, training=True)
    loss, dlogits = cross_entropy_with_grad(logits, y)
    net.backward(dlogits, cache, l2)
    model.train()
    logits_t = model(torch.from_numpy(x))
    loss_t = torch.nn.functional.cross_entropy(logits_t, torch.from_numpy(y))
    (loss_t + 0.5 * l2 * sum((layer.weight ** 2).sum() for layer in model.layers())).backward()
    assert scaled_error(logits, logits_t.detach().numpy()) < CLOSE
    grads = twin_grads(model)
    assert sorted(grads) == sorted(net.params)
    for name in net.params:
        assert scaled_error(net.grads[name], grads[name]) < 1e-10, name
    for name, buffer in numpy_buffers(model).items():
        assert scaled_error(net.buffers[name], buffer) < CLOSE, name
    model.eval()
    with torch.no_grad():
        assert scaled_error(net.forward(x)[0], model(torch.from_numpy(x)).numpy()) < CLOSE


def twin_grads(model):
    """The twin's gradients in numpy_nn's names and layout: dW transposed back to (in, out)."""
    grads = {}
    for i, layer in enumerate(model.layers(), start=1):
        grads[f"W{i}"] = layer.weight.grad.numpy().T
        if layer.bias is not None:
            grads[f"b{i}"] = layer.bias.grad.numpy()
    for i, norm in enumerate(model.norms, start=1):
        grads[f"gamma{i}"], grads[f"beta{i}"] = norm.weight.grad.numpy(), norm.bias.grad.numpy()
    return grads


def test_finite_differences_through_the_whole_network(mnist):
    """A few entries of W1, gamma1, beta1, W2 and b3 by central differences of net.loss (the
    training-mode loss, which leaves the running statistics as they were)."""
    from checker.network import central_difference
    x, y = mnist[0][:32].astype(np.float64), mnist[1][:32]
    net, _ = random_twins("sigmoid")
    logits, cache = net.forward(x, training=True)
    kept = {name: b.copy() for name, b in net.buffers.items()}
    net.backward(cross_entropy_with_grad(logits, y)[1], cache)
    rng = np.random.default_rng(0)
    for name in ("W1", "gamma1", "beta1", "gamma2", "W3", "b3"):
        flat, g = net.params[name].reshape(-1), net.grads[name].reshape(-1)
        for k in rng.choice(np.flatnonzero(np.abs(g) >= np.median(np.abs(g))), 3, replace=False):
            numeric = central_difference(lambda: net.loss(x, y), flat, k)
            assert abs(numeric - g[k]) <= 1e-5 * abs(numeric), (name, k, numeric, g[k])
    for name, b in net.buffers.items():
        np.testing.assert_array_equal(b, kept[name])  # net.loss measured; it did not train


def test_evaluation_does_not_depend_on_the_batch(mnist):
    """In evaluation an image's logits are the same alone, in its batch of 128 and in a batch of
    other images (float64: to rounding), and the predictions the same to the image, in both
    twins; in training they depend on the batch (the sanity check of the test)."""
    x = mnist[2][:256].astype(np.float64)
    net, model = random_twins("sigmoid")
    batch = net.forward(x[:128])[0]
    alone = np.concatenate([net.forward(x[i:i + 1])[0] for i in range(128)])
    other = net.forward(np.concatenate([x[:1], x[128:]]))[0][0]
    with torch.no_grad():
        model.eval()
        batch_t = model(torch.from_numpy(x[:128])).numpy()
        alone_t = np.concatenate([model(torch.from_numpy(x[i:i + 1])).numpy() for i in range(128)])
    for name, logits in (("alone", alone), ("other batch", other), ("torch, batch", batch_t),
                         ("torch, alone", alone_t)):
        assert scaled_error(logits, batch[:len(logits)] if logits.ndim == 2 else batch[0]) < CLOSE, name
    assert (alone.argmax(axis=1) == batch.argmax(axis=1)).all()
    assert (alone_t.argmax(axis=1) == batch.argmax(axis=1)).all()
    kept = {name: b.copy() for name, b in net.buffers.items()}
    trained = net.forward(x[:128], training=True)[0][0], net.forward(np.concatenate([x[:1], x[128:]]), training=True)[0][0]
    assert scaled_error(*trained) > 1e-3
    assert not all(np.array_equal(net.buffers[name], kept[name]) for name in kept)  # and training moved them


# ----------------------------------------------------------------------------- steps and runs

def torch_dropout_forward(model, x, masks):
    """The twin's forward in training mode with the NumPy network's dropout masks (the trainers
    draw theirs from different generators: given the same masks, the same numbers)."""
    for layer, norm, mask in zip(model.hidden, model.norms, masks):
        x = model.activation(norm(layer(x))) * mask
    return model.out(x)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_training_steps_equal_the_twin_with_dropout_off_and_on(mnist, dropout):
    """10 Adam steps (L2 on) with the same batches, and with dropout the same masks: the
    weights, gamma, beta and the running statistics stay together to 1e-10 of their scale.
    (Whole runs with dropout cannot be compared: the trainers draw their masks from different
    generators, NumPy's and torch's, as they do without batch normalization.)"""
    x, y = mnist[0][:640].astype(np.float64), mnist[1][:640]
    net, model = random_twins("sigmoid")
    args = experiment.build_parser("pytorch", "").parse_args(["--weight-decay", "1e-3", "--lr", "3e-3"])
    mine, theirs = OPTIMIZERS["adam"](net.flat_params, 3e-3), make_optimizer(model, args)
    rng = np.random.default_rng(1)
    for idx in batches(len(x), 64, np.random.default_rng(0)):
        logits, cache = net.forward(x[idx], dropout, rng, training=True)
        net.backward(cross_entropy_with_grad(logits, y[idx])[1], cache, 1e-3)
        mine.step(net.flat_grads)
        masks = [torch.from_numpy(cache[f"mask{i}"]) if dropout else 1.0 for i in range(1, net.num_layers)]
        model.train()
        loss = torch.nn.functional.cross_entropy(torch_dropout_forward(model, torch.from_numpy(x[idx]), masks),
                                                 torch.from_numpy(y[idx]))
        theirs.zero_grad()
        loss.backward()
        theirs.step()
    for name, p in numpy_params(model).items():
        assert scaled_error(net.params[name], p) < 1e-10, name
    for name, b in numpy_buffers(model).items():
        assert scaled_error(net.buffers[name], b) < 1e-10, name


def twin_runs(mnist, flags, limit=2000, n_test=1000):
    """The same short float64 run from both trainers' train(), in this process: (NumPy's record,
    PyTorch's record, NumPy's network, PyTorch's model)."""
    x_train, y_train, x_test, y_test = mnist
    data = (x_train[:limit].astype(np.float64), y_train[:limit], x_test[:n_test].astype(np.float64), y_test[:n_test])
    flags = [*flags, "--dtype", "float64", "--no-progress"]
    net, mine = numpy_train.train(experiment.build_parser("numpy", "").parse_args(flags), *data)
    args = experiment.build_parser("pytorch", "").parse_args(flags)
    args.device, args.init, args.mode = "cpu", "numpy", "eager"   # pytorch_nn/train.py main()'s own flags
    model, theirs = torch_train.train(args, *data)
    return mine.record, theirs.record, net, model


@pytest.mark.slow
@pytest.mark.parametrize("activation, optimizer, lr", [("sigmoid", "sgd", "0.5"), ("relu", "adam", "3e-3")])
def test_whole_runs_are_twins_in_float64(mnist, one_blas_thread, activation, optimizer, lr):
    """3 epochs of 2,000 images, --norm batch: every epoch's training and test loss (both in
    evaluation mode, with the running statistics) agree to 1e-9 relative, the test accuracies
    to the image, and the diagnostics, the new figures included."""
    mine, theirs, net, model = twin_runs(mnist, ["--norm", "batch", "--activation", activation, "--optimizer",
                                                 optimizer, "--lr", lr, "--epochs", "3", "--batch-size", "64",
                                                 "--diagnostics-every", "8"])
    assert mine["config"]["norm"] == theirs["config"]["norm"] == "batch"
    for a, b in zip(mine["epochs"], theirs["epochs"], strict=True):
        for key in ("train_loss", "test_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-9), (a["epoch"], key)
        assert round(a["test_acc"] * 1000) == round(b["test_acc"] * 1000)
    assert mine["epochs"][-1]["test_acc"] > 0.8                # it learned something
    d_mine, d_theirs = mine["diagnostics"], theirs["diagnostics"]
    figures = ["input_p15", "input_p50", "input_p85", *(["saturated_fraction"] if activation == "sigmoid" else [])]
    for figure in ["grad_rms", "update_ratio", *figures]:
        assert figure in d_mine
        for layer in d_mine[figure]:
            np.testing.assert_allclose(d_mine[figure][layer], d_theirs[figure][layer], rtol=1e-9, atol=1e-12)
    for name, b in numpy_buffers(model).items():
        assert scaled_error(net.buffers[name], b) < 1e-9, name


# ----------------------------------------------------------------------------- files and readers

def test_save_and_load_keep_the_running_statistics_in_both_twins(tmp_path, mnist):
    """A trained network's .npz and .pt hold gamma, beta and the running statistics; loaded back,
    and loaded across the twins, they give the same evaluation logits."""
    x = mnist[2][:128].astype(np.float64)
    net, model = random_twins("sigmoid")
    net.save(tmp_path / "w.npz")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    back = NeuralNetwork.load(tmp_path / "w.npz")
    assert back.norm == "batch" and back.activation == "sigmoid"
    for name in (*net.params, *net.buffers):
        np.testing.assert_array_equal((back.params | back.buffers)[name], (net.params | net.buffers)[name])
    np.testing.assert_array_equal(back.forward(x)[0], net.forward(x)[0])
    loaded = load_model(tmp_path / "w.pt", activation="sigmoid")
    assert loaded.norm == "batch"
    loaded.eval()
    with torch.no_grad():
        assert scaled_error(loaded(torch.from_numpy(x)).numpy(), net.forward(x)[0]) < CLOSE
    crossed = NeuralNetwork(SIZES, dtype=np.float64, activation="sigmoid", norm="batch")
    for name, array in (numpy_params(loaded) | numpy_buffers(loaded)).items():
        (crossed.params | crossed.buffers)[name][...] = array
    assert scaled_error(crossed.forward(x)[0], net.forward(x)[0]) < CLOSE


@pytest.fixture(scope="module")
def bn_runs(tmp_path_factory, mnist):
    """A short --norm batch run of each trainer, written as the trainers write their files."""
    from harness.experiment import finish
    folder = tmp_path_factory.mktemp("bn_runs")
    x_train, y_train, x_test, y_test = mnist
    paths = {}
    for framework, train in (("numpy", numpy_train.train), ("pytorch", torch_train.train)):
        flags = ["--norm", "batch", "--activation", "sigmoid", "--limit", "2000", "--epochs", "1", "--no-progress",
                 "--dropout", "0.1",
                 "--metrics", str(folder / f"{framework}_metrics.json"),
                 "--weights", str(folder / f"{framework}_model{'.npz' if framework == 'numpy' else '.pt'}")]
        args = experiment.build_parser(framework, "").parse_args(flags)
        if framework == "pytorch":
            args.device, args.init, args.mode = "cpu", "numpy", "eager"
        _, run = train(args, x_train[:2000], y_train[:2000], x_test, y_test)
        with contextlib.suppress(SystemExit):
            finish(run, args)
        paths[framework] = folder / f"{framework}_metrics.json"
    return paths


@pytest.mark.slow
def test_compare_predict_and_the_page_load_a_batchnorm_run(bn_runs, mnist, tmp_path, capsys, pictures_not_drawn):
    """compare.py evaluates each run's saved weights, running statistics included, to the test
    accuracy its record holds (it refuses weights that disagree); predict.py and the demo's
    models read a drawn digit with them, one image at a time, and the NumPy and PyTorch runs
    agree on it as they agree on the test set."""
    import compare
    import predict
    from demo.models import find_models
    for path in bn_runs.values():
        assert json.loads(path.read_text())["config"]["norm"] == "batch"
    compare.main(["--runs", *map(str, bn_runs.values()), "--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.count("its SHA-256 and its") == 2, out          # both weights checked against their records
    table = next(tmp_path.glob("comparison*.md")).read_text()
    assert "batch norm" in table
    models, notes = find_models(list(bn_runs.values()))
    assert len(models) == 2 and not notes
    _, _, x_test, _ = mnist
    image = x_test[0].reshape(28, 28)
    probabilities = [model.read(image)[0] for model in models]
    assert probabilities[0].argmax() == probabilities[1].argmax()
    twin = load_model(bn_runs["pytorch"].with_name("pytorch_model.pt"), activation="sigmoid")
    twin.eval()                                              # the record's activation, not ReLU's
    with torch.no_grad():
        want = torch.softmax(twin(torch.from_numpy(image.reshape(1, 784))).double(), dim=1)[0].numpy()
    np.testing.assert_array_equal(probabilities[1], want)   # the same model and image: the same numbers
    assert len(models[0].read(image)[1]) == 3 - 1             # the NumPy MLP's hidden layers, for the page
    from PIL import Image
    Image.fromarray((255 - 255 * image).astype(np.uint8)).save(tmp_path / "digit.png")
    with pytest.raises(SystemExit) as done:
        predict.main([str(tmp_path / "digit.png"), "--runs", *map(str, bn_runs.values())])
    assert done.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1].split()[1] == lines[2].split()[1] == str(probabilities[0].argmax()), lines


@pytest.mark.parametrize("framework", ["numpy", "pytorch"])
def test_flags_batchnorm_cannot_train_with_are_one_line_refusals(framework, capsys):
    """--norm batch on the CNN, with batches of 1, or with a last batch of 1 image (2,049
    samples in batches of 128): exit 2 and one line each, before any training."""
    parser = experiment.build_parser(framework, "")
    for argv, message in ((["--model", "cnn", "--norm", "batch"], "argument --norm: normalises the MLP's"),
                          (["--norm", "batch", "--batch-size", "1"], "one image has no variance"),
                          (["--norm", "batch", "--limit", "2049"], "leave a last batch of 1 image")):
        with pytest.raises(SystemExit) as stop:
            args = parser.parse_args(argv)
            experiment.load_data(parser, args)
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    args = parser.parse_args(["--norm", "batch", "--limit", "2050"])   # a last batch of 2 trains
    assert len(experiment.load_data(parser, args)[0]) == 2050


def test_compare_names_the_normalisation_among_the_settings():
    """Two runs that differ in --norm: the report's settings diff names it, and counts it among
    the settings that change a sample's work (so their speed is not compared as the code's). A
    record from before --norm has none in its config, and counts as none."""
    from conftest import make_record, run_result
    from report.table import WORK_SETTINGS, changed_settings, describe_config
    plain, normalised = make_record(), make_record(config={"norm": "batch"})
    plain["config"].pop("norm", None)          # (make_record's config predates --norm)
    runs = [run_result(plain, "NumPy", "plain"), run_result(normalised, "NumPy (bn)", "bn")]
    assert changed_settings(runs) == [("normalization", ["none", "batch"])]
    assert "normalization" in WORK_SETTINGS
    assert "batch norm" in describe_config(runs[1]) and "norm" not in describe_config(runs[0])
    assert changed_settings([runs[0], run_result(make_record(config={"norm": "none"}))]) == []
