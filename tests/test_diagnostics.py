"""The diagnostics the trainers record every N steps (numpy_nn/diagnostics.py and its twin
pytorch_nn/diagnostics.py): each figure's definition checked on numbers worked out by hand, on
a tiny network whose dead unit is known, the twins' figures equal in float64 over short runs
of every activation and of the CNN, the flags' one-line errors, and the record they go in.

The short runs train in this process (the trainers' own train()), with the thread count left as
the environment sets it (OPENBLAS_NUM_THREADS=1 here): only timings would change.
"""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import loss_and_gradients
from harness import experiment
from harness.metrics_file import DIAGNOSTICS_PER_HIDDEN_LAYER, DIAGNOSTICS_PER_LAYER, MetricsError, load_metrics
from numpy_nn import diagnostics as numpy_diagnostics
from numpy_nn import train as numpy_train
from numpy_nn.neural_network import NeuralNetwork
from numpy_nn.utils import SGD
from pytorch_nn import diagnostics as torch_diagnostics
from pytorch_nn import train as torch_train
from pytorch_nn.model import MLP
from pytorch_nn.numpy_weights import load_numpy_params

FIGURES = {"numpy": (numpy_diagnostics, np.array),
           "pytorch": (torch_diagnostics, lambda a: torch.tensor(a, dtype=torch.float64))}


@pytest.fixture
def one_thread(monkeypatch):
    """The user's thread count wins over threads.py's share (see the module docstring)."""
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


# ----------------------------------------------------------------------------- the definitions

@pytest.mark.parametrize("twin", FIGURES)
def test_each_figure_on_numbers_worked_by_hand(twin):
    """Both twins' figure functions on the same small arrays, against answers worked out by hand."""
    figures, array = FIGURES[twin]
    assert float(figures.rms(array([[3.0, -4.0], [0.0, 0.0]]))) == 2.5            # sqrt((9 + 16) / 4)
    before, after = array([[3.0, 0.0], [0.0, 4.0]]), array([[3.0, 0.3], [0.4, 4.0]])
    assert float(figures.update_ratio(before, after)) == pytest.approx(0.1, rel=1e-15)  # ||(.3, .4)|| / ||(3, 4)||
    # MLP layer, 3 images x 3 units: unit 0 is 0 on every image (dead); unit 1 is positive on one
    # image only, unit 2 by a hair on one image only: both alive
    h = array([[0.0, 0.5, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1e-30]])
    assert float(figures.dead_fraction(h)) == pytest.approx(1 / 3, rel=1e-15)
    # conv layer, 2 images x 3 channels x 2x2: channel 0 is 0 everywhere (dead), channel 1 at
    # one position of one image only (alive), channel 2 everywhere (alive)
    maps = np.zeros((2, 3, 2, 2))
    maps[1, 1, 1, 0] = 0.2
    maps[:, 2] = 1.0
    assert float(figures.dead_fraction(array(maps))) == pytest.approx(1 / 3, rel=1e-15)
    counts, edges = figures.histogram(array([0.0, 0.0, 0.0, 1.0, 2.0, 4.0]))
    assert list(np.asarray(counts)[[0, 10, 20, 39]]) == [3, 1, 1, 1] and sum(np.asarray(counts)) == 6
    assert float(edges[0]) == 0.0 and float(edges[-1]) == 4.0 and len(edges) == numpy_diagnostics.HISTOGRAM_BINS + 1
    assert figures.histogram(array([0.0, float("inf")])) is None   # a blown-up layer has nothing to bin
    # sigmoid outputs: 2 of 6 outside (0.02, 0.98) (0.02 itself is not below it); tanh's bounds -+0.96
    s = array([[0.01, 0.5, 0.02], [0.99, 0.3, 0.97]])
    assert float(figures.saturated_fraction(s, numpy_diagnostics.SATURATION["sigmoid"])) == pytest.approx(1 / 3)
    t = array([[-0.97, 0.0], [0.96, 0.99]])
    assert float(figures.saturated_fraction(t, numpy_diagnostics.SATURATION["tanh"])) == pytest.approx(0.5)
    # one unit's input over 5 images, 0..4: the 15th percentile lies 0.6 of the way from 0 to 1
    # ((5 - 1) * 0.15 = 0.6), the 50th at 2, the 85th at 3.4 (linear interpolation, both twins)
    z = array([[4.0, 9.0], [0.0, 9.0], [2.0, 9.0], [1.0, 9.0], [3.0, 9.0]])
    assert [float(v) for v in figures.unit_percentiles(z)] == pytest.approx([0.6, 2.0, 3.4], rel=1e-15)


