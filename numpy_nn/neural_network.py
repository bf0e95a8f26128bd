"""A fully connected network with hand-written backpropagation, in NumPy.

    784 inputs -> 128 ReLU -> 64 ReLU -> 10 scores (logits) -> softmax probabilities

(ReLU by default; activation="sigmoid" or "tanh" puts another function between the layers;
norm="batch" normalises each hidden layer's weighted sums before its activation: batchnorm.py.)

forward() computes the scores and keeps what backward() needs (the cache). backward()
walks the same layers in reverse, applying the chain rule one step per line: each
gradient d<name> is dLoss/d<name>, the sensitivity of the loss to that quantity.
"""
import numpy as np

from numpy_nn.batchnorm import batchnorm_backward, batchnorm_forward
from numpy_nn.utils import ACTIVATIONS, cross_entropy, dropout_mask, flat_buffer, init_std

LAYER_SIZES = (784, 128, 64, 10)
NORMS = ("none", "batch")  # the --norm choices


class NeuralNetwork:
    """Layers of h_next = f(h @ W + b), f the activation (ReLU unless told otherwise), then a
    final affine layer that gives the logits.

    All weights and biases live in one flat array, self.flat_params; self.params["W1"],
    ["b1"], ... are views into it (W shaped (fan_in, fan_out), so a batch of rows x
    multiplies as x @ W). Gradients mirror that in self.flat_grads / self.grads. One buffer
    lets an optimizer update every parameter in a few whole-array operations, and lets
    save/load and the gradient check treat the parameters as one vector.

    With norm="batch" each hidden layer i is h_next = f(BN(h @ Wi)) instead: its parameters are
    Wi, gammai and betai (no bias: beta does its work), and self.buffers holds its running
    mean and variance (running_mean1, running_var1, ...), which evaluation normalises with.
    """

    def __init__(self, sizes=LAYER_SIZES, seed=0, dtype=np.float32, activation="relu", init="he", norm="none"):
        if norm not in NORMS:
            raise ValueError(f"unknown normalisation {norm!r} (expected one of {', '.join(NORMS)})")
        self.sizes, self.dtype = tuple(sizes), np.dtype(dtype)
        self.activation, self.norm = activation, norm
        self.f, self.f_grad = ACTIVATIONS[activation]          # f' takes the output h = f(z)
        self.num_layers = len(self.sizes) - 1
        shapes, buffers = {}, {}
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:]), start=1):
            shapes[f"W{i}"] = (fan_in, fan_out)
            if norm == "batch" and i < self.num_layers:       # a normalised hidden layer
                shapes[f"gamma{i}"], shapes[f"beta{i}"] = (fan_out,), (fan_out,)
                buffers[f"running_mean{i}"], buffers[f"running_var{i}"] = (fan_out,), (fan_out,)
            else:
                shapes[f"b{i}"] = (fan_out,)
        self.flat_params, self.params = flat_buffer(shapes, self.dtype)
        self.flat_grads, self.grads = flat_buffer(shapes, self.dtype)
        # not parameters: no gradient, no optimizer; they start where nn.BatchNorm1d's do
        self.buffers = {name: np.full(shape, name.startswith("running_var"), self.dtype)
                        for name, shape in buffers.items()}
        # He initialisation by default: N(0, 2 / fan_in) keeps the variance of ReLU
        # activations steady from layer to layer (init_std has the others). The same standard
        # normal draws for every scheme, scaled: the schemes differ in scale only. Drawn in
        # float64 then cast, so float32 and float64 networks with the same seed start from
        # the same numbers. Biases start at zero, and so does beta; gamma at 1, so that a
        # normalised layer starts out passing zhat on unchanged (as nn.BatchNorm1d starts).
        rng = np.random.default_rng(seed)
        for i in range(1, self.num_layers + 1):
            fan_in, fan_out = self.sizes[i - 1], self.sizes[i]
            W = rng.standard_normal(self.params[f"W{i}"].shape) * init_std(init, fan_in, fan_out)
            self.params[f"W{i}"][...] = W
            if f"gamma{i}" in self.params:
                self.params[f"gamma{i}"][...] = 1

    # ------------------------------------------------------------------------- forward

    def forward(self, x, dropout=0.0, rng=None, training=False):
        """x (B, 784) -> logits (B, 10), and the cache of activations backward() needs.

        With dropout > 0 (training only) each hidden unit is zeroed with that probability,
        using rng; the masks go into the cache so backward() blocks the same units.
        training matters with norm="batch" only: True (a training step) normalises with the
        batch's statistics and moves the running ones; False (the default: evaluation,
        prediction) normalises with the running ones, so that an image's scores do not depend
        on the other images in its batch. backward() needs a training=True cache.
        """
        h = x.astype(self.dtype, copy=False)                   # B,784
        cache = {"h0": h}
        for i in range(1, self.num_layers):
            if self.norm == "none":
                z = h @ self.params[f"W{i}"] + self.params[f"b{i}"]  # B,H  affine: weighted sums plus bias
                cache[f"z{i}"] = z                             # B,H  the activation's input (the diagnostics read it)
                h = self.f(z)                                  # B,H  the activation
            else:
                z = h @ self.params[f"W{i}"]                   # B,H  weighted sums; no bias: beta does its work
                y, cache[f"bn{i}"] = batchnorm_forward(z, self.params[f"gamma{i}"], self.params[f"beta{i}"],
                                                       *self.running(i), training)  # B,H  y = gamma zhat + beta
                cache[f"y{i}"] = y                             # B,H  the activation's input
                h = self.f(y)                                  # B,H  the activation, of y
            cache[f"a{i}"] = h                                 # B,H  f(z) (or f(y)), which backward reads f' off
            if dropout:
                cache[f"mask{i}"] = dropout_mask(h.shape, dropout, rng, self.dtype)
                h = h * cache[f"mask{i}"]                      # B,H  a new array: a{i} keeps f(z) unmasked
            cache[f"h{i}"] = h                                 # B,H  the next layer's input
        L = self.num_layers
        logits = h @ self.params[f"W{L}"] + self.params[f"b{L}"]  # B,10
        return logits, cache

    # ------------------------------------------------------------------------- backward

    def backward(self, dlogits, cache, l2=0.0):
        """Chain rule from dLoss/dlogits back to every weight and bias: go in the reverse
        order of the forward pass. Fills self.grads (and so self.flat_grads) and returns it.

        l2 > 0 adds the gradient of the penalty (l2 / 2) * sum(W^2) over the weights.

        Why each line is what it is, derived from one weight up to dW = h^T dz, with a
        network small enough to work by hand: docs/backprop.md.
        """
        L = self.num_layers
        dz = dlogits                                           # B,10  dLoss/dlogits
        for i in range(L, 0, -1):
            h_prev, W = cache[f"h{i - 1}"], self.params[f"W{i}"]  # B,fan_in  this layer's input; fan_in,fan_out
            dW = h_prev.T @ dz                                 # fan_in,fan_out  z = h W + b => dW = h^T dz
            if l2:
                dW = dW + l2 * W                               # d(l2/2 * W^2)/dW = l2 W
            self.grads[f"W{i}"][...] = dW                      # into the flat buffer the optimizer reads
            if f"b{i}" in self.grads:                          # (a normalised layer has none: beta is its bias)
                db = dz.sum(axis=0)                            # fan_out  db = sum of dz over the batch
                self.grads[f"b{i}"][...] = db
            if i == 1:
                break                                          # no gradient needed for the input
            dh = dz @ W.T                                      # B,fan_in  z = h W + b => dh = dz W^T
            if f"mask{i - 1}" in cache:
                dh = dh * cache[f"mask{i - 1}"]                # dropout: blocked units pass no gradient
            if self.norm == "none":
                dz = dh * self.f_grad(cache[f"a{i - 1}"])      # B,fan_in  a = f(z) => dz = dh f'(z); ReLU: dh where z > 0
            else:
                dy = dh * self.f_grad(cache[f"a{i - 1}"])      # B,fan_in  a = f(y) => dy = dh f'(y)
                dz, dgamma, dbeta = batchnorm_backward(dy, cache[f"bn{i - 1}"])  # B,fan_in; fan_in; fan_in  back through BN
                self.grads[f"gamma{i - 1}"][...] = dgamma
                self.grads[f"beta{i - 1}"][...] = dbeta
        return self.grads

    # ------------------------------------------------------------------------- helpers

    def running(self, i):
        """Hidden layer i's running mean and variance (norm="batch"): views of self.buffers."""
        return self.buffers[f"running_mean{i}"], self.buffers[f"running_var{i}"]

    def loss(self, x, y, l2=0.0):
        """The objective the gradients belong to: mean cross-entropy + (l2 / 2) sum(W^2).
        With norm="batch", of a training-mode forward pass, as backward() differentiates it:
        normalised with the batch's statistics. The running ones are put back as they were:
        measuring a loss trains nothing."""
        kept = [b.copy() for b in self.buffers.values()]
        logits, _ = self.forward(x, training=True)
        for b, old in zip(self.buffers.values(), kept):
            b[...] = old
        ce = cross_entropy(logits, y)
        penalty = sum(float((self.params[f"W{i}"] ** 2).sum()) for i in range(1, self.num_layers + 1))
        return ce + 0.5 * l2 * penalty

    def predict(self, x):
        """The most probable class of each row of x."""
        return self.forward(x)[0].argmax(axis=1)

    def save(self, path):
        """Write the weights, biases, layer sizes, activation and normalisation to an .npz
        file, with the running statistics of a norm="batch" network."""
        np.savez(path, sizes=np.array(self.sizes), activation=np.array(self.activation),
                 norm=np.array(self.norm), **self.params, **self.buffers)

    @classmethod
    def load(cls, path, dtype=None):
        """Rebuild a network from a file written by save(); a file with no activation entry
        holds a network with the default one, ReLU, and one with no norm entry none."""
        with np.load(path) as f:
            activation = str(f["activation"]) if "activation" in f.files else "relu"
            norm = str(f["norm"]) if "norm" in f.files else "none"
            net = cls(tuple(int(s) for s in f["sizes"]), dtype=dtype or f["W1"].dtype, activation=activation,
                      norm=norm)
            for name, array in (*net.params.items(), *net.buffers.items()):
                array[...] = f[name]
        return net
