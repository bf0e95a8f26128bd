"""Watch a function run and keep every gradient it computes, with the line that computed it.

A learner's backward() keeps its gradients in local variables (dz, dh, ...) and writes the
parameters' ones into the network's grads. To compare each with PyTorch's, record(...)
runs the function under Python's tracing hook (sys.settrace: Python calls us before each
line of that one function runs), looks at its variables each time, and copies every
gradient whose value changed, noting the line that changed it. Nothing in the function
needs to change to be checked this way.
"""
import inspect
import linecache
import sys
import sysconfig
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = {Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "platstdlib", "purelib", "platlib")}


class Recording:
    """What record() saw: values[label] (the gradient's last value, or Ellipsis for a blank
    still holding `...`), lines[label] (every line that changed it, in order: the last one
    made its final value), and error, the exception that stopped the function (None if it
    returned) with error_line, its line; or result, what it returned, with return_line."""

    def __init__(self, code):
        self.filename, self.first_line = code.co_filename, code.co_firstlineno
        self.values, self.lines = {}, {}
        self.error, self.error_line, self.result, self.return_line = None, None, None, None


def _recordable(value):
    return isinstance(value, (np.ndarray, float, np.floating)) or value is Ellipsis


def _same(a, b):
    """Do two recorded values hold the same numbers (and shape)?"""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, (float, np.floating)) and isinstance(b, (float, np.floating)):
        return a == b or (a != a and b != b)       # (NaN equals NaN here: nothing changed)
    return a is b


def record(function, args, label, watched=None):
    """Call function(*args), recording its gradients. label(name, variables) -> the gradient
    a local variable holds at this point (e.g. "dz2"), or None: the variables named d... are
    watched (and the others label names); watched maps labels to arrays outside the function
    that it fills (the network's grads)."""
    # the function's own code: a bound method's function, unwrapped (checker/guard.py's time limit)
    code = inspect.unwrap(getattr(function, "__func__", function)).__code__
    rec = Recording(code)
    last = {}              # variable -> its last value seen (a copy)
    done = [None]          # the line that ran last: what changed since was its doing

    def note(key, lab, value):
        if key in last and _same(last[key], value):
            return                                 # unchanged since the last line
        last[key] = value.copy() if isinstance(value, np.ndarray) else value
        if lab and (lab not in rec.values or not _same(rec.values[lab], value)):
            rec.values[lab] = last[key]
            rec.lines.setdefault(lab, []).append(done[0])

    def look(frame):
        variables = frame.f_locals
        for name, value in variables.items():
            if _recordable(value):
                lab = label(name, variables)
                if lab or name.startswith("d"):    # a d-variable is followed even when it names nothing yet
                    note(("local", name), lab, value)
        for lab, array in (watched or {}).items():
            note(("watched", lab), lab, array)

    def in_function(frame, event, arg):
        if event in ("line", "return"):
            look(frame)
            done[0] = frame.f_lineno
            if event == "return":
                rec.return_line = frame.f_lineno
        elif event == "exception":
            rec.error_line = frame.f_lineno
        return in_function

    def on_call(frame, event, arg):
        return in_function if frame.f_code is code else None

    for lab, array in (watched or {}).items():
        last[("watched", lab)] = array.copy()      # what the arrays held before: not the function's doing
    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        rec.result = function(*args)
    except Exception as error:                     # reported by the checker, line and all
        rec.error = error
    finally:
        sys.settrace(previous)
    return rec


def where(filename, lineno):
    """'path line N: the line's text', the path from the repo's root when it is inside it."""
    path = Path(filename)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return f"{shown} line {lineno}: {linecache.getline(filename, lineno).strip()}"


def _code_to_show(filename):
    """Is this file the project's or a learner's code, not Python's, a library's, nor the
    checker's own machinery (which calls the learner's code)?"""
    if filename.startswith("<"):
        return False
    path = Path(filename).resolve()
    return not (path.is_relative_to(ROOT / "checker") or ".venv" in Path(filename).parts
                or "site-packages" in path.parts or any(path.is_relative_to(lib) for lib in LIBRARIES))


def failing_line(error):
    """Where an exception came from: the deepest line of the project's own code (or a
    learner's file) it passed through, not NumPy's insides or the checker's."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if _code_to_show(f.filename)]
    if not frames:
        return "(outside the project's files)"
    return where(frames[-1].filename, frames[-1].lineno)