def tiny_network():
    """2 inputs -> 3 ReLU units -> 2 classes, weights chosen by hand, and 3 probe images that are
    all >= 0: unit 0 (weights -1, -1) is negative on every image, so dead; unit 1 (1, -1) is
    positive on image 0 only, alive; unit 2 (0.5, 0.5) positive on all."""
    net = NeuralNetwork((2, 3, 2), dtype=np.float64)
    net.params["W1"][...] = [[-1.0, 1.0, 0.5], [-1.0, -1.0, 0.5]]   # in,out
    net.params["W2"][...] = [[1.0, -1.0], [0.5, 0.5], [-0.5, 1.0]]
    net.params["b2"][...] = [0.1, -0.1]
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 0.5]])
    return net, x, np.array([0, 1, 1])


ONE_STEP = SimpleNamespace(no_diagnostics=False, diagnostics_every=1, model="mlp", weight_decay=0.0)


def test_one_sgd_step_of_a_tiny_network_in_both_twins():
    """One plain-SGD step of the tiny network, recorded by each twin: the dead unit counts as
    dead (and gets a zero gradient, so it stays dead), the update ratio is lr ||dW|| / ||W|| (plain
    SGD moves W by exactly -lr dW), and the twins' records agree."""
    lr = 0.1
    net, x, y = tiny_network()
    model = load_numpy_params(MLP((2, 3, 2)).double(), net.params)
    W = {name: net.params[name].copy() for name in ("W1", "W2")}

    watch = numpy_diagnostics.Watch(net, x, ONE_STEP, steps_per_epoch=1)
    assert watch.due(1, 1)
    watch.before_step()
    loss, grads = loss_and_gradients(net, x, y)
    SGD(net.flat_params, lr=lr).step(net.flat_grads)
    watch.after_step(loss)
    mine = watch.finish()

    np.testing.assert_array_equal(grads["W1"][:, 0], 0.0)         # the dead unit learns nothing
    assert mine["steps"] == [1] and mine["loss"] == [loss] and mine["layers"] == ["layer1", "layer2"]
    assert mine["dead_fraction"] == {"layer1": [pytest.approx(1 / 3, rel=1e-15)]}
    for i, name in ((1, "layer1"), (2, "layer2")):
        g = grads[f"W{i}"]
        assert mine["grad_rms"][name][0] == pytest.approx(math.sqrt((g ** 2).sum() / g.size), rel=1e-14)
        expected = lr * np.sqrt((g ** 2).sum()) / np.sqrt((W[f"W{i}"] ** 2).sum())
        assert mine["update_ratio"][name][0] == pytest.approx(expected, rel=1e-12)
    h1 = np.maximum(x @ net.params["W1"] + net.params["b1"], 0)   # after the step
    assert mine["activation_mean"]["layer1"][0] == pytest.approx(h1.mean(), rel=1e-14)
    assert mine["activation_std"]["layer1"][0] == pytest.approx(h1.std(), rel=1e-14)
    assert sum(mine["histograms"]["init"]["layer1"]["counts"]) == 9        # 3 images x 3 units

    watch = torch_diagnostics.Watch(model, torch.from_numpy(x), ONE_STEP, steps_per_epoch=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    assert watch.due(1, 1)
    watch.before_step()
    loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    optimizer.step()
    watch.after_step(loss.item())
    assert_twins_agree(mine, watch.finish())


# ----------------------------------------------------------------------------- the twins agree

# float64 twins sum in different orders and nothing else: their weights stay ~1e-15 apart (the
# equivalence tests), and so do these figures of them. The update ratio is the smallest
# difference of the lot, ||dW|| ~ 1e-3 ||W||, so it keeps ~1e-13 relative; 1e-9 leaves margin
# and still fails for any figure computed another way. atol covers means near 0 (the logits').
RTOL, ATOL = 1e-9, 1e-12


def assert_twins_agree(a, b):
    """Every figure of two diagnostics blocks equal within float64 rounding; the dead fractions
    and histogram counts exactly (a unit or value would have to sit within ~1e-15 of 0 or of
    an edge to fall differently)."""
    assert a["steps"] == b["steps"] and a["layers"] == b["layers"] and a["every"] == b["every"]
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=RTOL)
    for figure in DIAGNOSTICS_PER_LAYER:
        for layer in a["layers"]:
            np.testing.assert_allclose(a[figure][layer], b[figure][layer], rtol=RTOL, atol=ATOL,
                                       err_msg=f"{figure} {layer}")
    assert a["dead_fraction"] == b["dead_fraction"]
    for figure in DIAGNOSTICS_PER_HIDDEN_LAYER:   # recorded where they apply: the same in both
        assert (figure in a) == (figure in b), figure
        for layer in a.get(figure, {}):
            np.testing.assert_allclose(a[figure][layer], b[figure][layer], rtol=RTOL, atol=ATOL,
                                       err_msg=f"{figure} {layer}")
    for when in ("init", "end"):
        for layer in a["layers"]:
            ha, hb = a["histograms"][when][layer], b["histograms"][when][layer]
            assert ha["counts"] == hb["counts"], (when, layer)
            np.testing.assert_allclose(ha["edges"], hb["edges"], rtol=RTOL, atol=ATOL)


