"""Compare training runs: learning curves, speed, and what the trained networks get wrong.

    python compare.py                        # results/numpy_metrics.json vs results/pytorch_metrics.json
    python compare.py --runs a.json b.json   # any metrics files, e.g. one run per learning rate
    python compare.py --no-inside            # no saved weights needed: curves, table, learning

compare.py only reads what the trainers wrote (run first, then plot): the metrics files,
checked by metrics_file.load_metrics, and the saved weights, each checked to be its run's own
before any picture is made from it: the SHA-256 its metrics file records, and the test
accuracy the record claims. Into --out-dir (default results/):

    comparison.png        loss, accuracy, seconds and samples/s per epoch, every run
    comparison.md         the table (also printed), the speed ratio, warnings about unfair comparisons
                          (the default pair's, numpy and pytorch; any other runs write
                          comparison_<run>_vs_<run>.md and .png, so no comparison replaces another)
    confusion_<run>.png   true class against predicted class over the test set, counts in the cells
    mistakes_<run>.png    the test images the network got wrong with the highest confidence
    weights_<run>.png     a NumPy MLP's first-layer weights drawn as 28x28 images
    filters_<run>.png     a CNN's 32 first-layer 3x3 filters (NumPy and PyTorch runs)
    feature_maps_<run>.png  the first test image and the maps a CNN's two conv layers make of it
    learning_<run>.png    how a run learned, layer by layer: gradients, updates, dead units and
                          activations every N steps (a run whose record has diagnostics)
    learning_<run>_vs_<run>.png  those runs in one picture, when two or more have the same
                          layers: one line style per run, the legend naming what differs

<run> is the run's name, the stem of its metrics file less "_metrics" (numpy, pytorch,
lr_1e-3), with its folder's name added when two runs share a stem or when another metrics file
in --out-dir owns that name (report.run.run_keys): a run's pictures never overwrite another's,
and the default runs' pictures survive any --runs.
This file reads and checks; the table and the pictures are made in report/ (table.py, curves.py,
inside.py, learning.py), and written here. Records of schema 2 (before diagnostics) are read too.
A run that diverged is listed as such and gets no curves, numbers or pictures.
The table also gives each MNIST run's accuracy on the test digits perturbed and drawn
(report/robustness.py), from its saved weights, as they give its test accuracy.
Every file is written under a temporary name and then renamed: none is ever half-written.
"""
import pickle
import sys
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # draw into files only: no window needed, so it runs over ssh and in CI
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # the repo root, so the imports below work from any cwd
from data_loader import DATA_DIR, DataError, load_mnist  # noqa: E402
from harness.experiment import RESULTS_DIR, keep_running_if_stdout_closes, save_bytes, shown  # noqa: E402
from harness.flags import OneLineParser  # noqa: E402
from harness.metrics_file import MetricsError, file_sha256, load_metrics  # noqa: E402
from numpy_nn.cnn import CNN, saved_model_kind  # noqa: E402
from numpy_nn.neural_network import NeuralNetwork  # noqa: E402
from report.curves import plot_comparison  # noqa: E402
from report.figure import png  # noqa: E402
from report.inside import inside_figures  # noqa: E402
from report.learning import learning_figure, overlay_figure, overlay_groups  # noqa: E402
from report.robustness import robustness_sets  # noqa: E402
from report.run import (FRAMEWORK_NAMES, MODEL_NAMES, RunResult, divergence, name_runs,  # noqa: E402
                        picture_name, plural, with_results)
from report.table import markdown  # noqa: E402

WITH_ARTICLE = {"mlp": "an MLP", "cnn": "a CNN"}
# what np.load and torch.load raise on a file that is not what they expect
UNREADABLE = (OSError, ValueError, KeyError, RuntimeError, EOFError, zipfile.BadZipFile,
              pickle.UnpicklingError)


class CompareError(Exception):
    """Bad input or an unwritable output; the message is one line that says what to do."""


# ----------------------------------------------------------------------------- reading the runs

