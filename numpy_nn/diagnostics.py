"""Watch it learn: each layer's gradients, updates and activations while the network trains.

Every N steps (--diagnostics-every N; by default about POINTS_PER_EPOCH times an epoch, from
step 1) the trainer records, for the step just taken:

    loss              the training loss of that step's batch
    grad_rms          per layer, the root mean square of the weight gradient the optimizer was
                      given, sqrt(mean(dW^2)) (with --weight-decay, the L2 term's included): how
                      hard the loss pulls on that layer. In a sigmoid network it shrinks layer by
                      layer towards the input: the vanishing gradient (Nielsen, ch. 5)
    update_ratio      per layer, ||W_after - W_before|| / ||W_before|| (Frobenius norms): how far
                      the step moved the weights, relative to their size. About 1e-3 is healthy
                      (Karpathy, makemore part 3); far above 1e-2 the steps are too large
    activation_mean   per layer, the mean and standard deviation of every value the layer
    activation_std    outputs for the probe images, just after the step
    dead_fraction     per hidden layer, the fraction of its units that output 0 for every probe
                      image: a ReLU dead on every training image passes nothing forward and gets
                      no gradient back, so no later step revives it (one dead on the probe images
                      alone may still learn from other images, and come back). An MLP's unit is one neuron; a conv layer's is a
                      channel (one feature map), dead when it is 0 at every position of every
                      probe image. (Sigmoid never outputs exactly 0, tanh only where z is 0: their
                      layers count no dead units; their trouble is saturation, below.)
    saturated_fraction  per hidden layer of a sigmoid or tanh MLP, the share of its outputs on
                      the probe images (every unit, every image) within 2% of the activation's
                      range from either end (SATURATION: below 0.02 or above 0.98 for sigmoid,
                      beyond -+0.96 for tanh). There the slope is under 7.8% of its peak (sigmoid's
                      0.0196 of 0.25, tanh's 0.078 of 1): the unit passes almost no gradient back
    input_p15, input_p50, input_p85
                      per hidden layer of an MLP, the 15th, 50th and 85th percentiles over the
                      probe images of one unit's input to its activation (unit TRACKED_UNIT: z, or
                      y after batch normalization): how that input's distribution moves during
                      training, as Ioffe & Szegedy's figure 1(b, c) draws it

and, at the start and at the end of training, a histogram of each layer's probe outputs
(HISTOGRAM_BINS equal bins from the smallest value to the largest).

A layer's output is what the next layer reads: f(z) for a hidden MLP layer, ReLU and max-pool
for a conv layer, the logits for the last layer. The probe images are the first PROBE_IMAGES
training images, the same at every record, as evaluation sees them: dropout off, and batch
normalization with its running statistics (so no probe image's numbers depend on the others).

This file computes the figures from NumPy arrays (Watch, for numpy_nn/train.py);
pytorch_nn/diagnostics.py computes them from torch tensors, and a test proves the two agree in
float64. DiagnosticsLog, which both use, only gathers their numbers into the record.
"""
import math

import numpy as np

from harness.metrics_file import DIAGNOSTICS_PER_LAYER

PROBE_IMAGES = 128      # their forward pass is most of a record's cost: a NumPy CNN record took
                        # 13 ms with 128, 31 ms with 256, against 29 ms for a training step
POINTS_PER_EPOCH = 15   # the default: enough to follow each epoch; the cost: ANALYSIS.md section 7
HISTOGRAM_BINS = 40
CNN_LAYERS = ("conv1", "conv2", "linear")
SATURATION = {"sigmoid": (0.02, 0.98), "tanh": (-0.96, 0.96)}  # outputs outside these are saturated
PERCENTILES = (15, 50, 85)   # of one unit's input over the probe images: the paper's figure 1(b, c)
TRACKED_UNIT = 0             # which unit: the first of each hidden layer, as good as any (none chosen by its numbers)


def hidden_figures(model, activation):
    """The figures recorded per hidden layer besides dead_fraction: an MLP's input percentiles,
    and a sigmoid or tanh MLP's saturated fraction. model: "mlp" or "cnn"."""
    if model != "mlp":
        return ()
    return (*(f"input_p{q}" for q in PERCENTILES),
            *(("saturated_fraction",) if activation in SATURATION else ()))


