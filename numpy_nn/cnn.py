"""A small convolutional network with hand-written backpropagation, in NumPy.

    1x28x28 image -> conv 3x3, 32 kernels, ReLU, max-pool 2x2 -> 32x13x13
                  -> conv 3x3, 64 kernels, ReLU, max-pool 2x2 -> 64x5x5
                  -> flatten (1600) -> dropout -> linear -> 10 logits

the shape of Keras's mnist_convnet example (34,826 parameters). The layers are in
layers.py; this file puts them together with the interface of neural_network.py's
NeuralNetwork (flat parameters, forward/backward/loss/predict/save/load), so
the same trainer and optimizers drive either model.

This is the version to read. fast_cnn.py's FastCNN is the same network on fast_layers.py,
with the same numbers; the trainer uses it unless given --layers plain.
"""
from pathlib import Path

import numpy as np

from numpy_nn.layers import conv2d_backward, conv2d_forward, maxpool2d_backward, maxpool2d_forward
from numpy_nn.utils import cross_entropy, dropout_mask, flat_buffer, init_std, relu, relu_grad

IMAGE_SHAPE = (1, 28, 28)  # C,H,W
PARAM_SHAPES = {
    "W1": (32, 1, 3, 3), "b1": (32,),    # conv1: O,C,kh,kw as nn.Conv2d stores it
    "W2": (64, 32, 3, 3), "b2": (64,),   # conv2
    "W3": (1600, 10), "b3": (10,),       # linear: (in, out) like the MLP's layers
}
MODEL_MARKER = "cnn"  # save() writes model="cnn"; an MLP file has no "model" entry


def saved_model_kind(path):
    """Which network an .npz written by save() holds: "cnn" or "mlp" (MLP files, written by
    NeuralNetwork.save, carry their layer sizes and no marker)."""
    with np.load(path) as f:
        return str(f["model"]) if "model" in f.files else "mlp"


def is_cnn_file(path):
    """True if path holds CNN weights, so a loader can refuse the wrong kind of file."""
    return saved_model_kind(path) == MODEL_MARKER


