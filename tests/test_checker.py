"""check.py's checker: it passes the project's own networks, and it names each classic
mistake when one is planted in a copy of the code.

A mistake is planted by taking the source of the real function (NeuralNetwork.backward,
CNN.backward, cross_entropy_with_grad, log_softmax), changing one line, and compiling the
result: the checker then sees exactly what a learner's slip would give.
"""
import linecache
import math

import numpy as np
import pytest

from checker import network
from checker.network import check_all, gradients
from conftest import grade, planted, run_in_process
from numpy_nn import utils
from numpy_nn.cnn import CNN
from numpy_nn.neural_network import NeuralNetwork


def run(net, x, y):
    """The gradient check's lines and verdict."""
    lines = []
    ok, *_ = gradients(net, x, y, lines.append)
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

from checker import guard  # noqa: E402
from exercise_answers import edited, fill_into  # noqa: E402
from exercises import EXERCISES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


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


SOFTMAX_START = "    n = len(y)\n"  # the first line of softmax_cross_entropy's body


@pytest.mark.parametrize("body, said", [
    ("    import sys\n    sys.exit(0)\n", "stopped with SystemExit: your code called sys.exit(0), which would end "
                                         "the whole program"),
    ("    raise KeyboardInterrupt\n", "stopped with KeyboardInterrupt: your code raised KeyboardInterrupt"),
])
def test_a_learners_exit_is_their_codes_failure(batch, tmp_path, body, said):
    """sys.exit(0) or KeyboardInterrupt inside the learner's function is a failure of it, named
    in one line with its line: the check goes on to its verdict (not passed), where the SystemExit
    used to end check.py with status 0."""
    edited(tmp_path, "softmax_cross_entropy", SOFTMAX_START, body)
    ok, text = grade("softmax_cross_entropy", batch, tmp_path)
    assert not ok
    assert f"cross_entropy_with_grad {said}" in text, text
    line = body.splitlines()[-1].strip()
    assert f"softmax_cross_entropy.py line {body_line(tmp_path, line)}: {line}" in text, text
    assert text.rstrip().endswith("Your code stopped with an error: fix the line named above first, then check again.")


def body_line(folder, text):
    """The number of the line of folder's softmax_cross_entropy.py that holds text."""
    lines = (folder / "softmax_cross_entropy.py").read_text().splitlines()
    return [n for n, line in enumerate(lines, start=1) if line.strip() == text][0]


def test_a_call_that_never_ends_is_stopped_at_its_time_limit(batch, tmp_path, monkeypatch):
    """An endless loop in the learner's function: the call is stopped at its limit (the floor,
    lowered here to 0.5 s to keep the test short) with one line naming the function, the file's
    line it was on and the limit; before, check.py hung."""
    monkeypatch.setattr(guard, "LIMIT_FLOOR", 0.5)
    edited(tmp_path, "softmax_cross_entropy", SOFTMAX_START, "    while True:\n        pass\n")
    with pytest.raises(guard.Overran) as stopped:
        grade("softmax_cross_entropy", batch, tmp_path)
    message = str(stopped.value)
    assert "\n" not in message
    file = tmp_path / "softmax_cross_entropy.py"
    looping = [f"{file} line {body_line(tmp_path, text)}: {text}" for text in ("while True:", "pass")]
    assert any(message.startswith(f"your {file} (cross_entropy_with_grad) ran past its time limit of 0.5 s, "
                                  f"at {at} (") for at in looping), message
    assert "(the project's own takes" in message and "the limit is 100 times that, and at least 0.5 s)" in message


