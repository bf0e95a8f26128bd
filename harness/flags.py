"""The flags both trainers take, with the same names, defaults and checks: a bad value is
one line from argparse before anything else happens. What depends on --model (the default
epochs and files, --hidden, --activation) is settled at parse time, in _ModelParser.

NumPy and the standard library only (the from-scratch side must not need torch).
"""
import argparse
import math
import tempfile
from pathlib import Path

from data_loader import DATA_DIR, DATASETS
from harness.metrics_file import WEIGHT_SUFFIX

PROJECT = Path(__file__).resolve().parents[1]
RESULTS_DIR = PROJECT / "results"
DTYPES = ("float32", "float64")
MODELS = ("mlp", "cnn")
LAYERS = ("fast", "plain")  # the speed tricks' fast twins, or the lesson files as written
ACTIVATIONS = ("relu", "sigmoid", "tanh")  # numpy_nn/utils.py ACTIVATIONS, pytorch_nn/model.py's
WEIGHT_INITS = ("he", "xavier", "small")   # numpy_nn/utils.py init_std
NORMS = ("none", "batch")                   # numpy_nn/neural_network.py NORMS: batch is numpy_nn/batchnorm.py
MLP_HIDDEN = [128, 64]  # the user's design: 784 -> 128 -> 64 -> 10
# The most --hidden takes: layers, and units a layer. Room for deep and wide experiments
# (docs/experiments.md's --hidden 512 256 128; the depth lesson's 10 layers), while the largest MLP, 10 layers
# of 1024, stays 10.26 million weights (82 MB in float64): a list of thousands of sizes would
# grow a trainer to gigabytes.
MAX_HIDDEN_LAYERS, MAX_HIDDEN_UNITS = 10, 1024
# The ranges --augment draws from, uniformly (--rotate, --scale, ...; numpy_nn/augment.py).
# MNIST's digits are already centred and size-normalised, so small changes suffice.
DEFAULT_RANGES = {"rotate": 15.0,    # degrees, either way
                  "scale": 0.1,      # 1 +- this
                  "shear": 10.0,     # degrees, either way (x leans with y)
                  "shift": 2.0,      # pixels, each axis, either way
                  "thickness": 0.0}  # blend towards a dilation (+) or an erosion (-), up to this
# Passes over the data by default. The CNN learns more per epoch and costs ~30x the MLP's
# arithmetic per image: trial runs of 3 and 4 epochs ended near 99.0%; 5 leave a margin and
# keep the NumPy run under 2 minutes on 2 cores (results/reference/cnn/: 99.10-99.23%, 79 s).
DEFAULT_EPOCHS = {"mlp": 10, "cnn": 5}
SEED_LIMIT = 2 ** 64  # NumPy takes any seed >= 0, torch.manual_seed one below 2^64: both take these


def project_file_problem(path):
    """Why a run may not write to path, or None. Inside the project a run writes under results/
    only, so that no output path (`--metrics train.py`, `--weights README.md`) can replace the
    project's own files. The rule goes by place, not by what git tracks: a copy of the project
    may have no git. The system's temporary folder is allowed too where it lies inside the
    project (TMPDIR set there), but not where the project lies inside it (a clone in /tmp keeps
    the rule). A symlink counts where it points: that is the file written."""
    resolved = Path(path).resolve()
    temp = Path(tempfile.gettempdir()).resolve()
    allowed = [RESULTS_DIR, RESULTS_DIR.resolve()] + ([] if PROJECT.is_relative_to(temp) else [temp])
    if not resolved.is_relative_to(PROJECT) or any(resolved.is_relative_to(folder) for folder in allowed):
        return None
    return (f"{path} is inside the project but not under results/: a run writes its files under results/ "
            f"or outside the project, never over the project's own")


