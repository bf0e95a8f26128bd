"""What one training sample costs in arithmetic: the multiply-adds of its matrix products,
counted from the layer shapes, 2 FLOPs each. perf/benchmark.py divides the machine's measured
matrix-multiply peak by these counts to get the roofline, the most samples per second any
implementation that hands its products to that hardware can train.
"""
from collections import namedtuple

from numpy_nn.cnn import IMAGE_SHAPE, PARAM_SHAPES
from numpy_nn.neural_network import LAYER_SIZES


def flops_per_sample(sizes=LAYER_SIZES):
    """Multiply-adds of one training sample, counted as 2 FLOPs each: the forward product
    h @ W, and in backward dW = h^T dz and dh = dz W^T (not needed for the input layer)."""
    products = [fan_in * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
    return 2 * (3 * sum(products) - products[0])


# One matrix product (m x k) @ (k x n) of a training step; a_transposed / b_transposed: the
# step reads that operand as the transpose of a stored array (cols^T, W^T), as BLAS gets it.
Product = namedtuple("Product", "part m k n a_transposed b_transposed")


def cnn_products(batch_size=1):
    """The matrix products of one training step of numpy_nn/cnn.py's CNN, from its layer
    shapes. A convolution is im2col's product: every output pixel's window (k = C*kh*kw
    inputs) times the O kernels. Backward multiplies twice per layer, dW = cols^T dout and
    dcols = dout W^T, except the first convolution, whose input (the image) needs no
    gradient. The linear layer is the MLP's: f W, f^T dlogits, dlogits W^T.

    (fast_layers.py, the trainer's, also folds each bias into its product as one more input,
    and may split the dcols product by kernel offset; the multiply-adds listed here are the
    layer's own.)"""
    _, height, width = IMAGE_SHAPE
    products = []
    for i in (1, 2):
        O, C, kh, kw = PARAM_SHAPES[f"W{i}"]
        height, width = height - kh + 1, width - kw + 1      # stride 1, no padding
        pixels, K = batch_size * height * width, C * kh * kw  # rows of cols, inputs per window
        products.append(Product(f"conv{i} forward", pixels, K, O, False, False))      # cols @ W
        products.append(Product(f"conv{i} backward", K, pixels, O, True, False))      # dW = cols^T dout
        if i > 1:
            products.append(Product(f"conv{i} backward", pixels, O, K, False, True))  # dcols = dout W^T
        height, width = height // 2, width // 2              # max-pool 2x2, floor mode
    fan_in, fan_out = PARAM_SHAPES["W3"]
    return products + [Product("linear forward", batch_size, fan_in, fan_out, False, False),   # f @ W3
                       Product("linear backward", fan_in, batch_size, fan_out, True, False),   # f^T dlogits
                       Product("linear backward", batch_size, fan_out, fan_in, False, True)]   # dlogits W3^T


def cnn_flops_per_sample(direction=""):
    """FLOPs of one CNN training sample (2 per multiply-add of cnn_products); direction
    "forward" or "backward" counts only the products of that pass."""
    return sum(2 * p.m * p.k * p.n for p in cnn_products() if direction in p.part)