def interval(args, steps_per_epoch):
    """Steps between records: --diagnostics-every, or about POINTS_PER_EPOCH an epoch;
    None with --no-diagnostics."""
    if args.no_diagnostics:
        return None
    return args.diagnostics_every or max(1, steps_per_epoch // POINTS_PER_EPOCH)


def layer_names(model, n_layers):
    """The names the record gives the layers, input to output: conv1, conv2, linear for the
    CNN; layer1, layer2, ... for the MLP (the layer of W1, b1 is layer1)."""
    return list(CNN_LAYERS) if model == "cnn" else [f"layer{i}" for i in range(1, n_layers + 1)]


def finite(x):
    """x as a float for the record, or None if it is not finite (JSON has no NaN)."""
    x = float(x)
    return x if math.isfinite(x) else None


class DiagnosticsLog:
    """The record's "diagnostics": plain numbers, per figure, per layer, one per recorded step.
    Both twins fill it; it computes nothing but which steps to record."""

    def __init__(self, names, every, steps_per_epoch, probe_images, hidden=()):
        self.names, self.every, self.steps_per_epoch = names, every, steps_per_epoch
        self.block = {"every": every, "probe_images": probe_images, "layers": names, "steps": [], "loss": [],
                      **{figure: {name: [] for name in names} for figure in DIAGNOSTICS_PER_LAYER},
                      # per hidden layer: the last layer's outputs are the logits, no activation's
                      **{figure: {name: [] for name in names[:-1]} for figure in ("dead_fraction", *hidden)},
                      "histograms": {"init": None, "end": None}}
        # one complete row per record, appended in one operation: Ctrl-C or SIGTERM (raised
        # between any two Python operations) can never leave the figures of unequal lengths
        self.rows = []

    def due(self, epoch, batch):
        """Is this step one to record? Steps count 1, 2, ... over the whole run: 1, 1 + every, ..."""
        self.step = (epoch - 1) * self.steps_per_epoch + batch
        return self.every is not None and (self.step - 1) % self.every == 0

    def add(self, loss, **figures):
        """The step due() last said yes to: its loss, and each figure as a list over the layers
        (dead_fraction and the hidden figures over the hidden layers)."""
        self.rows.append((self.step, finite(loss), {figure: [finite(v) for v in values]
                                                    for figure, values in figures.items()}))

    def finish(self, histograms):
        """The rows as one series per figure and layer, and the histograms at the end, one per
        layer; returns the block, complete."""
        for step, loss, figures in self.rows:
            self.block["steps"].append(step)
            self.block["loss"].append(loss)
            for figure, values in figures.items():
                for name, value in zip(self.block[figure], values, strict=True):
                    self.block[figure][name].append(value)
        self.histograms("end", histograms)
        return self.block

    def histograms(self, when, histograms):
        """The histograms at "init" or at the "end", one per layer: (counts, edges), or None for
        a layer whose outputs are not all finite (a run blowing up has nothing to bin)."""
        self.block["histograms"][when] = {
            name: None if h is None else {"counts": [int(c) for c in h[0]], "edges": [float(e) for e in h[1]]}
            for name, h in zip(self.names, histograms, strict=True)}


# ----------------------------------------------------------------------------- the figures

def rms(g):
    """Root mean square: sqrt(mean(g^2))."""
    return np.sqrt(np.mean(g * g))


def update_ratio(before, after):
    """||after - before|| / ||before||, Frobenius norms (of the flattened arrays)."""
    return np.linalg.norm(after - before) / np.linalg.norm(before)


def dead_fraction(h):
    """The fraction of units that are 0 for every image: h B,units or B,C,H,W (a unit is a
    channel, 0 at every position)."""
    alive = (h.reshape(h.shape[0], h.shape[1], -1) != 0).any(axis=(0, 2))   # units
    return 1 - alive.mean()


def saturated_fraction(h, bounds):
    """The share of the outputs h (every unit, every image) outside bounds (SATURATION's)."""
    low, high = bounds
    return ((h < low) | (h > high)).mean()


def unit_percentiles(z):
    """The PERCENTILES of unit TRACKED_UNIT's inputs z[:, TRACKED_UNIT] over the probe images
    (linear interpolation between the two nearest, as torch.quantile takes them)."""
    return np.percentile(z[:, TRACKED_UNIT], PERCENTILES)


def histogram(h):
    """(counts, edges) of HISTOGRAM_BINS equal bins from h's smallest value to its largest,
    or None if h holds a NaN or an infinity."""
    return np.histogram(h, bins=HISTOGRAM_BINS) if np.isfinite(h).all() else None


def hidden_values(figures, outputs, inputs, activation):
    """The hidden figures' values (hidden_figures) from the hidden layers' outputs and their
    activations' inputs, as DiagnosticsLog.add takes them: {figure: [a value per layer]}."""
    values = {}
    if any(figure.startswith("input_p") for figure in figures):
        per_layer = [unit_percentiles(z) for z in inputs]
        values.update({f"input_p{q}": [p[k] for p in per_layer] for k, q in enumerate(PERCENTILES)})
    if "saturated_fraction" in figures:
        values["saturated_fraction"] = [saturated_fraction(h, SATURATION[activation]) for h in outputs]
    return values


class Watch:
    """Records the diagnostics of a numpy_nn network as numpy_nn/train.py trains it:

        due(epoch, batch)    is this step one to record?
        before_step()        a copy of the weights
        after_step(loss)     the step's loss, its gradients (still in net.grads after the
                             update), the update ratios, and the probe images through the network
        finish()             the end histograms; returns the record's block (None when off)

    x: the training images (the first PROBE_IMAGES are the probe); steps_per_epoch: by
    default, what --batch-size makes of len(x).
    """

    def __init__(self, net, x, args, steps_per_epoch=None):
        self.net, self.x_probe = getattr(net, "net", net), x[:PROBE_IMAGES]  # the network, not its Halves
        steps_per_epoch = steps_per_epoch or math.ceil(len(x) / args.batch_size)
        weights = [name for name in self.net.params if name.startswith("W")]   # W1, W2, ... input to output
        self.weights = [self.net.params[name] for name in weights]             # views: they follow the updates
        self.grads = [self.net.grads[name] for name in weights]
        self.every = interval(args, steps_per_epoch)
        self.activation = getattr(self.net, "activation", "relu")             # the CNN's is ReLU
        self.hidden = hidden_figures(args.model, self.activation)
        self.log = DiagnosticsLog(layer_names(args.model, len(weights)), self.every, steps_per_epoch,
                                  len(self.x_probe), self.hidden)
        if self.every:
            self.log.histograms("init", [histogram(h) for h in self.outputs()[0]])

    def outputs(self):
        """Each layer's output for the probe images, as evaluation computes them (dropout off,
        batch normalization's running statistics): the hidden layers' (the cache's h1, h2, ...:
        f(z) in the MLP, after ReLU and pooling in the CNN), then the logits; and an MLP's
        hidden layers' inputs to their activation (the cache's z1, z2, ..., or y1, y2, ... under
        batch normalization; [] for the CNN)."""
        logits, cache = self.net.forward(self.x_probe)
        hidden = range(1, len(self.weights))
        inputs = [cache.get(f"y{i}", cache.get(f"z{i}")) for i in hidden] if self.hidden else []
        return [cache[f"h{i}"] for i in hidden] + [logits], inputs

    def due(self, epoch, batch):
        return self.log.due(epoch, batch)

    def before_step(self):
        self.before = [W.copy() for W in self.weights]

    def after_step(self, loss):
        outputs, inputs = self.outputs()
        self.log.add(loss, grad_rms=[rms(g) for g in self.grads],
                     update_ratio=[update_ratio(b, W) for b, W in zip(self.before, self.weights)],
                     activation_mean=[h.mean() for h in outputs], activation_std=[h.std() for h in outputs],
                     dead_fraction=[dead_fraction(h) for h in outputs[:-1]],
                     **hidden_values(self.hidden, outputs[:-1], inputs, self.activation))

    def finish(self):
        return self.log.finish([histogram(h) for h in self.outputs()[0]]) if self.every else None
