"""The same convolutional network as numpy_nn/cnn.py, written the PyTorch way.

nn.Conv2d stores its weight as (out, in, kh, kw), the layout numpy_nn/layers.py uses, so
conv weights move between the twins as they are; only the linear layer's weight is
transposed (nn.Linear keeps (out, in), numpy_nn keeps (in, out): numpy_weights.py).
"""
import torch
from torch import nn

IMAGE_SHAPE = (1, 28, 28)  # C,H,W


class CNN(nn.Module):
    """conv 3x3 1->32, ReLU, max-pool 2 -> conv 3x3 32->64, ReLU, max-pool 2 -> flatten
    (1600) -> dropout -> linear -> 10 logits (Keras's mnist_convnet; 34,826 parameters)."""

    def __init__(self, dropout=0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)                             # floor mode: an odd last row/column is dropped
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()  # active in train() only
        self.out = nn.Linear(1600, 10)

    def features(self, x):
        """Images -> the 1600 features the linear layer reads."""
        x = x.reshape(-1, *IMAGE_SHAPE)                         # B,1,28,28  from B,784 rows or images
        x = self.pool(self.relu(self.conv1(x)))                 # B,32,13,13
        x = self.pool(self.relu(self.conv2(x)))                 # B,64,5,5
        return self.flatten(x)                                  # B,1600  C,H,W order

    def forward(self, x):
        return self.out(self.dropout(self.features(x)))         # B,10 logits

    def layers(self):
        """The layers with parameters in order, input to output: conv1, conv2, linear."""
        return [self.conv1, self.conv2, self.out]

    def weights(self):
        """The weights (what L2 regularisation applies to), without the biases."""
        return [layer.weight for layer in self.layers()]

    def biases(self):
        return [layer.bias for layer in self.layers()]


def load_model(path, map_location="cpu"):
    """Rebuild a CNN from a saved state_dict (dropout off: it only matters in training)."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    model = CNN(dropout=0.0).to(dtype=state["out.weight"].dtype)  # the dtype first: loading copies into it
    model.load_state_dict(state)
    return model
