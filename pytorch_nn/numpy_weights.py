"""The NumPy network's weights in a PyTorch twin, and back: model.py's MLP and cnn.py's CNN
alike, through their layers() (the layers with parameters, input to output).

numpy_nn keeps a linear layer's weight as (in, out), so that a batch of rows x multiplies as
x @ W; nn.Linear keeps (out, in) and computes x @ weight.T: linear weights move transposed.
A convolution's weight is (out, in, kh, kw) in both, and moves as it is; biases too.
"""
import numpy as np
import torch


def _moved(W):
    """A weight in the other twin's layout: a linear layer's transposed, a convolution's as it is."""
    return W.T if W.ndim == 2 else W


def load_numpy_params(model, params):
    """Copy numpy_nn parameters {"W1", "b1", "W2", ...} into model's layers(); returns model."""
    with torch.no_grad():
        for i, layer in enumerate(model.layers(), start=1):
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(_moved(params[f"W{i}"]))))
            layer.bias.copy_(torch.from_numpy(params[f"b{i}"]))
    return model


def numpy_params(model):
    """The model's parameters as NumPy arrays in numpy_nn's layout {"W1", "b1", ...}."""
    params = {}
    for i, layer in enumerate(model.layers(), start=1):
        params[f"W{i}"] = _moved(layer.weight.detach().cpu().numpy()).copy()
        params[f"b{i}"] = layer.bias.detach().cpu().numpy().copy()
    return params
