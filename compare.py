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
The runs are read and checked in report/runs.py; the table and the pictures are made in report/
(table.py, curves.py, inside.py, learning.py), and written here. Records of schema 2 (before diagnostics) are read too.
A run that diverged is listed as such and gets no curves, numbers or pictures.
The table also gives each MNIST run's accuracy on the test digits perturbed and drawn
(report/robustness.py), from its saved weights, as they give its test accuracy.
Every file is written under a temporary name and then renamed: none is ever half-written.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # the repo root, so the imports below work from any cwd
from harness import ctrl_c  # noqa: E402

if __name__ == "__main__":  # Ctrl-C, while importing or drawing: one line (each file is whole or as it was)
    ctrl_c.one_line("compare.py: interrupted (Ctrl-C)")

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # draw into files only: no window needed, so it runs over ssh and in CI

from data_loader import DATA_DIR, DataError  # noqa: E402
from harness.experiment import RESULTS_DIR, keep_running_if_stdout_closes, save_bytes, shown  # noqa: E402
from harness.flags import OneLineParser  # noqa: E402
from harness.metrics_file import MetricsError  # noqa: E402
from report.curves import plot_comparison  # noqa: E402
from report.figure import png  # noqa: E402
from report.inside import inside_figures  # noqa: E402
from report.learning import learning_figure, overlay_figure, overlay_groups  # noqa: E402
from report.run import FRAMEWORK_NAMES, divergence, picture_name, with_results  # noqa: E402
from report.runs import CompareError, check_weights, find_weights, load_runs, load_test_set, measure_robustness  # noqa: E402
from report.table import markdown  # noqa: E402

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
