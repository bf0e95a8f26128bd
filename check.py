"""Check a network's backpropagation, or your own version of one of its functions.

    python check.py                          # the MLP: every gradient against PyTorch's autograd
    python check.py --activation sigmoid     # ... with another activation (or --hidden 256 128 64)
    python check.py --norm batch             # ... with batch normalization: every gradient through it
    python check.py --model cnn              # the CNN
    python check.py --exercise mlp_backward  # grade your exercises/mlp_backward.py (exercises/README.md)
    python check.py --explain                # docs/backprop.md's worked example, every number of it

One batch of 32 training images goes through the NumPy network and its PyTorch twin, in
float64. Every gradient backward() computes is compared with autograd's, in the order
backward() computes them (exact, close or wrong; what a wrong one looks like: off by the
batch size, transposed, a missing ReLU mask, ...); the first wrong one names its line. Then
a few entries of every parameter's gradient are checked by finite differences, and the
recipe by two sanity checks: the loss at initialisation is near ln 10, and the network can
learn those 32 images by heart. The exit status is 0 only when everything holds.

Your exercise's function runs guarded (checker/guard.py): each call has a time limit (an
endless loop stops the check in one line, exit 1), and a sys.exit() or KeyboardInterrupt in it
is your function failing, reported as such. Ctrl-C stops the check in one line, exit 130.

--explain prints the worked example of docs/backprop.md instead (checker/explain.py): a
network of 2 inputs, 2 hidden units and 2 classes, every derivative worked by hand and
checked, and draws its graph (report/backprop_graph.py).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the repo root, from any cwd
from harness import ctrl_c  # noqa: E402

if __name__ == "__main__":  # Ctrl-C while the imports below run: one line, not a traceback
    ctrl_c.one_line("check.py: interrupted (Ctrl-C); nothing was checked to the end")

import numpy as np  # noqa: E402

from checker.guard import Interrupted, Overran, ctrl_c_stops_the_check  # noqa: E402
from checker.network import BATCH, maker  # noqa: E402
from data_loader import DataError, load_mnist  # noqa: E402
from harness.flags import ACTIVATIONS, MLP_HIDDEN, NORMS, OneLineParser  # noqa: E402

ROOT = Path(__file__).resolve().parent
PICTURE = ROOT / "results" / "backprop_graph.png"   # --explain's graph; docs/backprop.md's copy: --picture
# The sanity check asks the network to learn BATCH images by heart within 500 steps. MLPs of
# one hidden layer of 8 sigmoid units, 4 tanh units or 3 ReLU units did not (seeds 0-2: all
# three, all three, two of three); one and two layers of 16 units did with each activation
# (seeds 0-4)
NARROWEST = 16


def shown(path):
    """A path as typed from the repo root where it lies inside."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _seed(text):
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number from 0, got {text}")
    return int(text)


