"""The checks of one network, in float64: every gradient its backward() computes against
PyTorch's autograd, a few entries of each parameter's gradient by finite differences, and the
two sanity checks of the training recipe (the loss at initialisation, overfitting one batch).

Each check prints its lines through say() and returns True when everything in it holds.

The first wrong gradient is named with the line that made it; where that line calls a CNN
layer's backward pass (conv2d_backward, maxpool2d_backward), the layer's own check (units.py)
names the line inside it. The loss gets a copy of the labels, compared after the call: a loss
that changes them in place is told so, and the later checks get them read-only. The overfit
check, with Adam, passes on gradients off by only a constant factor (Adam divides it out):
where the gradients' check measured such factors, the overfit line says so.
"""
import inspect
import math
import re
from argparse import Namespace

import numpy as np

from checker.guard import first_line, kind
from checker.trace import failing_line, record, where
from checker.verdict import BATCHNORM, MATRIX, SOFTMAX, UPDATES, judge, not_numbers
from numpy_nn import utils
from numpy_nn.cnn import CNN
from numpy_nn.neural_network import NeuralNetwork

BATCH = 32              # training images a check runs on (check.py's, and the trainer's --exercise)

SHIFT = 1000.0          # logits this large overflow exp() (past ~709 in float64) unless the max is subtracted
FD_EPS = 1e-6           # the finite differences' step
FD_ENTRIES = 3          # entries checked per parameter
# A central difference is off by ~eps^2 f''' (1e-12 here) plus the loss's rounding over
# 2 eps (1e-16 * 2.3 / 2e-6, about 1e-10, absolute). The entries checked are drawn from the
# larger half of each gradient (1e-4 and up on these batches), so 1e-4 relative leaves a wide
# margin; a wrong gradient is off by 1e-2 and more. (A step that crossed a ReLU's kink would
# be off too: with eps 1e-6 it is rare, and the check names the entry if it happens.)
FD_TOLERANCE = 1e-4
# At initialisation every class is about as likely: loss ~ ln 10. Logits of standard deviation s
# add about s^2 / 2. A sigmoid's outputs average 0.5, not 0, so its last layer gives each class a
# fixed offset 0.5 * sum_i W_ij (std 0.5 * sqrt(64) * sqrt(2/64) = 0.71 under he), one draw per
# seed that the 32 images don't average away. Measured on the check's 32 images, seeds 0-199:
# above ln 10 by at most 0.36 (ReLU), 0.48 (tanh), 0.77 (sigmoid, mean 0.25). Weights twice
# too large start 1.2 (ReLU) to 10 above; a summed loss 32 ln 10. 1.0 allows s up to ~1.4.
INIT_TOLERANCE = 1.0
BIAS_STD = 0.1          # see check_all
# Learning 32 images by heart took the project's MLPs 8-269 Adam steps (a sigmoid MLP with 16
# hidden units the slowest; 784-128-64-10 ReLU: 9) and the CNN 13: 500 leave room
OVERFIT = dict(images=32, steps=500, lr=1e-2, below=0.01)


def maker(model, hidden, activation, seed, norm="none"):
    """A function that makes the network to check, in float64, fresh each call: the CNN, or
    the MLP 784-hidden-10 with activation (and norm="batch": batch normalization)."""
    if model == "cnn":
        return lambda: CNN(seed=seed, dtype=np.float64)
    return lambda: NeuralNetwork((784, *hidden, 10), seed=seed, dtype=np.float64, activation=activation, norm=norm)


def _mlp_label(name, variables):
    """The gradient a variable of the MLP's backward() holds: its loop walks the layers
    i = L, ..., 1, computing dW{i}, db{i}, then dh and dz of the layer below (i - 1), and
    under batch normalization dy (after the activation's derivative), then dz, dgamma, dbeta."""
    i = variables.get("i")
    if i is None:
        return None                                # before the loop: dz = dlogits, the loss's
    below = {"dh", "dz", "dy", "dgamma", "dbeta"}
    return f"{name}{i - 1}" if name in below else {"dW": f"dW{i}", "db": f"db{i}"}.get(name)


def _cnn_label(name, variables):
    """cnn.py's backward() names its gradients as the answer key does (dlogits is the loss's)."""
    return name if name.startswith("d") and name != "dlogits" else None


def _loss_label(name, variables):
    """What cross_entropy_with_grad computes and the answer key holds: the loss and dlogits."""
    return name if name in ("loss", "dlogits") else None


