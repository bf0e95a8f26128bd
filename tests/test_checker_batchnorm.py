"""check.py with batch normalization: the project's batch-normalised MLP passes every check
(python check.py --norm batch), and the classic mistakes are named with the line that made
them: the batch's mean and variance treated as constants (or one of their paths left out),
the biased and the unbiased variance mixed up, gamma's gradient summed over the wrong axis,
and, in the forward pass, the running variance kept biased and evaluation normalised with the
batch's own statistics.

A mistake is planted in the exercise's file filled with its solution (tests/exercise_answers.py),
as a learner would make it, and graded as `python check.py --exercise batchnorm_backward`
grades it; or in a copy of numpy_nn/batchnorm.py's function that the MLP then calls, as
`python check.py --norm batch` checks it. The answers are PyTorch autograd's, in float64.
"""
import linecache
from pathlib import Path

import numpy as np
import pytest

import numpy_nn.neural_network
from checker import network
from checker.exercise import first_problem
from conftest import grade, line_of, planted
from exercise_answers import edited
from numpy_nn import batchnorm
from numpy_nn.neural_network import NeuralNetwork

PAGE = "docs/backprop.md"
REPO = Path(__file__).resolve().parents[1]
SOLUTION_DZ = "(dzhat - dzhat.mean(axis=0) - zhat * (dzhat * zhat).mean(axis=0)) / std"


MESSAGES = {  # each mistake's own words in the checker's output
    "constants": "the batch's mean and variance treated as constants",
    "no mean": "the mean's path is missing",
    "no variance": "the variance's path is missing",
    "unbiased": "the biased and the unbiased variance mixed up",
    "dgamma axis": "summed over the wrong axis. gamma scales its unit in every image of the batch",
    "dgamma without zhat": "this is dbeta, sum(dy)",
    "means over the units": "the means taken over the wrong axis",
}

# a mistake: (the solution's text, the slip, the first wrong quantity)
EXERCISE_MISTAKES = {
    "constants": (SOLUTION_DZ, "dzhat / std", "dz"),
    "no mean": (SOLUTION_DZ, "(dzhat - zhat * (dzhat * zhat).mean(axis=0)) / std", "dz"),
    "no variance": (SOLUTION_DZ, "(dzhat - dzhat.mean(axis=0)) / std", "dz"),
    "unbiased": (SOLUTION_DZ, "(dzhat - dzhat.mean(axis=0) - zhat * (dzhat * zhat).sum(axis=0) / (len(dy) - 1)) / std",
                 "dz"),
    "dgamma axis": ("(dy * zhat).sum(axis=0)", "(dy * zhat).sum(axis=1)", "dgamma"),
    "dgamma without zhat": ("(dy * zhat).sum(axis=0)", "dy.sum(axis=0)", "dgamma"),
    "means over the units": (SOLUTION_DZ, "(dzhat - dzhat.mean(axis=1, keepdims=True) "
                             "- zhat * (dzhat * zhat).mean(axis=1, keepdims=True)) / std", "dz"),
}


def test_the_projects_batchnorm_mlp_passes_every_check(batch):
    """python check.py --norm batch: one line for every gradient backward() computes (dy, dz,
    dgamma, dbeta of each normalised layer among them), the running statistics and the
    evaluation logits, finite differences of gamma and beta, and the two sanity checks."""
    import check
    lines = []
    args = check.parse(["--norm", "batch", "--activation", "sigmoid"])
    assert check.check_network(args, *batch, lines.append)
    text = "\n".join(lines)
    for name in ("dW3", "db3", "dh2", "dy2", "dz2", "dgamma2", "dbeta2", "dW2", "dh1", "dy1", "dz1",
                 "dgamma1", "dbeta1", "dW1", "running_mean1", "running_var2", "gamma1", "beta2"):
        assert f"\n  {name} " in text, name
    assert "(32, 10) eval" in text
    assert "wrong" not in text and "  db1 " not in text and "  b1 " not in text   # no bias in a normalised layer