def how_to_make(path):
    """The trainer command that writes this metrics file, for the 'not found' message."""
    for framework in FRAMEWORK_NAMES:
        for model, flags in (("", ""), ("_cnn", " --model cnn")):
            for augment, more in (("", ""), ("_augment", " --augment")):
                if path.resolve() == (RESULTS_DIR / f"{framework}{model}{augment}_metrics.json").resolve():
                    return f"run `python {framework}_nn/train.py{flags}{more}` first"
    return (f"run `python numpy_nn/train.py --metrics {path}` or "
            f"`python pytorch_nn/train.py --metrics {path}` first")


def load_runs(paths, out_dir=None):
    """Read and check every metrics file; a missing one says which trainer writes it.
    The runs' names and keys come from report.run.name_runs (keys unique in out_dir)."""
    paths = [Path(shown(path)) for path in paths]
    records, seen = [], {}
    for path in paths:
        if not path.exists():
            raise CompareError(f"{path} not found: {how_to_make(path)}")
        # One file given twice (or by two names: a link, ../) would be compared with itself.
        # A copy is another file and is compared: it may be a kept run.
        file_id = (path.stat().st_dev, path.stat().st_ino)
        if file_id in seen:
            raise CompareError(f"{path} is the same file as {seen[file_id]}: give each run once")
        seen[file_id] = path
        record = load_metrics(path)
        if record["config"]["model"] not in MODEL_NAMES:
            raise CompareError(f"{path}: unknown model {record['config']['model']!r} (expected one "
                               f"of {', '.join(MODEL_NAMES)}, as the trainers' --model)")
        records.append(record)
    return [RunResult(path, record, name, key)
            for path, record, (name, key) in zip(paths, records, name_runs(records, paths, out_dir))]


# ----------------------------------------------------------------------------- the run's own weights

def weights_candidates(run, override=None):
    """Where the run's weights may be, in the order they are tried: the flag alone when given;
    else the copy beside the metrics file (a run kept in a folder of its own), then the path
    its trainer wrote them to (which a later run with the default paths writes over)."""
    if override is not None:
        return [Path(shown(override))]
    saved = run.record["config"].get("weights")
    if not saved:
        return []
    saved = Path(saved)
    written = saved if saved.is_absolute() else ROOT / saved  # recorded relative to the repo root
    beside = run.path.parent / saved.name
    candidates = [beside] + ([written] if written.resolve() != beside.resolve() else [])
    return [Path(shown(path)) for path in candidates]


def _sha256(path):
    try:
        return file_sha256(path)
    except OSError as e:
        raise CompareError(f"cannot read {path} ({e.strerror}); fix it, or use --no-inside") from None


def weights_kind(path, framework):
    """Which network a weights file of this framework holds, "mlp" or "cnn"; None when it is
    neither (another framework's file, or no weights file at all: the SHA-256 check refuses it).
    NumPy: numpy_nn.cnn's marker, in an .npz with an MLP's "sizes" or a CNN's "model" entry.
    PyTorch: the state_dict's keys, conv1.* for the CNN, out.* (and hidden.*) for the MLP."""
    try:
        if framework == "numpy":
            f = np.load(path)
            if not isinstance(f, np.lib.npyio.NpzFile):  # an .npy array, not an .npz of weights
                return None
            with f:
                ours = {"sizes", "model"} & set(f.files)  # a zip of other files (a .pt) has neither
            return saved_model_kind(path) if ours else None
        import torch  # needed for PyTorch runs only
        state = torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE:
        return None
    if not isinstance(state, dict):
        return None
    return "cnn" if "conv1.weight" in state else "mlp" if "out.weight" in state else None


def _wrong_kind(run, path, kind, flag, given):
    """The refusal of a weights file that holds the other kind of network."""
    holds = f"{path} holds {MODEL_NAMES[kind]} weights but {run.path} is {WITH_ARTICLE[run.model]} run"
    if given:
        return f"{flag} {holds}: pass that run's own weights file, or use --no-inside"
    return (f"{holds} (written over by a later {MODEL_NAMES[kind]} run?): pass its own weights "
            f"with {flag}, or use --no-inside")


