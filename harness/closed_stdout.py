"""When whoever reads a command's output goes away early (`python predict.py *.png | head -2`,
`python compare.py | head -1`), the command finishes its work quietly instead of dying
of a BrokenPipeError: what it prints after that goes nowhere.

Every command calls keep_running_if_stdout_closes() at the start of main() (the trainers in
harness/experiment.py's prepare()); data_loader.py, below the harness, does the same in its
own few lines. Standard library only.
"""
import os
import sys


class StdoutThatMayClose:
    """sys.stdout, except that a closed pipe silences it instead of raising BrokenPipeError."""

    def __init__(self, stream):
        self._stream = stream

    def _silenced(self):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())  # what is still buffered drains into nothing
        os.close(devnull)

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._silenced()
            return len(text)

    def flush(self):
        # Python flushes sys.stdout once more as it exits; that flush comes here too, so a
        # pipe closed after the last print is no "Exception ignored" message either.
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._silenced()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def keep_running_if_stdout_closes():
    if not isinstance(sys.stdout, StdoutThatMayClose):
        sys.stdout = StdoutThatMayClose(sys.stdout)
