"""The model, optimizer, learning-rate schedule and device the trainer's flags ask for
(pytorch_nn/train.py)."""
import torch

from numpy_nn.build import build_network
from numpy_nn.utils import exponential_factor
from pytorch_nn import cnn
from pytorch_nn.model import MLP
from pytorch_nn.numpy_weights import load_numpy_params


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


def check_flags(parser, args):
    """The PyTorch trainer's own checks, one line each: the device exists, and --mode graph
    has what it needs."""
    try:
        device = pick_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    if args.mode == "graph" and device.type != "cuda":
        parser.error(f"argument --mode: graph records CUDA graphs and needs a CUDA GPU; this run's "
                     f"device is {device.type} (try --mode eager)")
    if args.mode == "graph" and args.schedule == "exponential":
        parser.error("argument --mode: graph computes the constant and cosine schedules inside the "
                     "recorded step, not the exponential one (try --mode eager)")
    if args.mode == "graph" and args.optimizer != "adam":
        parser.error("argument --mode: graph supports --optimizer adam only (its capturable form "
                     "keeps its whole state on the GPU)")


def build_model(args, n_inputs):
    """The model the flags ask for; with --init numpy, holding the very weights the NumPy
    network starts from for the same --seed."""
    if args.model == "cnn":
        model = cnn.CNN(args.dropout)
    else:
        model = MLP((n_inputs, *args.hidden, 10), args.dropout, args.activation, args.norm)
    model.to(getattr(torch, args.dtype))
    if args.init == "numpy":
        load_numpy_params(model, build_network(args, n_inputs).params)
    return model


def make_optimizer(model, args, capturable=None):
    """torch.optim does what numpy_nn/utils.py writes by hand. L2 goes on the weights only
    (a parameter group per kind), as numpy_nn adds l2 * W to dW and leaves biases alone, and
    gamma and beta too (nn.BatchNorm1d's weight and bias, the norms' parameters).
    capturable: Adam for a CUDA graph (fast_step.py), its learning rate a tensor beside
    the weights, which the recorded step sets itself; by default, with --mode graph."""
    if capturable is None:
        capturable = getattr(args, "mode", "eager") == "graph"
    decayed = lambda name: name.endswith("weight") and not name.startswith("norms.")  # noqa: E731
    weights = [p for name, p in model.named_parameters() if decayed(name)]
    biases = [p for name, p in model.named_parameters() if not decayed(name)]
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


def make_schedule(optimizer, args, total_steps):
    """The learning rate over the run (--schedule), as torch.optim.lr_scheduler hands it out:
    CosineAnnealingLR (numpy_nn/utils.py's CosineSchedule), LambdaLR with the range test's
    growth (ExponentialSchedule's very rates), or None: constant."""
    if args.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total_steps)
    if args.schedule == "exponential":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda t: exponential_factor(args.lr, args.lr_end, t, total_steps))
    return None
