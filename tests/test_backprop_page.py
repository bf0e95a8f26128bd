"""docs/backprop.md against the code it explains, so the page cannot drift from it.

- Every block of the page that starts with [a name] is, verbatim, what `python check.py
  --explain` (checker/explain.py) prints now, and every worked number in its prose is in that
  output.
- The derivatives it worked by hand equal finite differences of a loss written here in plain
  Python and PyTorch's autograd on the same network written here in torch; its softmax,
  col2im, max-pooling, Adam and accumulation numbers equal PyTorch's.
- Every line of code the page quotes is still, verbatim, a line of the function it names.
- Every link into the page, from the code, the exercises, the checker's messages and the
  README, names a section it has.
- The picture shows the example's numbers, and the committed one is what the command draws.

Fast: no training, no MNIST.
"""
import ast
import io
import math
import re
import tokenize
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import check
from checker import explain
from checker.explain import NAMES, PARAMS, X, Y, num
from checker.verdict import judge
from conftest import anchors
from report import backprop_graph

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "backprop.md"
PICTURE = REPO / "docs" / "backprop_graph.png"


@pytest.fixture(scope="module")
def ex():
    return explain.example()


@pytest.fixture(scope="module")
def page():
    return PAGE.read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- the printed blocks

def shown_sections(text):
    """[(name, lines)] of every ```text block of the page whose first line is [name]."""
    found = []
    for block in re.findall(r"^```text\n(.*?)^```$", text, flags=re.M | re.S):
        lines = block.rstrip("\n").split("\n")
        match = re.fullmatch(r"\[(\w+)\]", lines[0])
        if match:
            found.append((match.group(1), lines))
    return found


def test_the_page_shows_every_section_of_the_command_verbatim(ex, page):
    shown = shown_sections(page)
    fresh = explain.sections(ex)
    assert [name for name, _ in shown] == list(fresh), "the page shows each section once, in the command's order"
    for name, lines in shown:
        assert lines == fresh[name], (f"docs/backprop.md's [{name}] block is not what `python check.py --explain` "
                                      f"prints now, which is:\n" + "\n".join(fresh[name]))


def test_every_worked_number_in_the_prose_is_in_the_command_output(ex, page):
    """A number with 3 decimals or more in the page's own words (outside the printed blocks)
    is a worked number: it must be one the command prints, sign included."""
    prose = re.sub(r"^```.*?^```$", "", page, flags=re.M | re.S).replace("−", "-")
    output = "\n".join(line for lines in explain.sections(ex).values() for line in lines)
    printed = set(re.findall(r"-?\d+\.\d+", output))
    numbers = re.findall(r"-?\d+\.\d{3,}", prose)
    assert numbers, "the prose quotes some worked numbers"
    assert [n for n in numbers if n not in printed] == []


def test_the_command_prints_the_example_and_draws_its_graph(tmp_path, capsys, ex):
    picture = tmp_path / "graph.png"
    with pytest.raises(SystemExit) as done:
        check.main(["--explain", "--picture", str(picture)])
    assert done.value.code == 0                           # every check in the example holds
    out = capsys.readouterr().out
    expected = "\n\n".join("\n".join(lines) for lines in explain.sections(ex).values())
    assert out == f"{expected}\n\nThe graph of this example: {picture}\n"
    assert backprop_graph.saved_labels(picture) == backprop_graph.draw(ex.hand, PARAMS)[1]


@pytest.mark.parametrize("argv, message", [
    (["--explain", "--hidden", "3"], "argument --explain: prints one fixed example; --hidden does not apply to it"),
    (["--explain", "--model", "cnn"], "argument --explain: prints one fixed example; --model does not apply to it"),
    (["--picture", "g.png"], "argument --picture: goes with --explain"),
])
def test_the_command_refuses_flags_that_do_not_apply_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        check.main(argv)
    assert done.value.code == 2
    assert capsys.readouterr().err.endswith(f".py: error: {message}\n")   # (the program's name: pytest's here)


def test_a_picture_that_cannot_be_written_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as done:
        check.main(["--explain", "--picture", str(tmp_path / "file" / "graph.png")])
    assert str(done.value.code).startswith(f"check.py: error: cannot write {tmp_path / 'file' / 'graph.png'} (")
    assert "\n" not in str(done.value.code)


# ----------------------------------------------------------------------------- the numbers, against references

