"""The worked example of docs/backprop.md, computed: `python check.py --explain`.

A network of 2 inputs, 2 hidden ReLU units and 2 classes, its weights set by hand to one
decimal, and one input with its label. example() computes its forward pass and every
derivative of the loss twice: by hand, scalar by scalar (plain Python floats, each formula
written out as it is printed), and with the project's own functions (NeuralNetwork.forward,
cross_entropy_with_grad, backward). Then finite differences and PyTorch's autograd give each
derivative two more times, with no chain rule of ours in them. The page's other numbers
come from here too: the softmax Jacobian, col2im's sums, a max-pooling tie, Adam's first
step and what a second backward pass does to a gradient.

sections(example) is the printout, one section per topic, each starting with its name in
brackets: docs/backprop.md shows every section verbatim, and tests/test_backprop_page.py
compares the page with a fresh run.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from checker.network import numerical_gradient
from checker.reference import mlp_reference
from numpy_nn import layers, utils
from numpy_nn.neural_network import NeuralNetwork

X = [1.0, 2.0]                          # the input: 2 numbers
Y = 0                                   # its class: 0 of {0, 1}
PARAMS = {                              # W (in, out) as NeuralNetwork keeps it: z = x W + b
    "W1": [[0.5, -0.4], [0.2, 0.1]], "b1": [0.1, 0.0],
    "W2": [[0.3, -0.2], [0.4, 0.1]], "b2": [0.0, 0.1],
}
NAMES = ("W1", "b1", "W2", "b2")
FD_EPS = 1e-6        # the finite differences' step
# Tolerances of the [check] section. The hand values, backward() and autograd compute the
# same sums in float64, in other orders: they differ by a few units of 1e-16 (numbers of
# size 1). A central difference is off by about eps^2 |L'''| / 6 (1e-13 here) plus the
# loss's rounding over 2 eps (1e-16 * 0.5 / 2e-6, about 3e-11): 1e-9 leaves a margin of 30.
EXACT_TOLERANCE, FD_TOLERANCE = 1e-12, 1e-9
ADAM = {"lr": 3e-3, "betas": (0.9, 0.999), "eps": 1e-8}  # the trainers' default rate (--lr), torch's betas and eps
SECTIONS = ("network", "forward", "paths", "backward", "check", "softmax", "col2im", "maxpool",
            "adam", "accumulate")


def num(v):
    """v as a learner writes it: 4 significant digits, no trailing zeros (0.5987, -0.2, 1)."""
    text = f"{v:.4g}"
    return "0" if text in ("0", "-0") else text


def par(v):
    """num(v), in parentheses when negative, for a term of a product or a sum."""
    text = num(v)
    return f"({text})" if text.startswith("-") else text


def vec(values):
    """A vector, or a matrix as a list of rows, in num()'s digits: [0.5, -0.4]."""
    return "[" + ", ".join(vec(v) if np.ndim(v) else num(v) for v in values) + "]"


def grid(rows, indent="  "):
    """A small matrix as rows of right-aligned numbers."""
    cells = [[num(v) for v in row] for row in rows]
    width = max(len(c) for row in cells for c in row)
    return [indent + "  ".join(c.rjust(width) for c in row) for row in cells]


class Example:
    """Every number of the worked example. hand: the forward values and the derivatives,
    worked scalar by scalar, {name: float, or a list (of lists) of floats}; lines: how each
    was worked, by section; project, fd, autograd: the derivatives each other way, as NumPy
    arrays by gradient name (dW1, db1, ...)."""

    def __init__(self):
        self.hand, self.lines = {}, {name: [] for name in SECTIONS}
        self.project, self.fd, self.autograd = {}, {}, {}


# ----------------------------------------------------------------------------- by hand