@pytest.mark.parametrize("mistake", sorted(EXERCISE_MISTAKES))
def test_each_classic_mistake_in_the_exercise_is_named_with_its_line(batch, tmp_path, mistake):
    """The function's own check (the first of --exercise's) names the mistake and the line that
    made the first wrong quantity, and the trainer's refusal names that quantity."""
    old, new, first = EXERCISE_MISTAKES[mistake]
    edited(tmp_path, "batchnorm_backward", f"{old}  #", f"{new}  #")
    ok, text = grade("batchnorm_backward", batch, tmp_path)
    assert not ok
    hints = [line.strip()[3:] for line in text.splitlines() if line.strip().startswith("-> ")]
    assert hints and MESSAGES[mistake] in hints[0], text
    assert hints[0].endswith(f"; see {PAGE}#batch-normalization"), hints[0]
    assert "\n## Batch normalization\n" in (REPO / PAGE).read_text(encoding="utf-8")  # the section it names
    assert not any(m in text for k, m in MESSAGES.items() if k != mistake), text
    assert f"First wrong: {first}. Everything before it is right, so look first at\n" \
           f"      {line_of(tmp_path / 'batchnorm_backward.py', f'{first} = {new}')}" in text, text
    assert "Your function alone is not right yet" in text
    assert first_problem(text.splitlines()) == f"first wrong: {first}"


STAGED = """B = len(dy)
    dvar = (dzhat * zhat * std).sum(axis=0) * -0.5 * std ** -3
    dmean = -(dzhat / std).sum(axis=0)
    dz = dzhat / std + dvar * 2 * zhat * std / B + dmean / B  #"""


def test_a_backward_written_in_stages_passes_and_a_wrong_stage_is_named(batch, tmp_path):
    """The hints' way: dvar and dmean first, then the three paths added. Right, it passes; with
    dvar's sign lost, the checker names dvar's line, not only dz's (found trying the exercise
    as a learner: it used to point at the dz line two lines below the slip)."""
    edited(tmp_path, "batchnorm_backward", f"dz = {SOLUTION_DZ}  #", STAGED)
    ok, text = grade("batchnorm_backward", batch, tmp_path)
    assert ok, text
    wrong = STAGED.replace("* -0.5 *", "* 0.5 *")
    folder = tmp_path / "wrong"                    # another file: linecache keeps the first one's lines
    folder.mkdir()
    edited(folder, "batchnorm_backward", f"dz = {SOLUTION_DZ}  #", wrong)
    ok, text = grade("batchnorm_backward", batch, folder)
    assert not ok
    assert "\n  dmean    (5,)              close" in text and "\n  dz       (6, 5)            wrong" in text, text
    where = line_of(folder / 'batchnorm_backward.py', 'dvar = (dzhat * zhat * std).sum(axis=0) * 0.5 * std ** -3')
    assert f"First wrong: dvar. Everything before it is right, so look first at\n      {where}" in text


def test_the_solution_passes_and_a_blank_fails(batch, tmp_path):
    edited(tmp_path, "batchnorm_backward", "dy * gamma  #", "dy * gamma  #")   # the solution as it is
    ok, text = grade("batchnorm_backward", batch, tmp_path)
    assert ok, text
    assert "Train with it: python numpy_nn/train.py --exercise batchnorm_backward --norm batch" in text
    ok, text = grade("batchnorm_backward", batch)
    assert not ok and "4 blanks still to fill" in text


# ----------------------------------------------------------------------------- python check.py --norm batch

def bn_check(batch, activation="relu"):
    lines = []
    ok = network.check_all(lambda: NeuralNetwork(dtype=np.float64, activation=activation, norm="batch"),
                           *batch, lines.append)
    return ok, "\n".join(lines)


def hint_after(text, row):
    """The hint line under the first row that starts with row."""
    rows = text.splitlines()
    return rows[rows.index(next(r for r in rows if r.startswith(row))) + 1]


