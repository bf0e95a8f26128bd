"""The metrics file a training run writes: its schema, how Run fills it, how a reader checks it.

Run builds one JSON record per run; compare.py reads it back with load_metrics,
which refuses (MetricsError, one line) anything it could not draw honestly: another schema,
a missing or mistyped key, a NaN, or a run that claims a result it does not have.

A record's status is one of:
    completed     every planned epoch finished
    interrupted   stopped by Ctrl-C or SIGTERM after at least one finished epoch
    diverged      the loss became NaN or infinite; the record says where and claims no
                  result: no final accuracy, no weights

No torch: the from-scratch side writes it too.
"""
import hashlib
import json
import math
import os
import platform
import time
from pathlib import Path

from data_loader import write_atomic

ROOT = Path(__file__).resolve().parent

SCHEMA_VERSION = 2  # bump when the record changes shape. 2: model, dtype, weights_sha256, "diverged"
STATUSES = ("completed", "interrupted", "diverged")  # "running" only ever lives in memory
WEIGHT_SUFFIX = {"numpy": ".npz", "pytorch": ".pt"}


class MetricsError(Exception):
    """A metrics file is missing, unreadable or not what Run.save writes; the message is one line."""


def sha256_bytes(raw):
    """The SHA-256 of a weights file's bytes: how a record names the one file that is its own."""
    return hashlib.sha256(raw).hexdigest()


def file_sha256(path):
    """sha256_bytes of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


NUMBER = (int, float)  # JSON has one number type: a hand-written 10 is as good as 10.0
OPTIONAL_INT = (int, type(None))
OPTIONAL_STR = (str, type(None))
OPTIONAL_LIST = (list, type(None))
# The keys Run.save writes that readers (compare.py) rely on, each with its JSON type.
RECORD_FIELDS = {"schema": int, "framework": str, "versions": dict, "config": dict, "data": dict,
                 "hardware": dict, "status": str, "epochs": list, "total_train_seconds": NUMBER,
                 "weights_sha256": OPTIONAL_STR}
CONFIG_FIELDS = {"epochs": int, "batch_size": int, "lr": NUMBER, "optimizer": str, "schedule": str,
                 "model": str, "hidden": OPTIONAL_LIST, "weight_decay": NUMBER, "dropout": NUMBER, "limit": OPTIONAL_INT,
                 "dataset": str, "dtype": str}
DATA_FIELDS = {"dataset": str, "train_samples": int, "test_samples": int}
HARDWARE_FIELDS = {"cpu": str, "cores": OPTIONAL_INT, "device": str, "blas": str,
                   "blas_threads": OPTIONAL_INT}  # os.cpu_count() and OpenBLAS may not know
EPOCH_FIELDS = {"epoch": int, "train_loss": NUMBER, "train_acc": NUMBER, "test_loss": NUMBER,
                "test_acc": NUMBER, "epoch_seconds": NUMBER, "samples_per_second": NUMBER}
DIVERGED_FIELDS = {"epoch": int, "batch": int, "loss": str}  # the loss as text: JSON has no NaN
TYPE_NAMES = {int: "an integer", NUMBER: "a number", OPTIONAL_INT: "an integer or null",
              OPTIONAL_STR: "a string or null", OPTIONAL_LIST: "a list or null", str: "a string", list: "a list", dict: "an object"}


def _check_fields(obj, fields, where):
    """Raise MetricsError unless obj is a dict holding every field with its JSON type, and
    every number in it finite."""
    if not isinstance(obj, dict):
        raise MetricsError(f"{where} should be a JSON object, got {type(obj).__name__}")
    for key, kind in fields.items():
        if key not in obj:
            raise MetricsError(f"{where} lacks the key {key!r}")
        value = obj[key]
        # bool is a subclass of int in Python, but true/false is never a count or a rate
        if isinstance(value, bool) or not isinstance(value, kind):
            raise MetricsError(f"{where}[{key!r}] should be {TYPE_NAMES[kind]}, got {value!r}")
        # Python's json reads NaN and Infinity, which no run of ours writes as a result
        if isinstance(value, float) and not math.isfinite(value):
            raise MetricsError(f"{where}[{key!r}] should be a finite number, got {value!r}")


def _check_record(record):
    """Raise MetricsError (without the file name) at the first thing a reader could not use."""
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
    status = record["status"]
    if status not in STATUSES:
        raise MetricsError(f"unknown status {status!r} (expected one of {', '.join(STATUSES)})")
    if status == "diverged":
        _check_fields(record.get("diverged"), DIVERGED_FIELDS, "diverged")
        if record["weights_sha256"] is not None or record.get("final_test_acc") is not None:
            raise MetricsError("a diverged run claims a result (weights or a final accuracy)")
        return
    if not record["epochs"]:
        raise MetricsError("no finished epochs (the run stopped during epoch 1), nothing to compare")
    if record["weights_sha256"] is None:
        raise MetricsError(f"a {status} run without the SHA-256 of its weights")
    if record.get("final_test_acc") != record["epochs"][-1]["test_acc"]:
        raise MetricsError("final_test_acc is not the last epoch's test accuracy")


def load_metrics(path):
    """Read a metrics file written by Run.save and check its shape; MetricsError says what is wrong.

    A run interrupted after some epochs is valid (status "interrupted"), and so is a diverged
    one (status "diverged", no result); a completed or interrupted run with no finished epoch
    is not: there is nothing in it to compare.
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


# ----------------------------------------------------------------------------- writing it

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
        with open("/proc/self/maps") as maps:
            lib = next(line.split()[-1] for line in maps if "openblas" in line)
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
            "weights_sha256": None,       # names the one weights file written with this record
            "diverged": None,             # where the loss stopped being finite, if it did
        }
        self.interrupted = False  # set by the trainer on Ctrl-C or SIGTERM
        self.diverged = None      # the trainer's TrainingDiverged, if the loss blew up
        self._t0 = time.perf_counter()

    def log_epoch(self, epoch, train_loss, train_acc, test_loss, test_acc, seconds, samples, threads=None):
        """Add one epoch and print its line. threads: the BLAS threads its products used (the
        trainers share the cores with other trainers running at the time, see threads.py)."""
        self.record["epochs"].append({
            "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
            "test_loss": test_loss, "test_acc": test_acc,
            "epoch_seconds": seconds, "samples_per_second": samples / seconds, "threads": threads,
        })
        self.record["total_train_seconds"] += seconds
        self.record["final_test_acc"] = test_acc
        print(f"epoch {epoch:2d} | train loss {train_loss:.4f} acc {100 * train_acc:6.2f}% | "
              f"test loss {test_loss:.4f} acc {100 * test_acc:6.2f}% | {seconds:.2f}s", flush=True)

    def close(self, status):
        """Stamp the outcome: the status and the wall time."""
        self.record["status"] = status
        self.record["wall_seconds"] = time.perf_counter() - self._t0
        return (json.dumps(self.record, indent=2) + "\n").encode()

    def save(self, path, status):
        """Write the record alone (a run with no weights to go with it)."""
        write_atomic(Path(path), self.close(status))
