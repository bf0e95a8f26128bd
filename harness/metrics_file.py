"""The metrics file a training run writes: its schema, how Run fills it, how a reader checks it.

Run builds one JSON record per run; compare.py reads it back with load_metrics,
which refuses (MetricsError, one line) anything it could not draw honestly: another schema,
a missing or mistyped key, a NaN, or a run that claims a result it does not have.

A record's status is one of:
    completed     every planned epoch finished (a stop during the last one's evaluation or
                  the save cuts nothing: the run is complete)
    interrupted   stopped by Ctrl-C or SIGTERM after at least one finished epoch, before the last
    diverged      the loss became NaN or infinite; the record says where and claims no
                  result: no final accuracy, no weights

No torch: the from-scratch side writes it too.
"""
import hashlib
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

from data_fetch import write_atomic
from harness.threads import openblas_threads

ROOT = Path(__file__).resolve().parents[1]  # the repo

SCHEMA_VERSION = 3  # bump when the record changes shape. 2: model, dtype, weights_sha256, "diverged";
                    # 3: "diagnostics" (numpy_nn/diagnostics.py), config activation and weight_init
READABLE_SCHEMAS = (2, 3)  # a schema-2 record is read as the schema-3 record it would be (_upgrade)
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
OPTIONAL_DICT = (dict, type(None))
RECORD_FIELDS = {"schema": int, "framework": str, "versions": dict, "config": dict, "data": dict,
                 "hardware": dict, "status": str, "epochs": list, "total_train_seconds": NUMBER,
                 "weights_sha256": OPTIONAL_STR, "diagnostics": OPTIONAL_DICT}
CONFIG_FIELDS = {"epochs": int, "batch_size": int, "lr": NUMBER, "optimizer": str, "schedule": str,
                 "model": str, "hidden": OPTIONAL_LIST, "weight_decay": NUMBER, "dropout": NUMBER, "limit": OPTIONAL_INT,
                 "dataset": str, "dtype": str, "activation": str,
                 "weight_init": OPTIONAL_STR}  # null: the PyTorch trainer's --init torch
# Read where present (compare.py): the weights' path, the PyTorch trainer's --mode, and the
# NumPy trainer's --exercise (null: the project's own functions; older records have none),
# --augment's ranges (null: no augmentation; older records have none), and --norm (older
# records have none: they had no normalisation).
OPTIONAL_CONFIG_FIELDS = {"weights": OPTIONAL_STR, "mode": str, "exercise": OPTIONAL_STR,
                          "augment": OPTIONAL_DICT, "norm": str}
# The config keys that say where a run's files are and how its output looks, not what it
# trained: two records that differ only in these are the same run (sweep.py keeps it). Every
# other key is a setting, including any a trainer records in future.
NOT_SETTINGS = ("metrics", "weights", "data_dir", "no_progress")
DATA_FIELDS = {"dataset": str, "train_samples": int, "test_samples": int}
HARDWARE_FIELDS = {"cpu": str, "cores": OPTIONAL_INT, "device": str, "blas": str,
                   "blas_threads": OPTIONAL_INT}  # os.cpu_count() and OpenBLAS may not know
EPOCH_FIELDS = {"epoch": int, "train_loss": NUMBER, "train_acc": NUMBER, "test_loss": NUMBER,
                "test_acc": NUMBER, "epoch_seconds": NUMBER, "samples_per_second": NUMBER}
DIVERGED_FIELDS = {"epoch": int, "batch": int, "loss": str}  # the loss as text: JSON has no NaN
# numpy_nn/diagnostics.py says what each is; every list holds one number (or null: not finite)
# per recorded step, per layer, dead_fraction for the hidden layers only
DIAGNOSTICS_PER_LAYER = ("grad_rms", "update_ratio", "activation_mean", "activation_std")
# Per hidden layer where they apply (numpy_nn/diagnostics.py hidden_figures; older records have
# none), each with the bounds of its values
DIAGNOSTICS_PER_HIDDEN_LAYER = {"saturated_fraction": (0, 1), "input_p15": (None, None),
                                "input_p50": (None, None), "input_p85": (None, None)}
DIAGNOSTICS_FIELDS = {"every": int, "probe_images": int, "layers": list, "steps": list, "loss": list,
                      **{figure: dict for figure in DIAGNOSTICS_PER_LAYER}, "dead_fraction": dict,
                      "histograms": dict}