def _not_its_weights(run, files, flag, given):
    """The refusal when weights files are there but none is the one written with the run."""
    if given:
        return (f"{flag} {files[0]} is not the weights file written with {run.path} (the SHA-256 "
                f"it records differs): pass that run's own weights file, or use --no-inside")
    names = f"{files[0]} is not" if len(files) == 1 else f"neither {' nor '.join(map(str, files))} is"
    return (f"{names} the weights file written with {run.path} (the SHA-256 it records differs: "
            f"written over by a later run?): pass its own weights with {flag}, or use --no-inside")


def find_weights(runs, args):
    """Attach each run's own weights: the first candidate file whose SHA-256 is the one its
    metrics file records. Returns a note for every run with no candidate file at all; files
    that are there but are another run's are refused (CompareError), never drawn: first a
    file that holds the other kind of network (an MLP's for a CNN run, or the reverse),
    which says so, then any other."""
    notes = []
    for framework, name in FRAMEWORK_NAMES.items():
        flag = f"--{framework}-weights"
        override = getattr(args, f"{framework}_weights")
        matching = [run for run in runs if run.framework == framework]
        if override is not None and len(matching) != 1:
            raise CompareError(f"{flag} needs exactly one {name} run with a result, got {len(matching)}")
        if override is not None and not override.is_file():
            raise CompareError(f"{flag} {shown(override)} not found")
        for run in matching:
            candidates = weights_candidates(run, override)
            found = [path for path in candidates if path.is_file()]
            if not found:
                looked = " nor ".join(map(str, candidates))
                looked = f"neither {looked} exists" if len(candidates) > 1 else \
                    f"{looked} does not exist" if candidates else "its metrics name no weights file"
                notes.append(f"note: no saved weights for {run.label} ({looked}): skipping its "
                             f"pictures; pass the weights written with {run.path} as {flag}")
                continue
            kinds = {path: weights_kind(path, framework) for path in found}
            wrong_kind = [path for path in found if kinds[path] not in (None, run.model)]
            own = [path for path in found if _sha256(path) == run.record["weights_sha256"]]
            if own and own[0] not in wrong_kind:
                run.weights = own[0]
            elif wrong_kind:
                path = wrong_kind[0]
                raise CompareError(_wrong_kind(run, path, kinds[path], flag, override is not None))
            else:
                raise CompareError(_not_its_weights(run, found, flag, override is not None))
    return notes


@lru_cache(maxsize=None)
def load_test_set(dataset, data_dir=DATA_DIR):
    """The test images and labels of a dataset, loaded once however many runs use it."""
    try:
        _, _, x_test, y_test = load_mnist(dataset, data_dir)
    except DataError as e:
        raise CompareError(f"{e} (the test set is needed for the pictures; --no-inside "
                           f"skips them)") from None
    return x_test, y_test


@dataclass
class Evaluation:
    """What a run's saved weights give on the test set, computed as its trainer computed it."""
    logits: np.ndarray  # N,10 in the weights' own dtype
    correct: int        # test images classified right
    fan_ins: tuple      # how many terms each layer's dot products sum, input to output
    params: dict        # the weights in numpy_nn's layout {"W1": ..., "b1": ...}, for the pictures


def fan_ins(params):
    """The terms summed per output, layer by layer: a conv weight (O,C,kh,kw) sums C*kh*kw,
    a linear one (in, out) sums in. The MLP's 784, 128, 64; the CNN's 9, 288, 1600."""
    weights = [W for name, W in params.items() if name.startswith("W")]   # W1, W2, ... in order
    return tuple(int(np.prod(W.shape[1:])) if W.ndim == 4 else W.shape[0] for W in weights)


def _in_bites(forward, x, bite):
    """forward over x in consecutive slices of bite rows, the results stacked."""
    return np.concatenate([forward(x[start:start + bite]) for start in range(0, len(x), bite)])


def _evaluate_numpy(path, model, x_test, y_test):
    from numpy_nn.train import EVAL_BATCH
    net = (CNN if model == "cnn" else NeuralNetwork).load(path)
    x = x_test.astype(net.dtype, copy=False)
    logits = _in_bites(lambda xb: net.forward(xb)[0], x, EVAL_BATCH)
    return Evaluation(logits, int((logits.argmax(axis=1) == y_test).sum()), fan_ins(net.params),
                      net.params)


