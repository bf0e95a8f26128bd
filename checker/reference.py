"""The answer key: every gradient of one batch, from the PyTorch twin and autograd.

The NumPy network's weights are copied into its twin (pytorch_nn/), in float64, and the
forward pass is run one layer at a time so that every intermediate tensor can be named
as numpy_nn names it (z1 = conv1(x) or x W1 + b1, a1 = relu(z1), ...) and asked to keep
its gradient (retain_grad). One loss.backward() then gives them all.

A batch-normalised MLP (norm="batch") runs in training mode, as a training step does; its
reference also holds the running statistics one such step leaves, and the logits in
evaluation mode, from a second copy of the twin (a forward pass in training mode moves them).
"""
import numpy as np
import torch
import torch.nn.functional as F

from checker.verdict import batchnorm_mistakes
from numpy_nn.batchnorm import MOMENTUM
from pytorch_nn import cnn as torch_cnn
from pytorch_nn import model as torch_mlp
from pytorch_nn.numpy_weights import load_numpy_params, numpy_buffers


def _run(model, steps, x, y):
    """Run the layers in steps [(name, function)], name each output, and backpropagate the
    mean cross-entropy. Returns (tensors, loss): tensors by name, each with its .grad."""
    model.double()
    t, h = {}, torch.from_numpy(x)
    for name, step in steps:
        h = t[name] = step(h)
        if h.requires_grad:                        # (the image itself needs no gradient)
            h.retain_grad()                        # keep dLoss/d(this) too, not only the weights'
    loss = F.cross_entropy(h, torch.from_numpy(y))
    loss.backward()
    # The steps must be the twin's forward. Not to the last bit: the steps above called tanh
    # once and model(x) calls it again, and PyTorch's float64 tanh on the CPU is not
    # bit-reproducible from call to call (measured on these 32 images: in about 1 process in
    # 25 the first call gives other last bits than the next). That moves the logits
    # (|logits| < 2) by up to 9e-16. A missing or wrong step moves them by far more than 1e-12.
    with torch.no_grad():
        same = torch.allclose(model(torch.from_numpy(x)), t["logits"], rtol=0, atol=1e-12)
    assert same, "the steps are not the twin's forward"
    return t, loss


def _param_grads(layers):
    """dW{i} and db{i} in numpy_nn's layout: nn.Linear keeps (out, in), numpy_nn (in, out). (A
    normalised layer has no bias, and no db.)"""
    grads = {}
    for i, layer in enumerate(layers, start=1):
        dW = layer.weight.grad.numpy()
        grads[f"dW{i}"] = dW.T if dW.ndim == 2 else dW
        if layer.bias is not None:
            grads[f"db{i}"] = layer.bias.grad.numpy()
    return grads


class Reference:
    """logits, loss, and grads: label -> dLoss/d(that), in float64, for one batch (x, y),
    listed in the order the NumPy backward() computes them. before[label] names, for a
    gradient taken through an activation (dz), the gradient just before it (dh, or da).
    summed[label], for a bias's gradient, names the gradient whose rows it sums (its layer's
    output's: dlogits or a dz); pooled[label], for a max-pooling's input gradient (da), the
    gradient at its output (dh). A batch-normalised MLP's also has bn[label], for dz{i},
    dgamma{i} and dbeta{i}, the wrong gradients the classic mistakes give (checker/verdict.py
    batchnorm_mistakes), with bn_from[label], the gradient they are computed from (dy{i}),
    which summed also names for dgamma{i} and dbeta{i}; running, the buffers after
    one training-mode pass, with running_biased (the running variances the biased batch
    variance would give); and eval_logits, the logits in evaluation mode."""

    def __init__(self, logits, loss, grads, before, summed=None, pooled=None):
        self.logits, self.loss, self.grads, self.before = logits, loss, grads, before
        self.summed, self.pooled = summed or {}, pooled or {}
        self.bn, self.bn_from, self.running, self.running_biased, self.eval_logits = {}, {}, {}, {}, None


def _twin(net):
    """The PyTorch twin of numpy_nn's NeuralNetwork net, in float64, with its parameters (and
    running statistics)."""
    model = torch_mlp.MLP(net.sizes, activation=net.activation, norm=net.norm).double()
    return load_numpy_params(model, net.params, net.buffers)