def _line(say, name, shape, verdict):
    numbers = ""
    if verdict.diff is not None:
        numbers = f"max|diff| {verdict.diff:8.1e}   rel {verdict.rel:8.1e}"
    width = max(9, len(name) + 1)                  # (a long name, running_mean1, takes from the shape's column)
    say(f"  {name:<{width}}{str(shape):<{27 - width}}{verdict.status:<8}{numbers}")
    if verdict.hint:
        say(f"      -> {verdict.hint}")


def _made(rec, name):
    """Where a recorded value was made: its last line, and the others that changed it."""
    lines = list(dict.fromkeys(rec.lines[name]))   # in order, once each
    text = where(rec.filename, lines[-1])
    if len(lines) > 1:
        text += f"\n      (its value was also changed on line{'s' if len(lines) > 2 else ''} " \
                f"{', '.join(map(str, lines[:-1]))})"
    return text


HEADER = ("  {:<9}{:<18}{:<8}{}".format("", "shape", "", "max|diff|: the largest difference from autograd's; "
                                         "rel: that over autograd's largest entry"))


def first_wrong(say, name, place):
    """The first wrong quantity, and where to look: the line that made it."""
    say(f"  First wrong: {name}. Everything before it is right, so look first at")
    say(f"      {place}")


def gradients(net, x, y, say):
    """Forward, loss and backward on (x, y), each quantity against the answer key. Returns
    (everything right, the loss and backward() ran to their end, scaled): scaled maps each
    parameter whose gradient is wrong by only a positive constant factor k (k times the right
    one) to k, which the overfit check cannot see (sanity())."""
    from checker.reference import cnn_reference, mlp_reference  # torch: imported once a check runs
    is_cnn = isinstance(net, CNN)
    ref = (cnn_reference if is_cnn else mlp_reference)(net, x, y)
    B, ok, first, verdicts, scaled = len(y), True, None, {}, {}
    say("forward and loss:")
    say(HEADER)
    logits, cache = net.forward(x, training=True)  # as a training step runs it
    v = judge("logits", logits, ref.logits, B)
    _line(say, "logits", logits.shape, v)
    if not v.ok:
        say("  The forward pass gives other scores than PyTorch's: fix it first, the gradients follow from it.")
        return False, False, scaled
    if ref.eval_logits is not None:
        ok &= _batchnorm_forward(say, net, x, logits, ref)
    labels = y.copy()                              # what the loss is given: y itself stays as it is
    loss_rec = record(utils.cross_entropy_with_grad, (logits, labels), _loss_label, {"y": labels})
    if loss_rec.error is None:
        problem = _not_a_loss(loss_rec.result)
        if problem:
            say(f"  cross_entropy_with_grad returned {problem}")
            say("      -> it returns the pair (loss, dlogits): a float and a B,C array of floats")
            return False, False, scaled
        try:
            big_loss, big_dlogits = utils.cross_entropy_with_grad(logits + SHIFT, y.copy())
        except Exception as error:
            loss_rec.error = error
    if loss_rec.error is not None:
        _stopped(say, "cross_entropy_with_grad", loss_rec.error,
                 where(loss_rec.filename, loss_rec.error_line) if loss_rec.error_line else None)
        return False, False, scaled
    loss, dlogits = loss_rec.result
    for name, got, want in (("loss", loss, np.float64(ref.loss)),
                            ("dlogits", dlogits, ref.grads["dlogits"])):
        v = verdicts[name] = judge(name, got, want, B)
        _line(say, name, np.shape(got), v)
        if not v.ok and first is None:
            first = (name, _made(loss_rec, name) if name in loss_rec.lines
                     else "cross_entropy_with_grad, which returns it")
        ok &= v.ok
    if not np.array_equal(labels, y):
        _changed_labels(say, loss_rec, labels, y)
        ok = False
    stable = not _not_a_loss((big_loss, big_dlogits)) and np.isfinite(big_loss) and np.all(np.isfinite(big_dlogits))
    say(f"  {'stable':<9}{'':<18}{'ok' if stable else 'wrong':<8}the loss of logits + {SHIFT:g} "
        f"(the same softmax) is {'finite' if stable else 'inf or NaN'}")
    if not stable:
        say("      -> exp() overflows past ~709 (float64; 88 in float32): subtract each row's max "
            f"from the logits before exp (log_softmax in numpy_nn/utils.py); {SOFTMAX}")
        ok = False

    say("backward(), its gradients in the order it computes them" +
        (" (z: a conv's output, a: after ReLU, h: after pooling, f: flattened):" if is_cnn else
         " (z = h W, y = gamma zhat + beta, h = f(y): the layer's output):" if ref.eval_logits is not None else
         " (z = h W + b, h = f(z): the layer's output):"))
    net.flat_grads[...] = 0                        # so a gradient never written shows as zeros
    watched = {f"d{name}": net.grads[name] for name in net.params}
    rec = record(net.backward, (dlogits, cache), _cnn_label if is_cnn else _mlp_label, watched)
    for name, want in ref.grads.items():
        if name == "dlogits":
            continue
        got = rec.values.get(name)
        if got is None and name[1:] in net.params and rec.error is None:
            got = net.grads[name[1:]]              # written but never changed: zeros
        relu = is_cnn or net.activation == "relu"     # (dz's mask, or dy's under batch normalization)
        v = verdicts[name] = judge(name, got, want, B, before=ref.before.get(name), relu=relu,
                                   **_layer_context(name, ref, verdicts))
        if name[1:] in net.params and v.factor is not None and v.factor > 0:
            scaled[name[1:]] = v.factor
        if v.status == "missing" and rec.error is not None:
            v.status, v.hint = "not run", None     # backward() stopped before it
        _line(say, name, want.shape if got is None or got is Ellipsis else np.shape(got), v)
        if not v.ok and first is None and name in rec.lines:
            first = (name, _made(rec, name))
        ok &= v.ok
    if first:
        first_wrong(say, *first)
        _inside_the_layer(say, net.backward, first[1])
    if rec.error is not None:
        _stopped(say, "backward()", rec.error, where(rec.filename, rec.error_line) if rec.error_line else None)
        return False, False, scaled
    return ok and first is None, True, scaled


