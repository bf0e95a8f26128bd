"""Train the PyTorch twin of the NumPy network on MNIST.

    python pytorch_nn/train.py --help        # every flag, with its default

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
import torch  # noqa: E402
from torch.nn.functional import cross_entropy  # noqa: E402

from harness.session import Session, run_trainer  # noqa: E402
from pytorch_nn.augment import TorchAugment  # noqa: E402
from pytorch_nn.build import build_model, check_flags, make_optimizer, make_schedule, pick_device  # noqa: E402
from pytorch_nn.diagnostics import Watch  # noqa: E402
from pytorch_nn.fast_step import faster  # noqa: E402

# Evaluation needs no gradients, so it could take any bite; in bites of 128 the CNN's
# activations stay in the CPU's caches (larger bites ran slower per image)
EVAL_BATCH = 128


def train_step(model, optimizer, x, y):
    """One step of mini-batch gradient descent on the batch (x, y); returns its loss."""
    loss = cross_entropy(model(x), y)                     # forward, and the loss (log-softmax + NLL)
    optimizer.zero_grad(set_to_none=True)                 # drop the last step's gradients
    loss.backward()                                       # backward: autograd finds every d<name>
    optimizer.step()                                      # the update rule, for every parameter
    return loss


@torch.inference_mode()                           # no autograd graph: less memory, less time
def evaluate(model, x, y):
    """Mean cross-entropy and accuracy over a whole dataset (no dropout, no updates)."""
    model.eval()                                  # dropout off
    loss = correct = 0.0
    for start in range(0, len(x), EVAL_BATCH):
        logits = model(x[start:start + EVAL_BATCH])
        yb = y[start:start + EVAL_BATCH]
        loss += cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(dim=1) == yb).sum().item()
    return loss / len(x), correct / len(x)


def train(args, x_train, y_train, x_test, y_test):
    """Train a model as the flags say; returns it and the Run record of every epoch."""
    session = Session("pytorch", args, x_train, x_test, pick_device(args.device))  # harness/session.py
    torch.manual_seed(args.seed)                  # dropout's masks (and --init torch) draw from here
    model = build_model(args, x_train.shape[1]).to(session.device)
    optimizer = make_optimizer(model, args)       # torch.optim: numpy_nn/utils.py's update rules
    x_train, y_train, x_test, y_test = (torch.from_numpy(a).to(session.device) for a in (x_train, y_train, x_test, y_test))
    batch_rng = np.random.default_rng(args.seed)  # the batch order: the same in both trainers
    augment = TorchAugment(args)                  # --augment: the same draws, warped by torch; else as it is
    scheduler = make_schedule(optimizer, args, session.total_steps)  # torch.optim.lr_scheduler's
    step, scheduler = faster(args, train_step, model, optimizer, scheduler, session)  # --mode: fast_step.py
    watch = Watch(model, x_train, args)           # gradient RMS, update ratios, dead units: diagnostics.py
    with session.watching(model, watch, optimizer, scheduler):  # Ctrl-C ends the loop; finished epochs kept
        for epoch in session.epochs():
            model.train()                         # dropout on
            for idx in session.batches(batch_rng):  # shuffled mini-batches: data_loader.batches
                loss = step(model, optimizer, augment(x_train[idx]), y_train[idx])
                if scheduler:
                    scheduler.step()              # the learning rate of the next step
                session.step_done(loss)
            session.epoch_done(evaluate(model, x_train, y_train), evaluate(model, x_test, y_test))
    return model, session.run


def main(argv=None):
    run_trainer("pytorch", train, argv, check_flags)


if __name__ == "__main__":
    main()
