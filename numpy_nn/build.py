"""The network, the optimizer and the learning-rate schedule the trainer's flags ask for:
the MLP (neural_network.py) or the CNN (cnn.py); SGD, momentum or Adam; cosine decay, the
range test's growth, or none."""
from numpy_nn.cnn import CNN
from numpy_nn.fast_cnn import FastCNN
from numpy_nn.fast_optimizers import FAST_OPTIMIZERS
from numpy_nn.neural_network import NeuralNetwork
from numpy_nn.utils import OPTIMIZERS, CosineSchedule, ExponentialSchedule


def build_network(args, n_inputs):
    """The network the flags ask for, with its starting weights drawn from --seed. The CNN
    on fast_layers.py by default; --layers plain trains the one on layers.py, the same
    numbers, slower."""
    if args.model == "cnn":
        network = FastCNN if args.layers == "fast" else CNN
        return network(seed=args.seed, dtype=args.dtype, init=args.weight_init)
    return NeuralNetwork((n_inputs, *args.hidden, 10), seed=args.seed, dtype=args.dtype,
                         activation=args.activation, init=args.weight_init, norm=args.norm)


def make_optimizer(model, args):
    """The update rule --optimizer asks for, over the model's flat parameters: utils.py's,
    which with --layers fast (the default) also flushes the subnormal floats out of its state
    after each step (fast_optimizers.py: the same numbers, faster on a trained state)."""
    optimizers = FAST_OPTIMIZERS if args.layers == "fast" else OPTIMIZERS
    return optimizers[args.optimizer](model.flat_params, args.lr)


def make_schedule(optimizer, args, total_steps):
    """The learning rate over the run (--schedule): cosine decay to 0 by the last step, the
    range test's exponential growth to --lr-end (sweep.py --lr-range), or None: constant."""
    if args.schedule == "cosine":
        return CosineSchedule(optimizer, total_steps)
    if args.schedule == "exponential":
        return ExponentialSchedule(optimizer, total_steps, args.lr_end)
    return None

