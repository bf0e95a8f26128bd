"""check.py on the CNN's layers as it is on the MLP: each classic mistake of a convolution's or a
max-pooling's backward pass, planted in a working copy, is named with the line that made it;
and the two traps of the whole check: labels changed in place by the loss, and a gradient off
by a constant factor that the overfit check, with Adam, cannot see.

A mistake is planted in the exercise's file filled with its solution (tests/exercise_answers.py),
as a learner would make it, and graded as `python check.py --exercise NAME` grades it; or in a
copy of numpy_nn/layers.py's function that the CNN then calls, as `python check.py --model cnn`
checks it. The answers the checker compares with are PyTorch autograd's, in float64.
"""
import linecache
from pathlib import Path

import numpy as np
import pytest

import numpy_nn.cnn
import numpy_nn.train
from checker import network
from checker.exercise import first_problem
from conftest import grade, line_of, planted
from exercise_answers import edited
from numpy_nn import layers, utils
from numpy_nn.cnn import CNN
from numpy_nn.neural_network import NeuralNetwork

PAGE = "docs/backprop.md"
REPO = Path(__file__).resolve().parents[1]


MESSAGES = {  # each mistake's own words in the checker's output
    "dW reshaped": "reshaped without its transpose",
    "db mean": "a mean over dout's N*H'*W' rows where the sum belongs",
    "dcols operands": "the product's operands are swapped",
    "dWm transposed": "dWm has Wm's shape C*kh*kw,O",
    "pool to every position": "dout sent to every position of its window",
    "pool mask everywhere": "True at all 4 positions of every window",
}

# a mistake: (exercise, the solution's text, the slip, the first wrong quantity, a measured
# number the message must give). The conv check's input: 2 images, 5x4 outputs (7x6 under a
# 3x3 kernel), so db as a mean is 1/(2*5*4) = 1/40 of the sum.
EXERCISE_MISTAKES = {
    "dW reshaped": ("conv_backward", "dW = dWm.T.reshape(W.shape)", "dW = dWm.reshape(W.shape)", "dW", None),
    "db mean": ("conv_backward", "db = dout.sum(axis=0)", "db = dout.mean(axis=0)", "db", "1/40 of the right one"),
    "dcols operands": ("conv_backward", "dcols = dout @ Wm.T", "dcols = Wm @ dout.T", "dcols",
                       "shape (27, 40), expected (40, 27)"),
    "dWm transposed": ("conv_backward", "dWm = cols.T @ dout", "dWm = dout.T @ cols", "dWm",
                       "shape (4, 27), expected (27, 4)"),
    "pool to every position": ("maxpool_backward", "dwindows = mask * dout[..., None]",
                               "dwindows = dout[..., None] * np.ones(4)", "dwindows", None),
    "pool mask everywhere": ("maxpool_backward", "mask = np.arange(4) == first[..., None]",
                             "mask = np.ones(first.shape + (4,), dtype=bool)", "mask", None),
}


@pytest.mark.parametrize("mistake", sorted(EXERCISE_MISTAKES))
def test_each_mistake_in_a_layer_exercise_is_named_with_its_line(batch, tmp_path, mistake):
    """The layer's own check (the first of --exercise's) names the mistake, by how much where
    it measures a factor, and the line that made the first wrong quantity; it used to print
    only `dW (4, 3, 3, 3) wrong max|diff| 1.8e+01 rel 9.5e-01`."""
    name, old, new, first, measured = EXERCISE_MISTAKES[mistake]
    edited(tmp_path, name, f"{old}  #", f"{new}  #")
    ok, text = grade(name, batch, tmp_path)
    assert not ok
    hints = [line.strip()[3:] for line in text.splitlines() if line.strip().startswith("-> ")]
    assert hints and MESSAGES[mistake] in hints[0], text
    assert hints[0].endswith(f"; see {PAGE}#the-cnn"), hints[0]
    assert "\n## The CNN\n" in (REPO / PAGE).read_text(encoding="utf-8")   # the section #the-cnn names
    assert measured is None or measured in hints[0], hints[0]
    others = [m for k, m in MESSAGES.items() if k != mistake]
    assert not any(m in text for m in others), text
    assert f"First wrong: {first}. Everything before it is right, so look first at\n" \
           f"      {line_of(tmp_path / f'{name}.py', new)}" in text, text
    assert "Your function alone is not right yet" in text
    assert first_problem(text.splitlines()) == f"first wrong: {first}"   # the trainer's refusal, its case kept


