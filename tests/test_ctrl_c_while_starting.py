"""Ctrl-C while a command still imports its libraries (torch takes seconds: pytorch_nn/train.py
reached its --help in 3.2 s on the 2-core Xeon) ends it in one line with exit 130, as Ctrl-C
does later; it used to print a KeyboardInterrupt traceback (harness/ctrl_c.py).

The Ctrl-C comes at a known moment: the command runs as `python <command>` would run it
(runpy, as __main__, its folder first on sys.path), with an import hook that sends the process
SIGINT as the named library starts to import. SIGINT is reset to its default in the child: a
suite started in the background (`pytest &`) has it ignored, and children inherit that."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness import ctrl_c

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}

# Run sys.argv[1] as `python <it> <args>` does, with a Ctrl-C as sys.argv[2] starts to import.
CTRL_C_AT_IMPORT = """
import os, runpy, signal, sys
script, library, *args = sys.argv[1:]

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == library:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)   # handled at the next bytecode: inside the import
        return None

sys.meta_path.insert(0, CtrlC())
sys.argv = [script, *args]
sys.path[0] = os.path.dirname(os.path.abspath(script))
runpy.run_path(script, run_name="__main__")
raise SystemExit("the command ended without the Ctrl-C taking effect")
"""

CASES = [
    ("check.py", [], "numpy", "check.py: interrupted (Ctrl-C); nothing was checked to the end"),
    ("numpy_nn/train.py", [], "numpy", "interrupted while starting: nothing written"),
    ("pytorch_nn/train.py", [], "torch", "interrupted while starting: nothing written"),
    ("compare.py", [], "matplotlib", "compare.py: interrupted (Ctrl-C)"),
    ("predict.py", ["digit.png"], "numpy", "predict.py: interrupted (Ctrl-C)"),
    ("demo.py", [], "numpy", "stopped before serving"),
]


@pytest.mark.slow
@pytest.mark.parametrize("command, args, library, line", CASES, ids=[case[0] for case in CASES])
def test_ctrl_c_while_importing_is_one_line(tmp_path, command, args, library, line):
    done = subprocess.run([sys.executable, "-c", CTRL_C_AT_IMPORT, command, library, *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert (done.returncode, done.stdout, done.stderr) == (130, "", line + "\n")


def test_one_line_leaves_an_ignored_ctrl_c_ignored_and_hand_over_a_handler_it_did_not_set():
    """A job started in the background has SIGINT ignored: it stays so. hand_over() gives
    Python's default back only in place of one_line's handler, never a caller's own."""
    before = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        ctrl_c.one_line("stopped")
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        ctrl_c.hand_over()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.signal(signal.SIGINT, signal.default_int_handler)
        ctrl_c.one_line("stopped")
        assert getattr(signal.getsignal(signal.SIGINT), "one_line", False)
        ctrl_c.hand_over()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