def _layer_context(name, ref, verdicts):
    """judge()'s keywords for what a gradient's layer tells about it: for a bias, the sizes of
    the rows it sums (B, or N, H', W' for a convolution); for a max-pooling's input gradient,
    the gradient at its output; for batch normalization's dz, dgamma and dbeta, what its
    classic mistakes give. Only where that gradient is itself right: a bias's gradient
    that is 1/B of the right one is a mean where the sum belongs only if the dz it sums is
    right (a dlogits divided by B twice gives the same factor)."""
    context = {}
    summed, pooled, bn_from = ref.summed.get(name), ref.pooled.get(name), ref.bn_from.get(name)
    if summed and summed in verdicts and verdicts[summed].ok:
        shape = ref.grads[summed].shape            # B,n or B,C,H',W'
        context["rows"] = (shape[0], *shape[2:])
    if pooled and pooled in verdicts and verdicts[pooled].ok:
        context["pooled"] = ref.grads[pooled]
    if bn_from and bn_from in verdicts and verdicts[bn_from].ok:
        context["bn"] = ref.bn[name]
    return context


def _batchnorm_forward(say, net, x, logits, ref):
    """A batch-normalised MLP's forward pass beyond the logits of a training step: the running
    statistics that step left (buffers), and the logits in evaluation mode, which normalise with
    them. True when all are right."""
    ok = True
    for name, want in ref.running.items():
        got = net.buffers.get(name)
        v = judge(name, got, want, None)
        if not v.ok and name in ref.running_biased and got is not None and got.shape == want.shape \
                and np.allclose(got, ref.running_biased[name], rtol=1e-12, atol=0):
            v.hint = ("updated with the biased batch variance (divided by B): the running variance keeps "
                      f"the unbiased one, B / (B - 1) var, as nn.BatchNorm1d does; {BATCHNORM}")
        _line(say, name, want.shape, v)
        ok &= v.ok
    eval_logits, _ = net.forward(x)                # evaluation mode: the running statistics
    v = judge("logits", eval_logits, ref.eval_logits, None)
    if not v.ok and np.allclose(eval_logits, logits, rtol=1e-12, atol=0):
        v.hint = ("the same as in training: evaluation normalised with the batch's own statistics; it must "
                  f"use the running ones, so that an image's scores do not depend on its batch; {BATCHNORM}")
    _line(say, "logits", f"{eval_logits.shape} eval", v)
    return ok & v.ok


LAYERS = {"conv2d_backward": "conv_backward", "maxpool2d_backward": "maxpool_backward",  # -> units.py's check
          "batchnorm_backward": "batchnorm_backward"}


def _inside_the_layer(say, backward, place):
    """Where the first wrong gradient came out of a call of a layer's backward pass (the CNN's
    conv2d_backward or maxpool2d_backward, the MLP's batchnorm_backward), that function's own
    check, which names the line inside it: the one this backward() calls (numpy_nn/layers.py's
    or batchnorm.py's, or an exercise's)."""
    from checker import units
    for function_name, check in LAYERS.items():
        if f"{function_name}(" not in place.split("\n")[0]:
            continue
        function = inspect.unwrap(getattr(backward, "__func__", backward)).__globals__.get(function_name)
        if function is None:
            return
        say(f"  That line calls {function_name}: its own check looks inside it.")

        def inner(line):                           # its lines, indented under this one
            say(f"    {line}" if line else line)
        if getattr(units, check)(inner, function):
            say(f"    {function_name} passes its own check: look at what that line gives it, and where its "
                f"results go")
        return