def train_twins(mnist, flags, limit, n_test):
    """The same short float64 run from both trainers' train(), in this process."""
    x_train, y_train, x_test, y_test = mnist
    data = (x_train[:limit].astype(np.float64), y_train[:limit],
            x_test[:n_test].astype(np.float64), y_test[:n_test])
    flags = [*flags, "--dtype", "float64", "--no-progress"]
    mine = numpy_train.train(experiment.build_parser("numpy", "").parse_args(flags), *data)[1].record
    args = experiment.build_parser("pytorch", "").parse_args(flags)
    args.device, args.init, args.mode = "cpu", "numpy", "eager"  # pytorch_nn/train.py main()'s own flags
    theirs = torch_train.train(args, *data)[1].record
    return mine, theirs


TWIN_CASES = {  # flags; each activation, each initialisation, and the L2 term torch adds itself
    "relu he": ["--activation", "relu"],
    "sigmoid xavier": ["--activation", "sigmoid", "--weight-init", "xavier"],
    "tanh small": ["--activation", "tanh", "--weight-init", "small"],
    "relu weight decay": ["--weight-decay", "1e-3", "--optimizer", "momentum", "--lr", "0.02"],
}


@pytest.mark.parametrize("case", TWIN_CASES)
def test_mlp_twins_record_the_same_figures_in_float64(mnist, one_thread, case):
    """16 steps (2,000 samples, batch 128), recorded every 2: every figure of the two twins
    agrees, and so do the epoch's losses (the float64 twin test, for each activation)."""
    mine, theirs = train_twins(mnist, ["--limit", "2000", "--epochs", "1", "--diagnostics-every", "2",
                                       *TWIN_CASES[case]], limit=2000, n_test=500)
    assert mine["diagnostics"]["steps"] == list(range(1, 17, 2))
    assert_twins_agree(mine["diagnostics"], theirs["diagnostics"])
    for key in ("train_loss", "test_loss"):
        assert mine["epochs"][0][key] == pytest.approx(theirs["epochs"][0][key], rel=1e-9)


def test_cnn_twins_record_the_same_figures_in_float64(mnist, one_thread):
    """The CNN's layers, conv1, conv2 and linear (a conv layer's unit is a channel), over 4 steps."""
    mine, theirs = train_twins(mnist, ["--model", "cnn", "--batch-size", "64", "--epochs", "1",
                                       "--diagnostics-every", "1", "--weight-init", "xavier"],
                               limit=256, n_test=200)
    assert mine["diagnostics"]["layers"] == ["conv1", "conv2", "linear"]
    assert list(mine["diagnostics"]["dead_fraction"]) == ["conv1", "conv2"]
    assert_twins_agree(mine["diagnostics"], theirs["diagnostics"])


def test_default_interval_and_no_diagnostics(mnist, one_thread):
    """By default about 15 records an epoch (469 steps: every 31); --no-diagnostics records none."""
    assert numpy_diagnostics.interval(SimpleNamespace(no_diagnostics=False, diagnostics_every=None), 469) == 31
    assert numpy_diagnostics.interval(SimpleNamespace(no_diagnostics=False, diagnostics_every=None), 4) == 1
    assert numpy_diagnostics.interval(SimpleNamespace(no_diagnostics=True, diagnostics_every=5), 469) is None
    x_train, y_train, x_test, y_test = mnist
    args = experiment.build_parser("numpy", "").parse_args(["--epochs", "1", "--no-diagnostics", "--no-progress"])
    record = numpy_train.train(args, x_train[:300], y_train[:300], x_test[:100], y_test[:100])[1].record
    assert record["diagnostics"] is None


def test_weight_init_reaches_the_pytorch_twin():
    """--init numpy with --weight-init small: the twin holds the very weights the NumPy network
    draws with that scheme (and they are the He draws scaled down, not other draws)."""
    args = experiment.build_parser("pytorch", "").parse_args(["--weight-init", "small", "--activation", "tanh"])
    args.init = "numpy"
    model = torch_train.build_model(args, 784)
    net = NeuralNetwork(seed=0, init="small", activation="tanh")
    for i, layer in enumerate(model.layers(), start=1):
        np.testing.assert_array_equal(layer.weight.detach().numpy().T, net.params[f"W{i}"])
    assert isinstance(model.activation, torch.nn.Tanh)
    assert abs(net.params["W1"].std() - 0.01) < 0.001