TYPE_NAMES = {int: "an integer", NUMBER: "a number", OPTIONAL_INT: "an integer or null",
              OPTIONAL_STR: "a string or null", OPTIONAL_LIST: "a list or null", OPTIONAL_DICT: "an object or null",
              str: "a string", list: "a list", dict: "an object"}


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


def _short(value):
    """repr(value), cut to a readable length (an integer may have any number of digits)."""
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:20]}... ({len(text)} characters)"


def _is_number(value):
    return isinstance(value, NUMBER) and not isinstance(value, bool) and math.isfinite(value)


def _check_range(obj, key, where, low=None, high=None, positive=False):
    """obj[key], a finite number (or null, which the type check allowed), must lie in
    [low, high], or above 0 if positive: values a reader scales, divides by or counts with."""
    value = obj[key]
    if value is None:
        return
    if ((low is not None and not value >= low) or (high is not None and not value <= high)
            or (positive and not value > 0)):
        bounds = (f"in [{low}, {high}]" if high is not None else f"at least {low}" if low is not None
                  else "positive")
        raise MetricsError(f"{where}[{key!r}] should be {bounds}, got {value!r}")


def _check_series(values, n, where, low=None, high=None, kind=NUMBER):
    """values must be a list of n numbers or nulls (kind int: integers, no nulls), each in [low, high]."""
    if not isinstance(values, list) or len(values) != n:
        raise MetricsError(f"{where} should be a list of {n} values, one per recorded step")
    for value in values:
        if value is None and kind is NUMBER:
            continue
        if not _is_number(value) or not isinstance(value, kind):
            what = "integers" if kind is int else "finite numbers or null"
            raise MetricsError(f"{where} should hold {what}, got {value!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"in [{low}, {high}]" if high is not None else f"of at least {low}"
            raise MetricsError(f"{where} should hold values {bounds}, got {value!r}")


def _check_diagnostics(diagnostics):
    """The record's diagnostics: each figure a series per layer, as long as the steps."""
    _check_fields(diagnostics, DIAGNOSTICS_FIELDS, "diagnostics")
    steps, layers = diagnostics["steps"], diagnostics["layers"]
    if not layers or not all(isinstance(name, str) for name in layers):
        raise MetricsError("diagnostics['layers'] should be a list of layer names")
    _check_range(diagnostics, "every", "diagnostics", low=1)
    _check_range(diagnostics, "probe_images", "diagnostics", low=0)
    _check_series(steps, len(steps), "diagnostics['steps']", low=1, kind=int)
    _check_series(diagnostics["loss"], len(steps), "diagnostics['loss']", low=0)
    hidden = [figure for figure in DIAGNOSTICS_PER_HIDDEN_LAYER if figure in diagnostics]
    for figure in (*DIAGNOSTICS_PER_LAYER, "dead_fraction", *hidden):
        names = layers[:-1] if figure == "dead_fraction" or figure in hidden else layers
        if not isinstance(diagnostics[figure], dict) or sorted(diagnostics[figure]) != sorted(names):
            raise MetricsError(f"diagnostics[{figure!r}] should have the layers {', '.join(names)}")
        low, high = {"grad_rms": (0, None), "update_ratio": (0, None), "activation_std": (0, None),
                     "dead_fraction": (0, 1), **DIAGNOSTICS_PER_HIDDEN_LAYER}.get(figure, (None, None))
        for name in names:
            _check_series(diagnostics[figure][name], len(steps), f"diagnostics[{figure!r}][{name!r}]",
                          low, high)
    for when, histograms in diagnostics["histograms"].items():
        where = f"diagnostics['histograms'][{when!r}]"
        if histograms is None:
            continue
        if not isinstance(histograms, dict):
            raise MetricsError(f"{where} should be an object of layers' histograms or null")
        for name, h in histograms.items():
            if h is None:
                continue
            if not (isinstance(h, dict) and isinstance(h.get("counts"), list)
                    and isinstance(h.get("edges"), list) and len(h["edges"]) == len(h["counts"]) + 1):
                raise MetricsError(f"{where}[{name!r}] should hold counts and one more edge than counts")
            _check_series(h["counts"], len(h["counts"]), f"{where}[{name!r}]['counts']", low=0, kind=int)
            _check_series(h["edges"], len(h["edges"]), f"{where}[{name!r}]['edges']")
            if None in h["edges"] or any(b <= a for a, b in zip(h["edges"], h["edges"][1:])):
                raise MetricsError(f"{where}[{name!r}]['edges'] should be increasing numbers")


def _check_values(record):
    """The values of the record's settings, counts and times within what a run can have: the
    types alone let through a batch of -1, an accuracy of 1e308 or a version that is a number,
    which the readers would draw, divide by or fail on."""
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in record["versions"].items()):
        raise MetricsError("versions should map each library's name to its version string")
    config, where = record["config"], "config"
    for key in ("epochs", "batch_size"):
        _check_range(config, key, where, low=1)
    for key in ("lr", "weight_decay"):
        _check_range(config, key, where, low=0)
    _check_range(config, "dropout", where, low=0, high=1)
    _check_range(config, "limit", where, low=1)
    if config["hidden"] is not None and not all(isinstance(size, int) and not isinstance(size, bool)
                                                and size >= 1 for size in config["hidden"]):
        raise MetricsError(f"config['hidden'] should be a list of positive layer sizes, got {config['hidden']!r}")
    present = {key: kind for key, kind in OPTIONAL_CONFIG_FIELDS.items() if key in config}
    _check_fields(config, present, where)
    for key in ("train_samples", "test_samples"):
        _check_range(record["data"], key, "data", low=1)
    hardware = record["hardware"]
    _check_range(hardware, "cores", "hardware", low=1)
    _check_range(hardware, "blas_threads", "hardware", low=0)
    if "gpu" in hardware:  # the GPU's name, for a run on one
        _check_fields(hardware, {"gpu": OPTIONAL_STR}, "hardware")
    _check_range(record, "total_train_seconds", "the record", low=0)
    if record.get("diverged") is not None:
        _check_fields(record["diverged"], DIVERGED_FIELDS, "diverged")
        _check_range(record["diverged"], "epoch", "diverged", low=1)
        _check_range(record["diverged"], "batch", "diverged", low=0)


