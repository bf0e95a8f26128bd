"""Draw a digit in your browser and watch every trained network read it.

    python demo.py                  # prints the address to open; Ctrl-C stops it
    python demo.py --open           # and opens it in your browser
    python demo.py --port 8000      # a fixed port instead of a free one
    python demo.py --results-dir results/reference   # the committed runs instead of yours
    python demo.py --train-dir /tmp/runs            # where the page's own runs go (results/live/)

The page sends your drawing to this server, which makes it a 28x28 image the way MNIST's
were made (mnist_style.py) and runs every network trained so far: the NumPy and PyTorch
MLPs and, once trained with --model cnn, the CNNs. The page can also train both networks
live, with the trainers themselves (demo/training.py), and shows them learning. The server,
the page and the runs live in demo/; this file is the command.
"""
import argparse
import errno
import signal
import sys
import webbrowser
from pathlib import Path

from harness import ctrl_c

if __name__ == "__main__":  # Ctrl-C while the imports below run: one line, not a traceback
    ctrl_c.one_line("stopped before serving")

from demo.models import add_run_flags, models_or_exit  # noqa: E402
from demo.server import HOST, DemoServer, serve  # noqa: E402
from demo.training import TRAIN_DIR  # noqa: E402
from harness.closed_stdout import keep_running_if_stdout_closes  # noqa: E402
from harness.flags import OneLineParser, project_file_problem  # noqa: E402


def port_number(text):
    """An argparse type: a TCP port, or 0 for a free one. ASCII digits only: str.isdigit and
    int() also take other scripts' digits ('٨٠٠٠' is 8000 to them)."""
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {text!r}")
    return int(text)


def train_folder(text):
    """An argparse type: the folder the page's runs write into, refused before the server starts
    by the trainers' own rule for their outputs (under results/ or outside the project), and
    never a file."""
    path = Path(text)
    problem = project_file_problem(path)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    return path


def build_parser():
    p = OneLineParser(description="Serve a page on 127.0.0.1 where you draw a digit "
                      "and every trained network reads it.")
    p.add_argument("--port", type=port_number, default=0,
                   help="the port to serve on (default: 0, a free one chosen by the system)")
    p.add_argument("--open", action="store_true",
                   help="open the page in a browser (default: only print its address)")
    add_run_flags(p)
    p.add_argument("--train-dir", type=train_folder, default=TRAIN_DIR,
                   help="where the runs started from the page write their files, a folder each "
                        "(default: results/live/)")
    return p


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # kill stops the server as Ctrl-C does


def start(args):
    """Find the models and open the socket; a one-line error (SystemExit) if either fails."""
    models, notes = models_or_exit(args)
    for model in models:
        print(f"loaded {model.name} from {model.weights}")
    for note in notes:
        print(f"note: {note}")
    if not models:
        print("no trained model found: the page will say which command trains one")
    try:
        return DemoServer(args.port, models, notes, args.train_dir)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            sys.exit(f"error: port {args.port} is already in use on {HOST}; choose another with "
                     f"--port, or leave it out for a free one")
        sys.exit(f"error: cannot serve on {HOST}:{args.port} ({e.strerror})")


def main(argv=None):
    ctrl_c.hand_over()                           # from here KeyboardInterrupt: start(), then serve()
    args = build_parser().parse_args(argv)
    keep_running_if_stdout_closes()  # `demo.py | head -1`: the page is still served
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        server = start(args)
    except KeyboardInterrupt:
        sys.exit("stopped before serving")
    url = f"http://{HOST}:{server.server_address[1]}/"
    print(f"serving {url} (Ctrl-C stops it)", flush=True)  # flushed: a test or a pipe reads it now
    if args.open:
        webbrowser.open(url)
    serve(server)
    print("stopped")


if __name__ == "__main__":
    main()