def _evaluate_pytorch(path, model, x_test, y_test, activation):
    import torch  # needed for PyTorch runs only
    from pytorch_nn import cnn, model as mlp
    from pytorch_nn.fast_step import channels_last  # the layout the trainer evaluates in: faster
    from pytorch_nn.numpy_weights import numpy_params
    from pytorch_nn.train import EVAL_BATCH
    # a state_dict holds no activation (it has no weights): the MLP's comes from the record
    network = channels_last(cnn.load_model(path)) if model == "cnn" else mlp.load_model(path, activation=activation)
    network.eval()                                 # as the trainer's evaluate(): dropout off
    x = torch.from_numpy(x_test).to(network.out.weight.dtype)
    with torch.inference_mode():
        logits = _in_bites(lambda xb: network(xb).numpy(), x, EVAL_BATCH)
    params = numpy_params(network)
    return Evaluation(logits, int((logits.argmax(axis=1) == y_test).sum()), fan_ins(params), params)


def evaluate_weights(run, x_test, y_test):
    """The run's weights on the test set through its own framework, in the dtype it trained
    in (another library, or another dtype, rounds differently), and in the slices its
    trainer's evaluate() takes (EVAL_BATCH): the logits, and so the count of right answers,
    are the ones the trainer computed."""
    try:
        if run.framework == "numpy":  # the .npz names the MLP's activation itself
            return _evaluate_numpy(run.weights, run.model, x_test, y_test)
        return _evaluate_pytorch(run.weights, run.model, x_test, y_test, run.record["config"]["activation"])
    except UNREADABLE as e:
        # their messages run to several lines; the type of error is enough to go on
        raise CompareError(f"cannot read {run.weights} as {FRAMEWORK_NAMES[run.framework]} weights "
                           f"({type(e).__name__}); run its trainer again, or use --no-inside") from None


# The committed results were evaluated on one CPU. Another CPU (another BLAS kernel: AVX2
# against AVX-512, or PyTorch's against OpenBLAS, or a GPU) sums each dot product in another
# order, so its logits differ in the last bits, and an image whose top two logits are that
# close can change class. A dot product of n terms rounds with an error of about sqrt(n) unit
# roundoffs u times its scale (rounding errors do not all lean one way; n u is the worst case,
# never seen); the layers of 784, 128 and 64 inputs add up to (28 + 11.3 + 8) u = 47 u on the
# scale of the logits, 1 + max |logit| (the CNN's, of 9, 288 and 1600 terms, to 60 u). Two
# machines' logits then differ by up to 2 x 47 u each, and two of them can swap order only if
# their margin is below twice that: 4 x 47 u, which is 1.1e-5 of the scale in float32
# (u = 2^-24 = 6e-8) and 2e-14 in float64 (u = 2^-53), where it spares no image in practice.
# Such a swap changes the count only when the true class is one of the two: a right answer
# may turn wrong, or a wrong one right. Measured on the committed NumPy
# network (98.25%): five OpenBLAS kernels (SSE to AVX-512), PyTorch's, and one image at a time
# agree within 13 u of the scale per logit, so no margin moved by more than 26 u, a seventh of
# the bound; its smallest margin is 3e-4 of the scale: none of its images is a tie.
TIE_ROUNDOFFS = 4  # two machines' rounding, on each of the two top logits


def rounding_ties(logits, y_true, fan_ins):
    """(right, wrong): how many images this machine gets right, and wrong, whose true class
    is within float rounding of the top logit together with another class, so that another
    CPU could count them the other way (see above). fan_ins: the terms each layer's dot
    products sum, input to output (784, 128, 64 for the MLP)."""
    u = np.finfo(logits.dtype).eps / 2                        # unit roundoff of the logits' dtype
    per_logit = u * sum(np.sqrt(n) for n in fan_ins)          # rounding per logit, on its scale
    logits = logits.astype(np.float64)                        # N,C  margins computed exactly
    top = logits.max(axis=1, keepdims=True)                   # N,1
    bound = TIE_ROUNDOFFS * per_logit * (1 + np.abs(logits).max(axis=1, keepdims=True))
    near_top = logits >= top - bound                          # N,C  classes that could be top
    tied = (near_top.sum(axis=1) > 1) & near_top[np.arange(len(y_true)), y_true]   # N
    right = logits.argmax(axis=1) == y_true                   # N
    return int((tied & right).sum()), int((tied & ~right).sum())