def _check_record(record):
    """Raise MetricsError (without the file name) at the first thing a reader could not use."""
    _check_fields(record, RECORD_FIELDS, "the record")
    for key, fields in (("config", CONFIG_FIELDS), ("data", DATA_FIELDS), ("hardware", HARDWARE_FIELDS)):
        _check_fields(record[key], fields, key)
    if record["diagnostics"] is not None:
        _check_diagnostics(record["diagnostics"])
    _check_values(record)
    for i, epoch in enumerate(record["epochs"]):
        where = f"epochs[{i}]"
        _check_fields(epoch, EPOCH_FIELDS, where)
        if epoch["epoch"] != i + 1:  # a reader draws them: 10**400 overflowed matplotlib's float axis
            raise MetricsError(f"{where}['epoch'] should be {i + 1}, the epochs in order from 1, got "
                               f"{_short(epoch['epoch'])}")
        if "threads" in epoch:  # the BLAS threads of the epoch's products, since schema 3
            _check_fields(epoch, {"threads": OPTIONAL_INT}, where)
            _check_range(epoch, "threads", where, low=1)
        for key in ("train_loss", "test_loss"):
            _check_range(epoch, key, where, low=0)
        for key in ("train_acc", "test_acc"):
            _check_range(epoch, key, where, low=0, high=1)
        for key in ("epoch_seconds", "samples_per_second"):  # throughput and speed ratios divide by them
            _check_range(epoch, key, where, positive=True)
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
    if version not in READABLE_SCHEMAS:
        raise MetricsError(f"{path}: schema version {version!r}, but this code reads versions "
                           f"{' and '.join(map(str, READABLE_SCHEMAS))}; run the trainer again to write "
                           f"a current file")
    try:
        _check_record(_upgrade(record))
    except MetricsError as e:
        raise MetricsError(f"{path}: {e}") from None
    return record


def _upgrade(record):
    """A schema-2 record as schema 3 says the same run: no diagnostics recorded, and the settings
    every run had before they were flags (ReLU; He initialisation, unless --init torch, where
    PyTorch drew its own). A record that is not a dict or not schema 2 is returned as it is."""
    if isinstance(record, dict) and record.get("schema") == 2 and isinstance(record.get("config"), dict):
        record["diagnostics"] = None
        record["config"].setdefault("activation", "relu")
        record["config"].setdefault("weight_init", None if record["config"].get("init") == "torch" else "he")
    return record


# ----------------------------------------------------------------------------- writing it

_IMPORTED = time.perf_counter()