class CNN:
    """The network above. As in NeuralNetwork, all weights and biases live in one flat
    array self.flat_params; self.params["W1"], ["b1"], ... are views into it, shaped as in
    PARAM_SHAPES. Gradients mirror that in self.flat_grads / self.grads.

    The activation is ReLU, as in Keras's example: the trainers' --activation is the MLP's,
    for its lessons.
    """

    def __init__(self, seed=0, dtype=np.float32, init="he"):
        self.dtype = np.dtype(dtype)
        self.flat_params, self.params = flat_buffer(PARAM_SHAPES, self.dtype)
        self.flat_grads, self.grads = flat_buffer(PARAM_SHAPES, self.dtype)
        self.num_params = self.flat_params.size
        # He initialisation by default, N(0, 2 / fan_in) (init_std has the others), fan_in =
        # the inputs one output sums over: C*kh*kw for a convolution, 1600 for the linear
        # layer; fan_out = O*kh*kw and 10. Drawn in float64 then cast (as in NeuralNetwork),
        # so both dtypes start from the same numbers. Biases at zero.
        rng = np.random.default_rng(seed)
        for name in ("W1", "W2", "W3"):
            W = self.params[name]
            if W.ndim == 4:                                     # O,C,kh,kw
                fan_in, fan_out = int(np.prod(W.shape[1:])), W.shape[0] * W.shape[2] * W.shape[3]
            else:                                               # in,out
                fan_in, fan_out = W.shape
            W[...] = rng.standard_normal(W.shape) * init_std(init, fan_in, fan_out)

    # ------------------------------------------------------------------------- forward

    def forward(self, x, dropout=0.0, rng=None, training=False):
        """x (B, 784) or (B, 1, 28, 28) -> logits (B, 10), and the cache backward() needs.
        With dropout > 0 (training only) each of the 1600 features is zeroed with that
        probability before the linear layer, using rng. training: as NeuralNetwork.forward's,
        which it is only for batch normalization: the CNN has none, so it changes nothing."""
        p = self.params
        x = x.reshape(-1, *IMAGE_SHAPE).astype(self.dtype, copy=False)  # B,1,28,28
        B = len(x)
        z1, conv1 = conv2d_forward(x, p["W1"], p["b1"])         # B,32,26,26  conv1
        a1 = relu(z1)                                           # B,32,26,26  ReLU
        h1, pool1 = maxpool2d_forward(a1)                       # B,32,13,13  pool
        z2, conv2 = conv2d_forward(h1, p["W2"], p["b2"])        # B,64,11,11  conv2
        a2 = relu(z2)                                           # B,64,11,11  ReLU
        h2, pool2 = maxpool2d_forward(a2)                       # B,64,5,5  pool: the odd 11th row/column is dropped
        f = h2.reshape(B, -1)                                   # B,1600  flatten, C,H,W order as nn.Flatten
        cache = {"conv1": conv1, "z1": z1, "pool1": pool1, "h1": h1,
                 "conv2": conv2, "z2": z2, "pool2": pool2, "h2": h2}
        if dropout:
            cache["mask"] = dropout_mask(f.shape, dropout, rng, self.dtype)
            f = f * cache["mask"]                               # B,1600  dropout (inverted: kept units scaled up)
        cache["f"] = f
        logits = f @ p["W3"] + p["b3"]                          # B,10  linear
        return logits, cache

    # ------------------------------------------------------------------------- backward

    def backward(self, dlogits, cache, l2=0.0):
        """Chain rule from dLoss/dlogits back to every weight and bias: go in the reverse
        order of the forward pass. Fills self.grads (and so self.flat_grads) and returns it.

        l2 > 0 adds the gradient of the penalty (l2 / 2) * sum(W^2) over W1, W2, W3.

        Why each line is what it is: the linear layer's rules in
        docs/backprop.md#from-one-weight-to-the-matrix, convolution (im2col, col2im) and
        pooling in docs/backprop.md#the-cnn."""
        p, g = self.params, self.grads
        g["W3"][...] = cache["f"].T @ dlogits                   # 1600,10  logits = f W3 + b3 => dW3 = f^T dlogits
        g["b3"][...] = dlogits.sum(axis=0)                      # 10
        df = dlogits @ p["W3"].T                                # B,1600  df = dlogits W3^T
        if "mask" in cache:
            df = df * cache["mask"]                             # dropout: blocked features pass no gradient
        dh2 = df.reshape(cache["h2"].shape)                     # B,64,5,5  undo the flatten
        da2 = maxpool2d_backward(dh2, cache["pool2"])           # B,64,11,11  to each window's maximum
        dz2 = da2 * relu_grad(cache["z2"])                      # B,64,11,11  ReLU: gradient only where z > 0
        dh1, g["W2"][...], g["b2"][...] = conv2d_backward(dz2, cache["conv2"])  # B,32,13,13 (and dW2, db2)
        da1 = maxpool2d_backward(dh1, cache["pool1"])           # B,32,26,26
        dz1 = da1 * relu_grad(cache["z1"])                      # B,32,26,26
        _, g["W1"][...], g["b1"][...] = conv2d_backward(dz1, cache["conv1"])  # dW1, db1 (dx: the image, unused)
        if l2:
            for name in ("W1", "W2", "W3"):
                g[name] += l2 * p[name]                         # d(l2/2 * W^2)/dW = l2 W
        return g

    # ------------------------------------------------------------------------- helpers

    def loss(self, x, y, l2=0.0):
        """The objective the gradients belong to: mean cross-entropy + (l2 / 2) sum(W^2)."""
        logits, _ = self.forward(x)
        penalty = sum(float((self.params[name] ** 2).sum()) for name in ("W1", "W2", "W3"))
        return cross_entropy(logits, y) + 0.5 * l2 * penalty

    def predict(self, x):
        """The most probable class of each image."""
        return self.forward(x)[0].argmax(axis=1)

    def save(self, path):
        """Write the weights and biases to an .npz file, marked model="cnn"."""
        np.savez(path, model=np.array(MODEL_MARKER), **self.params)

    @classmethod
    def load(cls, path, dtype=None):
        """Rebuild a network from a file written by save(); refuses any other kind of file."""
        if not is_cnn_file(path):
            raise ValueError(f"{Path(path).name} holds {saved_model_kind(path).upper()} weights, not CNN weights")
        with np.load(path) as f:
            net = cls(dtype=dtype or f["W1"].dtype)
            for name in net.params:
                net.params[name][...] = f[name]
        return net