# ----------------------------------------------------------------------------- python check.py --model cnn

def failed_cnn_check(batch):
    """check.py --model cnn's gradient check, which fails: its lines."""
    lines = []
    ok, *_ = network.gradients(CNN(dtype=np.float64), *batch, lines.append)
    assert not ok
    return "\n".join(lines)


def planted_line(function, text):
    """'<planted f> line N: text', the line of a planted copy holding text."""
    lines = linecache.getlines(function.__code__.co_filename)
    return f"{function.__code__.co_filename} line " \
           f"{next(n for n, line in enumerate(lines, start=1) if text in line)}: {text}"


def cnn_check(batch):
    lines = []
    ok = network.check_all(lambda: CNN(dtype=np.float64), *batch, lines.append)
    return ok, "\n".join(lines)


def test_a_layer_mistake_in_the_cnn_is_named_at_its_call_and_inside_the_layer(batch, monkeypatch):
    """python check.py --model cnn with numpy_nn/layers.py's conv2d_backward reshaping dWm without
    its transpose: dW2 is named (the same mistake, recognised in the network's own numbers), the
    first wrong gradient's line is cnn.py's call, and the layer's own check then names the line
    inside conv2d_backward. Before, the check stopped at cnn.py's line."""
    new = "dW = dWm.reshape(W.shape)"
    conv = planted(layers.conv2d_backward, "dW = dWm.T.reshape(W.shape)", new)
    monkeypatch.setattr(numpy_nn.cnn, "conv2d_backward", conv)
    text = failed_cnn_check(batch)
    assert "\n  dW2      (64, 32, 3, 3)    wrong" in text and "\n  db2      (64,)             close" in text, text
    rows = text.splitlines()
    hint = rows[rows.index(next(r for r in rows if r.startswith("  dW2 "))) + 1]
    assert MESSAGES["dW reshaped"] in hint, text
    call = line_of(REPO / "numpy_nn" / "cnn.py", "dh1, g[\"W2\"][...], g[\"b2\"][...] = conv2d_backward(dz2, ")
    assert "  First wrong: dW2. Everything before it is right, so look first at\n" \
           f"      {call.removeprefix(str(REPO) + '/')}" in text, text
    assert "  That line calls conv2d_backward: its own check looks inside it.\n" \
           "    conv2d_backward on 2 images of 3 channels, 7x6, 4 kernels of 3x3:" in text, text
    assert f"      First wrong: dW. Everything before it is right, so look first at\n" \
           f"          {planted_line(conv, new)}" in text, text


def test_a_pooling_gradient_sent_everywhere_is_named_in_the_cnn(batch, monkeypatch):
    """max-pooling's backward sending dout to all 4 positions, in the CNN: da2 gets the message
    (judged against the pooling's output gradient dh2, which is right), and the layer's check
    names the line inside maxpool2d_backward."""
    new = "dwindows = dout[..., None] * np.ones(4)"
    pool = planted(layers.maxpool2d_backward, "dwindows = mask * dout[..., None]", new)
    monkeypatch.setattr(numpy_nn.cnn, "maxpool2d_backward", pool)
    text = failed_cnn_check(batch)
    rows = text.splitlines()
    da2 = rows.index(next(r for r in rows if r.startswith("  da2 ")))
    assert "wrong" in rows[da2] and MESSAGES["pool to every position"] in rows[da2 + 1], text
    call = line_of(REPO / "numpy_nn" / "cnn.py", "da2 = maxpool2d_backward(dh2, ")
    assert "  First wrong: da2. Everything before it is right, so look first at\n" \
           f"      {call.removeprefix(str(REPO) + '/')}" in text, text
    assert f"      First wrong: dwindows. Everything before it is right, so look first at\n" \
           f"          {planted_line(pool, new)}" in text, text


