"""The NumPy network's weights in a PyTorch twin, and back: model.py's MLP and cnn.py's CNN
alike, through their layers() (the layers with parameters, input to output), and a batch-
normalised MLP's norms (its nn.BatchNorm1d layers: gamma, beta and the running statistics).

numpy_nn keeps a linear layer's weight as (in, out), so that a batch of rows x multiplies as
x @ W; nn.Linear keeps (out, in) and computes x @ weight.T: linear weights move transposed.
A convolution's weight is (out, in, kh, kw) in both, and moves as it is; biases too.
nn.BatchNorm1d calls gamma its weight and beta its bias; both move as they are.
"""
import numpy as np
import torch
from torch import nn


def _moved(W):
    """A weight in the other twin's layout: a linear layer's transposed, a convolution's as it is."""
    return W.T if W.ndim == 2 else W


def _batch_norms(model):
    """(i, its nn.BatchNorm1d) for each batch-normalised hidden layer i of model, from 1."""
    return [(i, norm) for i, norm in enumerate(getattr(model, "norms", []), start=1)
            if isinstance(norm, nn.BatchNorm1d)]


def load_numpy_params(model, params, buffers=None):
    """Copy numpy_nn parameters {"W1", "b1", "W2", ...; a normalised layer's "gamma1", "beta1"}
    into model's layers(); with buffers (NeuralNetwork.buffers), the running statistics too.
    Returns model."""
    with torch.no_grad():
        for i, layer in enumerate(model.layers(), start=1):
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(_moved(params[f"W{i}"]))))
            if layer.bias is not None:             # (a normalised layer has none)
                layer.bias.copy_(torch.from_numpy(params[f"b{i}"]))
        for i, norm in _batch_norms(model):
            norm.weight.copy_(torch.from_numpy(params[f"gamma{i}"]))
            norm.bias.copy_(torch.from_numpy(params[f"beta{i}"]))
            if buffers is not None:
                norm.running_mean.copy_(torch.from_numpy(buffers[f"running_mean{i}"]))
                norm.running_var.copy_(torch.from_numpy(buffers[f"running_var{i}"]))
    return model


def numpy_params(model):
    """The model's parameters as NumPy arrays in numpy_nn's layout {"W1", "b1", ...}."""
    params = {}
    for i, layer in enumerate(model.layers(), start=1):
        params[f"W{i}"] = _moved(layer.weight.detach().cpu().numpy()).copy()
        if layer.bias is not None:
            params[f"b{i}"] = layer.bias.detach().cpu().numpy().copy()
    for i, norm in _batch_norms(model):
        params[f"gamma{i}"] = norm.weight.detach().cpu().numpy().copy()
        params[f"beta{i}"] = norm.bias.detach().cpu().numpy().copy()
    return params


def numpy_buffers(model):
    """A batch-normalised MLP's running statistics as NeuralNetwork.buffers holds them
    {"running_mean1", "running_var1", ...}; {} for a model without."""
    buffers = {}
    for i, norm in _batch_norms(model):
        buffers[f"running_mean{i}"] = norm.running_mean.detach().cpu().numpy().copy()
        buffers[f"running_var{i}"] = norm.running_var.detach().cpu().numpy().copy()
    return buffers