def check_accuracy(run, evaluation, y_test):
    """The weights must give the test accuracy the run recorded, to the image, except for
    images float rounding could tip (rounding_ties); returns the line that says they do."""
    n_recorded, n_test = run.record["data"]["test_samples"], len(y_test)
    recorded = round(run.record["final_test_acc"] * n_recorded)
    could_lose, could_gain = rounding_ties(evaluation.logits, y_test, evaluation.fan_ins)
    correct = evaluation.correct
    right = f"{correct:,} of {n_test:,} test images right"
    if n_recorded != n_test or not correct - could_lose <= recorded <= correct + could_gain:
        tipped = (f" (float rounding could turn only {could_lose} of them wrong and "
                  f"{plural(could_gain, 'other')} right)" if could_lose or could_gain else "")
        raise CompareError(f"{run.weights} gets {right} here but {run.path} records {recorded:,} "
                           f"of {n_recorded:,}{tipped}: the weights and the record disagree, so no "
                           f"picture is made from them; run the trainer again, or use --no-inside")
    within = f" (within {plural(abs(correct - recorded), 'rounding tie')})" if correct != recorded else ""
    return f"checked {run.weights}: its SHA-256 and its {right} are what {run.path} records{within}"


def check_weights(run, data_dir):
    """Evaluate a run's weights (found by find_weights) and check them against its record."""
    x_test, y_test = load_test_set(run.record["config"]["dataset"], data_dir)
    evaluation = evaluate_weights(run, x_test, y_test)
    return evaluation, check_accuracy(run, evaluation, y_test)


@lru_cache(maxsize=None)
def load_robustness_sets(data_dir=DATA_DIR):
    """MNIST's test digits perturbed and drawn (report/robustness.py), built once."""
    x_test, y_test = load_test_set("mnist", data_dir)
    print(f"measuring the networks on the {len(y_test):,} test digits perturbed and drawn "
          f"(report/robustness.py) ...", flush=True)
    return robustness_sets(x_test, y_test)


def measure_robustness(run, data_dir):
    """{"perturbed": accuracy, "drawn": accuracy}: the run's weights on each robustness set,
    evaluated as on the test set (evaluate_weights). None for a run on another dataset than
    MNIST: its perturbed and drawn copies are digits."""
    if run.record["config"]["dataset"] != "mnist":
        return None
    return {name: evaluate_weights(run, x, y).correct / len(y)
            for name, (x, y) in load_robustness_sets(data_dir).items()}


# ----------------------------------------------------------------------------- output

def write_output(path, data):
    """Write bytes (a table's text, a picture: report/figure.py png) to a file atomically; a
    failed write is one line."""
    try:
        save_bytes(path, lambda f: f.write(data))
    except OSError as e:
        raise CompareError(f"cannot write {shown(path)} ({e.strerror}); "
                           f"choose a writable folder with --out-dir") from None
    return path


def overlay_name(runs, kind="learning", suffix=".png", longest=120):
    """The file of a picture (or table) of several runs: learning_<key>_vs_<key>.png; with so
    many runs that the name before its suffix would pass longest characters (a file name may
    have at most 255), learning_<first key>_and_<n>_more.png. comparison_*.md and .png share
    one stem: the length is judged without the suffix."""
    name = picture_name(kind, *runs, suffix="")
    if len(name) > longest:
        name = picture_name(kind, runs[0], suffix=f"_and_{len(runs) - 1}_more")
    return name + suffix


def default_runs():
    """The runs compare.py reads without --runs: the two trainers' default metrics files."""
    return [RESULTS_DIR / "numpy_metrics.json", RESULTS_DIR / "pytorch_metrics.json"]