def _forward_by_hand(ex):
    W1, b1, W2, b2 = (PARAMS[name] for name in NAMES)
    say = ex.lines["forward"].append
    z1, h1, logits = [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]
    for j in range(2):                                   # z1[j] = sum_i x[i] W1[i,j] + b1[j]
        z1[j] = X[0] * W1[0][j] + X[1] * W1[1][j] + b1[j]
        say(f"z1[{j}] = x[0]*W1[0,{j}] + x[1]*W1[1,{j}] + b1[{j}] = "
            f"{par(X[0])}*{par(W1[0][j])} + {par(X[1])}*{par(W1[1][j])} + {par(b1[j])} = {num(z1[j])}")
    for j in range(2):
        h1[j] = max(0.0, z1[j])
        say(f"h1[{j}] = relu(z1[{j}]) = max(0, {num(z1[j])}) = {num(h1[j])}")
    for k in range(2):
        logits[k] = h1[0] * W2[0][k] + h1[1] * W2[1][k] + b2[k]
        say(f"logits[{k}] = h1[0]*W2[0,{k}] + h1[1]*W2[1,{k}] + b2[{k}] = "
            f"{par(h1[0])}*{par(W2[0][k])} + {par(h1[1])}*{par(W2[1][k])} + {par(b2[k])} = {num(logits[k])}")
    e = [math.exp(v) for v in logits]
    p = [v / sum(e) for v in e]
    for k in range(2):
        say(f"p[{k}] = e^logits[{k}] / (e^logits[0] + e^logits[1]) = {num(e[k])} / ({num(e[0])} + {num(e[1])}) "
            f"= {num(p[k])}")
    loss = -math.log(p[Y])
    say(f"L = -log p[c] = -log p[{Y}] = -log {num(p[Y])} = {num(loss)}")
    ex.hand.update(z1=z1, h1=h1, logits=logits, p=p, L=loss)


def _paths_by_hand(ex):
    """dL/dW1[0,0] as the sum, over the paths from W1[0,0] to L, of the product of the local
    slopes along each: the chain rule with nothing factored out yet."""
    h, W2 = ex.hand, PARAMS["W2"]
    dlogits = [h["p"][k] - (k == Y) for k in range(2)]
    relu_slope = 1.0 if h["z1"][0] > 0 else 0.0
    say = ex.lines["paths"].append
    say("dL/dW1[0,0]: one product of local slopes per path W1[0,0] -> z1[0] -> h1[0] -> logits[k] -> L")
    terms = []
    for k in range(2):
        terms.append(X[0] * relu_slope * W2[0][k] * dlogits[k])
        say(f"  k = {k}:  x[0] * relu'(z1[0]) * W2[0,{k}] * (p[{k}] - y[{k}]) = "
            f"{par(X[0])}*{num(relu_slope)}*{par(W2[0][k])}*{par(dlogits[k])} = {num(terms[k])}")
    h["paths_dW1_00"] = terms[0] + terms[1]
    say(f"  the two paths added: {num(terms[0])} + {par(terms[1])} = {num(h['paths_dW1_00'])}")


