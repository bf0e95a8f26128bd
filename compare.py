"""Compare training runs: learning curves, speed, and what the trained networks get wrong.

    python compare.py                        # results/numpy_metrics.json vs results/pytorch_metrics.json
    python compare.py --runs a.json b.json   # any metrics files, e.g. one run per learning rate
    python compare.py --no-inside            # curves and table only: no saved weights needed

compare.py only reads what the trainers wrote (run first, then plot): the metrics files,
checked by metrics_file.load_metrics, and the saved weights, each checked to be its run's own
before any picture is made from it: the SHA-256 its metrics file records, and the test
accuracy the record claims. Into --out-dir (default results/):

    comparison.png        loss, accuracy, seconds and samples/s per epoch, every run
    comparison.md         the table (also printed), the speed ratio, warnings about unfair comparisons
    confusion_<run>.png   true class against predicted class over the test set, counts in the cells
    mistakes_<run>.png    the test images the network got wrong with the highest confidence
    weights_<run>.png     a NumPy network's first-layer weights drawn as 28x28 images

<run> is the framework (numpy, pytorch), plus the metrics file's name when a framework repeats.
A run that diverged is listed as such and gets no curves, numbers or pictures.
Every file is written under a temporary name and then renamed: none is ever half-written.
"""
import argparse
import pickle
import sys
import textwrap
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # draw into files only: no window needed, so it runs over ssh and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import PowerNorm  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # the repo root, so the imports below work from any cwd
from data_loader import DATA_DIR, DataError, load_mnist  # noqa: E402
from experiment import RESULTS_DIR, keep_running_if_stdout_closes, save_bytes, shown  # noqa: E402
from metrics_file import MetricsError, file_sha256, load_metrics  # noqa: E402
from numpy_nn.neural_network import NeuralNetwork  # noqa: E402
from numpy_nn.utils import softmax  # noqa: E402

FRAMEWORK_NAMES = {"numpy": "NumPy", "pytorch": "PyTorch"}
CLASS_NAMES = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion-mnist": ["T-shirt", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Boot"],
}
MISTAKES_GRID = (4, 6)   # rows, columns: the 24 most confidently wrong test images
UNITS_GRID = (8, 8)      # rows, columns: the first 64 hidden units of the first layer
DPI = 110
IMAGE_SIDE = 28          # MNIST and Fashion-MNIST images are 28x28 = 784 pixels


class CompareError(Exception):
    """Bad input or an unwritable output; the message is one line that says what to do."""


@dataclass
class RunResult:
    """One metrics file, read and checked, with the names it is shown under."""
    path: Path
    record: dict
    name: str             # legends, table: "NumPy", or "NumPy (lr_1e-3)" when a framework repeats
    key: str              # file names: "numpy", or "numpy_lr_1e-3"
    weights: Path = None  # the saved weights, once found and checked to be this run's

    @property
    def framework(self):
        return self.record["framework"]

    @property
    def interrupted(self):
        return self.record["status"] == "interrupted"

    @property
    def diverged(self):
        """The loss became NaN: the run has no result to show (no accuracy, no weights)."""
        return self.record["status"] == "diverged"

    @property
    def label(self):
        """The name, marked when the run was stopped before its last epoch or diverged."""
        if self.interrupted or self.diverged:
            return f"{self.name} ({self.record['status']})"
        return self.name

    def series(self, field):
        """One per-epoch number, e.g. "test_acc", as an array in epoch order."""
        return np.array([epoch[field] for epoch in self.record["epochs"]])


# ----------------------------------------------------------------------------- reading the runs

def how_to_make(path):
    """The trainer command that writes this metrics file, for the 'not found' message."""
    for framework in FRAMEWORK_NAMES:
        if path.resolve() == (RESULTS_DIR / f"{framework}_metrics.json").resolve():
            return f"run `python {framework}_nn/train.py` first"
    return (f"run `python numpy_nn/train.py --metrics {path}` or "
            f"`python pytorch_nn/train.py --metrics {path}` first")


