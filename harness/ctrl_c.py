"""Ctrl-C before a command's own handling of it has begun: while it still imports its libraries
(torch takes seconds), Python's default would print a KeyboardInterrupt traceback.

    from harness import ctrl_c                    # standard library only: imports in no time
    if __name__ == "__main__":
        ctrl_c.one_line("interrupted while starting: nothing written")
    import numpy as np ...                         # Ctrl-C in here: that line, exit 130

    ctrl_c.hand_over()   # in main, where the command's own handling (KeyboardInterrupt) begins

A command with no handling of its own (compare.py, predict.py) never hands over: Ctrl-C
anywhere in it is its one line.
"""
import signal
import sys


def one_line(message):
    """From now on Ctrl-C ends the process: message on stderr, and exit 130 (the shell's code
    for Ctrl-C). SIGINT ignored (a job started in the background) stays ignored."""
    def stop(signum, frame):
        print(message, file=sys.stderr, flush=True)
        sys.exit(128 + signal.SIGINT)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        stop.one_line = True
        signal.signal(signal.SIGINT, stop)


def hand_over():
    """Ctrl-C raises KeyboardInterrupt again, as Python's default does, for the command's own
    handling; only if one_line set it (a test calling main() keeps its own handler)."""
    if getattr(signal.getsignal(signal.SIGINT), "one_line", False):
        signal.signal(signal.SIGINT, signal.default_int_handler)
