"""Checks of single functions, for the exercises: each against its PyTorch counterpart on a
small input made to hold the hard cases (ties in a pooling window, an odd size, gradients
that are exactly zero, a unit constant over the batch).

A layer's backward pass runs under the tracer (trace.py), as backward() does in the
network's check: what it returns is judged, and where a result is wrong, so are the steps
inside it that feed that result (dWm, dcols; the mask, dwindows), in the order the function
computes them; the first wrong one is named with its line. A batch normalization's backward
pass is judged on dz, dgamma and dbeta, and behind a wrong dz on dzhat and, where it is written
in stages as the exercise's hints walk it, dvar and dmean; a wrong one that is a classic
mistake's gradient is named as such (verdict.py batchnorm_mistakes)."""
import numpy as np
import torch
import torch.nn.functional as F

from checker.guard import first_line, kind
from checker.network import _line, _made, _stopped, first_wrong
from checker.trace import failing_line, record, where
from checker.verdict import batchnorm_mistakes, judge, windows
from numpy_nn import batchnorm, layers, utils


def _report(say, name, got, want, batch):
    v = judge(name, got, want, batch)
    _line(say, name, np.shape(want), v)
    return v.ok


# A step inside a layer's backward pass -> what it feeds, a result or the next step (the steps
# are named as in numpy_nn/layers.py and the exercises; a function that names them otherwise
# is judged on its results alone)
FEEDS = {"dWm": "dW", "dcols": "dx", "mask": "dwindows", "dwindows": "dx",
         "dzhat": "dz", "dvar": "dz", "dmean": "dz"}     # (dvar, dmean: batch normalization's backward written in stages)
RESULTS = ("dx", "dW", "db", "dz", "dgamma", "dbeta")  # what the layers' backward passes return


def _label(name, variables):
    """The step or result a local variable of a layer's backward pass holds, or None."""
    if name == "dwindows" and np.ndim(variables[name]) == 6:
        return None                                # the given line's N,C,Ho,2,Wo,2: a layout, not a step
    return name if name in FEEDS or name in RESULTS else None


def _equal(a, b):
    return a is b or (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                      and np.array_equal(a, b, equal_nan=True))


def _judged(say, function, args, want, outputs, context):
    """function(*args) under the tracer: its results (outputs, the names of what it returns, in
    order) against want, and the steps behind a wrong one; context[name]: judge()'s keywords
    for that name. The first wrong one is named with its line. True when every result holds."""
    rec = record(function, args, _label)
    name_of = getattr(function, "__name__", "the function")
    results = {}
    if rec.error is None:
        result = rec.result if len(outputs) > 1 else (rec.result,)
        if not isinstance(result, tuple) or len(result) != len(outputs):
            say(f"  {name_of} should return {len(outputs)} array{'s' if len(outputs) > 1 else ''}")
            return False
        results = dict(zip(outputs, result))
    verdicts, places = {}, {}
    for name in outputs:
        if name not in results and name not in rec.values:
            continue                               # stopped before it was computed
        got = results.get(name, rec.values.get(name))
        verdicts[name] = _verdict(name, got, want, context)
        if name in rec.lines and (name not in results or _equal(rec.values[name], results[name])):
            places[name] = _made(rec, name)
        elif rec.return_line:                      # returned, not the variable of that name
            places[name] = where(rec.filename, rec.return_line)
    for step in FEEDS:
        result = step
        while result in FEEDS:                     # the result this step ends up in
            result = FEEDS[result]
        behind = result in verdicts and not verdicts[result].ok
        if step in want and step in rec.values and (behind or rec.error is not None):
            verdicts[step] = _verdict(step, rec.values[step], want, context)
            places[step] = _made(rec, step)
    for step, fed in FEEDS.items():                # what a wrong step feeds looks as it does because of it
        wrong_step = step in verdicts and not verdicts[step].ok
        if wrong_step and fed in verdicts and verdicts[fed].status in ("wrong", "shape"):
            verdicts[fed].hint = f"follows from {step} above"
    order = sorted(verdicts, key=lambda name: (rec.lines[name][-1] if name in rec.lines else float("inf"),
                                               outputs.index(name) if name in outputs else -1))
    first = None
    for name in order:
        got = rec.values.get(name) if name not in results else results[name]
        _line(say, name, np.shape(got) if isinstance(got, np.ndarray) else np.shape(want[name]), verdicts[name])
        if not verdicts[name].ok and first is None and name in places:
            first = name
    if first:
        first_wrong(say, first, places[first])
    if rec.error is not None:
        _stopped(say, name_of, rec.error, where(rec.filename, rec.error_line) if rec.error_line else None)
        return False
    return all(verdicts[name].ok for name in outputs)