def name_runs(records, paths):
    """(name, key) per run: the framework, plus the file's stem when a framework repeats."""
    frameworks = [record["framework"] for record in records]
    names = []
    for i, (record, path) in enumerate(zip(records, paths)):
        framework = record["framework"]
        name, key = FRAMEWORK_NAMES[framework], framework
        if frameworks.count(framework) > 1:
            name, key = f"{name} ({path.stem})", f"{key}_{path.stem}"
        if name in [n for n, _ in names]:  # the same file name in two folders
            name, key = f"{name} #{i + 1}", f"{key}_{i + 1}"
        names.append((name, key))
    return names


def load_runs(paths):
    """Read and check every metrics file; a missing one says which trainer writes it."""
    paths = [Path(shown(path)) for path in paths]
    records = []
    for path in paths:
        if not path.exists():
            raise CompareError(f"{path} not found: {how_to_make(path)}")
        records.append(load_metrics(path))
    return [RunResult(path, record, name, key)
            for path, record, (name, key) in zip(paths, records, name_runs(records, paths))]


def with_results(runs):
    """The runs that have something to show: all but the diverged ones."""
    return [run for run in runs if not run.diverged]


def divergence(run):
    """Where a diverged run stopped, e.g. "epoch 1, batch 5 (loss nan)"."""
    where = run.record["diverged"]
    return f"epoch {where['epoch']}, batch {where['batch']} (loss {where['loss']})"


# ----------------------------------------------------------------------------- the numbers

def summarize(run):
    """The numbers in a run's table row."""
    test_acc = run.series("test_acc")
    best = int(np.argmax(test_acc))  # the first epoch that reached the best accuracy
    return {
        "final_test_acc": float(test_acc[-1]),
        "best_test_acc": float(test_acc[best]),
        "best_epoch": run.record["epochs"][best]["epoch"],
        "total_seconds": run.record["total_train_seconds"],
        "mean_epoch_seconds": float(run.series("epoch_seconds").mean()),
        "fastest_epoch_seconds": float(run.series("epoch_seconds").min()),
        # the median, because a first epoch slowed by one-off start-up costs would drag a mean down
        "median_samples_per_second": float(np.median(run.series("samples_per_second"))),
    }


def device_name(record):
    """Where a run trained, for sentences: "CPU (AMD EPYC)" or "GPU (NVIDIA H100)"."""
    hardware = record["hardware"]
    if hardware["device"] == "cpu":
        return f"CPU ({hardware['cpu']})"
    return f"GPU ({hardware.get('gpu') or hardware['device']})"


def speed_sentence(a, b):
    """Which of two runs trains faster and by how much, from each run's fastest epoch.

    Every epoch does the same work, so the fastest one is the one least disturbed by
    whatever else the machine was doing (on a shared machine, other tenants can slow a
    whole run down by half); totals and means carry those disturbances.
    """
    t_a, t_b = (summarize(run)["fastest_epoch_seconds"] for run in (a, b))
    (t_fast, fast), (t_slow, slow) = sorted([(t_a, a), (t_b, b)], key=lambda pair: pair[0])
    seconds = (f"fastest epoch {t_fast:.3f} s against {t_slow:.3f} s "
               f"({fast.record['total_train_seconds']:.2f} s and "
               f"{slow.record['total_train_seconds']:.2f} s of training in all)")
    if device_name(a.record) == device_name(b.record):
        where = f"on this {device_name(a.record)}"
        if f"{t_slow / t_fast:.1f}" == "1.0":
            return f"{a.label} and {b.label} train equally fast {where}: {seconds}."
        return f"{fast.label} is {t_slow / t_fast:.1f}x faster than {slow.label} {where}: {seconds}."
    return (f"{fast.label} on its {device_name(fast.record)} is {t_slow / t_fast:.1f}x faster than "
            f"{slow.label} on its {device_name(slow.record)}: {seconds}.")


def _hidden(sizes):
    return "-".join(str(size) for size in sizes)