def plain_loss(params):
    """The example's loss in plain Python: no NumPy, no project code."""
    W1, b1, W2, b2 = (params[name] for name in NAMES)
    h1 = [max(0.0, sum(X[i] * W1[i][j] for i in range(2)) + b1[j]) for j in range(2)]
    logits = [sum(h1[j] * W2[j][k] for j in range(2)) + b2[k] for k in range(2)]
    top = max(logits)
    return top + math.log(sum(math.exp(v - top) for v in logits)) - logits[Y]


def torch_grads():
    """The example in torch, float64: its loss and every parameter's gradient by autograd."""
    t = {name: torch.tensor(PARAMS[name], dtype=torch.float64, requires_grad=True) for name in NAMES}
    x = torch.tensor([X], dtype=torch.float64)
    logits = torch.relu(x @ t["W1"] + t["b1"]) @ t["W2"] + t["b2"]
    loss = F.cross_entropy(logits, torch.tensor([Y]))
    loss.backward()
    return loss.item(), logits.detach()[0].numpy(), {f"d{name}": t[name].grad.numpy() for name in NAMES}


def test_the_derivatives_by_hand_equal_finite_differences_and_autograd(ex):
    """Finite differences of plain_loss, step 1e-6: off by ~1e-13 (eps^2) plus ~3e-11 of
    rounding (1e-16 * L / eps), so 1e-9. Autograd sums the same products in float64: 1e-12."""
    loss, logits, grads = torch_grads()
    assert ex.hand["L"] == pytest.approx(loss, abs=1e-12) == pytest.approx(plain_loss(PARAMS), abs=1e-12)
    assert np.allclose(ex.hand["logits"], logits, rtol=0, atol=1e-12)
    eps = 1e-6
    for name, index in explain.entries():
        hand = float(np.array(ex.hand[name])[index])
        params = {k: np.array(v, dtype=float).tolist() for k, v in PARAMS.items()}
        entry = params[name[1:]]
        for i in index[:-1]:
            entry = entry[i]
        old = entry[index[-1]]
        entry[index[-1]] = old + eps
        up = plain_loss(params)
        entry[index[-1]] = old - eps
        down = plain_loss(params)
        assert abs((up - down) / (2 * eps) - hand) <= 1e-9, (name, index)
        assert abs(grads[name][index] - hand) <= 1e-12, (name, index)
    assert ex.hand["paths_dW1_00"] == pytest.approx(ex.hand["dW1"][0][0], abs=1e-15)   # the two paths, added
    assert ex.agree                                    # and the command's own four-way check says so


def test_the_softmax_numbers_are_its_jacobian_and_p_minus_y(ex):
    z = torch.tensor(ex.hand["logits"], dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda v: torch.softmax(v, 0), z).numpy()
    assert np.allclose(ex.hand["jacobian"], J, rtol=0, atol=1e-15)
    p = torch.softmax(z, 0).numpy()
    assert np.allclose(ex.hand["collapsed"], p - np.eye(2)[Y], rtol=0, atol=1e-15)
    assert np.allclose(ex.hand["p_shifted"], p, rtol=0, atol=1e-15)


def test_col2im_adds_as_torch_conv2d_backward_does(ex):
    c = ex.col2im
    x = torch.tensor(c["x"], requires_grad=True)
    F.conv2d(x, torch.tensor(c["W"])).backward(torch.tensor(c["dout"]))
    assert np.array_equal(c["dx"], x.grad.numpy())
    assert c["dx"][0, 0].tolist() == [[1, 3, 2], [4, 10, 6], [3, 7, 4]]


def test_max_pooling_sends_a_tied_windows_gradient_to_its_first_maximum_as_torch_does(ex):
    m = ex.maxpool
    x = torch.tensor(m["x"], requires_grad=True)                  # N,C,H,W, contiguous
    F.max_pool2d(x, 2).backward(torch.ones(1, 2, 1, 1, dtype=torch.float64))
    assert np.array_equal(m["dx"], x.grad.numpy())
    assert m["first"].tolist() == [1, 0]                           # [[1, 3], [3, 0]]: the 3 at 01, not 10
    assert m["dx"][0].tolist() == [[[0, 1], [0, 0]], [[1, 0], [0, 0]]]


