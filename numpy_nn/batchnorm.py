"""Batch normalization (Ioffe & Szegedy, 2015, Algorithm 1), forward and backward, by hand.

neural_network.py puts it between a hidden layer's weighted sums and its activation when
built with norm="batch": z = h W -> y = BN(z) -> f(y). For each unit (a column of z, B,H):

    mean = (1/B) sum_n z_n                    the batch's mean
    var  = (1/B) sum_n (z_n - mean)^2         and its variance: the biased one, divided by B
    zhat = (z - mean) / sqrt(var + eps)       mean 0, variance 1 over the batch
    y    = gamma zhat + beta                  a scale and a shift the network learns

gamma and beta are parameters: they get gradients and the optimizer moves them. A bias b
added to z would be cancelled by the mean's subtraction, so a normalised layer has none:
beta does its work.

Training normalises with the batch's own statistics, so each image's y depends on the other
images in its batch. Evaluation must not: there the running statistics stand in, estimates of
the mean and variance over the training data kept as PyTorch's nn.BatchNorm1d keeps them:

    running = (1 - momentum) running + momentum (this batch's statistic)

where the variance's is the unbiased estimate B / (B - 1) var: nn.BatchNorm1d normalises with
the biased var and keeps the unbiased one in running_var, as the paper's section 3.1 does
(Var[x] = m / (m - 1) E[var_B] for inference). They are buffers, not parameters: saved with the
weights, moved by training-mode forward passes, never by the optimizer.

The backward pass goes through the batch's mean and variance too: each z_n moved them, and
through them every image's zhat. docs/backprop.md#batch-normalization derives it.
"""
import numpy as np

EPS = 1e-5        # nn.BatchNorm1d's: keeps 1 / sqrt(var + eps) finite for a unit constant over a batch
MOMENTUM = 0.1    # nn.BatchNorm1d's: the running statistics move this far towards each batch's


def batchnorm_forward(z, gamma, beta, running_mean, running_var, training, momentum=MOMENTUM, eps=EPS):
    """z B,H -> (y B,H, cache). training=True: normalise with the batch's statistics and move
    running_mean and running_var (the network's buffers, changed in place) towards them; the
    cache is what batchnorm_backward needs. training=False: normalise with the running
    statistics, each image on its own; no cache (evaluation has no backward pass)."""
    if not training:
        zhat = (z - running_mean) / np.sqrt(running_var + eps)  # B,H  the batch plays no part
        return gamma * zhat + beta, None
    B = len(z)
    if B < 2:                                  # nn.BatchNorm1d refuses it too
        raise ValueError("batch normalization trains on batches of 2 or more: one image has no variance")
    mean = z.mean(axis=0)                      # H
    var = ((z - mean) ** 2).mean(axis=0)       # H  biased: divided by B
    std = np.sqrt(var + eps)                   # H
    zhat = (z - mean) / std                    # B,H
    y = gamma * zhat + beta                    # B,H
    running_mean *= 1 - momentum
    running_mean += momentum * mean            # running = (1 - momentum) running + momentum mean
    running_var *= 1 - momentum
    running_var += momentum * var * (B / (B - 1))  # ... with the unbiased variance
    return y, (zhat, gamma, std)


def batchnorm_backward(dy, cache):
    """dLoss/dy B,H -> (dz B,H, dgamma H, dbeta H): the forward pass in reverse, in the compact
    form (derived in docs/backprop.md#batch-normalization)."""
    zhat, gamma, std = cache                   # B,H; H; H
    dbeta = dy.sum(axis=0)                     # H  y = gamma zhat + beta => dbeta = sum over the batch of dy
    dgamma = (dy * zhat).sum(axis=0)           # H  dgamma = sum over the batch of dy zhat
    dzhat = dy * gamma                         # B,H  dzhat = dy gamma
    # B,H  zhat's own path, the mean's, the variance's
    dz = (dzhat - dzhat.mean(axis=0) - zhat * (dzhat * zhat).mean(axis=0)) / std
    return dz, dgamma, dbeta