def test_a_mistake_in_batchnorm_py_is_named_at_its_call_and_inside_it(batch, monkeypatch):
    """numpy_nn/batchnorm.py's backward with the mean's and variance's paths left out: dz2 is
    named (the mistake recognised in the network's own numbers), the first wrong gradient's line
    is neural_network.py's call, and batchnorm_backward's own check then names its line."""
    new = "dz = dzhat / std"
    wrong = planted(batchnorm.batchnorm_backward,
                    "dz = (dzhat - dzhat.mean(axis=0) - zhat * (dzhat * zhat).mean(axis=0)) / std", new)
    monkeypatch.setattr(numpy_nn.neural_network, "batchnorm_backward", wrong)
    ok, text = bn_check(batch)
    assert not ok
    assert "\n  dy2      (32, 64)          close" in text and "\n  dz2      (32, 64)          wrong" in text, text
    assert MESSAGES["constants"] in hint_after(text, "  dz2 "), text
    assert "  First wrong: dz2. Everything before it is right, so look first at\n      numpy_nn/neural_network.py line" \
           in text, text
    assert "  That line calls batchnorm_backward: its own check looks inside it." in text
    lines = linecache.getlines(wrong.__code__.co_filename)
    number = next(n for n, line in enumerate(lines, start=1) if new in line)
    assert f"look first at\n          {wrong.__code__.co_filename} line {number}: {new}" in text, text


def test_a_running_variance_kept_biased_is_named(batch, monkeypatch):
    """The running variance moved with the biased batch variance: its line says so; the
    gradients of the training step are still right (it does not touch them)."""
    wrong = planted(batchnorm.batchnorm_forward, "running_var += momentum * var * (B / (B - 1))",
                    "running_var += momentum * var")
    monkeypatch.setattr(numpy_nn.neural_network, "batchnorm_forward", wrong)
    ok, text = bn_check(batch)
    assert not ok
    assert "updated with the biased batch variance" in hint_after(text, "  running_var1 "), text
    assert "\n  running_mean1 (128,)       close" in text
    assert "\n  dW1      (784, 128)        close" in text       # the gradients do not depend on it


def test_evaluation_with_the_batchs_statistics_is_named(batch, monkeypatch):
    """Evaluation that normalises with the batch's own statistics (training mode everywhere):
    the evaluation logits' line says so."""
    wrong = planted(batchnorm.batchnorm_forward, "    if not training:\n", "    if False:\n")
    monkeypatch.setattr(numpy_nn.neural_network, "batchnorm_forward", wrong)
    ok, text = bn_check(batch)
    assert not ok
    assert "evaluation normalised with the batch's own statistics" in hint_after(text, "  logits   (32, 10) eval"), text


def test_a_gamma_gradient_over_the_wrong_axis_in_the_network_is_named(batch, monkeypatch):
    wrong = planted(batchnorm.batchnorm_backward, "dgamma = (dy * zhat).sum(axis=0)", "dgamma = (dy * zhat).sum(axis=1)")
    monkeypatch.setattr(numpy_nn.neural_network, "batchnorm_backward", wrong)
    ok, text = bn_check(batch)
    assert not ok
    assert "shape (32,), expected (64,): summed over the wrong axis" in hint_after(text, "  dgamma2 "), text


def test_check_py_flags_for_batch_normalization(capsys):
    """--norm batch on the CNN, and the exercises checked with another --norm than their own,
    are one-line refusals."""
    import check
    for argv, message in ((["--model", "cnn", "--norm", "batch"], "argument --norm: normalises the MLP's hidden layers"),
                          (["--exercise", "batchnorm_backward", "--norm", "none"], "is checked with --norm batch"),
                          (["--exercise", "mlp_backward", "--norm", "batch"], "is checked with --norm none")):
        with pytest.raises(SystemExit) as stop:
            check.parse(argv)
        assert stop.value.code == 2
        assert message in capsys.readouterr().err


def test_the_exercise_is_checked_on_a_batch_normalised_mlp():
    import check
    assert check.parse(["--exercise", "batchnorm_backward"]).norm == "batch"
