"""What the two trainers share, so that they differ only in the framework: the flags (they
live in harness/flags.py), the checks made before training, the progress line, the divergence
check, stopping cleanly, and writing the metrics file that compare.py reads (its schema
lives in harness/metrics_file.py).

NumPy and the standard library only (the from-scratch side must not need torch).
"""
import contextlib
import io
import math
import os
import signal
import sys
from pathlib import Path

from data_fetch import write_atomic
from data_loader import DataError, load_mnist
from harness.closed_stdout import keep_running_if_stdout_closes
from harness.flags import RESULTS_DIR, build_parser  # noqa: F401  (the trainers' flags: harness/flags.py)
from harness.metrics_file import sha256_bytes

# A learning rate each optimizer trains this network well with (docs/experiments.md's table): what the
# divergence message suggests instead of a rate merely ten times smaller, which may still fail.
GOOD_LR = {"sgd": 0.1, "momentum": 0.02, "adam": 3e-3}


class TrainingDiverged(Exception):
    """The loss became NaN or infinite; the message says where and what to try."""

    def __init__(self, message, epoch, batch, loss):
        super().__init__(message)
        self.epoch, self.batch, self.loss = epoch, batch, loss


def shown(path):
    """A path as the user would type it: relative to the cwd when it lies below it (the
    defaults are absolute paths into the repo), else as given."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _output_problem(path):
    """Why a file cannot be written at path, or None. Checks only: nothing is created."""
    if path.is_dir():
        return f"{shown(path)} is a folder; give a file name"
    if path.exists() and not path.is_file():  # a rename would replace it with a file
        return f"{shown(path)} exists and is not a regular file (a device, FIFO or socket); give a file name"
    folder = path.parent
    while not folder.exists():  # the trainer creates missing folders; the first existing one decides
        folder = folder.parent
    if not folder.is_dir():
        return f"{shown(folder)} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot write in {shown(folder)} (permission denied)"
    return None


def prepare(parser, args):
    """Everything checked or set up before the data loads and training starts: the output
    paths (a bad one fails now, not after the run), SIGTERM handled as Ctrl-C, and a stdout
    that may close early (`train.py | head`)."""
    for flag in ("metrics", "weights"):
        problem = _output_problem(getattr(args, flag))
        if problem:
            parser.error(f"argument --{flag}: {problem}")
    if args.metrics.resolve() == args.weights.resolve():
        parser.error("argument --weights: the same file as --metrics; give two different paths")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    keep_running_if_stdout_closes()


def load_data(parser, args):
    """The dataset the flags ask for, in --dtype, the training set cut to --limit; a data
    problem, Ctrl-C while loading, or a --limit larger than the data is a one-line error."""
    import numpy as np
    try:
        # each line flushed: through a pipe (`| tee`) a reader sees the data arrive, not later
        x_train, y_train, x_test, y_test = load_mnist(args.dataset, args.data_dir,
                                                      log=lambda line: print(line, flush=True))
    except DataError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        stop("interrupted while loading the data: nothing written")
    if args.limit is not None and args.limit > len(x_train):
        parser.error(f"argument --limit: {args.limit} is more than the {len(x_train)} training samples")
    n_train = len(x_train[:args.limit])
    if getattr(args, "norm", "none") == "batch" and n_train % args.batch_size == 1:
        parser.error(f"argument --batch-size: {n_train} training samples in batches of {args.batch_size} leave "
                     f"a last batch of 1 image, which --norm batch cannot normalise (no variance); "
                     f"choose another --batch-size or --limit")
    dtype = np.dtype(args.dtype)  # the loader gives float32; float64 is exact from it
    return x_train[:args.limit].astype(dtype, copy=False), y_train[:args.limit], \
        x_test.astype(dtype, copy=False), y_test


# ----------------------------------------------------------------------------- stopping

class StopRequested(Exception):
    """Raised by Stopping.check at a step boundary: Ctrl-C or SIGTERM came during training."""


class Stopping:
    """Ctrl-C and SIGTERM while training. The handler only records the first signal (later
    ones change nothing); the loop calls check() at each step boundary and leaves there. A
    handler that raised would land wherever the signal came: inside tqdm's __del__ it was
    swallowed, and the run trained on. A stop saves the weights as the last finished epoch
    left them (harness/session.py keeps them), never those of the epoch it cut short."""

    def __init__(self):
        self.signum = None       # the first stop signal; None: none came
        self.begun = False
        self.hold = False        # the trainer's command keeps recording until its files are saved
        self._previous = {}

    def begin(self):
        """From now until the save, SIGINT and SIGTERM are recorded, not raised."""
        if not self.begun:
            self._previous = {s: signal.signal(s, self._record) for s in (signal.SIGINT, signal.SIGTERM)}
        self.begun = True

    def release(self):
        """Give the signals back to the handlers they had, unless the trainer's command holds
        them until its save (hold): train() called from other code (the tests, the reference
        runs) leaves Ctrl-C as it found it."""
        if self.begun and not self.hold:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            self.begun = False

    def end(self):
        """After the save nothing is left to stop: later signals are ignored. (A recording
        handler would be reset to the default as Python exits, and a late second Ctrl-C
        would kill the process on its way out, with no exit status of its own.)"""
        if self.begun:
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, signal.SIG_IGN)

    def _record(self, signum, frame):
        if self.signum is None:
            self.signum = signum

    def check(self):
        """At a step boundary, or after an epoch's evaluation: leave if a stop was asked for."""
        if self.signum is not None:
            raise StopRequested

    def exit_code(self):
        """The shell's code for the signal: 130 for Ctrl-C, 143 for SIGTERM."""
        return 128 + (self.signum or signal.SIGINT)


