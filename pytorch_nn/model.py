"""The same network as numpy_nn/neural_network.py, written the PyTorch way.

nn.Linear holds each layer's weight and bias and registers them with the module, so
model.parameters() finds them all (the bookkeeping numpy_nn does by hand with its flat
buffer), and autograd records the forward pass to run the chain rule backwards for us
(the whole of NeuralNetwork.backward). nn.BatchNorm1d is numpy_nn/batchnorm.py's batch
normalization, running statistics and train/eval switch included.
"""
import torch
from torch import nn

LAYER_SIZES = (784, 128, 64, 10)
ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}  # numpy_nn/utils.py writes each by hand


class MLP(nn.Module):
    """784 -> 128 ReLU -> 64 ReLU -> 10 logits (or sigmoid, or tanh). nn.CrossEntropyLoss
    applies the softmax (as log-softmax, fused with the loss for stability), so forward
    returns raw scores. norm="batch" puts an nn.BatchNorm1d between each hidden layer's
    nn.Linear (then without a bias: the BatchNorm's own, beta, does its work) and its activation."""

    def __init__(self, sizes=LAYER_SIZES, dropout=0.0, activation="relu", norm="none"):
        super().__init__()
        self.sizes, self.norm = tuple(sizes), norm
        hidden = list(zip(self.sizes[:-2], self.sizes[1:-1]))
        self.hidden = nn.ModuleList(nn.Linear(i, o, bias=norm == "none") for i, o in hidden)
        # eps 1e-5 and momentum 0.1, numpy_nn/batchnorm.py's: it normalises with the batch's biased
        # variance, and keeps the unbiased one in running_var, which eval() normalises with
        self.norms = nn.ModuleList(nn.BatchNorm1d(o) if norm == "batch" else nn.Identity() for _, o in hidden)
        self.out = nn.Linear(self.sizes[-2], self.sizes[-1])
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()  # active in train() only

    def forward(self, x):
        for layer, norm in zip(self.hidden, self.norms):
            x = self.dropout(self.activation(norm(layer(x))))  # B,H  (train(): the batch's statistics; eval(): the running ones)
        return self.out(x)                                     # B,10 logits

    def layers(self):
        """The layers with parameters (nn.Linear) in order, input to output."""
        return [*self.hidden, self.out]


def load_model(path, map_location="cpu", activation="relu"):
    """Rebuild an MLP from a saved state_dict; the layer sizes follow from the weight shapes,
    batch normalization from its running statistics (norms.0.running_mean, ...). The activation
    has no weights, so the state_dict cannot tell it: the run's record does."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    hidden = sorted({int(k.split(".")[1]) for k in state if k.startswith("hidden.")})
    sizes = [state["hidden.0.weight"].shape[1] if hidden else state["out.weight"].shape[1]]
    sizes += [state[f"hidden.{i}.weight"].shape[0] for i in hidden] + [state["out.weight"].shape[0]]
    norm = "batch" if "norms.0.running_mean" in state else "none"
    # the dtype first: loading copies into it
    model = MLP(sizes, dropout=0.0, activation=activation, norm=norm).to(dtype=state["out.weight"].dtype)
    model.load_state_dict(state)
    return model
