"""check.py's checker: it passes the project's own networks, and it names each classic
mistake when one is planted in a copy of the code.

A mistake is planted by taking the source of the real function (NeuralNetwork.backward,
CNN.backward, cross_entropy_with_grad, log_softmax), changing one line, and compiling the
result: the checker then sees exactly what a learner's slip would give.
"""
import inspect
import linecache
import math
import textwrap

import numpy as np
import pytest

from checker import network
from checker.network import check_all, gradients
from data_loader import load_mnist
from numpy_nn import utils
from numpy_nn.cnn import CNN
from numpy_nn.neural_network import NeuralNetwork

B = 32


@pytest.fixture(scope="module")
def batch():
    x_train, y_train, _, _ = load_mnist()
    return x_train[:B].astype(np.float64), y_train[:B]


def planted(function, old, new):
    """A copy of function with the line holding `old` changed to hold `new`."""
    source = textwrap.dedent(inspect.getsource(function))
    assert source.count(old) == 1, f"{old!r} is not one place in {function.__qualname__}"
    source = source.replace(old, new)
    filename = f"<planted {function.__qualname__}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)  # so lines can be shown
    namespace = dict(function.__globals__)
    exec(compile(source, filename, "exec"), namespace)
    return namespace[function.__name__]


def run(net, x, y):
    """The gradient check's lines and verdict."""
    lines = []
    ok, _ = gradients(net, x, y, lines.append)
    return ok, "\n".join(lines)


def mlp(activation="relu", backward=None):
    net = NeuralNetwork(dtype=np.float64, activation=activation)
    if backward:
        net.backward = backward.__get__(net)       # this network only: the class stays as it is
    return net


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_the_projects_mlp_passes_every_check(batch, activation):
    lines = []
    assert check_all(lambda: mlp(activation), *batch, lines.append)
    text = "\n".join(lines)
    for name in ("dW3", "db3", "dh2", "dz2", "dW2", "db2", "dh1", "dz1", "dW1", "db1"):
        assert f"\n  {name} " in text                # one line for every gradient backward() computes
    assert "wrong" not in text


def test_the_projects_cnn_and_a_deeper_mlp_pass_every_check(batch):
    for make in (lambda: CNN(dtype=np.float64),
                 lambda: NeuralNetwork((784, 256, 128, 64, 10), dtype=np.float64)):
        lines = []
        assert check_all(make, *batch, lines.append), "\n".join(lines)
    assert "  dz1 " in "\n".join(lines) and "  dW4 " in "\n".join(lines)


def test_the_answer_keys_self_check_catches_steps_that_are_not_the_twins_forward(batch):
    """reference._run checks that its named steps give the twin's logits (to 1e-12; see there
    why not exactly). Steps with the activation left out must fail that check."""
    import torch
    from checker import reference
    from pytorch_nn import model as torch_mlp
    from pytorch_nn.numpy_weights import load_numpy_params
    net = mlp("tanh")
    model = load_numpy_params(torch_mlp.MLP(net.sizes, activation="tanh").double(), net.params)
    right = [("z1", model.hidden[0]), ("h1", model.activation), ("z2", model.hidden[1]),
             ("h2", model.activation), ("logits", model.out)]
    t, _ = reference._run(model, right, *batch)
    assert torch.allclose(t["logits"], torch.from_numpy(reference.mlp_reference(net, *batch).logits), rtol=0, atol=1e-12)
    with pytest.raises(AssertionError, match="not the twin's forward"):
        reference._run(model, [step for step in right if step[0] != "h2"], *batch)


MESSAGES = {  # each mistake's own words in the checker's output
    "batch": "32 times too large, the batch size",
    "bias axis": "summed over the wrong axis",
    "transposed": "transposed",
    "no mask": "the activation's derivative is missing",
    "wrong mask": "the ReLU mask was taken from the wrong tensor",
    "sign": "the sign is flipped",
    "overflow": "exp() overflows",
}

MLP_MISTAKES = {  # a one-line change to NeuralNetwork.backward, the first gradient it breaks, the message
    "bias axis": ("db = dz.sum(axis=0)", "db = dz.sum(axis=1)", "db3"),
    "transposed": ("dW = h_prev.T @ dz", "dW = dz.T @ h_prev", "dW3"),
    "no mask": ('dz = dh * self.f_grad(cache[f"a{i - 1}"])', "dz = dh", "dz2"),
    "wrong mask": ('dz = dh * self.f_grad(cache[f"a{i - 1}"])', "dz = dh * self.f_grad(dh)", "dz2"),
    "sign": ("dh = dz @ W.T", "dh = -(dz @ W.T)", "dh2"),
}