def _verdict(name, got, want, context):
    if isinstance(got, np.ndarray) and got.dtype == bool:
        got = got.astype(np.float64)               # a mask: True and False as 1 and 0
    return judge(name, got, want[name], None, **context.get(name, {}))


def conv_backward(say, backward=layers.conv2d_backward, seed=0):
    """conv2d_backward (the project's, or a learner's) against torch's conv2d."""
    rng = np.random.default_rng(seed)
    x, W, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    out, cache = layers.conv2d_forward(x, W, b)
    dout = rng.standard_normal(out.shape)
    want = conv_answers(x, W, b, cache[1], dout)
    say("conv2d_backward on 2 images of 3 channels, 7x6, 4 kernels of 3x3:")
    N, _, Ho, Wo = dout.shape
    return _judged(say, backward, (dout, cache), want, ("dx", "dW", "db"), {"db": {"rows": (N, Ho, Wo)}})


def conv_answers(x, W, b, cols, dout):
    """Autograd's gradients, for dout at conv2d(x, W, b)'s output, of what conv2d_backward
    computes: dx, dW and db from torch's own conv2d; dWm and dcols from the same convolution
    written as layers.py writes it, cols (im2col's windows) times Wm (the kernels as columns),
    which must give conv2d's output."""
    tx, tW, tb = (torch.tensor(a, requires_grad=True) for a in (x, W, b))
    out = F.conv2d(tx, tW, tb)
    out.backward(torch.from_numpy(dout))
    N, O, Ho, Wo = out.shape
    tcols = torch.tensor(cols, requires_grad=True)                         # N*H'*W',C*kh*kw
    tWm = torch.tensor(W.reshape(O, -1).T.copy(), requires_grad=True)      # C*kh*kw,O
    product = (tcols @ tWm + torch.from_numpy(b)).reshape(N, Ho, Wo, O).permute(0, 3, 1, 2)
    # The same sums of C*kh*kw products in another order: they differ by rounding, ~1e-15
    # here; windows taken from the wrong place would differ by whole entries.
    assert torch.allclose(product, out, rtol=0, atol=1e-12), "cols @ Wm is not the convolution"
    product.backward(torch.from_numpy(dout))
    return {"dx": tx.grad.numpy(), "dW": tW.grad.numpy(), "db": tb.grad.numpy(),
            "dWm": tWm.grad.numpy(), "dcols": tcols.grad.numpy()}


def maxpool_backward(say, backward=layers.maxpool2d_backward, seed=0):
    """maxpool2d_backward against torch's max_pool2d: ties (ReLU's zeros) and an odd size."""
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.standard_normal((2, 3, 7, 7)), 0)       # many windows of all zeros: ties
    out, cache = layers.maxpool2d_forward(x)
    dout = rng.standard_normal(out.shape)
    want = maxpool_answers(x, dout)
    say("maxpool2d_backward on 2 images of 3 channels, 7x7 (an odd size; ReLU's zeros make ties):")
    pooled = {"pooled": dout}
    return _judged(say, backward, (dout, cache), want, ("dx",), dict.fromkeys(("mask", "dwindows", "dx"), pooled))


