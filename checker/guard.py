"""A learner's function run as the learner's code: with a time limit on every call, and a
sys.exit() or KeyboardInterrupt inside it reported as its own failure, not obeyed.

    yours = guarded(name, function)              # for the checker: failures raise (see below)
    yours = guarded(name, function, train=True)  # for the trainer: any failure is one line, exit 1
    with ctrl_c_stops_the_check(): ...           # Ctrl-C raises Interrupted, not KeyboardInterrupt

The time limit of a call is LIMIT_MULTIPLE times what the project's own function takes on the
same input (timed once per input shape, on a copy), and never under LIMIT_FLOOR seconds. A call
that runs past it is stopped by SIGALRM (signal.setitimer): Python runs the handler between two
bytecodes of the main thread, so a pure Python loop stops at once, one long NumPy call when it
returns. Calls from other threads (the CNN's halves, numpy_nn/parallel.py) have no limit.

In the trainer (train=True) each call's result is also compared, once per input shape, with
the shape of the project's own, and whenever it holds NaN or inf the project's function is run
on the same input: if that one's is finite, the learner's function, not the learning rate, is
what broke the run.
"""
import contextlib
import copy
import functools
import math
import signal
import sys
import threading
import time
import traceback

import numpy as np

import exercises

LIMIT_FLOOR = 5.0     # seconds: no call is stopped sooner, however fast the project's own is
# Generous: max-pooling's backward written as a Python loop over its windows, a slow but right
# answer, took 4.9x the project's on 32 images of 32 channels of 28x28 (the 2-core Xeon)
LIMIT_MULTIPLE = 100


class Overran(BaseException):
    """A learner's call ran past its time limit. A BaseException, like KeyboardInterrupt: the
    learner's own `except Exception:` does not swallow it, and it ends the check."""


class Interrupted(BaseException):
    """Ctrl-C during a check (ctrl_c_stops_the_check); a learner's own `raise KeyboardInterrupt`
    is not this, but their failure (Exited)."""


class Exited(Exception):
    """A learner's code raised SystemExit (sys.exit()) or KeyboardInterrupt: a failure of theirs,
    reported as one. kind: the name of what it raised."""

    def __init__(self, raised):
        self.kind = type(raised).__name__
        if isinstance(raised, SystemExit):
            what = f"your code called sys.exit({'' if raised.code is None else repr(raised.code)})"
        else:
            what = "your code raised KeyboardInterrupt"
        super().__init__(f"{what}, which would end the whole program; a function returns its result")


def kind(error):
    """The name an error is reported under: what the learner's code raised, for an Exited."""
    return getattr(error, "kind", type(error).__name__)


def first_line(error):
    text = str(error)
    return text.splitlines()[0] if text else ""


def _where(path, lineno):
    import linecache
    shown = exercises.shown(path)
    return f"{shown} line {lineno}: {linecache.getline(path, lineno).strip()}"


def learners_line(error, filename):
    """Where in the learner's file an error came from (its deepest line there), or None."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == filename]
    return _where(filename, frames[-1].lineno) if frames else None


# ----------------------------------------------------------------------------- signals

_depth = 0  # guarded calls running now (one inside another keeps the outer limit)


@contextlib.contextmanager
def _time_limit(seconds, overran):
    """Raise overran(frame) in the main thread if the block runs past seconds. (Elsewhere, or
    inside another limited block, it runs as it is.)"""
    global _depth
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return
    if _depth:
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
        return

    def alarm(signum, frame):
        raise overran(frame)

    previous = signal.signal(signal.SIGALRM, alarm)
    _depth += 1
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        _depth -= 1
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def ctrl_c_stops_the_check():
    """Inside the block Ctrl-C raises Interrupted, so that a KeyboardInterrupt is only ever a
    learner's own. (SIGINT ignored, as in a background job, stays ignored.)"""
    def interrupt(signum, frame):
        raise Interrupted

    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN or threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def loading(name, folder=None):
    """exercises.load(name, folder) within LIMIT_FLOOR seconds: a file whose top level never
    ends (a loop outside the function) is an ExerciseError too."""
    path = exercises.path_of(name, folder)

    def overran(frame):
        line = _line_in(frame, str(path))
        return Overran(f"{exercises.shown(path)} took more than {LIMIT_FLOOR:g} s to import"
                       f"{f', at {line}' if line else ''}: a file of exercises only defines its function")
    try:
        with _time_limit(LIMIT_FLOOR, overran):
            return exercises.load(name, folder)
    except Overran as error:
        raise exercises.ExerciseError(str(error)) from None


def _line_in(frame, filename):
    """The line of the innermost frame in filename, from frame outwards, or None."""
    while frame is not None:
        if frame.f_code.co_filename == filename:
            return _where(filename, frame.f_lineno)
        frame = frame.f_back
    return None


# ----------------------------------------------------------------------------- the guard

# What a call computes, as arrays to be finite: from its arguments (a method's live in self)
# and what it returned. The CNN's layers return theirs; backward() and Adam's step write them.
OUTPUTS = {
    "softmax_cross_entropy": lambda args, result: result,
    "mlp_backward": lambda args, result: list(args[0].grads.values()),
    "adam_step": lambda args, result: [args[0].params],
    "maxpool_backward": lambda args, result: result,
    "conv_backward": lambda args, result: result,
    "batchnorm_backward": lambda args, result: result,
}
CHANGES_ITS_INPUT = ("adam_step",)  # updates its state in place: the project's needs a copy from before