def process_start(pid="self"):
    """When process pid started, in clock ticks since boot (field 22 of /proc/<pid>/stat), or
    None where that cannot be read (no such process, or no /proc: not Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        # Field 2 is the command's name in parentheses, which may hold spaces and ')': the
        # fields after the last ')' are fields 3, 4, ..., so field 22 is the 20th of them.
        return int(stat[stat.rindex(")") + 1:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def process_seconds():
    """Seconds since this process started: start-up (imports, loading the data) included.
    Linux says when the process started (/proc); elsewhere, since this module was imported."""
    started = process_start()
    if started is not None:
        try:
            with open("/proc/uptime") as f:  # seconds since boot, as the start time is counted
                return float(f.read().split()[0]) - started / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
    return time.perf_counter() - _IMPORTED


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
    """NumPy's BLAS library, version and thread count (an OpenBLAS is asked, harness/threads.py)."""
    import numpy as np
    info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    return {"blas": f"{info.get('name')} {info.get('version')}", "blas_threads": openblas_threads()}


def repo_relative(path):
    """A path inside the repo as relative to its root (so committed results hold no machine's
    folders); any other path in full."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def steady_epoch_seconds(record):
    """The epoch times a run's speed is read from: all but epoch 1, which carries one-off
    start-up costs (every epoch when there is only one)."""
    seconds = [epoch["epoch_seconds"] for epoch in record["epochs"]]
    return seconds[1:] or seconds


def median_epoch_seconds(record):
    """A run's speed as one number: the median of its steady epochs' seconds."""
    return statistics.median(steady_epoch_seconds(record))


def recorded_config(args):
    """The config a record keeps for a trainer's parsed flags: every flag, paths repo-relative."""
    return {k: (repo_relative(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def differing_settings(config, other):
    """The settings (every key but NOT_SETTINGS) on which two configs differ, in config's order
    then other's; a key one of them lacks counts as null (older records lack newer flags).
    Every flag counts: is this record a run of these flags? (What compare.py's report names
    as an experiment's settings is report/table.py's changed_settings.)"""
    keys = [*config, *(key for key in other if key not in config)]
    return [key for key in keys if key not in NOT_SETTINGS and config.get(key) != other.get(key)]


def threads_shown(threads):
    """The epoch line's thread count, "2 threads": a float32 run's last bits depend on it (another
    count adds a product's parts in another order), so a learner comparing two runs can see it."""
    if threads is None:
        return "threads unknown"
    return f"{threads} thread{'' if threads == 1 else 's'}"


class Run:
    """The record of one training run: prints the progress line, writes the metrics JSON."""

    def __init__(self, framework, args, versions, hardware, n_train, n_test):
        config = recorded_config(args)
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
            "diagnostics": None,          # layer by layer, every N steps: numpy_nn/diagnostics.py
        }
        self.interrupted = False  # set by the trainer on Ctrl-C or SIGTERM
        self.diverged = None      # the trainer's TrainingDiverged, if the loss blew up
        self._t0 = time.perf_counter()

    def log_epoch(self, epoch, train_loss, train_acc, test_loss, test_acc, seconds, samples, threads=None,
                  weights=None):
        """Add one epoch and print its line. threads: the BLAS threads its products used (the
        cores the rest of the machine left free as the epoch began, unless a count was set in
        the environment: harness/threads.py).
        weights: the network's weights as saved at this epoch's end, the ones this record's
        last epoch describes (what the trainer writes, even if a stop comes mid-epoch)."""
        self.weights = weights
        self.record["epochs"].append({
            "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
            "test_loss": test_loss, "test_acc": test_acc,
            "epoch_seconds": seconds, "samples_per_second": samples / seconds, "threads": threads,
            "process_seconds": process_seconds(),  # since the process started (not in older records)
        })
        self.record["total_train_seconds"] += seconds
        self.record["final_test_acc"] = test_acc
        print(f"epoch {epoch:2d} | train loss {train_loss:.4f} acc {100 * train_acc:6.2f}% | "
              f"test loss {test_loss:.4f} acc {100 * test_acc:6.2f}% | {threads_shown(threads)} | {seconds:.2f}s",
              flush=True)

    def close(self, status):
        """Stamp the outcome: the status and the wall time."""
        self.record["status"] = status
        self.record["wall_seconds"] = time.perf_counter() - self._t0
        return (json.dumps(self.record, indent=2) + "\n").encode()

    def save(self, path, status):
        """Write the record alone (a run with no weights to go with it)."""
        write_atomic({Path(path): self.close(status)})
