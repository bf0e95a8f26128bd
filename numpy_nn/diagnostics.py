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
                      layers count no dead units; their trouble is saturation, read it in the
                      histograms.)

and, at the start and at the end of training, a histogram of each layer's probe outputs
(HISTOGRAM_BINS equal bins from the smallest value to the largest).

A layer's output is what the next layer reads: f(z) for a hidden MLP layer, ReLU and max-pool
for a conv layer, the logits for the last layer. The probe images are the first PROBE_IMAGES
training images, the same at every record, with dropout off.

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

    def __init__(self, names, every, steps_per_epoch, probe_images):
        self.names, self.every, self.steps_per_epoch = names, every, steps_per_epoch
        self.block = {"every": every, "probe_images": probe_images, "layers": names, "steps": [], "loss": [],
                      **{figure: {name: [] for name in names} for figure in DIAGNOSTICS_PER_LAYER},
                      "dead_fraction": {name: [] for name in names[:-1]},   # the last layer's are the logits
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
        (dead_fraction over the hidden layers)."""
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


def histogram(h):
    """(counts, edges) of HISTOGRAM_BINS equal bins from h's smallest value to its largest,
    or None if h holds a NaN or an infinity."""
    return np.histogram(h, bins=HISTOGRAM_BINS) if np.isfinite(h).all() else None


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
        self.log = DiagnosticsLog(layer_names(args.model, len(weights)), self.every, steps_per_epoch, len(self.x_probe))
        if self.every:
            self.log.histograms("init", [histogram(h) for h in self.outputs()])

    def outputs(self):
        """Each layer's output for the probe images, dropout off: the hidden layers' (the
        cache's h1, h2, ...: f(z) in the MLP, after ReLU and pooling in the CNN), then the logits."""
        logits, cache = self.net.forward(self.x_probe)
        return [cache[f"h{i}"] for i in range(1, len(self.weights))] + [logits]

    def due(self, epoch, batch):
        return self.log.due(epoch, batch)

    def before_step(self):
        self.before = [W.copy() for W in self.weights]

    def after_step(self, loss):
        outputs = self.outputs()
        self.log.add(loss, grad_rms=[rms(g) for g in self.grads],
                     update_ratio=[update_ratio(b, W) for b, W in zip(self.before, self.weights)],
                     activation_mean=[h.mean() for h in outputs], activation_std=[h.std() for h in outputs],
                     dead_fraction=[dead_fraction(h) for h in outputs[:-1]])

    def finish(self):
        return self.log.finish([histogram(h) for h in self.outputs()]) if self.every else None
