"""The network the trainer's flags ask for: the MLP (neural_network.py) or the CNN (cnn.py)."""
from numpy_nn.cnn import CNN
from numpy_nn.fast_cnn import FastCNN
from numpy_nn.neural_network import NeuralNetwork


def build_network(args, n_inputs):
    """The network the flags ask for, with its starting weights drawn from --seed. The CNN
    on fast_layers.py by default; --layers plain trains the one on layers.py, the same
    numbers, slower."""
    if args.model == "cnn":
        network = FastCNN if args.layers == "fast" else CNN
        return network(seed=args.seed, dtype=args.dtype, init=args.weight_init)
    return NeuralNetwork((n_inputs, *args.hidden, 10), seed=args.seed, dtype=args.dtype,
                         activation=args.activation, init=args.weight_init)