def _backward_by_hand(ex):
    """Every derivative, output to input, each from the ones before it (dX: dL/dX)."""
    h = ex.hand
    W2 = PARAMS["W2"]
    say = ex.lines["backward"].append
    onehot = [1.0 if k == Y else 0.0 for k in range(2)]
    dlogits = [h["p"][k] - onehot[k] for k in range(2)]
    for k in range(2):
        say(f"dlogits[{k}] = p[{k}] - y[{k}] = {num(h['p'][k])} - {num(onehot[k])} = {num(dlogits[k])}")
    dW2 = [[h["h1"][j] * dlogits[k] for k in range(2)] for j in range(2)]
    for j in range(2):
        for k in range(2):
            say(f"dW2[{j},{k}] = h1[{j}]*dlogits[{k}] = {par(h['h1'][j])}*{par(dlogits[k])} = {num(dW2[j][k])}")
    db2 = list(dlogits)
    for k in range(2):
        say(f"db2[{k}] = dlogits[{k}] = {num(db2[k])}")
    dh1 = [dlogits[0] * W2[j][0] + dlogits[1] * W2[j][1] for j in range(2)]
    for j in range(2):
        say(f"dh1[{j}] = dlogits[0]*W2[{j},0] + dlogits[1]*W2[{j},1] = "
            f"{par(dlogits[0])}*{par(W2[j][0])} + {par(dlogits[1])}*{par(W2[j][1])} = {num(dh1[j])}")
    slope = [1.0 if z > 0 else 0.0 for z in h["z1"]]
    dz1 = [dh1[j] * slope[j] for j in range(2)]
    for j in range(2):
        why = f"z1[{j}] = {num(h['z1'][j])} {'>' if slope[j] else '<='} 0"
        say(f"dz1[{j}] = dh1[{j}]*relu'(z1[{j}]) = {par(dh1[j])}*{num(slope[j])} = {num(dz1[j])}   ({why})")
    dW1 = [[X[i] * dz1[j] for j in range(2)] for i in range(2)]
    for i in range(2):
        for j in range(2):
            say(f"dW1[{i},{j}] = x[{i}]*dz1[{j}] = {par(X[i])}*{par(dz1[j])} = {num(dW1[i][j])}")
    db1 = list(dz1)
    for j in range(2):
        say(f"db1[{j}] = dz1[{j}] = {num(db1[j])}")
    h.update(dlogits=dlogits, dW2=dW2, db2=db2, dh1=dh1, dz1=dz1, dW1=dW1, db1=db1)


# ----------------------------------------------------------------------------- three other ways

def network():
    """The project's NeuralNetwork of sizes (2, 2, 2), in float64, with PARAMS set."""
    net = NeuralNetwork((2, 2, 2), dtype=np.float64)
    for name in NAMES:
        net.params[name][...] = PARAMS[name]
    return net


def _other_ways(ex):
    x, y = np.array([X]), np.array([Y])
    net = network()
    logits, cache = net.forward(x)
    loss, dlogits = utils.cross_entropy_with_grad(logits, y)
    grads = net.backward(dlogits, cache)
    ex.project = {"logits": logits[0].copy(), "L": loss, "dlogits": dlogits[0].copy(),
                  **{f"d{name}": grads[name].copy() for name in NAMES}}
    for name in NAMES:                                    # central differences: checker/network.py
        ex.fd[f"d{name}"] = numerical_gradient(lambda: net.loss(x, y), net.params[name], FD_EPS)
    ref = mlp_reference(network(), x, y)                   # the PyTorch twin, float64: checker/reference.py
    ex.autograd = {"logits": ref.logits[0], "L": ref.loss, "dlogits": ref.grads["dlogits"][0],
                   **{f"d{name}": ref.grads[f"d{name}"] for name in NAMES}}


def entries():
    """(gradient name, index) of every weight and bias, in NAMES' order."""
    for name in NAMES:
        for index in np.ndindex(np.shape(PARAMS[name])):
            yield f"d{name}", index


def _label(name, index):
    return f"{name}[{','.join(map(str, index))}]"


def _check_lines(ex):
    say = ex.lines["check"].append
    p = ex.project
    say(f"by hand:                                logits {vec(ex.hand['logits'])}, L {num(ex.hand['L'])}")
    say(f"forward() and cross_entropy_with_grad:  logits {vec(p['logits'])}, L {num(p['L'])}")
    say(f"{'':<10}{'by hand':>10}{'backward()':>12}{'finite diff':>13}{'autograd':>10}")
    worst = {"project": 0.0, "fd": 0.0, "autograd": 0.0}
    for name, index in entries():
        hand = float(np.array(ex.hand[name])[index])
        row = {"project": ex.project[name][index], "fd": ex.fd[name][index], "autograd": ex.autograd[name][index]}
        for way, value in row.items():
            worst[way] = max(worst[way], abs(value - hand))
        say(f"{_label(name, index):<10}{num(hand):>10}{num(row['project']):>12}{num(row['fd']):>13}"
            f"{num(row['autograd']):>10}")
    agree = worst["project"] <= EXACT_TOLERANCE and worst["autograd"] <= EXACT_TOLERANCE
    close = worst["fd"] <= FD_TOLERANCE
    say(f"backward() and autograd within {EXACT_TOLERANCE:g} of every hand value: {'yes' if agree else 'NO'}")
    say(f"finite differences (step {FD_EPS:g}) within {FD_TOLERANCE:g} of every hand value: {'yes' if close else 'NO'}")
    ex.agree = agree and close