def _number(kind, ok, requirement):
    """An argparse type: parse text as kind, and accept it only if ok(value)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not ok(value):  # NaN fails every comparison, so it never gets through
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _positive(kind):
    return _number(kind, lambda v: 0 < v < math.inf, "positive")


_non_negative_float = _number(float, lambda v: 0 <= v < math.inf, "zero or positive")
_dropout = _number(float, lambda p: 0 <= p < 1, "in [0, 1)")
_seed = _number(int, lambda s: 0 <= s < SEED_LIMIT, "from 0 to 2^64 - 1")
# --augment's ranges (numpy_nn/augment.py): beyond these a digit turns into another (a 6
# rotated by 180 degrees is a 9) or leaves the 28x28 frame
AUGMENT_RANGES = {
    "rotate": (_number(float, lambda v: 0 <= v <= 180, "in [0, 180] degrees"), "DEG",
               "rotation, uniform in +-DEG degrees"),
    "scale": (_number(float, lambda v: 0 <= v < 1, "in [0, 1)"), "S", "zoom, uniform in 1 +- S"),
    "shear": (_number(float, lambda v: 0 <= v <= 60, "in [0, 60] degrees"), "DEG",
              "shear (x leans with y), uniform in +-DEG degrees"),
    "shift": (_number(float, lambda v: 0 <= v <= 14, "in [0, 14] pixels"), "PX",
              "shift, uniform in +-PX pixels on each axis"),
    "thickness": (_number(float, lambda v: 0 <= v <= 1, "in [0, 1]"), "T",
                  "strokes blended by up to T towards a 3x3 dilation (thicker) or erosion (thinner); 0: off"),
}


class HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's help ends with its default, except where there is none to show."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line, not the usage block of every flag above it
    (--help shows them)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class _ModelParser(OneLineParser):
    """Parses the trainers' flags, then fills in and checks what depends on --model."""

    def parse_args(self, args=None, namespace=None):
        args = super().parse_args(args, namespace)
        self.layers_given = args.layers is not None  # an exercise's check refuses an explicit fast
        args.layers = args.layers or "fast"
        if args.epochs is None:
            args.epochs = DEFAULT_EPOCHS[args.model]
        # each model has its own default files, so training the CNN keeps the MLP's run
        name = self.framework if args.model == "mlp" else f"{self.framework}_{args.model}"
        if getattr(args, "exercise", None):    # a learner's exercise (numpy_nn/train.py's) keeps the project's run too
            name += f"_exercise_{args.exercise}"
        if args.augment:                       # and an augmented run the plain one
            name += "_augment"
        if args.metrics is None:
            args.metrics = RESULTS_DIR / f"{name}_metrics.json"
        if args.weights is None:
            args.weights = RESULTS_DIR / f"{name}_model{WEIGHT_SUFFIX[self.framework]}"
        if args.model == "cnn":
            if args.hidden is not MLP_HIDDEN:  # the very default object: --hidden was not given
                self.error("argument --hidden: sets the MLP's hidden layers; the CNN's layers are fixed "
                           "(numpy_nn/cnn.py)")
            args.hidden = None                 # recorded as null: no hidden sizes to compare
            if args.activation not in (None, "relu"):
                self.error(f"argument --activation: sets the MLP's; the CNN keeps ReLU (numpy_nn/cnn.py), "
                           f"got {args.activation}")
            if args.norm != "none":
                self.error(f"argument --norm: normalises the MLP's hidden layers; the CNN has none "
                           f"(numpy_nn/cnn.py), got --norm {args.norm}")
        elif len(args.hidden) > MAX_HIDDEN_LAYERS:
            self.error(f"argument --hidden: at most {MAX_HIDDEN_LAYERS} layers, got {len(args.hidden)}")
        elif max(args.hidden) > MAX_HIDDEN_UNITS:
            self.error(f"argument --hidden: at most {MAX_HIDDEN_UNITS} units a layer, got {max(args.hidden)}")
        if args.norm == "batch" and args.batch_size == 1:
            self.error("argument --batch-size: --norm batch normalises each unit over its batch, and one "
                       "image has no variance: give 2 or more")
        args.activation = args.activation or "relu"
        given = [name for name in AUGMENT_RANGES if getattr(args, name) is not None]
        if given and not args.augment:
            self.error(f"argument --{given[0]}: sets a range of --augment; add --augment")
        # recorded as one entry: null, or the ranges each image's transform is drawn from
        ranges = {name: DEFAULT_RANGES[name] if getattr(args, name) is None else getattr(args, name)
                  for name in AUGMENT_RANGES}
        for name in AUGMENT_RANGES:
            delattr(args, name)
        args.augment = ranges if args.augment else None
        if (args.schedule == "exponential") != (args.lr_end is not None):
            self.error("argument --lr-end: goes with --schedule exponential, and it with --lr-end "
                       "(e.g. --schedule exponential --lr 1e-6 --lr-end 10)")
        if getattr(args, "init", "numpy") == "torch":  # the PyTorch trainer's --init
            if args.weight_init is not None:
                self.error("argument --weight-init: chooses how the NumPy network draws the starting "
                           "weights, which --init torch does not use; give --init numpy")
        else:                                  # recorded as null with --init torch: not our draw
            args.weight_init = args.weight_init or "he"
        return args


