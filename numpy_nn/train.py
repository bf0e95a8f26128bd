"""Train the from-scratch NumPy network on MNIST.

    python numpy_nn/train.py --help          # every flag, with its default

The loop below is the whole lesson: batches, a training step (forward, loss, backward,
update), and an evaluation of the training and test sets after every epoch. Its twin in
the other folder takes the same flags, sees the same batches and prints the same lines: a
diff of the two train.py files shows what PyTorch automates. Everything else a run needs (the
progress bar, timing, the NaN check, Ctrl-C, the record) is harness/session.py's.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, from any cwd
from harness import ctrl_c  # noqa: E402

if __name__ == "__main__":  # Ctrl-C while the imports below run: one line, not a traceback
    ctrl_c.one_line("interrupted while starting: nothing written")

import numpy as np  # noqa: E402

from harness.session import Session, run_trainer  # noqa: E402
from numpy_nn.augment import Augment  # noqa: E402
from numpy_nn.build import build_network, make_optimizer, make_schedule  # noqa: E402
from numpy_nn.diagnostics import Watch  # noqa: E402
from numpy_nn.parallel import faster  # noqa: E402
from numpy_nn.utils import cross_entropy, cross_entropy_with_grad  # noqa: E402

# Evaluation needs no gradients, so it could take any bite; in bites of 128 the CNN's
# activations stay in the CPU's caches (larger bites ran slower per image)
EVAL_BATCH = 128


def train_step(model, optimizer, x, y, args, rng):
    """One step of mini-batch gradient descent on the batch (x, y); returns its loss."""
    logits, cache = model.forward(x, args.dropout, rng, training=True)  # forward: B,10 scores
    loss, dlogits = cross_entropy_with_grad(logits, y)    # the loss, and dloss/dlogits
    model.backward(dlogits, cache, args.weight_decay)     # backward: every d<name>, by the chain rule
    optimizer.step(model.flat_grads)                      # the update rule, for every parameter
    return loss


def evaluate(model, x, y):
    """Mean cross-entropy and accuracy over a whole dataset (no dropout, no updates)."""
    loss = correct = 0.0
    for start in range(0, len(x), EVAL_BATCH):
        logits, _ = model.forward(x[start:start + EVAL_BATCH])
        yb = y[start:start + EVAL_BATCH]
        loss += cross_entropy(logits, yb) * len(yb)
        correct += (logits.argmax(axis=1) == yb).sum()
    return loss / len(x), correct / len(x)


def train(args, x_train, y_train, x_test, y_test):
    """Train a model as the flags say; returns it and the Run record of every epoch."""
    session = Session("numpy", args, x_train, x_test)  # the machinery: harness/session.py
    dropout_rng = np.random.default_rng(args.seed + 1)  # dropout's masks draw from here
    model = faster(args, build_network(args, x_train.shape[1]), session)  # the CNN in halves on 2 cores; the MLP as is
    optimizer = make_optimizer(model, args)       # utils.py's update rules (fast_optimizers.py)
    batch_rng = np.random.default_rng(args.seed)  # the batch order: the same in both trainers
    augment = Augment(args)                       # --augment: each image freshly warped; else as it is
    scheduler = make_schedule(optimizer, args, session.total_steps)  # --schedule: cosine decay by default
    watch = Watch(model, x_train, args)           # gradient RMS, update ratios, dead units: diagnostics.py
    with session.watching(model, watch, optimizer, scheduler):  # Ctrl-C ends the loop; finished epochs kept
        for epoch in session.epochs():
            for idx in session.batches(batch_rng):  # shuffled mini-batches: data_loader.batches
                loss = train_step(model, optimizer, augment(x_train[idx]), y_train[idx], args, dropout_rng)
                if scheduler:
                    scheduler.step()              # the learning rate of the next step
                session.step_done(loss)
            session.epoch_done(evaluate(model, x_train, y_train), evaluate(model, x_test, y_test))
    return model, session.run


def main(argv=None):
    from checker.exercise import exercise_flags, use_exercise  # --exercise: your own function (exercises/)
    run_trainer("numpy", train, argv, use_exercise, exercise_flags)


if __name__ == "__main__":
    main()
