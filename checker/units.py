"""Checks of single functions, for the exercises: each against its PyTorch counterpart on a
small input made to hold the hard cases (ties in a pooling window, an odd size, gradients
that are exactly zero)."""
import numpy as np
import torch
import torch.nn.functional as F

from checker.guard import first_line, kind
from checker.trace import failing_line
from checker.verdict import judge
from numpy_nn import layers, utils


def _report(say, name, got, want, batch):
    v = judge(name, got, want, batch)
    numbers = f"max|diff| {v.diff:8.1e}   rel {v.rel:8.1e}" if v.diff is not None else ""
    say(f"  {name:<9}{str(np.shape(want)):<18}{v.status:<8}{numbers}")
    if v.hint:
        say(f"      -> {v.hint}")
    return v.ok


def conv_backward(say, backward=layers.conv2d_backward, seed=0):
    """conv2d_backward (the project's, or a learner's) against torch's conv2d."""
    rng = np.random.default_rng(seed)
    x, W, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    out, cache = layers.conv2d_forward(x, W, b)
    dout = rng.standard_normal(out.shape)
    tx, tW, tb = (torch.tensor(a, requires_grad=True) for a in (x, W, b))
    F.conv2d(tx, tW, tb).backward(torch.from_numpy(dout))
    say("conv2d_backward on 2 images of 3 channels, 7x6, 4 kernels of 3x3:")
    dx, dW, db = _call(say, backward, dout, cache, count=3)
    if dx is None:
        return False
    return all([_report(say, "dx", dx, tx.grad.numpy(), 2), _report(say, "dW", dW, tW.grad.numpy(), 2),
                _report(say, "db", db, tb.grad.numpy(), 2)])


def maxpool_backward(say, backward=layers.maxpool2d_backward, seed=0):
    """maxpool2d_backward against torch's max_pool2d: ties (ReLU's zeros) and an odd size."""
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.standard_normal((2, 3, 7, 7)), 0)       # many windows of all zeros: ties
    out, cache = layers.maxpool2d_forward(x)
    dout = rng.standard_normal(out.shape)
    tx = torch.tensor(x, requires_grad=True)
    F.max_pool2d(tx, 2).backward(torch.from_numpy(dout))
    say("maxpool2d_backward on 2 images of 3 channels, 7x7 (an odd size; ReLU's zeros make ties):")
    (dx,) = _call(say, backward, dout, cache, count=1, single=True)
    return dx is not None and _report(say, "dx", dx, tx.grad.numpy(), 2)


def adam(say, steps=5, seed=0):
    """numpy_nn.utils.Adam's step (the project's, or a learner's put in its place) against torch.optim.Adam, step by step:
    the first moment m, the second v, and the parameters. Some gradients are zero."""
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(20)
    mine = utils.Adam(p.copy(), lr=1e-2)
    theirs = torch.tensor(p.copy(), requires_grad=True)
    opt = torch.optim.Adam([theirs], lr=1e-2)
    say(f"Adam, {steps} steps on 20 parameters (a quarter of the gradients 0) against torch.optim.Adam:")
    ok = True
    for t in range(1, steps + 1):
        g = rng.standard_normal(20) * (rng.random(20) > 0.25)
        theirs.grad = torch.from_numpy(g.copy())
        opt.step()
        try:
            mine.step(g.copy())
        except Exception as error:
            say(f"  step {t} stopped with {kind(error)}: {first_line(error)}")
            say(f"      at {failing_line(error)}")
            return False
        state = opt.state[theirs]
        say(f" step {t}:")
        ok &= _report(say, "m", mine.m, state["exp_avg"].numpy(), 1)
        ok &= _report(say, "v", mine.v, state["exp_avg_sq"].numpy(), 1)
        ok &= _report(say, "params", mine.params, theirs.detach().numpy(), 1)
        if not ok:
            return False
    return ok


def _call(say, function, *args, count, single=False):
    """function(*args), expecting count arrays back; on an exception, one line, and Nones."""
    try:
        result = function(*args)
    except Exception as error:
        say(f"  {function.__name__} stopped with {kind(error)}: {first_line(error)}")
        say(f"      at {failing_line(error)}")
        return (None,) * count
    if single:
        result = (result,)
    if not isinstance(result, tuple) or len(result) != count:
        say(f"  {function.__name__} should return {count} array{'s' if count > 1 else ''}")
        return (None,) * count
    return result