def test_adams_step_1_numbers_are_torch_optim_adams(ex):
    a, g, p0 = ex.adam, ex.hand["dW2"][0][0], PARAMS["W2"][0][0]
    w = torch.tensor([p0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([w], **explain.ADAM)
    w.grad = torch.tensor([g], dtype=torch.float64)
    optimizer.step()
    state = optimizer.state[w]
    assert a["m"] == pytest.approx(state["exp_avg"].item(), rel=1e-15)
    assert a["v"] == pytest.approx(state["exp_avg_sq"].item(), rel=1e-15)
    assert a["by_hand"] == pytest.approx(w.item(), abs=1e-15) == pytest.approx(a["numpy"], abs=1e-15)
    # the uncorrected over the corrected step, from the recursion itself, for a gradient that stays g
    (b1, b2), eps, m, v = explain.ADAM["betas"], explain.ADAM["eps"], 0.0, 0.0
    for t in range(1, 1001):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        if t in a["ratios"]:
            raw = m / (math.sqrt(v) + eps)
            corrected = (m / (1 - b1 ** t)) / (math.sqrt(v / (1 - b2 ** t)) + eps)
            assert raw / corrected == pytest.approx(a["ratios"][t], rel=1e-6), t   # eps: < 1e-7 of sqrt(v)


def test_autograd_adds_a_second_backward_and_numpy_nn_writes_over(ex):
    g = ex.hand["dW2"][0][0]
    assert ex.accumulate["torch"] == pytest.approx([g, 2 * g], abs=1e-15)
    assert ex.accumulate["numpy"] == pytest.approx([g, g], abs=1e-15)


# ----------------------------------------------------------------------------- quoted lines

QUOTE_HEAD = re.compile(r"^\[`(?P<file>[^`]+)`\]\((?P<link>[^)\s]+)\), `(?P<function>[\w.]+)`:\s*$")


def quotes(text):
    """[(page line, file, link, function, quoted line)] for every ```python block of the page
    that follows a line `[`file`](link), `function`:`."""
    lines, found = text.split("\n"), []
    for n, line in enumerate(lines):
        head = QUOTE_HEAD.match(line)
        if not head:
            continue
        k = n + 1
        while k < len(lines) and not lines[k].strip():
            k += 1
        assert k < len(lines) and lines[k] == "```python", f"docs/backprop.md line {n + 1}: no ```python block after it"
        k += 1
        while lines[k] != "```":
            if lines[k].strip():
                found.append((k + 1, head["file"], head["link"], head["function"], lines[k].strip()))
            k += 1
    return found


def function_lines(path, qualname):
    """{the function's lines (stripped), and each one's code without its comment}, and {the
    same for the whole file: line number}; None for the first if there is no such function."""
    source = path.read_text(encoding="utf-8")
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.start[1]
    lines = source.splitlines()

    def forms(number):
        line = lines[number - 1]
        return {line.strip(), line[:comments.get(number, len(line))].strip()}

    everywhere = {form: number for number in range(1, len(lines) + 1) for form in forms(number)}
    node, scope = None, ast.parse(source).body
    for part in qualname.split("."):
        node = next((n for n in scope if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name == part), None)
        if node is None:
            return None, everywhere
        scope = node.body
    inside = set()
    for number in range(node.lineno, node.end_lineno + 1):
        inside |= forms(number)
    return inside, everywhere


def unquoted(text, page=PAGE):
    """One message for each quote of text that is not a line of the function it names."""
    problems = []
    for n, file, link, function, quoted in quotes(text):
        path = REPO / file
        where = f"docs/backprop.md line {n}: {file}, {function}"
        if (page.parent / link).resolve() != path.resolve():
            problems.append(f"{where}: the link {link} does not lead to {file}")
            continue
        if not path.is_file():
            problems.append(f"{where}: no such file")
            continue
        inside, everywhere = function_lines(path, function)
        if inside is None:
            problems.append(f"{where}: no function {function} in {file}")
        elif quoted not in inside:
            elsewhere = (f"; the file has it at line {everywhere[quoted]}, outside {function}"
                         if quoted in everywhere else "")
            problems.append(f"{where}: `{quoted}` is no longer a line of {function}{elsewhere}. "
                            f"Quote the line that computes this now, and check the derivation above it still holds")
    return problems


def test_every_quoted_line_is_still_in_its_function(page):
    found = quotes(page)
    assert len(found) >= 30 and {f for _, f, _, _, _ in found} >= {
        "numpy_nn/neural_network.py", "numpy_nn/utils.py", "numpy_nn/layers.py", "numpy_nn/cnn.py",
        "pytorch_nn/train.py"}
    assert unquoted(page) == []


def test_a_quote_that_moved_is_named_with_its_file_function_and_page_line():
    """The check itself: a line that is not in the function, one that is in another function
    of the file, a function that is gone, and a link to another file."""
    text = "\n".join([
        "[`numpy_nn/neural_network.py`](../numpy_nn/neural_network.py), `NeuralNetwork.backward`:",
        "", "```python", "dW = dz.T @ h_prev", "dh = dz @ W.T", "```", "",
        "[`numpy_nn/utils.py`](../numpy_nn/utils.py), `relu_grad`:",
        "", "```python", "return s * (1 - s)", "```",
        "[`numpy_nn/utils.py`](../numpy_nn/utils.py), `gone`:",
        "", "```python", "return s * (1 - s)", "```",
        "[`numpy_nn/utils.py`](../numpy_nn/layers.py), `relu_grad`:",
        "", "```python", "return (h > 0).astype(h.dtype)", "```"])
    sigmoid_line = next(n for n, line in enumerate((REPO / "numpy_nn/utils.py").read_text().splitlines(), start=1)
                        if line.strip().startswith("return s * (1 - s)"))
    assert unquoted(text) == [
        ("docs/backprop.md line 4: numpy_nn/neural_network.py, NeuralNetwork.backward: `dW = dz.T @ h_prev` is no "
         "longer a line of NeuralNetwork.backward. Quote the line that computes this now, and check the "
         "derivation above it still holds"),
        (f"docs/backprop.md line 11: numpy_nn/utils.py, relu_grad: `return s * (1 - s)` is no longer a line of "
         f"relu_grad; the file has it at line {sigmoid_line}, outside relu_grad. Quote the line that computes this "
         f"now, and check the derivation above it still holds"),
        "docs/backprop.md line 16: numpy_nn/utils.py, gone: no function gone in numpy_nn/utils.py",
        ("docs/backprop.md line 21: numpy_nn/utils.py, relu_grad: the link ../numpy_nn/layers.py does not lead to "
         "numpy_nn/utils.py"),
    ]


# ----------------------------------------------------------------------------- links into the page

LINKING = ["README.md", "exercises/README.md", "check.py", *(f"{d}/{f.name}" for d in ("exercises", "numpy_nn", "checker")
                                                             for f in sorted((REPO / d).glob("*.py")))]


def test_every_link_into_the_page_names_one_of_its_sections(page):
    sections = anchors(page)
    assert {"the-chain-rule-on-one-path-with-numbers", "from-one-weight-to-the-matrix", "softmax-and-cross-entropy",
            "activations", "dropout-and-l2", "the-cnn", "the-updates"} <= sections
    links = [(file, anchor) for file in LINKING
             for anchor in re.findall(r"docs/backprop\.md#([\w-]+)", (REPO / file).read_text(encoding="utf-8"))]
    links += [("docs/backprop.md", anchor) for anchor in re.findall(r"\]\(#([\w-]+)\)", page)]
    assert len(links) >= 20
    assert [(file, anchor) for file, anchor in links if anchor not in sections] == []


def test_backward_the_exercises_and_the_readme_link_to_the_page():
    from exercises import EXERCISES
    from numpy_nn.cnn import CNN
    from numpy_nn.neural_network import NeuralNetwork
    assert "docs/backprop.md" in NeuralNetwork.backward.__doc__ and "docs/backprop.md#" in CNN.backward.__doc__
    for name in EXERCISES:
        docstring = ast.get_docstring(ast.parse((REPO / "exercises" / f"{name}.py").read_text(encoding="utf-8")))
        assert "docs/backprop.md#" in docstring, name
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    order = readme[readme.index("## Read the code in this order"):readme.index("Everything else is machinery")]
    assert re.search(r"^2\. \[docs/backprop\.md\]\(docs/backprop\.md\)", order, flags=re.M)   # right after the network
    for file in ("numpy_nn/utils.py", "exercises/softmax_cross_entropy.py"):
        assert "famous" not in (REPO / file).read_text(encoding="utf-8").lower(), file


CLASSIC = {  # a classic mistake the checker names: (name, got from the right answer, the section it points to)
    "dlogits B times too large": ("dlogits", lambda a, B: a * B, "softmax-and-cross-entropy"),
    "dW B times too small": ("dW2", lambda a, B: a / B, "softmax-and-cross-entropy"),
    "loss summed": ("loss", lambda a, B: a * B, "softmax-and-cross-entropy"),
    "loss negated": ("loss", lambda a, B: -a, "softmax-and-cross-entropy"),
    "gradient negated": ("dW2", lambda a, B: -a, "the-updates"),
    "dW transposed, square": ("dW2", lambda a, B: a.T, "from-one-weight-to-the-matrix"),
    "dW transposed, shape": ("dW1", lambda a, B: a.T, "from-one-weight-to-the-matrix"),
    "db over the wrong axis": ("db2", lambda a, B: np.ones(B), "from-one-weight-to-the-matrix"),
    "db not summed": ("db2", lambda a, B: np.ones((B, a.size)), "from-one-weight-to-the-matrix"),
    "db summed over everything": ("db2", lambda a, B: np.float64(a.sum()), "from-one-weight-to-the-matrix"),
}


@pytest.mark.parametrize("mistake", CLASSIC)
def test_each_named_mistake_points_to_the_section_that_derives_the_right_answer(mistake, page):
    name, wrong, section = CLASSIC[mistake]
    rng, B = np.random.default_rng(0), 4
    want = {"dlogits": rng.normal(size=(B, 3)), "dW2": rng.normal(size=(3, 3)), "dW1": rng.normal(size=(5, 3)),
            "db2": rng.normal(size=3), "loss": np.float64(0.7)}[name]
    hint = judge(name, wrong(want, B), want, B).hint
    assert hint.endswith(f"; see docs/backprop.md#{section}"), hint
    assert section in anchors(page)


def test_the_activation_mistakes_point_to_the_activations_section(page):
    rng = np.random.default_rng(0)
    before = rng.normal(size=(4, 3))
    mask = rng.random((4, 3)) > 0.5
    want = before * mask
    for got in (before, before * ~mask):                  # no mask; the mask of another tensor
        hint = judge("dz1", got, want, 4, before=before, relu=True).hint
        assert hint.endswith("; see docs/backprop.md#activations"), hint


# ----------------------------------------------------------------------------- the picture

def expected_label(key, ex):
    """What the picture must say for quantity key, from the example's numbers."""
    if key == "dL":
        return "dL/dL = 1"
    if key.startswith("relu"):
        return "relu"
    if key == "L":
        return f"L = {num(ex.hand['L'])}"
    name, *index = re.fullmatch(r"(\w+)\[(\d)(?:,(\d))?\]", key).groups()
    value = ex.hand[name] if name in ex.hand else PARAMS[name]
    for i in index:
        if i is not None:
            value = value[int(i)]
    return f"{key} = {num(value)}"


def test_the_picture_shows_the_examples_numbers(ex):
    fig, labels = backprop_graph.draw(ex.hand, PARAMS)
    drawn = sorted(text.get_text() for text in fig.axes[0].texts if text.get_text())   # (arrows: empty texts)
    matplotlib.pyplot.close(fig)
    assert drawn == sorted(labels.values())                 # the labels are what the figure holds
    assert {key: expected_label(key, ex) for key in labels} == labels
    every = {f"{k}[{i}]" for k in ("x", "z1", "dz1", "b1", "db1", "h1", "dh1", "logits", "dlogits", "b2", "db2", "p")
             for i in (0, 1)}
    every |= {f"{g}{w}[{i},{j}]" for g in ("", "d") for w in ("W1", "W2") for i in (0, 1) for j in (0, 1)}
    assert every | {"L", "dL", "relu[0]", "relu[1]"} == set(labels)


def test_the_committed_picture_is_what_the_command_draws(ex, tmp_path):
    """Its labels always (the PNG carries them); its pixels too, where the matplotlib that
    drew it is the one installed (another version may place a glyph a pixel away)."""
    fig, labels = backprop_graph.draw(ex.hand, PARAMS)
    fresh = tmp_path / "graph.png"
    backprop_graph.save(fig, labels, fresh)
    assert backprop_graph.saved_labels(PICTURE) == labels, \
        "docs/backprop_graph.png is stale: python check.py --explain --picture docs/backprop_graph.png"
    from PIL import Image
    with Image.open(PICTURE) as committed, Image.open(fresh) as drawn:
        if committed.text.get(backprop_graph.VERSION_KEY) != drawn.text[backprop_graph.VERSION_KEY]:
            pytest.skip(f"drawn by {committed.text.get(backprop_graph.VERSION_KEY)}; "
                        f"{drawn.text[backprop_graph.VERSION_KEY]} is installed")
        assert np.array_equal(np.asarray(committed), np.asarray(drawn))
