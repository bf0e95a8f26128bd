"""A fully connected network with hand-written backpropagation, in NumPy.

    784 inputs -> 128 ReLU -> 64 ReLU -> 10 scores (logits) -> softmax probabilities

(ReLU by default; activation="sigmoid" or "tanh" puts another function between the layers.)

forward() computes the scores and keeps what backward() needs (the cache). backward()
walks the same layers in reverse, applying the chain rule one step per line: each
gradient d<name> is dLoss/d<name>, the sensitivity of the loss to that quantity.
"""
import numpy as np

from numpy_nn.utils import ACTIVATIONS, cross_entropy, dropout_mask, flat_buffer, init_std

LAYER_SIZES = (784, 128, 64, 10)


class NeuralNetwork:
    """Layers of h_next = f(h @ W + b), f the activation (ReLU unless told otherwise), then a
    final affine layer that gives the logits.

    All weights and biases live in one flat array, self.flat_params; self.params["W1"],
    ["b1"], ... are views into it (W shaped (fan_in, fan_out), so a batch of rows x
    multiplies as x @ W). Gradients mirror that in self.flat_grads / self.grads. One buffer
    lets an optimizer update every parameter in a few whole-array operations, and lets
    save/load and the gradient check treat the parameters as one vector.
    """

    def __init__(self, sizes=LAYER_SIZES, seed=0, dtype=np.float32, activation="relu", init="he"):
        self.sizes, self.dtype = tuple(sizes), np.dtype(dtype)
        self.activation = activation
        self.f, self.f_grad = ACTIVATIONS[activation]          # f' takes the output h = f(z)
        self.num_layers = len(self.sizes) - 1
        shapes = {}
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:]), start=1):
            shapes[f"W{i}"], shapes[f"b{i}"] = (fan_in, fan_out), (fan_out,)
        self.flat_params, self.params = flat_buffer(shapes, self.dtype)
        self.flat_grads, self.grads = flat_buffer(shapes, self.dtype)
        # He initialisation by default: N(0, 2 / fan_in) keeps the variance of ReLU
        # activations steady from layer to layer (init_std has the others). The same standard
        # normal draws for every scheme, scaled: the schemes differ in scale only. Drawn in
        # float64 then cast, so float32 and float64 networks with the same seed start from
        # the same numbers. Biases start at zero.
        rng = np.random.default_rng(seed)
        for i in range(1, self.num_layers + 1):
            fan_in, fan_out = self.sizes[i - 1], self.sizes[i]
            W = rng.standard_normal(self.params[f"W{i}"].shape) * init_std(init, fan_in, fan_out)
            self.params[f"W{i}"][...] = W

    # ------------------------------------------------------------------------- forward

    def forward(self, x, dropout=0.0, rng=None):
        """x (B, 784) -> logits (B, 10), and the cache of activations backward() needs.

        With dropout > 0 (training only) each hidden unit is zeroed with that probability,
        using rng; the masks go into the cache so backward() blocks the same units.
        """
        h = x.astype(self.dtype, copy=False)                   # B,784
        cache = {"h0": h}
        for i in range(1, self.num_layers):
            z = h @ self.params[f"W{i}"] + self.params[f"b{i}"]  # B,H  affine: weighted sums plus bias
            h = self.f(z)                                      # B,H  the activation
            cache[f"a{i}"] = h                                 # B,H  f(z), which backward reads f'(z) off
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
            db = dz.sum(axis=0)                                # fan_out  db = sum of dz over the batch
            if l2:
                dW = dW + l2 * W                               # d(l2/2 * W^2)/dW = l2 W
            self.grads[f"W{i}"][...] = dW                      # into the flat buffer the optimizer reads
            self.grads[f"b{i}"][...] = db
            if i == 1:
                break                                          # no gradient needed for the input
            dh = dz @ W.T                                      # B,fan_in  z = h W + b => dh = dz W^T
            if f"mask{i - 1}" in cache:
                dh = dh * cache[f"mask{i - 1}"]                # dropout: blocked units pass no gradient
            dz = dh * self.f_grad(cache[f"a{i - 1}"])          # B,fan_in  a = f(z) => dz = dh f'(z); ReLU: dh where z > 0
        return self.grads

    # ------------------------------------------------------------------------- helpers

    def loss(self, x, y, l2=0.0):
        """The objective the gradients belong to: mean cross-entropy + (l2 / 2) sum(W^2)."""
        logits, _ = self.forward(x)
        ce = cross_entropy(logits, y)
        penalty = sum(float((self.params[f"W{i}"] ** 2).sum()) for i in range(1, self.num_layers + 1))
        return ce + 0.5 * l2 * penalty

    def predict(self, x):
        """The most probable class of each row of x."""
        return self.forward(x)[0].argmax(axis=1)

    def save(self, path):
        """Write the weights, biases, layer sizes and activation to an .npz file."""
        np.savez(path, sizes=np.array(self.sizes), activation=np.array(self.activation), **self.params)

    @classmethod
    def load(cls, path, dtype=None):
        """Rebuild a network from a file written by save(); a file with no activation entry
        holds a network with the default one, ReLU."""
        with np.load(path) as f:
            activation = str(f["activation"]) if "activation" in f.files else "relu"
            net = cls(tuple(int(s) for s in f["sizes"]), dtype=dtype or f["W1"].dtype, activation=activation)
            for name in net.params:
                net.params[name][...] = f[name]
        return net
