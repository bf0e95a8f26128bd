"""The diagnostics of numpy_nn/diagnostics.py (read it first: what each figure means and why),
computed the PyTorch way: the gradients from param.grad, each layer's output caught by a
forward hook as the probe images pass through the model.

Same figures, same record (numpy_nn.diagnostics.DiagnosticsLog); a test proves the twins'
numbers agree in float64.
"""
import math

import torch
from torch import nn

from numpy_nn.diagnostics import (
    HISTOGRAM_BINS,
    PERCENTILES,
    PROBE_IMAGES,
    SATURATION,
    TRACKED_UNIT,
    DiagnosticsLog,
    hidden_figures,
    interval,
    layer_names,
)
from pytorch_nn.cnn import CNN


def rms(g):
    """Root mean square: sqrt(mean(g^2))."""
    return g.square().mean().sqrt().item()


def update_ratio(before, after):
    """||after - before|| / ||before||, Frobenius norms (of the flattened tensors)."""
    return (torch.linalg.vector_norm(after - before) / torch.linalg.vector_norm(before)).item()


def dead_fraction(h):
    """The fraction of units that are 0 for every image: h B,units or B,C,H,W (a unit is a
    channel, 0 at every position)."""
    alive = h.reshape(h.shape[0], h.shape[1], -1).ne(0).any(dim=2).any(dim=0)   # units
    return 1 - alive.double().mean().item()


def saturated_fraction(h, bounds):
    """The share of the outputs h (every unit, every image) outside bounds (SATURATION's)."""
    low, high = bounds
    return ((h < low) | (h > high)).double().mean().item()


def unit_percentiles(z):
    """The PERCENTILES of unit TRACKED_UNIT's inputs over the probe images (torch.quantile:
    linear interpolation, as np.percentile)."""
    q = torch.tensor([p / 100 for p in PERCENTILES], dtype=z.dtype, device=z.device)
    return torch.quantile(z[:, TRACKED_UNIT], q).tolist()


def histogram(h):
    """(counts, edges) of HISTOGRAM_BINS equal bins from h's smallest value to its largest
    (torch.histogram bins as np.histogram does; it runs on the CPU), or None if h holds a NaN
    or an infinity."""
    return torch.histogram(h.cpu(), bins=HISTOGRAM_BINS) if torch.isfinite(h).all() else None


class Watch:
    """Records the diagnostics of a pytorch_nn model as pytorch_nn/train.py trains it, with the
    methods of numpy_nn.diagnostics.Watch."""

    def __init__(self, model, x, args, steps_per_epoch=None):
        self.model, self.x_probe = model, x[:PROBE_IMAGES]
        steps_per_epoch = steps_per_epoch or math.ceil(len(x) / args.batch_size)
        self.weights = [layer.weight for layer in model.layers()]
        # numpy_nn's dW holds the L2 term; torch.optim adds it inside step(), so it is added here
        self.weight_decay = args.weight_decay
        # the modules whose output is a layer's output: the activation (MLP) or the pooling (CNN),
        # called once per hidden layer, then the output layer
        self.watched = [model.pool if isinstance(model, CNN) else model.activation, model.out]
        self.every = interval(args, steps_per_epoch)
        self.activation = {nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}.get(type(getattr(model, "activation", None)), "relu")
        self.hidden = hidden_figures(args.model, self.activation)
        self.log = DiagnosticsLog(layer_names(args.model, len(self.weights)), self.every, steps_per_epoch,
                                  len(self.x_probe), self.hidden)
        if self.every:
            self.log.histograms("init", [histogram(h) for h in self.outputs()[0]])

    def outputs(self):
        """Each layer's output for the probe images, as evaluation computes them (eval(): dropout
        off, batch normalization's running statistics), in the order the forward pass makes
        them: the hidden layers', then the logits; and an MLP's hidden layers' inputs to their
        activation (what the activation module is called with; [] for the CNN)."""
        outputs, inputs = [], []

        def caught(module, args, out):
            outputs.append(out)
            if self.hidden and module is self.watched[0]:     # an MLP's activation: its input too
                inputs.append(args[0])
        hooks = [module.register_forward_hook(caught) for module in self.watched]
        training = self.model.training
        self.model.eval()                                     # dropout off, the running statistics
        try:
            with torch.inference_mode():
                self.model(self.x_probe)
        finally:
            for hook in hooks:
                hook.remove()
            self.model.train(training)
        return outputs, inputs

    def due(self, epoch, batch):
        return self.log.due(epoch, batch)

    def before_step(self):
        self.before = [W.detach().clone() for W in self.weights]

    def after_step(self, loss):
        # W.grad is still the step's gradient after the update (zero_grad comes at the next step);
        # the L2 term is taken at the weights the gradient was computed at, those before the update
        grad_rms = [rms(W.grad + self.weight_decay * before if self.weight_decay else W.grad)
                    for W, before in zip(self.weights, self.before)]
        outputs, inputs = self.outputs()
        hidden = {}
        if inputs:
            per_layer = [unit_percentiles(z) for z in inputs]
            hidden = {f"input_p{q}": [p[k] for p in per_layer] for k, q in enumerate(PERCENTILES)}
        if "saturated_fraction" in self.hidden:
            hidden["saturated_fraction"] = [saturated_fraction(h, SATURATION[self.activation]) for h in outputs[:-1]]
        self.log.add(loss, grad_rms=grad_rms,
                     update_ratio=[update_ratio(b, W.detach()) for b, W in zip(self.before, self.weights)],
                     activation_mean=[h.mean().item() for h in outputs],
                     activation_std=[h.std(correction=0).item() for h in outputs],   # as np.std
                     dead_fraction=[dead_fraction(h) for h in outputs[:-1]], **hidden)

    def finish(self):
        return self.log.finish([histogram(h) for h in self.outputs()[0]]) if self.every else None