def test_a_bias_gradient_taken_as_a_mean_in_the_cnn_is_named_and_the_overfit_says_it_is_blind(batch, monkeypatch):
    """conv2d_backward's db as a mean over dout's rows, in the CNN: db2 is 1/(32*11*11) = 1/3872
    of the right one and db1 1/(32*26*26) = 1/21632 (32 images, conv2's 11x11 outputs and
    conv1's 26x26), each named with the factor the checker measured. The overfit check still
    passes, as Adam divides a constant factor out; its line says so."""
    conv = planted(layers.conv2d_backward, "db = dout.sum(axis=0)", "db = dout.mean(axis=0)")
    monkeypatch.setattr(numpy_nn.cnn, "conv2d_backward", conv)
    ok, text = cnn_check(batch)
    assert not ok
    assert "1/3872 of the right one, 1/(N*H'*W') = 1/(32*11*11): " + MESSAGES["db mean"] in text, text
    assert "1/21632 of the right one, 1/(N*H'*W') = 1/(32*26*26): " + MESSAGES["db mean"] in text, text
    overfit = text[text.index("\n  overfit"):].splitlines()
    assert overfit[1].split()[1] == "ok", text
    assert overfit[2] == (
        "      -> passes only because Adam is blind to a constant factor, and these gradients are off by just such a factor "
        "(b2: 1/3872 of the right size; b1: 1/21632 of the right size). Adam's step, lr m / (sqrt(v) + eps), is "
        "the same for k g as for g (eps, 1e-8, aside); SGD's, lr g, would be off by those factors. Fix the "
        f"gradients above; see {PAGE}#the-updates"), text


def test_a_missing_one_over_b_passes_the_overfit_only_because_of_adam_and_the_check_says_so(batch, monkeypatch):
    """dlogits without its 1/B makes every gradient 32 times too large; Adam, dividing by
    sqrt(v), learns the 32 images by heart all the same, so the overfit line is ok. It now says
    why that proves nothing here, with the factor the gradients' check measured (and says
    nothing of the kind where the gradients are right)."""
    right = []
    assert network.check_all(lambda: NeuralNetwork(dtype=np.float64), *batch, right.append)
    assert "blind" not in "\n".join(right)
    slip = planted(utils.cross_entropy_with_grad, "dlogits /= n", "pass")
    monkeypatch.setattr(utils, "cross_entropy_with_grad", slip)
    monkeypatch.setattr(numpy_nn.train, "cross_entropy_with_grad", slip)     # the trainer's step's own name
    lines = []
    assert not network.check_all(lambda: NeuralNetwork(dtype=np.float64), *batch, lines.append)
    text = "\n".join(lines)
    assert "First wrong: dlogits." in text and "32 times too large, the batch size" in text
    overfit = text[text.index("\n  overfit"):].splitlines()
    assert overfit[1].split()[1] == "ok", text
    assert overfit[2].startswith(
        "      -> passes only because Adam is blind to a constant factor, and these gradients are off by just such a factor "
        "(W3, b3, W2, b2, W1, b1: 32 times too large). Adam's step"), text
    assert overfit[2].endswith("SGD's, lr g, would be off by that factor. Fix the gradients above; "
                               f"see {PAGE}#the-updates"), text


def test_a_loss_that_changes_its_labels_in_place_is_told_so_and_the_checks_keep_the_right_ones(batch, tmp_path):
    """softmax_cross_entropy setting y[...] = 0 after computing a right loss: the labels' row
    says so, with the line; the caller's labels stay as they were, so the finite differences
    hold (they failed on the zeroed labels, with every gradient right: nothing said why); the
    overfit check's step, given the labels read-only, stops at that line."""
    x, y = batch[0], batch[1].copy()
    before = y.copy()
    edited(tmp_path, "softmax_cross_entropy", "    return float(loss), dlogits",
           "    y[...] = 0\n    return float(loss), dlogits")
    ok, text = grade("softmax_cross_entropy", (x, y), tmp_path)
    assert not ok
    assert np.array_equal(y, before)
    where = line_of(tmp_path / "softmax_cross_entropy.py", "y[...] = 0")
    assert f"\n  y        (32,)             changed {int(np.sum(y != 0))} of 32 labels: cross_entropy_with_grad " \
           f"changed y, the labels it was given, in place\n      -> at {where}. " in text, text
    differences = text[text.index("finite differences"):text.index("sanity checks")].splitlines()[1:-1]
    assert len(differences) == 6 and all(row[29:37].strip() == "ok" for row in differences), text  # the status column
    assert "  a training step stopped with ValueError: assignment destination is read-only\n" \
           f"      in {where}" in text, text
    assert first_problem(text.splitlines()) == "it changes y, the labels it is given, in place"