def parse(argv):
    from exercises import EXERCISES
    p = OneLineParser(description="Check backpropagation against PyTorch's autograd.")
    p.add_argument("--model", choices=("mlp", "cnn"), default=None, help="the network to check (default: mlp)")
    p.add_argument("--hidden", type=int, nargs="+", default=None,
                   help=f"the MLP's hidden layer sizes (default: {' '.join(map(str, MLP_HIDDEN))})")
    p.add_argument("--activation", choices=ACTIVATIONS, default=None, help="the MLP's activation (default: relu)")
    p.add_argument("--norm", choices=NORMS, default=None,
                   help="batch: the MLP with batch normalization before each hidden activation (default: none)")
    p.add_argument("--exercise", choices=sorted(EXERCISES),
                   help="grade your version of a function in exercises/ instead")
    p.add_argument("--seed", type=_seed, default=0, help="the network's starting weights (default: 0)")
    p.add_argument("--explain", action="store_true",
                   help="print docs/backprop.md's worked example (every derivative by hand, then checked) "
                        "and draw its graph")
    p.add_argument("--picture", type=Path, default=None,
                   help=f"with --explain: where the graph goes (default: {shown(PICTURE)})")
    args = p.parse_args(argv)
    if args.picture is not None and not args.explain:
        p.error("argument --picture: goes with --explain")
    if args.explain:
        given = [flag for flag, value in (("--model", args.model), ("--hidden", args.hidden),
                                          ("--activation", args.activation), ("--norm", args.norm),
                                          ("--exercise", args.exercise),
                                          ("--seed", args.seed or None)) if value is not None]
        if given:
            p.error(f"argument --explain: prints one fixed example; {given[0]} does not apply to it")
        return args
    if args.hidden and any(h < NARROWEST for h in args.hidden):
        p.error(f"argument --hidden: sizes of at least {NARROWEST}: narrower layers cannot learn {BATCH} images "
                f"by heart, which the sanity check asks of them; got {' '.join(map(str, args.hidden))}")
    needed = EXERCISES[args.exercise].model if args.exercise else None
    if needed and args.model not in (None, needed):
        p.error(f"argument --model: the exercise {args.exercise} is checked on the {needed.upper()}, got --model {args.model}")
    norm = EXERCISES[args.exercise].needs.get("norm") if args.exercise else None   # the one it is checked with
    if norm and args.norm not in (None, norm):
        p.error(f"argument --norm: the exercise {args.exercise} is checked with --norm {norm}, got --norm {args.norm}")
    args.model = args.model or needed or "mlp"
    if args.model == "cnn" and (args.hidden or args.activation not in (None, "relu")):
        p.error("argument --hidden/--activation: set the MLP's; the CNN's layers are fixed, with ReLU (numpy_nn/cnn.py)")
    if args.model == "cnn" and args.norm not in (None, "none"):
        p.error(f"argument --norm: normalises the MLP's hidden layers; the CNN has none (numpy_nn/cnn.py), "
                f"got --norm {args.norm}")
    args.hidden, args.activation = args.hidden or MLP_HIDDEN, args.activation or "relu"
    args.norm = args.norm or norm or "none"
    return args


def check_network(args, x, y, say):
    from checker.network import check_all
    return check_all(maker(args.model, args.hidden, args.activation, args.seed, args.norm), x, y, say, args.seed)


def explain(args, say):
    """The worked example, printed; its graph, drawn. Exit 0 when every check in it holds."""
    from checker.explain import PARAMS, example, sections
    from report import backprop_graph
    ex = example()
    for i, lines in enumerate(sections(ex).values()):
        say("\n".join(([""] if i else []) + lines))
    path = args.picture or PICTURE
    fig, labels = backprop_graph.draw(ex.hand, PARAMS)
    try:
        backprop_graph.save(fig, labels, path)
    except OSError as e:
        sys.exit(f"check.py: error: cannot write {shown(path)} ({e.strerror}); choose another --picture")
    say(f"\nThe graph of this example: {shown(path)}")
    sys.exit(0 if ex.agree else 1)


def main(argv=None):
    args = parse(argv)
    if args.explain:
        explain(args, print)
    try:
        with ctrl_c_stops_the_check():            # so a KeyboardInterrupt is only ever your code's
            ok = run(args, print)
    except Interrupted:
        print("check.py: interrupted (Ctrl-C); nothing was checked to the end", file=sys.stderr)
        sys.exit(130)
    except Overran as error:                       # your function's call ran past its time limit
        sys.exit(f"check.py: {error}")
    sys.exit(0 if ok else 1)


def run(args, say):
    """The check the flags ask for; True when everything holds."""
    try:
        x_train, y_train, _, _ = load_mnist()
    except DataError as error:
        sys.exit(f"check.py: {error}")
    x, y = x_train[:BATCH].astype(np.float64), y_train[:BATCH]
    if args.exercise:
        from checker.exercise import check_exercise
        return check_exercise(args.exercise, x, y, say, lambda x, y, say: check_network(args, x, y, say))
        # (check_exercise said what comes next)
    what = (f"the MLP {'-'.join(map(str, (784, *args.hidden, 10)))} ({args.activation}"
            f"{', batch normalization' if args.norm == 'batch' else ''})" if args.model == "mlp" else "the CNN")
    say(f"Checking {what} on {BATCH} training images, in float64, against PyTorch's autograd.\n")
    ok = check_network(args, x, y, say)
    say("")
    say("Everything holds." if ok else "Something is wrong: read the lines marked wrong above, from the top.")
    return ok


if __name__ == "__main__":
    main()
