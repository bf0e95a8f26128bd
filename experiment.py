"""What the two trainers share, so that they differ only in the framework: the flags,
the progress line, the divergence check and the metrics file that compare.py reads.

NumPy and the standard library only (the from-scratch side must not need torch).
"""
import argparse
import io
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

from data_loader import DATASETS, DataError, load_mnist, write_atomic

ROOT = Path(__file__).resolve().parent
RESULTS_DIR = ROOT / "results"
SCHEMA_VERSION = 1  # bump when the metrics JSON changes shape; compare.py checks it
WEIGHT_SUFFIX = {"numpy": ".npz", "pytorch": ".pt"}


class TrainingDiverged(Exception):
    """The loss became NaN or infinite; the message says where and what to try."""


# ----------------------------------------------------------------------------- the flags

def _number(kind, ok, requirement):
    """An argparse type: parse text as kind, and accept it only if ok(value)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not ok(value):  # NaN fails every comparison, so it never gets through
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _positive(kind):
    return _number(kind, lambda v: 0 < v < math.inf, "positive")


_non_negative_float = _number(float, lambda v: 0 <= v < math.inf, "zero or positive")
_dropout = _number(float, lambda p: 0 <= p < 1, "in [0, 1)")


def build_parser(framework, description):
    """The flags both trainers take, with the same names and defaults."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=_positive(int), default=10, help="passes over the training set")
    p.add_argument("--batch-size", type=_positive(int), default=128, help="samples per gradient step")
    p.add_argument("--lr", type=_positive(float), default=3e-3, help="(peak) learning rate")
    p.add_argument("--optimizer", choices=["sgd", "momentum", "adam"], default="adam",
                   help="plain SGD, SGD with momentum 0.9, or Adam")
    p.add_argument("--schedule", choices=["constant", "cosine"], default="cosine",
                   help="learning rate over the run: fixed, or cosine decay to 0 by the last step")
    p.add_argument("--hidden", type=_positive(int), nargs="+", default=[128, 64],
                   help="hidden layer sizes, e.g. --hidden 256 128 64")
    p.add_argument("--weight-decay", type=_non_negative_float, default=0.0,
                   help="L2 penalty: adds (wd / 2) * sum(W^2) over the weights to the loss")
    p.add_argument("--dropout", type=_dropout, default=0.0,
                   help="probability of zeroing each hidden unit while training")
    p.add_argument("--seed", type=int, default=0, help="seeds the initial weights and the batch order")
    p.add_argument("--limit", type=_positive(int), default=None,
                   help="train on the first N samples only (quick runs; the test set stays whole)")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="mnist", help="which data")
    p.add_argument("--metrics", type=Path, default=RESULTS_DIR / f"{framework}_metrics.json",
                   help="where to write the metrics JSON")
    p.add_argument("--weights", type=Path,
                   default=RESULTS_DIR / f"{framework}_model{WEIGHT_SUFFIX[framework]}",
                   help="where to write the trained weights")
    p.add_argument("--no-progress", action="store_true", help="hide the per-batch progress bar")
    return p


def load_data(parser, args):
    """The dataset the flags ask for, the training set cut to --limit; a data problem or a
    --limit larger than the data is a one-line error."""
    try:
        x_train, y_train, x_test, y_test = load_mnist(args.dataset, log=print)
    except DataError as e:
        sys.exit(f"error: {e}")
    if args.limit is not None and args.limit > len(x_train):
        parser.error(f"argument --limit: {args.limit} is more than the {len(x_train)} training samples")
    return x_train[:args.limit], y_train[:args.limit], x_test, y_test


# ----------------------------------------------------------------------------- the run

def check_finite(loss, epoch, batch, lr):
    """Stop at the first NaN or infinite loss: nothing after it means anything."""
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"the loss became {loss} at epoch {epoch}, batch {batch}: the learning rate "
            f"{lr:g} is too large for this run; try a smaller --lr (e.g. {lr / 10:g})")