@pytest.mark.parametrize("mistake", sorted(MLP_MISTAKES))
def test_each_planted_mistake_in_the_mlp_gets_its_own_message(batch, mistake):
    old, new, first = MLP_MISTAKES[mistake]
    ok, text = run(mlp(backward=planted(NeuralNetwork.backward, old, new)), *batch)
    assert not ok
    assert MESSAGES[mistake] in text, text
    others = [m for k, m in MESSAGES.items() if k != mistake and m not in MESSAGES[mistake]]
    assert not any(m in text for m in others), text
    # localised: the first wrong gradient, and the line that computed it
    assert f"First wrong: {first}." in text, text
    where = text.split("First wrong:")[1].split("\n")[1].strip()
    assert where.startswith("<planted NeuralNetwork.backward> line") and new in where, text


def test_a_wrong_line_of_the_right_shape_is_localised_to_that_line(batch):
    new = "dW = h_prev.T @ (dz * dz)"
    backward = planted(NeuralNetwork.backward, "dW = h_prev.T @ dz", new)
    source = linecache.getlines(backward.__code__.co_filename)
    line = next(n for n, text in enumerate(source, start=1) if new in text)
    ok, text = run(mlp(backward=backward), *batch)
    assert not ok
    assert "\n  dW3      (64, 10)          wrong" in text
    assert "\n  db3      (10,)             close" in text  # db3 never read dW3: still right
    assert f"First wrong: dW3. Everything before it is right, so look first at\n" \
           f"      <planted NeuralNetwork.backward> line {line}: {new}" in text, text
    assert not any(m in text for m in MESSAGES.values()), text  # no classic mistake to name


def test_a_missing_relu_mask_in_the_cnn_is_named(batch):
    backward = planted(CNN.backward, 'dz1 = da1 * relu_grad(cache["z1"])', "dz1 = da1")
    net = CNN(dtype=np.float64)
    net.backward = backward.__get__(net)
    ok, text = run(net, *batch)
    assert not ok and MESSAGES["no mask"] in text and "First wrong: dz1." in text, text


def test_a_forgotten_one_over_b_is_named_at_dlogits(batch, monkeypatch):
    monkeypatch.setattr(utils, "cross_entropy_with_grad",
                        planted(utils.cross_entropy_with_grad, "dlogits /= n", "pass"))
    ok, text = run(mlp(), *batch)
    assert not ok and MESSAGES["batch"] in text
    assert "First wrong: dlogits." in text and "<planted cross_entropy_with_grad> line" in text, text


def test_a_softmax_without_the_max_subtracted_is_named(batch, monkeypatch):
    monkeypatch.setattr(utils, "log_softmax", planted(
        utils.log_softmax, "shifted = logits - logits.max(axis=1, keepdims=True)", "shifted = logits"))
    with np.errstate(over="ignore", invalid="ignore"):
        ok, text = run(mlp(), *batch)
    assert not ok and MESSAGES["overflow"] in text, text
    assert "  loss     ()                close" in text   # at these small logits the loss is right


def test_a_blank_line_and_an_error_are_one_line_each_not_a_traceback(batch):
    ok, text = run(mlp(backward=planted(NeuralNetwork.backward, "dh = dz @ W.T", "dh = ..."), ), *batch)
    assert not ok
    assert "  dh2      (32, 64)          blank" in text
    assert "backward() stopped with TypeError" in text and "Traceback" not in text


def test_the_sanity_checks_catch_a_bad_recipe(batch):
    lines = []
    network.sanity(lambda: NeuralNetwork(dtype=np.float64, init="small"), *batch, lines.append)
    init_line = [line for line in lines if "init" in line][0]
    assert "ok" in init_line and f"{math.log(10):.3f}" in init_line  # a small init starts at ln 10 exactly...

    class Timid(utils.Adam):                       # ...and an update 1000 times too small learns nothing
        def step(self, grads):
            super().step(grads * 0)
    lines = []
    from unittest import mock
    with mock.patch.dict(utils.OPTIMIZERS, adam=lambda p, lr: Timid(p, lr)):
        assert not network.sanity(lambda: NeuralNetwork(dtype=np.float64), *batch, lines.append)
    assert "wrong" in [line for line in lines if "overfit" in line][0]


# ----------------------------------------------------------------------------- check.py --exercise

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from checker.exercise import check_exercise  # noqa: E402
from exercise_answers import fill_into  # noqa: E402
from exercises import EXERCISES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def grade(name, batch, folder=None):
    """check.py --exercise name, in-process: (verdict, its lines)."""
    import check
    args = check.parse(["--exercise", name])
    lines = []
    ok = check_exercise(name, *batch, lines.append,
                        lambda x, y, say: check.check_network(args, x, y, say), folder=folder)
    return ok, "\n".join(lines)


