"""cnn.py's network on fast_layers.py: the same weights, interface and numbers, two to
three times faster per training step (see fast_layers.py). The trainer uses it unless
given --layers plain.

FastCNN inherits everything from CNN (parameters, initialisation, loss, predict, save,
load) and replaces forward and backward only. Besides the fast layers, it pools before
the ReLU: max(relu(z)) = relu(max(z)) because ReLU never reverses an order, and the
gradients agree too (where a window's max is <= 0 both orders pass no gradient; elsewhere
both pass it to the same first maximum). ReLU on the pooled array does a quarter of the
work. tests/test_cnn.py holds FastCNN equal to CNN and both equal to PyTorch, which runs
conv, ReLU, pool in the written order. (The same holds for any activation that never
reverses an order, sigmoid and tanh included.)
"""
import numpy as np

from numpy_nn.cnn import CNN, IMAGE_SHAPE
from numpy_nn.fast_layers import conv2d_backward, conv2d_forward, maxpool2d_backward, maxpool2d_forward
from numpy_nn.utils import dropout_mask, relu_grad


class FastCNN(CNN):
    """CNN with forward and backward on fast_layers.py (see the module docstring)."""

    def forward(self, x, dropout=0.0, rng=None, training=False):
        """As CNN.forward: x (B, 784) or (B, 1, 28, 28) -> logits (B, 10), and the cache."""
        p = self.params
        x = x.reshape(-1, *IMAGE_SHAPE).astype(self.dtype, copy=False)  # B,1,28,28
        B = len(x)
        z1, conv1 = conv2d_forward(x, p["W1"], p["b1"])         # B,32,26,26  conv
        h1, pool1 = maxpool2d_forward(z1)                       # B,32,13,13  pool (see the module docstring)
        h1 = np.maximum(h1, 0, out=h1)                          #             then ReLU, in place
        z2, conv2 = conv2d_forward(h1, p["W2"], p["b2"])        # B,64,11,11
        h2, pool2 = maxpool2d_forward(z2)                       # B,64,5,5  the odd 11th row/column is dropped
        h2 = np.maximum(h2, 0, out=h2)                          #           ReLU, in place
        f = h2.reshape(B, -1)                                   # B,1600  C,H,W order, as nn.Flatten
        cache = {"conv1": conv1, "pool1": pool1, "h1": h1, "conv2": conv2, "pool2": pool2, "h2": h2}
        if dropout:
            cache["mask"] = dropout_mask(f.shape, dropout, rng, self.dtype)
            f = f * cache["mask"]                               # B,1600  (a new array: h2 stays for backward)
        cache["f"] = f
        logits = f @ p["W3"] + p["b3"]                          # B,10
        return logits, cache

    def backward(self, dlogits, cache, l2=0.0):
        """As CNN.backward: the forward pass in reverse; fills self.grads and returns it."""
        p, g = self.params, self.grads
        np.matmul(cache["f"].T, dlogits, out=g["W3"])          # 1600,10  logits = f W3 + b3 => dW3 = f^T dlogits
        dlogits.sum(axis=0, out=g["b3"])                        # 10
        df = dlogits @ p["W3"].T                                # B,1600  df = dlogits W3^T
        if "mask" in cache:
            df *= cache["mask"]                                 # dropout: blocked features pass no gradient
        dh2 = df.reshape(cache["h2"].shape)                     # B,64,5,5  undo the flatten
        dh2 *= relu_grad(cache["h2"])                           # ReLU: gradient only where the output > 0
        dz2 = maxpool2d_backward(dh2, cache["pool2"])           # B,64,11,11  to each window's maximum
        dh1, g["W2"][...], g["b2"][...] = conv2d_backward(dz2, cache["conv2"])  # B,32,13,13 (and dW2, db2)
        dh1 *= relu_grad(cache["h1"])
        dz1 = maxpool2d_backward(dh1, cache["pool1"])           # B,32,26,26
        _, g["W1"][...], g["b1"][...] = conv2d_backward(dz1, cache["conv1"], need_dx=False)  # dW1, db1; no dx
        if l2:
            for name in ("W1", "W2", "W3"):
                g[name] += l2 * p[name]                         # d(l2/2 * W^2)/dW = l2 W
        return g
