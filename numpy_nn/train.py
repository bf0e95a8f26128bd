"""Train the from-scratch NumPy network on MNIST.

    python numpy_nn/train.py                 # the default run: 10 epochs, Adam, cosine schedule
    python numpy_nn/train.py --help          # every flag, with its default

Its twin is pytorch_nn/train.py: same flags, same batches, same loop, same progress line;
a diff of the two files shows what PyTorch automates.
"""
import math
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, from any cwd
import threads  # noqa: E402
from data_loader import batches  # noqa: E402
from experiment import TrainingDiverged, build_parser, check_finite, finish, load_data, prepare, stop  # noqa: E402
from metrics_file import Run, numpy_blas  # noqa: E402
from numpy_nn.cnn import CNN  # noqa: E402
from numpy_nn.diagnostics import PROBE_IMAGES, Watch  # noqa: E402
from numpy_nn.fast_cnn import FastCNN  # noqa: E402
from numpy_nn.neural_network import NeuralNetwork  # noqa: E402
from numpy_nn.parallel import SHARDS, ShardedGradients  # noqa: E402
from numpy_nn.utils import OPTIMIZERS, accuracy, cosine_lr, cross_entropy  # noqa: E402

# Evaluation needs no gradients, so it can take big bites; the CNN's im2col columns for
# 10,000 images would take 1.4 GB, so it bites smaller.
EVAL_BATCH = {"mlp": 10_000, "cnn": 1_000}


def evaluate(net, x, y):
    """Mean cross-entropy and accuracy over a whole dataset (no dropout, no updates)."""
    loss = correct = 0.0
    bite = EVAL_BATCH["cnn" if isinstance(net, CNN) else "mlp"]
    for start in range(0, len(x), bite):
        logits, _ = net.forward(x[start:start + bite])
        yb = y[start:start + bite]
        loss += cross_entropy(logits, yb) * len(yb)
        correct += accuracy(logits, yb) * len(yb)
    return loss / len(x), correct / len(x)


def build_network(args, n_inputs):
    """The network the flags ask for, with its starting weights drawn from --seed. The CNN
    on fast_layers.py by default; --layers plain trains the one on layers.py, the same
    numbers, slower."""
    if args.model == "cnn":
        network = FastCNN if args.layers == "fast" else CNN
        return network(seed=args.seed, dtype=args.dtype, init=args.weight_init)
    return NeuralNetwork((n_inputs, *args.hidden, 10), seed=args.seed, dtype=args.dtype,
                         activation=args.activation, init=args.weight_init)


def train(args, x_train, y_train, x_test, y_test):
    """Train a network as the flags say; returns it and the Run record of every epoch."""
    net = build_network(args, x_train.shape[1])
    optimizer = OPTIMIZERS[args.optimizer](net.flat_params, args.lr)
    run = Run("numpy", args, {"numpy": np.__version__}, {"device": "cpu", **numpy_blas()},
              len(x_train), len(x_test))
    batch_rng = np.random.default_rng(args.seed)  # the batch order: the same in both trainers
    dropout_rng = np.random.default_rng(args.seed + 1)
    gradients = ShardedGradients(net, SHARDS[args.model], dropout_rng)  # the CNN: on 2 cores, see parallel.py
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    total_steps, step = args.epochs * steps_per_epoch, 0
    watch = Watch(net, x_train[:PROBE_IMAGES], args, steps_per_epoch)  # gradients, updates, activations
    try:
        for epoch in range(1, args.epochs + 1):
            blas_threads = gradients.use_cores(threads.share_cores("numpy"))  # this run's share, see threads.py
            t0 = time.perf_counter()
            bar = tqdm(batches(len(x_train), args.batch_size, batch_rng), total=steps_per_epoch,
                       desc=f"epoch {epoch}", leave=False, disable=args.no_progress or None)
            for batch, idx in enumerate(bar, start=1):
                if args.schedule == "cosine":
                    optimizer.lr = cosine_lr(args.lr, step, total_steps)
                loss = gradients(x_train[idx], y_train[idx], args.weight_decay, args.dropout)
                check_finite(loss, epoch, batch, args)
                recording = watch.due(epoch, batch)       # every --diagnostics-every steps
                if recording:
                    watch.before_update(loss)             # the loss, gradients, weights before the step
                optimizer.step(net.flat_grads)
                if recording:
                    watch.after_update()                  # update ratios; the probe images' activations
                step += 1
            seconds = time.perf_counter() - t0
            threads.share_cores("numpy")          # evaluation: whole batches, on all this run's cores
            run.log_epoch(epoch, *evaluate(net, x_train, y_train), *evaluate(net, x_test, y_test),
                          seconds, len(x_train), blas_threads)
    except KeyboardInterrupt:                     # Ctrl-C or SIGTERM: keep the finished epochs
        run.interrupted = True
    except TrainingDiverged as e:                 # no result to claim; the record says where
        run.diverged = e
    run.record["diagnostics"] = watch.finish()
    return net, run


def main(argv=None):
    parser = build_parser("numpy", "Train the from-scratch NumPy network on MNIST.")
    args = parser.parse_args(argv)
    prepare(parser, args)
    x_train, y_train, x_test, y_test = load_data(parser, args)
    np.seterr(over="ignore", invalid="ignore")  # a diverging run is reported once, by check_finite
    try:
        net, run = train(args, x_train, y_train, x_test, y_test)
    except KeyboardInterrupt:                         # while the model was being built
        stop("interrupted before training started: nothing written")
    finish(run, args, net.save)


if __name__ == "__main__":
    main()