def mlp_reference(net, x, y):
    """For numpy_nn's NeuralNetwork net (any sizes, activation and normalisation)."""
    model = _twin(net)
    L, normalised = net.num_layers, net.norm != "none"
    steps = []
    for i, (layer, norm) in enumerate(zip(model.hidden, model.norms), start=1):
        steps += [(f"z{i}", layer), *([(f"y{i}", norm)] if normalised else []), (f"h{i}", model.activation)]
    t, loss = _run(model, steps + [("logits", model.out)], x, y)
    w = _param_grads(model.layers())
    grads = {"dlogits": t["logits"].grad.numpy()}
    for i in range(L, 0, -1):                      # backward()'s order: W, b, then the layer below
        grads[f"dW{i}"] = w[f"dW{i}"]
        if f"db{i}" in w:
            grads[f"db{i}"] = w[f"db{i}"]
        if i > 1:
            grads[f"dh{i - 1}"] = t[f"h{i - 1}"].grad.numpy()
            if normalised:
                grads[f"dy{i - 1}"] = t[f"y{i - 1}"].grad.numpy()
            grads[f"dz{i - 1}"] = t[f"z{i - 1}"].grad.numpy()
            if normalised:
                norm = model.norms[i - 2]
                grads[f"dgamma{i - 1}"], grads[f"dbeta{i - 1}"] = norm.weight.grad.numpy(), norm.bias.grad.numpy()
    activation_grad = "dy" if normalised else "dz"  # the gradient just after the activation's derivative
    before = {f"{activation_grad}{i}": grads[f"dh{i}"] for i in range(1, L)}
    summed = {f"db{i}": f"dz{i}" if i < L else "dlogits" for i in range(1, L + 1) if f"db{i}" in grads}
    ref = Reference(t["logits"].detach().numpy(), loss.item(), grads, before, summed)
    if normalised:
        _batchnorm_reference(ref, net, model, t, x)
    return ref


def _batchnorm_reference(ref, net, model, t, x):
    """What a batch-normalised MLP's check needs besides the gradients (Reference's bn,
    bn_from, running, running_biased, eval_logits)."""
    for i in range(1, net.num_layers):
        z = t[f"z{i}"].detach().numpy()
        for name, mistakes in batchnorm_mistakes(ref.grads[f"dy{i}"], z, net.params[f"gamma{i}"]).items():
            ref.bn[f"{name}{i}"], ref.bn_from[f"{name}{i}"] = mistakes, f"dy{i}"
        ref.summed[f"dgamma{i}"] = ref.summed[f"dbeta{i}"] = f"dy{i}"
        ref.running_biased[f"running_var{i}"] = (1 - MOMENTUM) * net.buffers[f"running_var{i}"] \
            + MOMENTUM * z.var(axis=0)
    fresh = _twin(net)                             # its buffers as net's were before its forward pass
    with torch.no_grad():
        fresh(torch.from_numpy(x))                 # training mode: moves the running statistics once
        ref.running = {name: array for name, array in numpy_buffers(fresh).items()}
        fresh.eval()
        ref.eval_logits = fresh(torch.from_numpy(x)).numpy()


def cnn_reference(net, x, y):
    """For numpy_nn's CNN net (cnn.py's names: z conv, a ReLU, h pool, f flatten)."""
    # In cnn.py's B,C,H,W layout, not the channels-last one the trainer lays it out in for speed
    # (pytorch_nn/fast_step.py): where a pooling window holds equal maxima (a blank patch of
    # the image) the B,C,H,W kernel sends the gradient to the first of them, as
    # numpy_nn/layers.py does, and the channels-last one to another. The weights' gradients
    # are the same either way (those patches' inputs are equal too), but dh1, da1, ... would
    # differ at those ties.
    model = load_numpy_params(torch_cnn.CNN().double(), net.params)
    image = lambda v: v.reshape(-1, *torch_cnn.IMAGE_SHAPE)  # noqa: E731  B,784 -> B,1,28,28
    steps = [("x", image), ("z1", model.conv1), ("a1", model.relu), ("h1", model.pool),
             ("z2", model.conv2), ("a2", model.relu), ("h2", model.pool),
             ("f", model.flatten), ("logits", model.out)]
    x = np.ascontiguousarray(x)
    t, loss = _run(model, steps, x, y)
    w = _param_grads(model.layers())
    g = {name: t[name].grad.numpy() for name in ("logits", "f", "h2", "a2", "z2", "h1", "a1", "z1")}
    grads = {"dlogits": g["logits"], "dW3": w["dW3"], "db3": w["db3"], "df": g["f"],
             "dh2": g["h2"], "da2": g["a2"], "dz2": g["z2"], "dW2": w["dW2"], "db2": w["db2"],
             "dh1": g["h1"], "da1": g["a1"], "dz1": g["z1"], "dW1": w["dW1"], "db1": w["db1"]}
    before = {"dz2": grads["da2"], "dz1": grads["da1"]}
    summed = {"db3": "dlogits", "db2": "dz2", "db1": "dz1"}
    pooled = {"da2": "dh2", "da1": "dh1"}
    return Reference(t["logits"].detach().numpy(), loss.item(), grads, before, summed, pooled)