def test_the_time_limit_is_a_multiple_of_the_projects_own_time(batch, tmp_path, monkeypatch):
    """Above the floor, a call may take LIMIT_MULTIPLE times what the project's function took on
    the same input. With no floor and a multiple of 100, a learner's loss that first sleeps 0.3 s
    is stopped inside the sleep, at 100 times the project's time (0.088 ms here: 9 ms, well
    under 0.3 s). (A multiple of 1 was flaky: 0.09 ms after the call began, the timer sometimes
    fired on the line before the sleep.)"""
    import re
    monkeypatch.setattr(guard, "LIMIT_FLOOR", 0.0)
    monkeypatch.setattr(guard, "LIMIT_MULTIPLE", 100)
    edited(tmp_path, "softmax_cross_entropy", SOFTMAX_START, "    import time\n    time.sleep(0.3)\n    n = len(y)\n")
    with pytest.raises(guard.Overran) as stopped:
        grade("softmax_cross_entropy", batch, tmp_path)
    message = str(stopped.value)
    assert re.search(r"at \S+ line \d+: time.sleep\(0.3\) \(the project's own takes [0-9.e-]+ ms on this input; "
                     r"the limit is 100 times that, and at least 0 s\)$", message), message
    assert float(re.search(r"time limit of ([0-9.e+-]+) s", message).group(1)) < 0.3


def test_a_result_that_is_not_numbers_is_named_not_a_traceback(batch, tmp_path):
    """A loss returned as a string and dlogits as an array of objects, or a max-pooling backward
    that returns a string: each is one line saying what came back, where a TypeError or a
    ValueError used to end check.py."""
    edited(tmp_path, "softmax_cross_entropy", "    return float(loss), dlogits",
           "    return '2.3', np.zeros(dlogits.shape, dtype=object)")
    ok, text = grade("softmax_cross_entropy", batch, tmp_path)
    assert not ok and "cross_entropy_with_grad returned a loss that is the string '2.3', not a number" in text, text
    edited(tmp_path, "maxpool_backward", "    return dx", "    return 'dx'")
    ok, text = grade("maxpool_backward", batch, tmp_path)
    assert not ok and "the string 'dx', where a NumPy array of numbers belongs" in text, text
    assert "  dx       (2, 3, 7, 7)      type" in text, text


def test_an_exercise_file_that_is_not_utf8_is_one_line(batch, tmp_path):
    from exercise_answers import filled
    text = filled("softmax_cross_entropy").replace("Hints:", "Hints (caf\u00e9):")
    (tmp_path / "softmax_cross_entropy.py").write_bytes(text.encode("latin-1"))
    ok, said = grade("softmax_cross_entropy", batch, tmp_path)
    line = text.splitlines().index("Hints (caf\u00e9):") + 1
    assert not ok and f"softmax_cross_entropy.py, line {line}: not UTF-8 text (byte 0xe9); save the file as UTF-8" in said


def check_command(folder, *flags):
    """check.py run as a learner runs it, on the exercises in folder."""
    script = (f"import runpy, sys; sys.path.insert(0, {str(REPO)!r}); import exercises; "
              f"exercises.FOLDER = __import__('pathlib').Path({str(folder)!r}); "
              f"sys.argv = ['check.py', *{list(flags)!r}]; "
              f"runpy.run_path({str(REPO / 'check.py')!r}, run_name='__main__')")
    return [sys.executable, "-c", script]