def comparison_name(runs, suffix):
    """comparison.md / .png for the default pair: the runs named numpy and pytorch, the two
    trainers' default files (in results/, or kept together elsewhere, as in results/reference/).
    Any other runs' carry their keys, comparison_<key>_vs_<key>.md, in whatever folder: the
    comparison of other runs never writes over this one's, as no run's pictures do."""
    if [run.key for run in runs] == ["numpy", "pytorch"]:
        return f"comparison{suffix}"
    return overlay_name(runs, "comparison", suffix)


def prepare_out_dir(out_dir):
    """Create the output folder, or say in one line why it cannot be."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CompareError(f"--out-dir {shown(out_dir)} is a file, not a folder; choose another")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CompareError(f"cannot create the results folder {shown(out_dir)} ({e.strerror}); "
                           f"choose another with --out-dir") from None


# ----------------------------------------------------------------------------- main

def build_parser():
    # the defaults are written out in each help: the real ones are absolute paths into this repo
    p = OneLineParser(
        description="Compare training runs from their metrics files: curves, a table with the speed "
                    "ratio, and pictures of the trained networks.")
    p.add_argument("--runs", type=Path, nargs="+", metavar="PATH",
                   default=default_runs(),
                   help="metrics files written by numpy_nn/train.py or pytorch_nn/train.py; the speed "
                        "ratio compares the first two (default: the repo's results/numpy_metrics.json "
                        "results/pytorch_metrics.json)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR,
                   help="where to write the pictures and the table (default: the repo's results/)")
    for framework, name in FRAMEWORK_NAMES.items():
        p.add_argument(f"--{framework}-weights", type=Path, default=None, metavar="PATH",
                       help=f"the {name} run's saved weights, checked against the SHA-256 its "
                            f"metrics file records (default: the file of that name beside the "
                            f"metrics file, else the path the metrics file records)")
    p.add_argument("--no-inside", action="store_true",
                   help="skip what is made from the saved weights: confusion matrices, mistakes, "
                        "an MLP's first-layer weights, a CNN's filters and feature maps, and the "
                        "accuracy on perturbed and drawn digits (default: make them)")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR,
                   help="root of the dataset cache the test set is read from, as the trainers' "
                        "--data-dir (default: the repo's data/)")
    return p


def compare(args):
    """Everything main does, raising CompareError, MetricsError or DataError on bad input.
    Every check comes before the first file is written."""
    runs = load_runs(args.runs, args.out_dir)
    results = with_results(runs)
    if not results:
        where = "; ".join(f"{run.name} at {divergence(run)}" for run in runs)
        raise CompareError(f"every run diverged, so there is nothing to compare ({where}); "
                           f"train again with a smaller --lr")
    notes = [] if args.no_inside else find_weights(results, args)
    checked = {run.key: check_weights(run, args.data_dir) for run in results if run.weights}
    for run in results:
        if run.weights:  # checked to be the run's own: now they may be measured
            run.robustness = measure_robustness(run, args.data_dir)
    prepare_out_dir(args.out_dir)
    text = markdown(runs)
    print(text)
    written = [write_output(args.out_dir / comparison_name(runs, ".md"), text.encode()),
               write_output(args.out_dir / comparison_name(runs, ".png"), png(plot_comparison(runs)))]
    for note in notes:
        print(note)
    for run in results:
        if run.key in checked:
            evaluation, line = checked[run.key]
            print(line)
            x_test, y_test = load_test_set(run.record["config"]["dataset"], args.data_dir)
            figures = inside_figures(run, evaluation.logits, x_test, y_test, evaluation.params)
            written += [write_output(args.out_dir / picture_name(kind, run), png(fig))
                        for kind, fig in figures.items()]
    learned = [run for run in runs if run.record["diagnostics"]]
    written += [write_output(args.out_dir / picture_name("learning", run), png(learning_figure(run)))
                for run in learned]
    written += [write_output(args.out_dir / overlay_name(group), png(overlay_figure(group)))
                for group in overlay_groups(learned)]
    for path in written:
        print(f"wrote {shown(path)}")
    return written


def main(argv=None):
    keep_running_if_stdout_closes()  # `compare.py | head -1`: the files are still all written
    args = build_parser().parse_args(argv)
    try:
        compare(args)
    except (CompareError, MetricsError, DataError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
