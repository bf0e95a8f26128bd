"""Exercise: batch normalization's backward pass.

Goal: from dLoss/dy at batch normalization's output, the gradient at its input z and those of
gamma and beta, through the batch's mean and variance.

    python check.py --exercise batchnorm_backward                        # grades this file
    python numpy_nn/train.py --exercise batchnorm_backward --norm batch  # trains with it, once it passes

The forward pass (numpy_nn/batchnorm.py, batchnorm_forward in training mode), for each unit
(column) over a batch of B images:
    mean = (1/B) sum_n z_n,   var = (1/B) sum_n (z_n - mean)^2,   std = sqrt(var + eps)
    zhat = (z - mean) / std,   y = gamma zhat + beta

Hints:
- gamma and beta act on their unit in every image of the batch, so their gradients sum over
  the batch (axis=0), each of what it multiplied (docs/backprop.md#batch-normalization).
- z_n reaches the loss three ways: through its own zhat_n; through the mean, which every
  image's zhat subtracts; and through the variance, which every image's zhat is divided by.
  dzhat / std is the first path alone: that treats the mean and std as constants, and it is
  wrong. Work out dLoss/dvar and dLoss/dmean (both sum over the batch), and what z_n adds to
  each: dvar/dz_n = 2 (z_n - mean) / B, dmean/dz_n = 1 / B. The cache holds no z and no mean:
  z_n - mean is zhat_n std. Written that way, the three paths fold into one line (same section).
- The variance is the biased one, divided by B, as in the forward pass: the unbiased one,
  divided by B - 1, is for the running variance only.
- Write each blank as a new array: the checker reads dbeta, dgamma, dzhat and dz by name. Lines
  of your own above dz are fine; name the stages dvar and dmean and it checks those too.

Solution: the project's own, ../numpy_nn/batchnorm.py, batchnorm_backward.
"""


def batchnorm_backward(dy, cache):
    """dLoss/dy B,H -> (dz B,H, dgamma H, dbeta H). cache is what batchnorm_forward kept in
    training mode: zhat B,H (z normalised), gamma H, and std H, sqrt(var + eps)."""
    zhat, gamma, std = cache
    dbeta = ...  # TODO  H  y = gamma zhat + beta: beta is added to every image's y
    dgamma = ...  # TODO  H  gamma multiplies every image's zhat
    dzhat = ...  # TODO  B,H  back through y = gamma zhat + beta
    dz = ...  # TODO  B,H  back through zhat = (z - mean) / std, all three paths
    return dz, dgamma, dbeta