def _not_a_loss(result):
    """What is wrong with cross_entropy_with_grad's result as (loss, dlogits), or None: the
    rest of the checks compute with both."""
    if not isinstance(result, tuple) or len(result) != 2:
        return f"{not_numbers(result)}, not a pair (loss, dlogits)"
    loss, dlogits = result
    if not_numbers(loss, scalar=True):
        return f"a loss that is {not_numbers(loss, scalar=True)}, not a number"
    if not_numbers(dlogits):
        return f"a dlogits that is {not_numbers(dlogits)}, not an array of numbers"
    return None


def _changed_labels(say, rec, labels, y):
    """The loss changed the labels it was given, in place: one row saying so, and where."""
    changed = int(np.sum(labels != y))
    say(f"  {'y':<9}{str(y.shape):<18}{'changed':<8}{changed} of {len(y)} labels: cross_entropy_with_grad "
        f"changed y, the labels it was given, in place")
    at = f"at {_made(rec, 'y')}. " if "y" in rec.lines else ""
    say(f"      -> {at}Whatever reads the labels next (the other checks here, the next epoch in "
        f"training) would read these; a function leaves its inputs as they are (work on y.copy() if "
        f"you must). The checks below pass the right labels, read-only: a change stops at its line")


def _stopped(say, what, error, line=None):
    """One exception, in two lines: what stopped and why, and where (not a traceback); for a
    matrix product whose sizes do not fit, a third saying what that means."""
    say(f"  {what} stopped with {kind(error)}: {first_line(error)}")
    deepest = failing_line(error)
    if line:
        say(f"      at {line}")
    if line is None or not deepest.startswith(line.split(":")[0] + ":"):
        say(f"      in {deepest}")
    sizes = re.search(r"matmul: .*\(size (\d+) is different from (\d+)\)", str(error))
    if isinstance(error, ValueError) and sizes:
        say(f"      -> a matrix product's sizes do not fit: in A @ B, A's last size must be B's first, and "
            f"here one is {sizes[2]}, the other {sizes[1]}. Write down each operand's shape: the one "
            f"that fits is often the other's transpose; {MATRIX}")


def central_difference(f, flat, k, eps=FD_EPS):
    """(f(p + eps e_k) - f(p - eps e_k)) / 2 eps: the slope of f() along entry k of flat, a
    flat view of an array f reads (changed in place, then put back)."""
    old = flat[k]
    flat[k] = old + eps
    up = f()
    flat[k] = old - eps
    down = f()
    flat[k] = old
    return (up - down) / (2 * eps)