stopping = Stopping()  # one per process: signal handlers are too


def _raise_interrupt(signum, frame):
    """Before training (loading, building the model), SIGTERM stops the run as Ctrl-C does."""
    stopping.signum = signum
    raise KeyboardInterrupt


def stop(message):
    """Exit after a stop signal, with the shell's code for it (130 for Ctrl-C, 143 for SIGTERM)."""
    print(message, file=sys.stderr)
    stopping.end()
    sys.exit(stopping.exit_code())


# ----------------------------------------------------------------------------- the run

def check_finite(loss, epoch, batch, args):
    """Stop at the first NaN or infinite loss: nothing after it means anything."""
    if not math.isfinite(loss):
        good = GOOD_LR[args.optimizer]
        suggestion = good if args.lr > good else args.lr / 10
        raise TrainingDiverged(
            f"the loss became {loss} at epoch {epoch}, batch {batch}: the learning rate "
            f"{args.lr:g} is too large for this run; try a smaller --lr (e.g. {suggestion:g})",
            epoch, batch, loss)


@contextlib.contextmanager
def out_of_memory_is_one_line(args):
    """A failed allocation anywhere in training ends in one line, not a traceback: NumPy's
    MemoryError, torch's OutOfMemoryError (an accelerator) or its CPU allocator's RuntimeError.
    (memory.check_memory refuses a run that clearly cannot fit before it starts.)"""
    try:
        yield
    except Exception as e:
        if not (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
                or "can't allocate memory" in str(e)):
            raise
        sys.exit(f"error: out of memory while training the {args.model} with batches of "
                 f"{args.batch_size} in {args.dtype}; try a smaller --batch-size")


def save_bytes(path, write):
    """Call write(file) on an in-memory file, then write it atomically to path."""
    buffer = io.BytesIO()
    write(buffer)
    write_atomic({Path(path): buffer.getvalue()})


def write_pair(files):
    """Write {path: bytes} as a pair, both or neither (data_fetch.write_atomic): the weights and
    the metrics that name them by SHA-256 always describe the same network."""
    write_atomic(files)


def finish(run, args):
    """Write what the run earned and say so; exit as the run ended.

    completed or interrupted with finished epochs: the last finished epoch's weights and the
    metrics, as a pair, the metrics naming the weights by SHA-256. Interrupted before the first
    epoch: nothing (earlier files stay as they were). Diverged: a metrics record that says so
    and claims no result.
    """
    given = f"--metrics {shown(args.metrics)} and --weights {shown(args.weights)}"
    if run.diverged is not None:
        e = run.diverged
        run.record["diverged"] = {"epoch": e.epoch, "batch": e.batch, "loss": str(e.loss)}
        run.record["final_test_acc"] = None
        try:
            run.save(args.metrics, "diverged")
        except OSError as err:
            sys.exit(f"error: {e}; and cannot write {shown(args.metrics)} ({err.strerror})")
        sys.exit(f"error: {e} (recorded as diverged in {shown(args.metrics)})")
    done = len(run.record["epochs"])
    if run.interrupted and done == 0:
        stop(f"interrupted before the first epoch finished: nothing written ({given} left as they were)")
    run.record["weights_sha256"] = sha256_bytes(run.weights)
    try:
        write_pair({Path(args.weights): run.weights,   # a signal now is only noted (stopping)
                    Path(args.metrics): run.close("interrupted" if run.interrupted else "completed")})
    except OSError as e:
        sys.exit(f"error: cannot write results ({e.strerror}); nothing written: check {given}")
    stopping.end()
    note = f"interrupted after {done} finished epoch(s); " if run.interrupted else ""
    print(f"{note}metrics -> {shown(args.metrics)}, weights -> {shown(args.weights)}")
    if stopping.signum is not None:
        sys.exit(stopping.exit_code())  # the shell's code for the signal, after a clean save