# ----------------------------------------------------------------------------- the other sections

def _softmax_lines(ex):
    """The Jacobian dp[k]/dlogits[j] = p[k] (1[k=j] - p[j]) at the example, and the sum over
    k that dL/dlogits[j] is, in which only k = y survives."""
    p, say = ex.hand["p"], ex.lines["softmax"].append
    say("the softmax Jacobian, dp[k]/dlogits[j] = p[k] * ([k == j] - p[j]):")
    J = [[p[k] * ((k == j) - p[j]) for j in range(2)] for k in range(2)]
    for k in range(2):
        for j in range(2):
            say(f"  dp[{k}]/dlogits[{j}] = p[{k}]*({int(k == j)} - p[{j}]) = "
                f"{num(p[k])}*({int(k == j)} - {num(p[j])}) = {num(J[k][j])}")
    dLdp = -1 / p[Y]
    say(f"L = -log p[{Y}] depends on p[{Y}] alone: dL/dp[{Y}] = -1/p[{Y}] = {num(dLdp)}, dL/dp[{1 - Y}] = 0")
    collapsed = []
    for j in range(2):
        value = dLdp * J[Y][j]
        collapsed.append(value)
        say(f"dL/dlogits[{j}] = sum over k of dL/dp[k]*dp[k]/dlogits[{j}] = {par(dLdp)}*{par(J[Y][j])} + 0"
            f" = {num(value)}")
        say(f"    = p[{j}] - y[{j}] = {num(p[j])} - {int(j == Y)}")
    shift = max(ex.hand["logits"])
    shifted = [v - shift for v in ex.hand["logits"]]
    p_shifted = [math.exp(v) / sum(math.exp(u) for u in shifted) for v in shifted]
    say(f"logits minus their max, {vec(ex.hand['logits'])} - {num(shift)} = {vec(shifted)}: "
        f"the same p = {vec(p_shifted)}")
    ex.hand.update(jacobian=J, collapsed=collapsed, p_shifted=p_shifted)


COL2IM_KERNEL = [[1.0, 2.0], [3.0, 4.0]]


def _col2im_lines(ex):
    """conv2d_forward/backward (numpy_nn/layers.py) on a 3x3 image, one 2x2 kernel, dout all
    ones: dx[pixel] is the sum of the kernel entries that met the pixel, one per window."""
    say = ex.lines["col2im"].append
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    W = np.array(COL2IM_KERNEL).reshape(1, 1, 2, 2)
    out, cache = layers.conv2d_forward(x, W, np.zeros(1))
    dout = np.ones_like(out)
    dx, _, _ = layers.conv2d_backward(dout, cache)
    dcols = dout.transpose(0, 2, 3, 1).reshape(-1, 1) @ W.reshape(1, -1)   # what conv2d_backward hands col2im
    say("a 3x3 image, one 2x2 kernel W = [[1, 2], [3, 4]], 4 windows; dout = 1 at each of the 4 outputs")
    say("dcols = dout Wm^T, one row per window (its pixels in the order 00 01 10 11):")
    for line in grid(dcols):
        say(line)
    say("col2im adds every row back onto the pixels its window covers: dx =")
    for line in grid(dx[0, 0]):
        say(line)
    say(f"the centre pixel sits in all 4 windows, once under each kernel entry: dx[1,1] = 4 + 3 + 2 + 1 = "
        f"{num(dx[0, 0, 1, 1])}")
    say(f"a corner sits in 1 window: dx[0,0] = {num(dx[0, 0, 0, 0])}")
    ex.col2im = {"x": x, "W": W, "dout": dout, "dx": dx}