@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    return fill_into(tmp_path_factory.mktemp("solved"))


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_each_exercise_passes_the_checker_with_its_solution(batch, solved, name):
    ok, text = grade(name, batch, solved)
    assert ok, text
    assert "wrong" not in text and "blank" not in text
    assert f"Your {name} passes. Train with it: python numpy_nn/train.py --exercise {name}" in text


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_each_blank_exercise_fails_with_the_checkers_message(batch, name):
    ok, text = grade(name, batch)                  # the files as committed: blank
    assert not ok
    assert "blanks still to fill (`...  # TODO`), lines" in text
    assert "stopped with" in text or "blank" in text  # the first blank, named: no traceback
    assert "Traceback" not in text
    first = EXERCISES[name].file.read_text().splitlines().index(
        next(line for line in EXERCISES[name].file.read_text().splitlines() if "...  # TODO" in line)) + 1
    assert f"Fill in the blanks, from line {first} on: " in text   # where to start, not where it broke


def test_check_py_exits_0_when_everything_holds_and_1_on_a_blank_exercise():
    ok = subprocess.run([sys.executable, "check.py", "--activation", "tanh"], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.rstrip().endswith("Everything holds.") and "  dz1 " in ok.stdout
    blank = subprocess.run([sys.executable, str(REPO / "check.py"), "--exercise", "mlp_backward"],
                           cwd=REPO / "numpy_nn", capture_output=True, text=True, timeout=300)
    assert blank.returncode == 1 and "Traceback" not in blank.stdout + blank.stderr
    assert "exercises/mlp_backward.py line" in blank.stdout


def test_check_py_refuses_bad_flags_in_one_line():
    bad = subprocess.run([sys.executable, "check.py", "--hidden", "0"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("check.py: error: argument --hidden")


@pytest.mark.parametrize("flags, message", [
    (["--seed", "-1"], "argument --seed: must be a whole number from 0, got -1"),
    (["--exercise", "mlp_backward", "--model", "cnn"], "argument --model: the exercise mlp_backward is checked on the MLP"),
    (["--model", "cnn", "--activation", "tanh"], "argument --hidden/--activation: set the MLP's"),
    (["--model", "cnn", "--hidden", "32"], "argument --hidden/--activation: set the MLP's"),
])
def test_check_py_refuses_what_it_would_otherwise_ignore(flags, message):
    import check
    with pytest.raises(SystemExit) as stop:
        check.parse(flags)
    assert stop.value.code == 2


def test_a_narrow_sigmoid_mlp_passes_the_sanity_checks(batch):
    """The slowest of the project's MLPs to learn 32 images (sigmoid, 16 hidden units: 224-269
    steps for seeds 0-2) is no mistake: the overfit budget covers it."""
    lines = []
    assert network.sanity(lambda: NeuralNetwork((784, 16, 10), dtype=np.float64, activation="sigmoid"),
                          *batch, lines.append), "\n".join(lines)


def test_a_negative_loss_never_passes_the_overfit_check(batch, monkeypatch):
    """A softmax with its max taken over the wrong axis can drive the 'loss' to -inf: not a fit."""
    monkeypatch.setattr(utils, "log_softmax", planted(
        utils.log_softmax, "shifted = logits - logits.max(axis=1, keepdims=True)",
        "shifted = logits - logits.max(axis=0, keepdims=True)"))
    import numpy_nn.train
    monkeypatch.setattr(numpy_nn.train, "cross_entropy_with_grad", planted(
        utils.cross_entropy_with_grad, "loss = -logp[np.arange(n), y].mean()", "loss = logp[np.arange(n), y].mean()"))
    lines = []
    with np.errstate(all="ignore"):
        assert not network.sanity(lambda: NeuralNetwork(dtype=np.float64), *batch, lines.append)
    assert "a cross-entropy is never negative" in "\n".join(lines)


def test_a_summed_loss_is_named_as_a_sum_and_located(batch, monkeypatch):
    monkeypatch.setattr(utils, "cross_entropy_with_grad", planted(
        utils.cross_entropy_with_grad, "loss = -logp[np.arange(n), y].mean()", "loss = -logp[np.arange(n), y].sum()"))
    ok, text = run(mlp(), *batch)
    assert not ok and "the loss is the mean over the batch, not the sum" in text
    assert "First wrong: loss." in text and "<planted cross_entropy_with_grad> line" in text, text