def _shapes(value, depth=0):
    """The shapes of the arrays in a call's arguments (one level into tuples, lists and
    dicts): what its time depends on."""
    if isinstance(value, np.ndarray):
        return (value.shape, value.dtype.str)
    if depth < 2 and isinstance(value, (tuple, list)):
        return tuple(_shapes(v, depth + 1) for v in value)
    if depth < 2 and isinstance(value, dict):
        return tuple((k, _shapes(v, depth + 1)) for k, v in value.items())
    return type(value).__name__


def _structure(value):
    """What a result holds, to compare with the project's: "number", ("array", shape), or the
    same for the items of a tuple or list; anything else by its type's name."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
        return ("array", value.shape)
    if isinstance(value, (float, int, np.floating, np.integer)) and not isinstance(value, bool):
        return "number"
    if isinstance(value, (tuple, list)):
        return tuple(_structure(v) for v in value)
    if isinstance(value, np.ndarray):
        return f"an array of {value.dtype}"
    return type(value).__name__


def _said(structure):
    """A _structure in words: "(a number, an array of shape (128, 10))"."""
    if structure == "number":
        return "a number"
    if isinstance(structure, tuple) and len(structure) == 2 and structure[0] == "array":
        return f"an array of shape {structure[1]}"
    if isinstance(structure, tuple):
        return f"({', '.join(_said(item) for item in structure)})"
    return structure if structure.startswith("an ") else f"a {structure}"


def _finite(value):
    """Are all the numbers in value (arrays, floats, tuples and lists of them) finite?"""
    if isinstance(value, np.ndarray):
        return value.dtype.kind not in "fc" or bool(np.isfinite(value).all())
    if isinstance(value, (float, np.floating)):
        return math.isfinite(value)
    if isinstance(value, (tuple, list)):
        return all(_finite(v) for v in value)
    return True


def _ordinal(n):
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def guarded(name, function, train=False):
    """function (the learner's version of exercise name) wrapped so that each call has its
    time limit and a sys.exit() or KeyboardInterrupt in it raises Exited. With train=True, a
    failure of any kind is instead one line and exit 1 (SystemExit), and its results are
    checked (see the module's docstring). Call before installing: it reads the project's own."""
    exercise, theirs = exercises.EXERCISES[name], exercises.original(name)
    filename = function.__code__.co_filename
    yours = f"your {exercises.shown(filename)} ({exercise.function})"
    timed, calls = {}, [0]  # input shapes -> (the project's seconds, its result's structure)

    def stop(what, line=None):
        at = f", at {line}" if line else ""
        sys.exit(f"error: {yours} {what}{at}, in its {_ordinal(calls[0])} call while training: "
                 f"python check.py --exercise {name} shows more")

    def project_own(args, kwargs):
        """The project's function on a copy of the input: (its seconds, its outputs)."""
        args, kwargs = copy.deepcopy((args, kwargs))
        start = time.perf_counter()
        result = theirs(*args, **kwargs)
        return time.perf_counter() - start, OUTPUTS[name](args, result)

    @functools.wraps(function)
    def call(*args, **kwargs):
        calls[0] += 1
        key = _shapes((args, kwargs))
        if key not in timed:
            try:
                seconds, outputs = project_own(args, kwargs)
                timed[key] = seconds, _structure(outputs)
            except Exception:             # the input is not one the project's function takes
                timed[key] = 0.0, None
        seconds, structure = timed[key]
        limit = max(LIMIT_FLOOR, LIMIT_MULTIPLE * seconds)

        def overran(frame):
            line = _line_in(frame, filename)
            return Overran(f"{yours} ran past its time limit of {limit:.3g} s{f', at {line}' if line else ''} "
                           f"(the project's own takes {seconds * 1e3:.2g} ms on this input; the limit is "
                           f"{LIMIT_MULTIPLE} times that, and at least {LIMIT_FLOOR:g} s)")

        before = copy.deepcopy((args, kwargs)) if train and name in CHANGES_ITS_INPUT else (args, kwargs)
        try:
            with _time_limit(limit, overran):
                result = function(*args, **kwargs)
        except (SystemExit, KeyboardInterrupt) as raised:
            error = Exited(raised).with_traceback(raised.__traceback__)
            if not train:
                raise error from None
            stop(f"raised {error.kind}: {error}", learners_line(error, filename))
        except Overran as error:
            if not train:
                raise
            sys.exit(f"error: {error}, in its {_ordinal(calls[0])} call while training")
        except Exception as error:
            if not train:
                raise
            stop(f"stopped with {type(error).__name__}: {first_line(error)}", learners_line(error, filename))
        if train:
            outputs = OUTPUTS[name](args, result)
            if structure is not None and _structure(outputs) != structure:
                stop(f"gave {_said(_structure(outputs))} where the project's own gives {_said(structure)}")
            if not _finite(outputs):
                try:
                    theirs_finite = _finite(project_own(*before)[1])
                except Exception:
                    theirs_finite = False
                if theirs_finite:
                    stop(f"gave NaN or inf where the project's own ({exercise.solution}) gives finite "
                         f"numbers on the same input")
        return result

    return call