MAXPOOL_WINDOWS = [[[1.0, 3.0], [3.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]


def _maxpool_lines(ex):
    """maxpool2d_forward/backward on windows with ties, and PyTorch's max_pool2d on the same."""
    say = ex.lines["maxpool"].append
    x = np.array(MAXPOOL_WINDOWS).reshape(1, 2, 2, 2)                     # 2 channels, one window each
    out, cache = layers.maxpool2d_forward(x)
    dx = layers.maxpool2d_backward(np.ones_like(out), cache)
    tx = torch.tensor(x, requires_grad=True)
    F.max_pool2d(tx, 2).backward(torch.ones(out.shape, dtype=torch.float64))
    ex.maxpool = {"x": x, "first": cache[1].reshape(-1), "dx": dx, "torch": tx.grad.numpy()}
    for c in range(2):
        say(f"window {vec(MAXPOOL_WINDOWS[c])}, dout = 1: max {num(out[0, c, 0, 0])}, "
            f"first maximum at position {int(cache[1][0, c, 0, 0])} of 0 1 2 3 (row by row)")
        say(f"  maxpool2d_backward: dx = {vec(dx[0, c])}; PyTorch's F.max_pool2d: {vec(ex.maxpool['torch'][0, c])}")


def _adam_lines(ex):
    """Adam's first step for W2[0,0], by hand, against numpy_nn's Adam and torch.optim.Adam."""
    say = ex.lines["adam"].append
    lr, (b1, b2), eps = ADAM["lr"], ADAM["betas"], ADAM["eps"]
    g, p0 = ex.hand["dW2"][0][0], PARAMS["W2"][0][0]
    say(f"step 1 for W2[0,0] = {num(p0)}, its gradient g = {num(g)}")
    say(f"lr {num(lr)}, b1 {num(b1)}, b2 {num(b2)}, eps {eps:g}; m and v start at 0")
    m = b1 * 0 + (1 - b1) * g
    v = b2 * 0 + (1 - b2) * g * g
    say(f"m = b1*0 + (1 - b1)*g = {num(1 - b1)}*{par(g)} = {num(m)}   (g is {num(g / m)} times m)")
    say(f"v = b2*0 + (1 - b2)*g^2 = {num(1 - b2)}*{num(g * g)} = {num(v)}   (g^2 is {num(g * g / v)} times v)")
    m_hat, v_hat = m / (1 - b1), v / (1 - b2)
    say(f"m_hat = m / (1 - b1^1) = {par(m)} / {num(1 - b1)} = {num(m_hat)}   (= g)")
    say(f"v_hat = v / (1 - b2^1) = {num(v)} / {num(1 - b2)} = {num(v_hat)}   (= g^2)")
    step = lr * m_hat / (math.sqrt(v_hat) + eps)
    raw = lr * m / (math.sqrt(v) + eps)
    say(f"step = lr * m_hat / (sqrt(v_hat) + eps) = {num(lr)}*{par(m_hat)} / ({num(math.sqrt(v_hat))} + {eps:g})"
        f" = {num(step)}")
    say("    (lr itself, with the gradient's sign)")
    say(f"without the correction: lr * m / (sqrt(v) + eps) = {num(lr)}*{par(m)} / {num(math.sqrt(v))} = {num(raw)}")
    say(f"    ({num(raw / step)} times as large)")
    ratios = {t: (1 - b1 ** t) / math.sqrt(1 - b2 ** t) for t in (1, 10, 100, 1000)}
    say("a gradient that stays g gives m = (1 - b1^t) g and v = (1 - b2^t) g^2 after t steps,")
    say("so the uncorrected step is (1 - b1^t) / sqrt(1 - b2^t) times the corrected one:")
    say("  " + ", ".join(f"t = {t}: {num(r)}" for t, r in ratios.items()))
    by_hand = p0 - step
    mine = utils.Adam(np.array([p0]), **ADAM)
    mine.step(np.array([g]))
    theirs = torch.tensor([p0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([theirs], **ADAM)
    theirs.grad = torch.tensor([g], dtype=torch.float64)
    optimizer.step()
    say(f"W2[0,0] after step 1: by hand {num(p0)} - {par(step)} = {num(by_hand)}, numpy_nn's Adam {num(mine.params[0])}, "
        f"torch.optim.Adam {num(theirs.item())}")
    sgd = p0 - lr * g
    say(f"(plain SGD's step 1, p - lr*g = {num(p0)} - {num(lr)}*{par(g)} = {num(sgd)}: a step of lr * |g|)")
    ex.adam = {"m": m, "v": v, "m_hat": m_hat, "v_hat": v_hat, "step": step, "raw": raw, "ratios": ratios,
               "by_hand": by_hand, "numpy": float(mine.params[0]), "torch": theirs.item(), "sgd": sgd}


def _accumulate_lines(ex):
    """Two backward passes in a row, with nothing zeroed in between: autograd adds the second
    gradient to the first, NeuralNetwork.backward writes it over the first."""
    say = ex.lines["accumulate"].append
    x, y = np.array([X]), np.array([Y])
    from pytorch_nn.model import MLP
    from pytorch_nn.numpy_weights import load_numpy_params
    model = load_numpy_params(MLP((2, 2, 2)).double(), network().params)
    seen = []
    for _ in range(2):
        F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        seen.append(model.out.weight.grad[0, 0].item())   # nn.Linear keeps W transposed: [0,0] is W2[0,0]
    net, mine = network(), []
    for _ in range(2):
        logits, cache = net.forward(x)
        net.backward(utils.cross_entropy_with_grad(logits, y)[1], cache)
        mine.append(float(net.grads["W2"][0, 0]))
    say(f"PyTorch, loss.backward() twice: W2[0,0]'s .grad {num(seen[0])}, then {num(seen[1])} (added to)")
    say(f"numpy_nn, backward() twice:     dW2[0,0] {num(mine[0])}, then {num(mine[1])} (written over)")
    ex.accumulate = {"torch": seen, "numpy": mine}


def example():
    """The worked example: an Example with every number and every printed line."""
    ex = Example()
    ex.hand.update(x=list(X), c=Y)
    say = ex.lines["network"].append
    say(f"x = {vec(X)}, class c = {Y}, so y = {vec([float(k == Y) for k in range(2)])} (one-hot)")
    say("z1 = x W1 + b1, h1 = relu(z1), logits = h1 W2 + b2, p = softmax(logits), L = -log p[c]")
    for name in NAMES:
        say(f"{name} = {vec(PARAMS[name])}")
    _forward_by_hand(ex)
    _paths_by_hand(ex)
    _backward_by_hand(ex)
    _other_ways(ex)
    _check_lines(ex)
    _softmax_lines(ex)
    _col2im_lines(ex)
    _maxpool_lines(ex)
    _adam_lines(ex)
    _accumulate_lines(ex)
    return ex


def sections(ex):
    """{name: its printed lines}, the first line the name in brackets."""
    return {name: [f"[{name}]", *ex.lines[name]] for name in SECTIONS}


def explain(say=print):
    """Print the worked example; returns it (its agree: whether every check held)."""
    ex = example()
    for i, lines in enumerate(sections(ex).values()):
        if i:
            say("")
        for line in lines:
            say(line)
    return ex