# ----------------------------------------------------------------------------- flags

BAD_FLAGS = {
    "unknown activation": (["--activation", "softplus"], "argument --activation: invalid choice: 'softplus'"),
    "interval 0": (["--diagnostics-every", "0"], "argument --diagnostics-every: must be positive, got 0"),
    "activation of the CNN": (["--model", "cnn", "--activation", "tanh"],
                              "argument --activation: sets the MLP's; the CNN keeps ReLU"),
    "unknown init": (["--weight-init", "zeros"], "argument --weight-init: invalid choice: 'zeros'"),
}


@pytest.mark.parametrize("framework", ["numpy", "pytorch"])
@pytest.mark.parametrize("case", BAD_FLAGS)
def test_bad_flags_are_one_line_errors(capsys, framework, case):
    """Each trainer's main() refuses the flag in one line, before any data is loaded."""
    flags, words = BAD_FLAGS[case]
    main = numpy_train.main if framework == "numpy" else torch_train.main
    with pytest.raises(SystemExit) as stop:
        main(flags)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert stop.value.code == 2 and "Traceback" not in err and len(errors) == 1, err
    assert words in errors[0]


def test_weight_init_with_torch_init_is_refused(capsys):
    """--init torch uses PyTorch's own draw: a --weight-init beside it would be silently ignored."""
    with pytest.raises(SystemExit):
        torch_train.main(["--init", "torch", "--weight-init", "small"])
    assert "argument --weight-init: chooses how the NumPy network draws" in capsys.readouterr().err
    parser = experiment.build_parser("pytorch", "")   # the PyTorch trainer's flags, --init among them
    assert parser.parse_args(["--init", "torch"]).weight_init is None          # recorded as null
    assert parser.parse_args([]).weight_init == "he" and parser.parse_args([]).activation == "relu"


# ----------------------------------------------------------------------------- the record

def test_a_recorded_block_loads_and_a_broken_one_is_one_line(tmp_path, mnist, one_thread):
    """A trainer's record with diagnostics passes load_metrics; a series one value short does not."""
    x_train, y_train, x_test, y_test = mnist
    args = experiment.build_parser("numpy", "").parse_args(
        ["--epochs", "1", "--no-progress", "--metrics", str(tmp_path / "m.json"), "--weights", str(tmp_path / "w.npz")])
    net, run = numpy_train.train(args, x_train[:640], y_train[:640], x_test[:100], y_test[:100])
    experiment.finish(run, args)
    record = load_metrics(tmp_path / "m.json")
    assert record["schema"] == 3 and record["diagnostics"]["steps"] == [1, 2, 3, 4, 5]
    record["diagnostics"]["grad_rms"]["layer2"].pop()
    (tmp_path / "m.json").write_text(json.dumps(record))
    with pytest.raises(MetricsError, match=r"diagnostics\['grad_rms'\]\['layer2'\] should be a list of 5 values"):
        load_metrics(tmp_path / "m.json")


def test_the_hidden_figures_are_checked_when_a_record_has_them(tmp_path, mnist, one_thread):
    """A sigmoid MLP's record holds the input percentiles and the saturated share per hidden
    layer and passes load_metrics; a saturated share above 1, or a percentile series of another
    length, is refused in one line. (A record without them, as older ones are, is read: above.)"""
    x_train, y_train, x_test, y_test = mnist
    args = experiment.build_parser("numpy", "").parse_args(
        ["--epochs", "1", "--no-progress", "--activation", "sigmoid", "--metrics", str(tmp_path / "m.json"),
         "--weights", str(tmp_path / "w.npz")])
    _, run = numpy_train.train(args, x_train[:640], y_train[:640], x_test[:100], y_test[:100])
    experiment.finish(run, args)
    record = load_metrics(tmp_path / "m.json")
    for figure in DIAGNOSTICS_PER_HIDDEN_LAYER:
        assert list(record["diagnostics"][figure]) == ["layer1", "layer2"], figure
    for figure, change, message in (("saturated_fraction", lambda v: v.__setitem__(0, 1.5), "should hold values in \\[0, 1\\]"),
                                    ("input_p50", list.pop, "should be a list of 5 values")):
        broken = json.loads(json.dumps(record))
        change(broken["diagnostics"][figure]["layer1"])
        (tmp_path / "m.json").write_text(json.dumps(broken))
        with pytest.raises(MetricsError, match=rf"diagnostics\['{figure}'\]\['layer1'\] {message}"):
            load_metrics(tmp_path / "m.json")