@pytest.mark.slow
def test_ctrl_c_during_a_check_is_one_line_and_130(tmp_path):
    """Ctrl-C while the learner's function loops: one line, exit status 130 (no traceback
    through checker/trace.py). SIGINT is reset in the child: a background job inherits it ignored."""
    import signal
    import time as clock
    edited(tmp_path, "softmax_cross_entropy", SOFTMAX_START, "    print('looping', flush=True)\n    while True:\n        pass\n")
    proc = subprocess.Popen(check_command(tmp_path, "--exercise", "softmax_cross_entropy"), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:                       # the loop has begun
        if line.strip() == "looping":
            break
    clock.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err == "check.py: interrupted (Ctrl-C); nothing was checked to the end\n"


def test_check_py_exits_0_when_everything_holds_and_1_on_a_blank_exercise():
    """check.py as a learner runs it (a process of its own), then on a blank exercise from
    another folder (its main(argv), in this process)."""
    import check
    ok = subprocess.run([sys.executable, "check.py", "--activation", "tanh"], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.rstrip().endswith("Everything holds.") and "  dz1 " in ok.stdout
    blank = run_in_process(check.main, REPO / "check.py", ["--exercise", "mlp_backward"], cwd=REPO / "numpy_nn")
    assert blank.returncode == 1 and "Traceback" not in blank.stdout + blank.stderr
    assert "exercises/mlp_backward.py line" in blank.stdout


def test_check_py_refuses_bad_flags_in_one_line():
    import check
    bad = run_in_process(check.main, REPO / "check.py", ["--hidden", "0"])
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("check.py: error: argument --hidden")


@pytest.mark.parametrize("flags, message", [
    (["--seed", "-1"], "argument --seed: must be a whole number from 0, got -1"),
    (["--exercise", "mlp_backward", "--model", "cnn"], "argument --model: the exercise mlp_backward is checked on the MLP"),
    (["--model", "cnn", "--activation", "tanh"], "argument --hidden/--activation: set the MLP's"),
    (["--model", "cnn", "--hidden", "32"], "argument --hidden/--activation: set the MLP's"),
    # a layer of 1 unit cannot learn 32 images by heart (the sanity check), and one entry per
    # bias is fewer than the finite differences draw: it ended in a traceback
    (["--hidden", "1"], "argument --hidden: sizes of at least 16: narrower layers cannot learn 32 images"),
])
def test_check_py_refuses_what_it_would_otherwise_ignore(flags, message, capsys):
    import check
    with pytest.raises(SystemExit) as stop:
        check.parse(flags)
    assert stop.value.code == 2
    err = capsys.readouterr().err                  # (prog is pytest's here, check.py in a shell)
    assert err.count("\n") == 1 and f": error: {message}" in err, err


def test_the_narrowest_mlp_check_py_takes_passes_the_sanity_checks(batch):
    """check.NARROWEST: one hidden layer of that many units learns the batch by heart, with
    each activation (seed 0); the sizes below it are refused for not doing so."""
    import check
    for activation in ("relu", "sigmoid", "tanh"):
        lines = []
        assert network.sanity(lambda: NeuralNetwork((784, check.NARROWEST, 10), dtype=np.float64,
                                                    activation=activation), *batch, lines.append), "\n".join(lines)


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


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_the_init_check_passes_every_seed_and_refuses_weights_twice_too_large(batch, activation):
    """check.py --seed N: the project's own MLP starts within INIT_TOLERANCE of ln 10 at seeds
    0-199 (a sigmoid MLP failed at seeds 4, 13, 51, ... with 0.5: its logits' per-class offset,
    see INIT_TOLERANCE), and with ReLU, whose logits keep their size, every weight twice as large
    is refused at every seed."""
    import check
    from checker.network import INIT_TOLERANCE, maker
    for seed in range(200):
        net = maker("mlp", check.MLP_HIDDEN, activation, seed)()
        assert abs(net.loss(*batch) - math.log(10)) <= INIT_TOLERANCE, seed
        if activation == "relu":
            for name, p in net.params.items():
                if name.startswith("W"):
                    p *= 2
            assert abs(net.loss(*batch) - math.log(10)) > INIT_TOLERANCE, seed
    if activation == "sigmoid":
        lines = []
        assert network.sanity(maker("mlp", check.MLP_HIDDEN, "sigmoid", 4), *batch, lines.append), lines


def test_a_product_whose_sizes_do_not_fit_says_what_that_means(batch, tmp_path):
    """dh = dz @ W (the transpose left out) in the exercise: backward() stops with NumPy's
    'matmul: Input operand 1 has a mismatch in its core dimension 0, with gufunc signature
    (n?,k),(k,m?)->(n?,m?) (size 64 is different from 10)', which told a learner nothing, and
    the last line said to read the lines marked wrong, where none was. Now a line says what
    the sizes mean and where the shape rule is derived, and the last line says to fix the line
    that stopped."""
    edited(tmp_path, "mlp_backward", "dz @ W.T", "dz @ W")
    ok, text = grade("mlp_backward", batch, tmp_path)
    assert not ok
    assert ("-> a matrix product's sizes do not fit: in A @ B, A's last size must be B's first, and here one is 10, "
            "the other 64") in text, text
    assert "see docs/backprop.md#from-one-weight-to-the-matrix" in text
    assert text.splitlines()[-1] == "Your code stopped with an error: fix the line named above first, then check again."
