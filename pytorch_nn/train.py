"""Train the PyTorch twin of the NumPy network on MNIST.

    python pytorch_nn/train.py               # the default run: 10 epochs, Adam, cosine schedule
    python pytorch_nn/train.py --help        # every flag, with its default

Its twin is numpy_nn/train.py: same flags, same batches, same loop, same progress line;
a diff of the two files shows what PyTorch automates. With --init numpy (the default) the
model starts from exactly the weights the NumPy network draws for the same --seed.
"""
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, from any cwd
import threads  # noqa: E402
from data_loader import batches  # noqa: E402
from experiment import (StopRequested, TrainingDiverged, build_parser, check_finite, finish,  # noqa: E402
                        load_data, out_of_memory_is_one_line, prepare, stop, stopping)
from memory import check_memory  # noqa: E402
from metrics_file import Run  # noqa: E402
from numpy_nn.diagnostics import PROBE_IMAGES  # noqa: E402
from numpy_nn.train import build_network  # noqa: E402
from pytorch_nn import cnn  # noqa: E402
from pytorch_nn.cnn import CNN  # noqa: E402
from pytorch_nn.cuda_graph import GraphedStep  # noqa: E402
from pytorch_nn.diagnostics import Watch  # noqa: E402
from pytorch_nn.model import MLP, load_numpy_params  # noqa: E402

# Evaluation needs no gradients, so it can take big bites; the CNN's activations for
# 10,000 images would take over a GB, so it bites smaller.
EVAL_BATCH = {"mlp": 10_000, "cnn": 1_000}
# On an accelerator, reading the loss back (.item()) makes the host wait for the device;
# there the divergence check reads the losses of CHECK_EVERY steps at once.
CHECK_EVERY = 100


def evaluate(model, x, y):
    """Mean cross-entropy and accuracy over a whole dataset (no dropout, no updates)."""
    model.eval()                                  # dropout off
    loss = correct = 0.0
    bite = EVAL_BATCH["cnn" if isinstance(model, CNN) else "mlp"]
    with torch.inference_mode():                  # no autograd graph: less memory, less time
        for start in range(0, len(x), bite):
            stopping.check()                      # Ctrl-C waits one bite, not the whole set
            logits = model(x[start:start + bite])
            yb = y[start:start + bite]
            loss += nn.functional.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(dim=1) == yb).sum().item()
    return loss / len(x), correct / len(x)


def make_optimizer(model, args, capturable=False):
    """torch.optim does what numpy_nn/utils.py writes by hand. L2 goes on the weights only
    (a parameter group per kind), as numpy_nn adds l2 * W to dW and leaves biases alone.
    capturable: Adam for a CUDA graph (cuda_graph.py), its learning rate a tensor beside
    the weights, which the recorded step sets itself."""
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in model.named_parameters() if name.endswith("bias")]
    groups = [{"params": weights, "weight_decay": args.weight_decay},
              {"params": biases, "weight_decay": 0.0}]
    # fused: the whole update of a tensor in one kernel (one pass over memory) instead of
    # one kernel per arithmetic operation; measured ~3x faster than the default for Adam
    if args.optimizer == "adam" and capturable:
        lr = torch.tensor(args.lr, dtype=weights[0].dtype, device=weights[0].device)
        return torch.optim.Adam(groups, lr=lr, fused=True, capturable=True)
    if args.optimizer == "adam":
        return torch.optim.Adam(groups, lr=args.lr, fused=True)
    momentum = 0.9 if args.optimizer == "momentum" else 0.0
    return torch.optim.SGD(groups, lr=args.lr, momentum=momentum, fused=True)


def pick_device(name):
    """'auto' takes an accelerator when there is one; asking for a missing one is an error."""
    available = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + \
        (["mps"] if torch.backends.mps.is_available() else [])
    if name == "auto":
        return torch.device(available[1] if len(available) > 1 else "cpu")
    if name not in available:
        raise ValueError(f"argument --device: {name} is not available here; "
                         f"devices that exist: {', '.join(available)}")
    return torch.device(name)