def build_parser(framework, description):
    """The flags both trainers take, with the same names and defaults."""
    p = _ModelParser(description=description, formatter_class=HelpWithDefaults)
    p.framework = framework
    p.add_argument("--epochs", type=_positive(int), default=None,
                   help=f"passes over the training set (default: {DEFAULT_EPOCHS['mlp']} for the MLP, "
                        f"{DEFAULT_EPOCHS['cnn']} for the CNN)")
    p.add_argument("--batch-size", type=_positive(int), default=128, help="samples per gradient step")
    p.add_argument("--lr", type=_positive(float), default=3e-3, help="(peak) learning rate")
    p.add_argument("--optimizer", choices=["sgd", "momentum", "adam"], default="adam",
                   help="plain SGD, SGD with momentum 0.9, or Adam")
    p.add_argument("--schedule", choices=["constant", "cosine", "exponential"], default="cosine",
                   help="learning rate over the run: fixed, cosine decay to 0 by the last step, or "
                        "exponential growth from --lr to --lr-end (the range test: sweep.py --lr-range)")
    p.add_argument("--lr-end", type=_positive(float), default=None,
                   help="with --schedule exponential: the last step's learning rate; every step "
                        "multiplies the rate by the same factor")
    p.add_argument("--model", choices=MODELS, default="mlp",
                   help="mlp: the fully connected network; cnn: the small convolutional one")
    p.add_argument("--layers", choices=LAYERS, default=None,
                   help="fast: the speed tricks, each in a fast twin of a lesson file (NumPy: the CNN on "
                        "numpy_nn/fast_layers.py, the optimizers' subnormal flush, numpy_nn/fast_optimizers.py; "
                        "PyTorch: the CNN laid out channels last, pytorch_nn/fast_step.py); plain: the lesson "
                        "files as written, the ones to read and edit (numpy_nn/layers.py, utils.py): the same "
                        "numbers up to rounding, slower; recorded (default: fast; plain with a CNN --exercise)")
    p.add_argument("--hidden", type=_positive(int), nargs="+", default=MLP_HIDDEN,
                   help=f"the MLP's hidden layer sizes, e.g. --hidden 256 128 64: at most {MAX_HIDDEN_LAYERS} layers of "
                        f"at most {MAX_HIDDEN_UNITS} units (the CNN's are fixed)")
    p.add_argument("--activation", choices=ACTIVATIONS, default=None,
                   help="the MLP's hidden-layer activation (default: relu; the CNN keeps ReLU)")
    p.add_argument("--norm", choices=NORMS, default="none",
                   help="batch: batch normalization between each of the MLP's hidden layers and its "
                        "activation (numpy_nn/batchnorm.py; PyTorch's nn.BatchNorm1d), the batch's "
                        "statistics in training, the running ones in evaluation")
    p.add_argument("--weight-init", choices=WEIGHT_INITS, default=None,
                   help="how the starting weights are drawn: he N(0, 2/fan_in), xavier N(0, 2/(fan_in + "
                        "fan_out)), small N(0, 0.01^2), the classic mistake (default: he)")
    p.add_argument("--weight-decay", type=_non_negative_float, default=0.0,
                   help="L2 penalty: adds (wd / 2) * sum(W^2) over the weights to the loss")
    p.add_argument("--dropout", type=_dropout, default=0.0,
                   help="probability of zeroing each hidden unit while training")
    p.add_argument("--seed", type=_seed, default=0,
                   help="seeds the initial weights and the batch order (0 to 2^64 - 1)")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="float precision of weights, data and arithmetic: in float64 the twins "
                        "agree to ~1e-15 on any CPU; float32 is the fast, usual choice")
    p.add_argument("--limit", type=_positive(int), default=None,
                   help="train on the first N samples only (quick runs; the test set stays whole)")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="mnist", help="which data")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR,
                   help="root of the dataset cache (torchvision's root=): <dir>/MNIST/raw/...")
    p.add_argument("--metrics", type=Path, default=None,
                   help=f"where to write the metrics JSON (default: results/{framework}_metrics.json, "
                        f"results/{framework}_cnn_metrics.json for the CNN; _augment before _metrics with "
                        f"--augment); a symlink is written "
                        f"through to its target, a device or FIFO refused; inside the project, under "
                        f"results/ only")
    p.add_argument("--weights", type=Path, default=None,
                   help=f"where to write the trained weights (default: results/{framework}_model"
                        f"{WEIGHT_SUFFIX[framework]}, results/{framework}_cnn_model{WEIGHT_SUFFIX[framework]} "
                        f"for the CNN); a symlink is written through to its target, a device or "
                        f"FIFO refused; inside the project, under results/ only")
    augment = p.add_argument_group(
        "augmentation", "with --augment every training image is warped by its own random affine map "
        "at every epoch (numpy_nn/augment.py, pytorch_nn/augment.py); the flags after it set the ranges")
    augment.add_argument("--augment", action="store_true",
                         help="train on randomly rotated, scaled, sheared and shifted copies")
    for name, (kind, metavar, text) in AUGMENT_RANGES.items():
        augment.add_argument(f"--{name}", type=kind, default=None, metavar=metavar,
                             help=f"{text} (default: {DEFAULT_RANGES[name]:g})")
    p.add_argument("--no-progress", action="store_true", help="hide the per-batch progress bar")
    p.add_argument("--diagnostics-every", type=_positive(int), default=None, metavar="N",
                   help="record the gradients, updates and activations layer by layer every N steps "
                        "(default: about 15 times an epoch; see numpy_nn/diagnostics.py)")
    p.add_argument("--no-diagnostics", action="store_true",
                   help="record none of them (the record's diagnostics are null)")
    if framework == "pytorch":  # where and how PyTorch runs the step: pytorch_nn/build.py, fast_step.py
        p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                       help="where to train; auto picks an accelerator when there is one")
        p.add_argument("--init", choices=["numpy", "torch"], default="numpy",
                       help="start from the NumPy network's weights for --seed, or from "
                            "PyTorch's default initialisation")
        p.add_argument("--mode", choices=["eager", "graph", "compile"], default="eager",
                       help="eager: the loop as written; graph: each step recorded once as a CUDA "
                            "graph and replayed (CUDA and Adam only, pytorch_nn/fast_step.py); "
                            "compile: torch.compile of the model")
    return p