def numerical_gradient(f, x, eps=FD_EPS):
    """The central difference of f() along every entry of x, shaped as x (which f must read).
    Use float64: in float32 the rounding error of f swamps a difference this small."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)  # views: writing them writes x and grad
    for k in range(flat.size):
        gflat[k] = central_difference(f, flat, k, eps)
    return grad


def finite_differences(net, x, y, say, seed=0):
    """A few entries of each parameter's gradient (as backward() left it in net.grads)
    against (loss(p + eps) - loss(p - eps)) / 2 eps."""
    say(f"finite differences, {FD_ENTRIES} entries of each parameter (step {FD_EPS:g}):")
    rng, ok = np.random.default_rng(seed), True
    for name, p in net.params.items():
        g, flat = net.grads[name].reshape(-1), p.reshape(-1)
        big = np.flatnonzero(np.abs(g) >= np.median(np.abs(g[g != 0]))) if np.any(g) else []
        picks = rng.choice(big if len(big) >= FD_ENTRIES else len(flat), FD_ENTRIES, replace=False)
        worst, worst_at = 0.0, None
        for k in picks:
            numeric = central_difference(lambda: net.loss(x, y), flat, k)
            err = abs(numeric - g[k]) / max(abs(numeric), abs(g[k]), 1e-12)
            if err >= worst:
                worst, worst_at = err, (k, numeric, g[k])
        good = worst <= FD_TOLERANCE
        say(f"  {name:<9}{str(p.shape):<18}{'ok' if good else 'wrong':<8}worst relative error {worst:8.1e}")
        if not good:
            k, numeric, analytic = worst_at
            index = np.unravel_index(k, p.shape)
            say(f"      -> entry {tuple(int(i) for i in index)}: backward() says {analytic:.6g}, "
                f"the loss's slope is {numeric:.6g}")
        ok &= good
    return ok


def sanity(make_net, x, y, say, scaled=None):
    """The loss at initialisation is near ln 10, and one batch can be learnt by heart. scaled
    (gradients()'s): the parameters whose gradients are off by a constant factor, which the
    overfit check, with Adam, cannot see; said so when it passes."""
    from numpy_nn.train import train_step  # the trainer's own step (it imports the harness)
    say("sanity checks of the training recipe:")
    net = make_net()
    loss = net.loss(x, y)
    good = abs(loss - math.log(10)) <= INIT_TOLERANCE
    say(f"  {'init':<27}{'ok' if good else 'wrong':<8}loss at initialisation {loss:.3f}; "
        f"ln 10 = {math.log(10):.3f} (10 classes equally likely), within {INIT_TOLERANCE}")
    n, steps, lr, below = OVERFIT["images"], OVERFIT["steps"], OVERFIT["lr"], OVERFIT["below"]
    net = make_net()
    optimizer = utils.OPTIMIZERS["adam"](net.flat_params, lr)
    args = Namespace(dropout=0.0, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        try:
            losses.append(train_step(net, optimizer, x[:n], y[:n], args, None))
        except Exception as error:
            _stopped(say, "a training step", error)
            return False
        if 0 <= losses[-1] < below:                # (a cross-entropy is never negative; NaN is nowhere)
            break
    fits = 0 <= losses[-1] < below
    say(f"  {'overfit':<27}{'ok' if fits else 'wrong':<8}{n} images: loss {losses[0]:.3f} -> "
        f"{losses[-1]:.4f} in {len(losses)} Adam steps (lr {lr:g}); asked: below {below} within {steps}")
    if not fits and not 0 <= losses[-1]:
        say("      -> a cross-entropy is never negative, nor NaN: the loss itself is wrong (see its line above)")
    elif not fits:
        say("      -> a network whose gradients are right learns a handful of images by heart; "
            f"if the gradients above are right, look at the update (the optimizer); {UPDATES}")
    elif scaled:
        say(f"      -> {_blind(scaled)}")
    return good and fits


def _blind(scaled):
    """Why an overfit with gradients off by constant factors (scaled: parameter -> k) proves
    nothing about them: Adam's step lr m_hat / (sqrt(v_hat) + eps) is the same for k g as for g
    (m scales by k, and so does sqrt(v); only eps, 1e-8, does not), SGD's lr g is not."""
    groups = {}
    for name, k in scaled.items():
        groups.setdefault(f"{k:.6g} times too large" if k >= 1 else f"1/{1 / k:.6g} of the right size",
                          []).append(name)
    said = "; ".join(f"{', '.join(names)}: {size}" for size, names in groups.items())
    factors = "that factor" if len(groups) == 1 else "those factors"
    return (f"passes only because Adam is blind to a constant factor, and these gradients are off by just such a factor "
            f"({said}). Adam's step, lr m / (sqrt(v) + eps), is the same for k g as for g (eps, 1e-8, "
            f"aside); SGD's, lr g, would be off by {factors}. Fix the gradients above; {UPDATES}")


def check_all(make_net, x, y, say, seed=0):
    """All three checks of the network make_net() builds (fresh each call)."""
    net = make_net()
    # The gradients are checked at biases drawn small and nonzero, not at their starting
    # zeros: there a blank patch of the image gives z = 0 exactly, ReLU's kink, where a
    # finite difference sees the average of the slopes on its two sides and backward() the
    # slope on one side (0).
    # gamma and beta likewise away from their starting 1 and 0: a gradient that leaves gamma out
    # would look right at gamma = 1
    rng = np.random.default_rng(seed)
    for name, p in net.params.items():
        if name.startswith("b"):                   # b and beta
            p[...] = rng.normal(0, BIAS_STD, p.shape)
        elif name.startswith("gamma"):
            p[...] = rng.normal(1, BIAS_STD, p.shape)
    ok, finished, scaled = gradients(net, x, y, say)
    say("")
    if not finished:
        say("The finite differences and the sanity checks need the loss and backward() to run to "
            "their end: they come once they do.")
        return False
    # The labels, read-only from here: a loss that changes them in place (gradients() said so)
    # stops at that line, instead of training the overfit check on other labels at every step
    y = y.copy()
    y.setflags(write=False)
    ok &= finite_differences(net, x, y, say)
    say("")
    return sanity(make_net, x, y, say, scaled) & ok