def hardware(device):
    """What the metrics file records about where the run happened."""
    blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    info = {"device": str(device), "blas": blas.group(1) if blas else "unknown",
            "blas_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def build_model(args, n_inputs):
    """The model the flags ask for; with --init numpy, holding the very weights the NumPy
    network starts from for the same --seed."""
    if args.model == "cnn":
        model, load_numpy = CNN(args.dropout), cnn.load_numpy_params
    else:
        model, load_numpy = MLP((n_inputs, *args.hidden, 10), args.dropout, args.activation), load_numpy_params
    model.to(getattr(torch, args.dtype))
    if args.init == "numpy":
        load_numpy(model, build_network(args, n_inputs).params)
    return model


def train(args, x_train, y_train, x_test, y_test):
    """Train a model as the flags say; returns it and the Run record of every epoch."""
    device = pick_device(args.device)
    torch.manual_seed(args.seed)                  # --init torch and dropout draw from here
    model = build_model(args, x_train.shape[1]).to(device)
    optimizer = make_optimizer(model, args, capturable=args.mode == "graph")
    forward = compiled(model, device) if args.mode == "compile" else model  # what the loop calls
    run = Run("pytorch", args, {"torch": torch.__version__, "numpy": np.__version__},
              hardware(device), len(x_train), len(x_test))
    # The whole dataset goes to the device once, as tensors; a batch is then one indexing
    # operation. (A DataLoader over a per-sample Dataset would build every batch from 128
    # Python-level __getitem__ calls, which on CPU costs more than the network itself.)
    x_train, y_train, x_test, y_test = (torch.from_numpy(a).to(device)
                                        for a in (x_train, y_train, x_test, y_test))
    batch_rng = np.random.default_rng(args.seed)  # the batch order: the same in both trainers
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    total_steps = args.epochs * steps_per_epoch
    watch = Watch(model, x_train[:PROBE_IMAGES], args, steps_per_epoch)  # gradients, updates, activations
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
                 if args.schedule == "cosine" and args.mode != "graph" else None)
    loss_fn = nn.CrossEntropyLoss()               # log-softmax + mean negative log-likelihood
    graphed = (GraphedStep(model, optimizer, loss_fn, x_train, y_train, args.batch_size, total_steps,
                           args.schedule == "cosine") if args.mode == "graph" else None)
    if device.type != "cpu":                      # the losses of an epoch, kept on the device
        losses = torch.zeros(steps_per_epoch, device=device, dtype=getattr(torch, args.dtype))
    stopping.begin()                              # from here a signal is recorded, acted on below
    try:
        for epoch in range(1, args.epochs + 1):
            blas_threads = threads.share_cores("pytorch")  # this run's share of the cores, see threads.py
            model.train()                         # dropout on
            t0 = time.perf_counter()
            bar = tqdm(batches(len(x_train), args.batch_size, batch_rng), total=steps_per_epoch,
                       desc=f"epoch {epoch}", leave=False, disable=args.no_progress or None)
            for batch, idx in enumerate(bar, start=1):
                idx = torch.from_numpy(idx).to(device, non_blocking=True)
                recording = watch.due(epoch, batch)       # every --diagnostics-every steps
                if graphed:                       # --mode graph: the lines below, recorded once, replayed
                    loss = graphed(idx, watch if recording else None)
                else:
                    loss = loss_fn(forward(x_train[idx]), y_train[idx])
                    optimizer.zero_grad(set_to_none=True)  # drop last step's gradients
                    loss.backward()               # autograd: every d<name>, by the chain rule
                    if recording:
                        watch.before_update(loss.item())  # the loss, gradients, weights before the step
                    optimizer.step()              # the update rule, for every parameter
                    if recording:
                        watch.after_update()      # update ratios; the probe images' activations
                    if scheduler:
                        scheduler.step()
                if device.type == "cpu":
                    check_finite(loss.item(), epoch, batch, args)
                else:
                    losses[batch - 1] = loss.detach()
                    if batch % CHECK_EVERY == 0 or batch == steps_per_epoch:
                        start = (batch - 1) // CHECK_EVERY * CHECK_EVERY
                        check_losses(losses[start:batch], start + 1, epoch, args)
                stopping.check()                  # Ctrl-C or SIGTERM: leave at this step boundary
            if device.type != "cpu":              # torch.cuda / torch.mps: wait for the device,
                getattr(torch, device.type).synchronize()  # so the clock stops when it is done
            seconds = time.perf_counter() - t0
            run.log_epoch(epoch, *evaluate(model, x_train, y_train), *evaluate(model, x_test, y_test),
                          seconds, len(x_train), blas_threads)
            stopping.keep(lambda f: torch.save(model.state_dict(), f))  # what a stop saves
    except StopRequested:                         # Ctrl-C or SIGTERM: keep the finished epochs
        run.interrupted = True
    except TrainingDiverged as e:                 # no result to claim; the record says where
        run.diverged = e
    run.record["diagnostics"] = watch.finish()
    return model, run


def compiled(model, device):
    """--mode compile: torch.compile's version of model.forward, for the training steps
    (evaluation runs the model as it is, at other batch sizes). On CUDA in the mode
    "reduce-overhead", which records CUDA graphs of its own, as cuda_graph.py does by hand.
    The first steps pay for the compilation: the first epoch's time says how much."""
    return torch.compile(model, mode="reduce-overhead" if device.type == "cuda" else "default")


def check_losses(losses, first_batch, epoch, args):
    """Raise TrainingDiverged at the first NaN or infinite loss of batches first_batch, ...:
    one copy to the host for the lot."""
    for batch, loss in enumerate(losses.tolist(), start=first_batch):
        check_finite(loss, epoch, batch, args)


def main(argv=None):
    parser = build_parser("pytorch", "Train the PyTorch twin of the NumPy network on MNIST.")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                        help="where to train; auto picks an accelerator when there is one")
    parser.add_argument("--init", choices=["numpy", "torch"], default="numpy",
                        help="start from the NumPy network's weights for --seed, or from "
                             "PyTorch's default initialisation")
    parser.add_argument("--mode", choices=["eager", "graph", "compile"], default="eager",
                        help="eager: the loop as written; graph: each step recorded once as a CUDA "
                             "graph and replayed (CUDA and Adam only, pytorch_nn/cuda_graph.py); "
                             "compile: torch.compile of the model")
    args = parser.parse_args(argv)
    try:
        device = pick_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    if args.mode == "graph" and device.type != "cuda":
        parser.error(f"argument --mode: graph records CUDA graphs and needs a CUDA GPU; this run's "
                     f"device is {device.type} (try --mode eager)")
    if args.mode == "graph" and args.optimizer != "adam":
        parser.error("argument --mode: graph supports --optimizer adam only (its capturable form "
                     "keeps its whole state on the GPU)")
    prepare(parser, args)
    x_train, y_train, x_test, y_test = load_data(parser, args)
    if device.type == "cpu":                          # an accelerator's memory is not the host's
        check_memory(args, len(x_train), EVAL_BATCH[args.model])  # a step too big to fit: refused now
    with out_of_memory_is_one_line(args):
        try:
            model, run = train(args, x_train, y_train, x_test, y_test)
        except KeyboardInterrupt:                     # while the model was being built
            stop("interrupted before training started: nothing written")
        finish(run, args, stopping.write_kept)    # the last finished epoch's weights


if __name__ == "__main__":
    main()
