"""The same network, written the PyTorch way."""