def test_a_bias_gradient_taken_as_a_mean_in_the_mlp_is_named_as_a_mean(batch, tmp_path):
    """The same slip in the MLP exercise: 1/B of the right one, named as a mean over the batch
    (it was '32 times too small, the batch size: divided by B twice', which blamed dlogits),
    and only where the dz it sums is right."""
    edited(tmp_path, "mlp_backward", "dz.sum(axis=0)  #", "dz.mean(axis=0)  #")
    ok, text = grade("mlp_backward", batch, tmp_path)
    assert not ok
    assert text.count("-> 1/32 of the right one, 1/B with B = 32: a mean over the batch where the sum "
                      "belongs") == 3, text                                          # db3, db2, db1
    assert "divided by B twice" not in text
    assert f"First wrong: db3. Everything before it is right, so look first at\n" \
           f"      {line_of(tmp_path / 'mlp_backward.py', 'db = dz.mean(axis=0)')}" in text, text
    assert "(b3, b2, b1: 1/32 of the right size)" in text                            # the overfit's word
    # dlogits divided by B twice makes db3 1/32 of the right one too, but the dz it sums is wrong:
    # not a mean, and not said to be one
    lines = []
    twice = planted(utils.cross_entropy_with_grad, "dlogits /= n", "dlogits /= n * n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(utils, "cross_entropy_with_grad", twice)
        network.gradients(NeuralNetwork(dtype=np.float64), *batch, lines.append)
    assert "First wrong: dlogits." in "\n".join(lines) and "divided by B twice" in "\n".join(lines)
    assert "a mean over the batch" not in "\n".join(lines)


def test_the_layer_checks_answer_keys_hold_the_steps_as_the_layers_compute_them():
    """units.py's answer keys give autograd's gradient for each step inside the layers' backward
    passes, in the layers' own layout: dWm and dcols equal the products numpy_nn/layers.py forms
    (the same sums in another order: within 1e-12 of the scale, float64 rounding being ~1e-15),
    and max-pooling's windows and mask are the layers' windows of dx and of its 0/1 mask exactly
    (pooling only copies numbers)."""
    from checker import units
    rng = np.random.default_rng(1)
    x, W, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    out, (x_shape, cols, _) = layers.conv2d_forward(x, W, b)
    dout = rng.standard_normal(out.shape)
    want = units.conv_answers(x, W, b, cols, dout)
    rows = dout.transpose(0, 2, 3, 1).reshape(-1, 4)                                     # N*H'*W',O
    for name, mine in (("dWm", cols.T @ rows), ("dcols", rows @ W.reshape(4, -1)),
                       ("dx", layers.conv2d_backward(dout, (x_shape, cols, W))[0])):
        assert np.max(np.abs(want[name] - mine)) <= 1e-12 * np.max(np.abs(mine)), name
    a = np.maximum(rng.standard_normal((2, 3, 7, 7)), 0)                                # ties: windows of zeros
    out, (a_shape, first) = layers.maxpool2d_forward(a)
    dout = rng.standard_normal(out.shape)
    want = units.maxpool_answers(a, dout)
    mask = np.arange(4) == first[..., None]
    assert np.array_equal(want["mask"], mask) and np.array_equal(want["dwindows"], mask * dout[..., None])
    assert np.array_equal(want["dx"], layers.maxpool2d_backward(dout, (a_shape, first)))
