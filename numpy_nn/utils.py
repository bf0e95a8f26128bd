"""The pieces a neural network is built from, in plain NumPy.

Activations (ReLU, sigmoid, tanh, softmax), weight initialisation, the cross-entropy loss
and its gradient, dropout, the optimizers (SGD, SGD with momentum, Adam: the same update
rules and defaults as torch.optim), and the cosine and exponential learning-rate schedules.
neural_network.py puts them together.
"""
import math

import numpy as np

# ----------------------------------------------------------------------------- activations

def relu(z):
    """max(0, z): lets positive signals through, blocks negative ones."""
    return np.maximum(z, 0)


def relu_grad(h):
    """d relu(z)/dz, read off h = relu(z) (or z itself: both are positive at the same places):
    1 where z > 0, else 0 (we take 0 at z = 0, as PyTorch does)."""
    return (h > 0).astype(h.dtype)


def sigmoid(z):
    """1 / (1 + e^-z): squashes any number into (0, 1). Written with e^-|z|, so exp never
    overflows: 1 / (1 + e^-z) for z >= 0, and e^z / (1 + e^z) for z < 0, the same number."""
    e = np.exp(-np.abs(z))                             # in (0, 1]
    return np.where(z >= 0, 1, e) / (1 + e)


def sigmoid_grad(s):
    """d sigmoid(z)/dz from the output s = sigmoid(z): at most 1/4, at z = 0."""
    return s * (1 - s)                                 # sigmoid' = s (1 - s)


def tanh(z):
    """(e^z - e^-z) / (e^z + e^-z): squashes any number into (-1, 1), centred on 0."""
    return np.tanh(z)


def tanh_grad(t):
    """d tanh(z)/dz from the output t = tanh(z): 1 at z = 0, falling to 0 as |z| grows."""
    return 1 - t * t                                   # tanh' = 1 - t^2


# The --activation choices: (f, f') with f' read off the output h = f(z), which the forward
# pass keeps for the next layer anyway (for ReLU, h > 0 exactly where z > 0).
ACTIVATIONS = {"relu": (relu, relu_grad), "sigmoid": (sigmoid, sigmoid_grad), "tanh": (tanh, tanh_grad)}


# ----------------------------------------------------------------------------- parameters

def flat_buffer(shapes, dtype):
    """One array of zeros for every parameter (or gradient) in shapes {name: shape}, one after
    another, and {name: its view into the array, shaped shapes[name]}. Writing a view writes the
    array: an optimizer updates every parameter at once, in a few whole-array operations."""
    flat = np.zeros(sum(math.prod(shape) for shape in shapes.values()), dtype)
    views, offset = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        views[name] = flat[offset:offset + size].reshape(shape)
        offset += size
    return flat, views


# ----------------------------------------------------------------------------- initialisation

def init_std(scheme, fan_in, fan_out):
    """The standard deviation of the normal distribution a layer's weights are drawn from
    (--weight-init). fan_in: the inputs one output sums over; fan_out: the outputs one input
    feeds (a 3x3 convolution's: C*9 and O*9).
        he      sqrt(2 / fan_in)               ReLU halves the variance; this doubles it back
                                               (He et al., 2015), so signals keep their size
        xavier  sqrt(2 / (fan_in + fan_out))   variance kept both forwards and backwards for
                                               activations linear near 0: tanh (Glorot & Bengio, 2010)
        small   0.01                           the classic mistake: far below he for these fan-ins,
                                               so each layer shrinks the signal, and the gradients
                                               that flow back through it"""
    if scheme == "he":
        return math.sqrt(2.0 / fan_in)
    if scheme == "xavier":
        return math.sqrt(2.0 / (fan_in + fan_out))
    if scheme == "small":
        return 0.01
    raise ValueError(f"unknown weight initialisation {scheme!r} (expected he, xavier or small)")


def log_softmax(logits):
    """log p for each class, computed stably: shifting by the row max changes nothing
    mathematically but keeps exp() from overflowing at large logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)  # B,C  every row's max is now 0
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits):
    """Turn scores into probabilities: exp, then normalise each row to sum to 1."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))  # B,C  stable, as above
    return e / e.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- loss

def cross_entropy(logits, y):
    """Mean over the batch of -log p(true class): 0 when the net is sure and right."""
    return float(-log_softmax(logits)[np.arange(len(y)), y].mean())


def cross_entropy_with_grad(logits, y):
    """The loss and its gradient with respect to the logits, in one pass.

    Softmax and cross-entropy fuse into one simple gradient:
    d(mean CE)/dlogits = (softmax(logits) - onehot(y)) / B.
    Derived in docs/backprop.md#softmax-and-cross-entropy: the softmax's Jacobian times
    -1/p of the true class collapses to p - onehot, and the mean puts the 1/B there.
    """
    n = len(y)
    logp = log_softmax(logits)                    # B,C
    loss = -logp[np.arange(n), y].mean()
    dlogits = np.exp(logp)                        # B,C  the probabilities p
    dlogits[np.arange(n), y] -= 1                 # p - onehot(y)
    dlogits /= n                                  # the mean over the batch
    return float(loss), dlogits