def maxpool_answers(x, dout):
    """Autograd's dx for dout at max_pool2d(x, 2)'s output (in N,C,H,W, whose kernel sends a
    tie's gradient to its first maximum), and the same by window: dwindows (the windows do not
    overlap, so each position's gradient is dx's entry there), and the mask, 1 where autograd
    sends a window's gradient (dx for a dout of 1 everywhere)."""
    tx, ones = torch.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    F.max_pool2d(tx, 2).backward(torch.from_numpy(dout))
    F.max_pool2d(ones, 2).sum().backward()
    dx = tx.grad.numpy()
    return {"dx": dx, "dwindows": windows(dx), "mask": windows(ones.grad.numpy())}


def batchnorm_backward(say, backward=batchnorm.batchnorm_backward, seed=0):
    """batchnorm_backward (the project's, or a learner's) against torch's batch_norm in training
    mode: a batch of 6 (where the biased variance, /6, and the unbiased, /5, differ by 20%), 5
    units of different scales and offsets, one of them constant over the batch (variance 0:
    only eps keeps 1 / std finite)."""
    rng = np.random.default_rng(seed)
    B, H = 6, 5
    z = rng.standard_normal((B, H)) * [1.0, 3.0, 0.2, 1.0, 2.0] + [0.0, 1.0, -2.0, 0.0, 5.0]
    z[:, 3] = 0.7                                              # constant: zhat 0, std sqrt(eps)
    gamma, beta = rng.normal(1, 0.5, H), rng.normal(0, 0.5, H)
    _, cache = batchnorm.batchnorm_forward(z, gamma, beta, np.zeros(H), np.ones(H), training=True)
    dy = rng.standard_normal((B, H))
    want = batchnorm_answers(z, gamma, beta, dy)
    mistakes = batchnorm_mistakes(dy, z, gamma)
    say(f"batchnorm_backward on a batch of {B} images, {H} units (one constant over the batch), in training mode:")
    context = {name: {"bn": mistakes[name], **({"rows": (B,)} if name != "dz" else {})} for name in mistakes}
    return _judged(say, backward, (dy, cache), want, ("dz", "dgamma", "dbeta"), context)


def batchnorm_answers(z, gamma, beta, dy):
    """Autograd's dz, dgamma and dbeta for dy at F.batch_norm's output in training mode (the
    batch's statistics, nn.BatchNorm1d's eps); and the stages in between, from autograd on the
    forward pass written out (mean, var, zhat, y), checked to give F.batch_norm's y: dzhat, and
    dvar and dmean, the gradients at the batch's variance and mean."""
    tz, tgamma, tbeta = (torch.tensor(a, requires_grad=True) for a in (z, gamma, beta))
    y = F.batch_norm(tz, None, None, tgamma, tbeta, training=True, eps=batchnorm.EPS)
    y.backward(torch.from_numpy(dy))
    mean = torch.tensor(z.mean(axis=0), requires_grad=True)
    var = torch.tensor(((z - z.mean(axis=0)) ** 2).mean(axis=0), requires_grad=True)   # biased
    zhat = (torch.from_numpy(z) - mean) / torch.sqrt(var + batchnorm.EPS)
    zhat.retain_grad()
    staged = torch.from_numpy(gamma) * zhat + torch.from_numpy(beta)
    # the same numbers to rounding (~1e-15 of the scale); a stage left out would be off by whole entries
    assert torch.allclose(staged, y, rtol=0, atol=1e-12), "the stages are not batch_norm's forward pass"
    staged.backward(torch.from_numpy(dy))
    # var read as a function of z alone (it is the mean of (z - mean)^2, whose slope in mean is
    # -2 mean(z - mean) = 0): dmean holds no path through var, as a staged backward computes it
    return {"dz": tz.grad.numpy(), "dgamma": tgamma.grad.numpy(), "dbeta": tbeta.grad.numpy(),
            "dzhat": zhat.grad.numpy(), "dvar": var.grad.numpy(), "dmean": mean.grad.numpy()}


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