def cpu_model():
    """The CPU's marketing name, from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numpy_blas():
    """NumPy's BLAS library, version and thread count (OpenBLAS is asked directly)."""
    import ctypes
    import numpy as np
    info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    threads = None
    try:  # the OpenBLAS that NumPy loaded, found in this process's memory map (Linux)
        lib = next(line.split()[-1] for line in open("/proc/self/maps") if "openblas" in line)
        dll = ctypes.CDLL(lib)
        for symbol in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                       "openblas_get_num_threads"):
            if hasattr(dll, symbol):
                threads = getattr(dll, symbol)()
                break
    except (OSError, StopIteration):
        pass
    return {"blas": f"{info.get('name')} {info.get('version')}", "blas_threads": threads}


def repo_relative(path):
    """A path inside the repo as relative to its root (so committed results hold no machine's
    folders); any other path in full."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


class Run:
    """The record of one training run: prints the progress line, writes the metrics JSON."""

    def __init__(self, framework, args, versions, hardware, n_train, n_test):
        config = {k: (repo_relative(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        self.record = {
            "schema": SCHEMA_VERSION,
            "framework": framework,
            "versions": {"python": platform.python_version(), **versions},
            "config": config,
            "seed": args.seed,
            "data": {"dataset": args.dataset, "train_samples": n_train, "test_samples": n_test},
            "hardware": {"cpu": cpu_model(), "cores": os.cpu_count(),
                         "platform": platform.platform(), **hardware},
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "status": "running",
            "epochs": [],
            "total_train_seconds": 0.0,  # the training steps only: the speed comparison
            "wall_seconds": None,         # training + evaluating every epoch, data loading aside
            "final_test_acc": None,
        }
        self.interrupted = False  # set by the trainer on Ctrl-C
        self._t0 = time.perf_counter()

    def log_epoch(self, epoch, train_loss, train_acc, test_loss, test_acc, seconds, samples):
        """Add one epoch and print its line."""
        self.record["epochs"].append({
            "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
            "test_loss": test_loss, "test_acc": test_acc,
            "epoch_seconds": seconds, "samples_per_second": samples / seconds,
        })
        self.record["total_train_seconds"] += seconds
        self.record["final_test_acc"] = test_acc
        print(f"epoch {epoch:2d} | train loss {train_loss:.4f} acc {100 * train_acc:6.2f}% | "
              f"test loss {test_loss:.4f} acc {100 * test_acc:6.2f}% | {seconds:.2f}s", flush=True)

    def save(self, path, status):
        """Write the record under a temporary name, then rename it into place."""
        self.record["status"] = status
        self.record["wall_seconds"] = time.perf_counter() - self._t0
        write_atomic(Path(path), (json.dumps(self.record, indent=2) + "\n").encode())


def save_bytes(path, write):
    """Call write(file) on an in-memory file, then write it atomically to path."""
    buffer = io.BytesIO()
    write(buffer)
    write_atomic(Path(path), buffer.getvalue())


def finish(run, args, save_weights):
    """Write the metrics and the weights, and say where; a failed write is one line."""
    try:
        save_bytes(args.weights, save_weights)
        run.save(args.metrics, "interrupted" if run.interrupted else "completed")
    except OSError as e:
        sys.exit(f"error: cannot write results ({e.strerror}: {e.filename}); "
                 f"choose a writable place with --metrics and --weights")
    done = len(run.record["epochs"])
    note = f"interrupted after {done} finished epoch(s); " if run.interrupted else ""
    print(f"{note}metrics -> {repo_relative(args.metrics)}, weights -> {repo_relative(args.weights)}")
    if run.interrupted:
        sys.exit(130)  # the shell's code for "stopped by Ctrl-C", after a clean save


# ----------------------------------------------------------------------------- reading it back

class MetricsError(Exception):
    """A metrics file is missing, unreadable or not what Run.save writes; the message is one line."""


NUMBER = (int, float)  # JSON has one number type: a hand-written 10 is as good as 10.0
OPTIONAL_INT = (int, type(None))
# The keys Run.save writes that readers (compare.py) rely on, each with its JSON type.
RECORD_FIELDS = {"schema": int, "framework": str, "versions": dict, "config": dict, "data": dict,
                 "hardware": dict, "status": str, "epochs": list, "total_train_seconds": NUMBER}
CONFIG_FIELDS = {"epochs": int, "batch_size": int, "lr": NUMBER, "optimizer": str, "schedule": str,
                 "hidden": list, "weight_decay": NUMBER, "dropout": NUMBER, "limit": OPTIONAL_INT,
                 "dataset": str}
DATA_FIELDS = {"dataset": str, "train_samples": int, "test_samples": int}
HARDWARE_FIELDS = {"cpu": str, "cores": OPTIONAL_INT, "device": str, "blas": str,
                   "blas_threads": OPTIONAL_INT}  # os.cpu_count() and OpenBLAS may not know
EPOCH_FIELDS = {"epoch": int, "train_loss": NUMBER, "train_acc": NUMBER, "test_loss": NUMBER,
                "test_acc": NUMBER, "epoch_seconds": NUMBER, "samples_per_second": NUMBER}
SAVED_STATUSES = ("completed", "interrupted")  # "running" only ever lives in memory
TYPE_NAMES = {int: "an integer", NUMBER: "a number", OPTIONAL_INT: "an integer or null",
              str: "a string", list: "a list", dict: "an object"}


def _check_fields(obj, fields, where):
    """Raise MetricsError unless obj is a dict holding every field with its JSON type."""
    if not isinstance(obj, dict):
        raise MetricsError(f"{where} should be a JSON object, got {type(obj).__name__}")
    for key, kind in fields.items():
        if key not in obj:
            raise MetricsError(f"{where} lacks the key {key!r}")
        value = obj[key]
        # bool is a subclass of int in Python, but true/false is never a count or a rate
        if isinstance(value, bool) or not isinstance(value, kind):
            raise MetricsError(f"{where}[{key!r}] should be {TYPE_NAMES[kind]}, got {value!r}")


def _check_record(record):
    """Raise MetricsError (without the file name) at the first thing compare.py could not read."""
    _check_fields(record, RECORD_FIELDS, "the record")
    for key, fields in (("config", CONFIG_FIELDS), ("data", DATA_FIELDS), ("hardware", HARDWARE_FIELDS)):
        _check_fields(record[key], fields, key)
    for i, epoch in enumerate(record["epochs"]):
        _check_fields(epoch, EPOCH_FIELDS, f"epochs[{i}]")
        if not epoch["epoch_seconds"] > 0:  # throughput and speed ratios divide by it
            raise MetricsError(f"epochs[{i}]['epoch_seconds'] should be positive, "
                               f"got {epoch['epoch_seconds']!r}")
    if record["framework"] not in WEIGHT_SUFFIX:
        raise MetricsError(f"unknown framework {record['framework']!r} "
                           f"(expected one of {', '.join(WEIGHT_SUFFIX)})")
    if record["status"] not in SAVED_STATUSES:
        raise MetricsError(f"unknown status {record['status']!r} "
                           f"(expected one of {', '.join(SAVED_STATUSES)})")
    if not record["epochs"]:
        raise MetricsError("no finished epochs (the run stopped during epoch 1), nothing to compare")


def load_metrics(path):
    """Read a metrics file written by Run.save and check its shape; MetricsError says what is wrong.

    A run interrupted after some epochs is valid (status "interrupted"); one with no finished
    epoch is not: there is nothing in it to compare.
    """
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MetricsError(f"{path} not found") from None
    except OSError as e:
        raise MetricsError(f"cannot read {path} ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MetricsError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(record, dict):
        raise MetricsError(f"{path} is not a metrics record (its JSON is a {type(record).__name__})")
    # the version first: a file in another schema may lack keys for a good reason
    version = record.get("schema")
    if version != SCHEMA_VERSION:
        raise MetricsError(f"{path}: schema version {version!r}, but this code reads version "
                           f"{SCHEMA_VERSION}; run the trainer again to write a current file")
    try:
        _check_record(record)
    except MetricsError as e:
        raise MetricsError(f"{path}: {e}") from None
    return record