# ----------------------------------------------------------------------------- regularisation

def dropout_mask(shape, p, rng, dtype):
    """Inverted dropout: zero each unit with probability p and scale the survivors by
    1/(1-p), so the expected activation is unchanged and evaluation needs no rescaling."""
    dtype = np.dtype(dtype)  # accepts np.float32 and np.dtype('float32') alike
    return (rng.random(shape, dtype=np.float32) >= p).astype(dtype) / dtype.type(1 - p)


# ----------------------------------------------------------------------------- optimizers
# Each optimizer updates one flat parameter array in place from one flat gradient array
# (the network keeps all its weights and biases in one buffer, see neural_network.py), so
# a step is a handful of whole-array NumPy operations, whatever the number of layers.
# L2 regularisation is part of the loss (NeuralNetwork.backward adds l2 * W to dW), so the
# gradients arrive here already carrying it, exactly as torch.optim's weight_decay adds it.

class SGD:
    """Gradient descent: p -= lr * g. With momentum mu: v = mu * v + g; p -= lr * v
    (torch.optim.SGD's rule, dampening 0: the velocity accumulates past gradients)."""

    def __init__(self, params, lr=1e-3, momentum=0.0):
        self.params, self.lr, self.momentum = params, lr, momentum
        self.velocity = np.zeros_like(params) if momentum else None

    def step(self, grads):
        g = grads
        if self.momentum:
            v = self.velocity
            v *= self.momentum; v += g                      # v = mu v + g
            g = v
        self.params -= self.lr * g                          # p = p - lr g


class Adam:
    """Adam (Kingma & Ba, 2015), step for step as torch.optim.Adam computes it:
        m = b1 m + (1 - b1) g              running mean of gradients
        v = b2 v + (1 - b2) g^2            running mean of squared gradients
        p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    The (1 - b^t) terms undo the pull towards the zeros m and v start from. Each weight
    gets its own step size: large where its gradients are small and steady."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m, self.v = np.zeros_like(params), np.zeros_like(params)
        self.t = 0

    def step(self, grads):
        (b1, b2), g, m, v = self.betas, grads, self.m, self.v
        self.t += 1
        m *= b1; m += (1 - b1) * g                          # m = b1 m + (1 - b1) g
        v *= b2; v += (1 - b2) * g * g                      # v = b2 v + (1 - b2) g^2
        step_size = self.lr / (1 - b1 ** self.t)                    # lr, bias-corrected for m
        denom = np.sqrt(v) / math.sqrt(1 - b2 ** self.t) + self.eps  # sqrt(v_hat) + eps
        self.params -= step_size * m / denom                        # p -= lr m_hat / (sqrt(v_hat) + eps)


OPTIMIZERS = {  # the --optimizer choices; momentum 0.9 and Adam's betas are the usual defaults
    "sgd": lambda params, lr: SGD(params, lr=lr),
    "momentum": lambda params, lr: SGD(params, lr=lr, momentum=0.9),
    "adam": lambda params, lr: Adam(params, lr=lr),
}


def cosine_lr(base_lr, step, total_steps):
    """Cosine schedule: from base_lr at step 0 down to 0 at total_steps, fast in the
    middle, gentle at both ends (the closed form of torch's CosineAnnealingLR, eta_min 0)."""
    return base_lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))


class CosineSchedule:
    """The learning rate of cosine_lr, step by step, as torch's CosineAnnealingLR hands it
    out: the optimizer starts at its own lr; each step() sets the next step's."""

    def __init__(self, optimizer, total_steps):
        self.optimizer, self.total_steps = optimizer, total_steps
        self.base_lr, self.t = optimizer.lr, 0

    def step(self):
        self.t += 1
        self.optimizer.lr = cosine_lr(self.base_lr, self.t, self.total_steps)


def exponential_factor(lr, lr_end, step, total_steps):
    """The range test's schedule as a factor of the first rate: lr * factor grows from lr at
    step 0 to lr_end at the last step, total_steps - 1, by the same ratio every step
    (Smith, 2015). A factor, so that torch's LambdaLR can hand out the very same rates."""
    return (lr_end / lr) ** (step / max(1, total_steps - 1))


class ExponentialSchedule:
    """The learning rate of exponential_factor, step by step, as CosineSchedule hands out its own."""

    def __init__(self, optimizer, total_steps, lr_end):
        self.optimizer, self.total_steps, self.lr_end = optimizer, total_steps, lr_end
        self.base_lr, self.t = optimizer.lr, 0

    def step(self):
        self.t += 1
        self.optimizer.lr = self.base_lr * exponential_factor(self.base_lr, self.lr_end, self.t, self.total_steps)