# What must be the same for a like-for-like comparison: the name a warning uses, and where
# the record keeps it. --limit shows up as the number of training samples.
LIKE_FOR_LIKE = {
    "dataset": lambda record: record["data"]["dataset"],
    "training samples": lambda record: record["data"]["train_samples"],
    "epochs": lambda record: record["config"]["epochs"],
    "finished epochs": lambda record: len(record["epochs"]),
    "batch size": lambda record: record["config"]["batch_size"],
    "optimizer": lambda record: record["config"]["optimizer"],
    "learning rate": lambda record: record["config"]["lr"],
    "schedule": lambda record: record["config"]["schedule"],
    "hidden sizes": lambda record: _hidden(record["config"]["hidden"]),
    "dtype": lambda record: record["config"]["dtype"],
    "weight decay": lambda record: record["config"]["weight_decay"],
    "dropout": lambda record: record["config"]["dropout"],
    "hardware": device_name,
}


def unfair_differences(runs):
    """One warning per setting that differs between the runs, naming each run's value."""
    warnings = []
    for setting, value_of in LIKE_FOR_LIKE.items():
        values = [value_of(run.record) for run in runs]
        if len(set(values)) > 1:
            each = ", ".join(f"{run.label} {value}" for run, value in zip(runs, values))
            warnings.append(f"warning: the runs differ in {setting} ({each}): "
                            f"not a like-for-like comparison")
    return warnings


def divergence_lines(runs):
    return [f"{run.name} diverged at {divergence(run)}: no result" for run in runs if run.diverged]


def interrupted_warnings(runs):
    return [f"warning: {run.name} was interrupted after {len(run.record['epochs'])} of "
            f"{run.record['config']['epochs']} epochs; its numbers cover those epochs only"
            for run in runs if run.interrupted]


def warmup_notes(runs):
    """Point out a first epoch much slower than the rest (one-off start-up costs), and epoch
    times that wander within a run (a busy machine): both weigh on the totals."""
    notes = []
    for run in runs:
        seconds = run.series("epoch_seconds")
        if len(seconds) > 1 and seconds[0] > 2 * np.median(seconds[1:]):
            notes.append(f"note: {run.label}'s epoch 1 took {seconds[0] / np.median(seconds[1:]):.1f}x "
                         f"as long as its later epochs (one-off start-up costs): they weigh on its "
                         f"total seconds but hardly move its median samples/s")
        later = seconds[1:] if len(seconds) > 1 else seconds
        if later.max() > 1.3 * later.min():
            notes.append(f"note: {run.label}'s epochs took from {later.min():.3f} s to {later.max():.3f} s "
                         f"for the same work: the machine was busy part of the time, so its total "
                         f"is slower than the implementation; the speed ratio uses the fastest epoch")
    return notes


def describe_config(run):
    """One line with the settings that shape a run, e.g. for the figure's title."""
    config, data = run.record["config"], run.record["data"]
    text = (f"{run.label}: {data['dataset']} ({data['train_samples']:,} train), {config['optimizer']} "
            f"lr {config['lr']:g} {config['schedule']}, batch {config['batch_size']}, "
            f"{config['epochs']} epochs, hidden {_hidden(config['hidden'])}, {config['dtype']}")
    if config["weight_decay"]:
        text += f", weight decay {config['weight_decay']:g}"
    if config["dropout"]:
        text += f", dropout {config['dropout']:g}"
    return f"{text}, {device_name(run.record)}"


def table_row(run):
    """A run's row of the markdown table."""
    s, hardware = summarize(run), run.record["hardware"]
    finished, planned = len(run.record["epochs"]), run.record["config"]["epochs"]
    threads = f" ({hardware['blas_threads']} threads)" if hardware["blas_threads"] else ""
    cores = f" ({hardware['cores']} cores)" if hardware["cores"] else ""
    cells = [
        run.label,
        f"{finished}" if finished == planned else f"{finished} of {planned}",
        f"{s['final_test_acc']:.2%}",
        f"{s['best_test_acc']:.2%} (epoch {s['best_epoch']})",
        f"{s['total_seconds']:.2f}",
        f"{s['fastest_epoch_seconds']:.3f}, {s['mean_epoch_seconds']:.3f}",
        f"{s['median_samples_per_second']:,.0f}",
        f"{hardware['cpu']}{cores}",
        f"{hardware['blas']}{threads}",
        hardware.get("gpu") or hardware["device"],
        ", ".join(f"{library} {version}" for library, version in run.record["versions"].items()),
    ]
    return "| " + " | ".join(cells) + " |"


TABLE_HEADER = ["run", "epochs", "final test acc", "best test acc", "train s (total)",
                "s/epoch (fastest, mean)", "samples/s (median)", "CPU", "BLAS", "device", "versions"]


def report(runs):
    """The markdown report: what ran, the table, the speed ratio, then warnings and notes.
    A diverged run is listed with where it diverged, and has no row, ratio or warning."""
    results = with_results(runs)
    lines = [f"# {' vs '.join(run.label for run in runs)}", ""]
    lines += [f"- {describe_config(run)} (from `{run.path}`)" for run in runs]
    lines += ["", "| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    lines += [table_row(run) for run in results]
    lines.append("")
    if len(results) > 1:
        # the first two runs with results: NumPy and PyTorch by default
        lines += [speed_sentence(results[0], results[1]), ""]
    remarks = (divergence_lines(runs) + interrupted_warnings(results) + unfair_differences(results)
               + warmup_notes(results))
    lines += [f"- {remark}" for remark in remarks]
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------- the curves

def _log_scale_if_wide(ax, values):
    """A log axis when values span more than 10x, so one slow epoch does not flatten the rest."""
    values = np.concatenate(values)
    if values.max() > 10 * values.min():
        ax.set_yscale("log")
        ax.set_ylabel(ax.get_ylabel() + " (log scale)")


def plot_comparison(runs):
    """The 2x2 figure: loss, accuracy, seconds and samples/s per epoch; one colour per run,
    train solid and test dashed. A diverged run is named in the title only: it has no curves."""
    described, runs = runs, with_results(runs)
    fig, axes = plt.subplots(2, 2, figsize=(13, 9 + 0.25 * len(runs)), layout="constrained")
    loss_ax, acc_ax, time_ax, speed_ax = axes.flat
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(runs):
        # earlier runs drawn wider: identical curves (twins trained from the same start) then
        # show as one line inside another instead of one hiding the other
        width = 1.5 + 2.5 * (len(runs) - 1 - i) / max(len(runs) - 1, 1)     # 4 down to 1.5
        style = {"color": colours[i % len(colours)], "marker": "o", "linewidth": width,
                 "markersize": 2 + width}
        epochs = run.series("epoch")
        loss_ax.plot(epochs, run.series("train_loss"), "-", label=f"{run.label} train", **style)
        loss_ax.plot(epochs, run.series("test_loss"), "--", label=f"{run.label} test", **style)
        acc_ax.plot(epochs, 100 * run.series("train_acc"), "-", label=f"{run.label} train", **style)
        acc_ax.plot(epochs, 100 * run.series("test_acc"), "--", label=f"{run.label} test", **style)
        time_ax.plot(epochs, run.series("epoch_seconds"), "-", label=run.label, **style)
        speed_ax.plot(epochs, run.series("samples_per_second"), "-", label=run.label, **style)

    loss_ax.set(title="Loss per epoch (train solid, test dashed)", ylabel="mean cross-entropy")
    acc_ax.set(ylabel="accuracy (%)")
    acc_ax.set_title("Accuracy per epoch (train solid, test dashed)\n"
                     "the gap between train and test is where overfitting shows",
                     fontsize="medium")
    time_ax.set(title="Training time per epoch (lower is faster)", ylabel="seconds")
    speed_ax.set(title="Throughput per epoch (higher is faster)", ylabel="training samples / second")
    _log_scale_if_wide(time_ax, [run.series("epoch_seconds") for run in runs])
    _log_scale_if_wide(speed_ax, [run.series("samples_per_second") for run in runs])
    for ax in axes.flat:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("\n".join(describe_config(run) for run in described), fontsize="medium")
    return fig


# ----------------------------------------------------------------------------- looking inside

def confusion_matrix(y_true, y_pred, n_classes=10):
    """counts[t, p] = how many samples of true class t were predicted as class p."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (y_true, y_pred), 1)  # one count per sample, at (true, predicted)
    return counts


def most_confident_mistakes(probs, y_true, k):
    """Indices of the k wrong predictions made with the highest probability, most confident first."""
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    confidence = probs[wrong, predicted[wrong]]
    order = np.argsort(-confidence, kind="stable")  # equal confidence: test-set order
    return wrong[order[:k]]


def plot_confusion(counts, run, class_names):
    """The confusion matrix with every count written in its cell."""
    fig, ax = plt.subplots(figsize=(7.5, 6.8), layout="constrained")
    # square-root colours: the few mistakes per cell stay visible beside a ~1000-strong diagonal
    norm = PowerNorm(gamma=0.5, vmin=0, vmax=counts.max())
    image = ax.imshow(counts, cmap="Blues", norm=norm)
    for true, predicted in np.ndindex(counts.shape):
        dark = norm(counts[true, predicted]) > 0.6
        ax.text(predicted, true, str(counts[true, predicted]), ha="center", va="center",
                fontsize=8, color="white" if dark else "black")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45 if len(class_names[0]) > 1 else 0)
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="predicted class", ylabel="true class")
    accuracy = np.trace(counts) / counts.sum()
    ax.set_title(f"{run.label}: confusion matrix, {run.record['config']['dataset']} test set\n"
                 f"{accuracy:.2%} of {counts.sum():,} correct (the diagonal); "
                 f"every other cell is a mistake",
                 fontsize="medium")
    fig.colorbar(image, ax=ax, label="test images (square-root colour scale)", shrink=0.8)
    return fig


def plot_mistakes(images, y_true, probs, picks, run, class_names):
    """A grid of the picked test images, each titled with its prediction, confidence and truth."""
    rows, cols = MISTAKES_GRID
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.9 * rows + 0.5), layout="constrained")
    for ax in axes.flat:
        ax.axis("off")  # cells beyond the last mistake stay empty
    for ax, i in zip(axes.flat, picks):
        predicted = probs[i].argmax()
        ax.imshow(images[i].reshape(IMAGE_SIDE, IMAGE_SIDE), cmap="gray_r")
        ax.set_title(f"pred {class_names[predicted]} ({probs[i, predicted]:.0%})\n"
                     f"true {class_names[y_true[i]]}", fontsize=9)
    n_wrong = int((probs.argmax(axis=1) != y_true).sum())
    fig.suptitle(f"{run.label}: the {len(picks)} most confident of its {n_wrong:,} mistakes "
                 f"on the {run.record['config']['dataset']} test set")
    return fig


def tile(images, rows, cols, gap=2):
    """Lay (N, h, w) images out in a rows x cols mosaic; the gaps are NaN (drawn grey)."""
    _, h, w = images.shape
    mosaic = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        mosaic[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = image
    return mosaic


WEIGHTS_CAPTION = (
    "Each square is one hidden unit's 784 input weights, laid out where their pixels sit in the "
    "image (unit 1 top left, row by row). Red: ink there drives the unit up; blue: ink there drives "
    "it down; white: ignored. Each square has its own colour scale, symmetric about zero. The units "
    "look for strokes, edges and blobs in particular places: pieces of shapes rather than whole "
    "digits or garments, which the layers above combine. The speckled borders are pixels that are blank in every "
    "training image: they never get a gradient, so they keep their random starting weights.")


def plot_first_layer(W1, run):
    """The first hidden units' input weights (W1 columns) as 28x28 images."""
    rows, cols = UNITS_GRID
    units = W1[:, :rows * cols].T.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)    # U,28,28
    largest = np.abs(units).max(axis=(1, 2), keepdims=True)              # U,1,1
    scaled = units / np.where(largest > 0, largest, 1)                   # each unit in [-1, 1]
    rows = -(-len(units) // cols)  # fewer rows when the layer has fewer units
    fig, ax = plt.subplots(figsize=(8, 8 * rows / cols + 1.6), layout="constrained")
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.6")  # NaN gaps in grey
    ax.imshow(tile(scaled, rows, cols), cmap=cmap, vmin=-1, vmax=1)
    ax.axis("off")
    ax.set_title(f"{run.label}: first-layer weights of the first {len(units)} of "
                 f"{W1.shape[1]} hidden units")
    fig.supxlabel(textwrap.fill(WEIGHTS_CAPTION, 110), fontsize=8)
    return fig


def inside_figures(run, evaluation, x_test, y_test):
    """Confusion matrix, most confident mistakes and (NumPy) first-layer weights of one run,
    from what its checked weights give on the test set."""
    class_names = CLASS_NAMES[run.record["config"]["dataset"]]
    probs = softmax(evaluation.logits)                                   # N,10
    counts = confusion_matrix(y_test, probs.argmax(axis=1), len(class_names))
    picks = most_confident_mistakes(probs, y_test, MISTAKES_GRID[0] * MISTAKES_GRID[1])
    figures = {"confusion": plot_confusion(counts, run, class_names),
               "mistakes": plot_mistakes(x_test, y_test, probs, picks, run, class_names)}
    if evaluation.first_layer is not None:  # NumPy runs: the PyTorch twin learns nearly the same
        figures["weights"] = plot_first_layer(evaluation.first_layer, run)
    return figures


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
    that are there but are another run's are refused (CompareError), never drawn."""
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
            run.weights = next((path for path in found if _sha256(path) == run.record["weights_sha256"]),
                               None)
            if run.weights is None:
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
    logits: np.ndarray              # N,10 in the weights' own dtype
    correct: int                    # test images classified right, by the trainer's evaluate()
    sizes: tuple                    # layer sizes, input to output
    first_layer: np.ndarray = None  # W1 (784, H), drawn for NumPy runs


def _evaluate_numpy(path, x_test, y_test):
    from numpy_nn.train import evaluate
    net = NeuralNetwork.load(path)
    x = x_test.astype(net.dtype, copy=False)
    _, accuracy = evaluate(net, x, y_test)
    return Evaluation(net.forward(x)[0], round(accuracy * len(y_test)), net.sizes, net.params["W1"])


def _evaluate_pytorch(path, x_test, y_test):
    import torch  # needed for PyTorch runs only
    from pytorch_nn.model import load_model
    from pytorch_nn.train import evaluate
    model = load_model(path)
    x = torch.from_numpy(x_test).to(model.out.weight.dtype)
    _, accuracy = evaluate(model, x, torch.from_numpy(y_test))
    with torch.inference_mode():
        logits = model(x).numpy()
    return Evaluation(logits, round(accuracy * len(y_test)), model.sizes)


def evaluate_weights(run, x_test, y_test):
    """The run's weights on the test set through its own framework's evaluate(), in the dtype
    it trained in: another library, or another dtype, rounds differently."""
    evaluate = _evaluate_numpy if run.framework == "numpy" else _evaluate_pytorch
    try:
        return evaluate(run.weights, x_test, y_test)
    except (OSError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile,
            pickle.UnpicklingError) as e:  # what np.load and torch.load raise on a bad file
        # their messages run to several lines; the type of error is enough to go on
        raise CompareError(f"cannot read {run.weights} as {FRAMEWORK_NAMES[run.framework]} weights "
                           f"({type(e).__name__}); run its trainer again, or use --no-inside") from None


# The committed results were evaluated on one CPU. Another CPU (another BLAS kernel: AVX2
# against AVX-512, or PyTorch's against OpenBLAS, or a GPU) sums each dot product in another
# order, so its logits differ in the last bits, and an image whose top two logits are that
# close can change class. A dot product of n terms rounds with an error of about sqrt(n) unit
# roundoffs u times its scale (rounding errors do not all lean one way; n u is the worst case,
# never seen); the layers of 784, 128 and 64 inputs add up to (28 + 11.3 + 8) u = 47 u on the
# scale of the logits, 1 + max |logit|. Two machines' logits then differ by up to 2 x 47 u each,
# and two of them can swap order only if their margin is below twice that: 4 x 47 u, which is
# 1.1e-5 of the scale in float32 (u = 2^-24 = 6e-8) and 2e-14 in float64 (u = 2^-53), where it
# spares no image in practice. Such a swap changes the count only when the true class is one of
# the two: a right answer may turn wrong, or a wrong one right. Measured on the committed NumPy
# network (98.25%): five OpenBLAS kernels (SSE to AVX-512), PyTorch's, and one image at a time
# agree within 13 u of the scale per logit, so no margin moved by more than 26 u, a seventh of
# the bound; its smallest margin is 3e-4 of the scale: none of its images is a tie.
TIE_ROUNDOFFS = 4  # two machines' rounding, on each of the two top logits


def rounding_ties(logits, y_true, sizes):
    """(right, wrong): how many images this machine gets right, and wrong, whose true class
    is within float rounding of the top logit together with another class, so that another
    CPU could count them the other way (see above). sizes: the layer sizes, input to output."""
    u = np.finfo(logits.dtype).eps / 2                        # unit roundoff of the logits' dtype
    per_logit = u * sum(np.sqrt(n) for n in sizes[:-1])       # rounding per logit, on its scale
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
    could_lose, could_gain = rounding_ties(evaluation.logits, y_test, evaluation.sizes)
    correct = evaluation.correct
    right = f"{correct:,} of {n_test:,} test images right"
    if n_recorded != n_test or not correct - could_lose <= recorded <= correct + could_gain:
        tipped = (f" (float rounding could turn only {could_lose} of them wrong and {could_gain} "
                  f"others right)" if could_lose or could_gain else "")
        raise CompareError(f"{run.weights} gets {right} here but {run.path} records {recorded:,} "
                           f"of {n_recorded:,}{tipped}: the weights and the record disagree, so no "
                           f"picture is made from them; run the trainer again, or use --no-inside")
    within = f" (within {abs(correct - recorded)} rounding ties)" if correct != recorded else ""
    return f"checked {run.weights}: its SHA-256 and its {right} are what {run.path} records{within}"


def check_weights(run, data_dir):
    """Evaluate a run's weights (found by find_weights) and check them against its record."""
    x_test, y_test = load_test_set(run.record["config"]["dataset"], data_dir)
    evaluation = evaluate_weights(run, x_test, y_test)
    return evaluation, check_accuracy(run, evaluation, y_test)


# ----------------------------------------------------------------------------- output

def write_output(path, write):
    """Write a file atomically from write(file); a failed write is one line."""
    try:
        save_bytes(path, write)
    except OSError as e:
        raise CompareError(f"cannot write {shown(path)} ({e.strerror}); "
                           f"choose a writable folder with --out-dir") from None
    return path


def save_figure(fig, path):
    try:
        return write_output(path, lambda f: fig.savefig(f, format="png", dpi=DPI))
    finally:
        plt.close(fig)  # pyplot keeps every open figure alive until closed


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
    p = argparse.ArgumentParser(
        description="Compare training runs from their metrics files: curves, a table with the speed "
                    "ratio, and pictures of the trained networks.")
    p.add_argument("--runs", type=Path, nargs="+", metavar="PATH",
                   default=[RESULTS_DIR / "numpy_metrics.json", RESULTS_DIR / "pytorch_metrics.json"],
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
                   help="skip the pictures made from the saved weights: confusion matrices, mistakes, "
                        "first-layer weights (default: draw them)")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR,
                   help="root of the dataset cache the test set is read from, as the trainers' "
                        "--data-dir (default: the repo's data/)")
    return p


def compare(args):
    """Everything main does, raising CompareError, MetricsError or DataError on bad input.
    Every check comes before the first file is written."""
    runs = load_runs(args.runs)
    results = with_results(runs)
    if not results:
        where = "; ".join(f"{run.name} at {divergence(run)}" for run in runs)
        raise CompareError(f"every run diverged, so there is nothing to compare ({where}); "
                           f"train again with a smaller --lr")
    notes = [] if args.no_inside else find_weights(results, args)
    checked = {run.key: check_weights(run, args.data_dir) for run in results if run.weights}
    prepare_out_dir(args.out_dir)
    text = report(runs)
    print(text)
    written = [write_output(args.out_dir / "comparison.md", lambda f: f.write(text.encode())),
               save_figure(plot_comparison(runs), args.out_dir / "comparison.png")]
    for note in notes:
        print(note)
    for run in results:
        if run.key in checked:
            evaluation, line = checked[run.key]
            print(line)
            x_test, y_test = load_test_set(run.record["config"]["dataset"], args.data_dir)
            figures = inside_figures(run, evaluation, x_test, y_test)
            written += [save_figure(fig, args.out_dir / f"{kind}_{run.key}.png")
                        for kind, fig in figures.items()]
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
