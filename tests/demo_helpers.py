"""What the demo's tests share: the committed trained runs, an MNIST digit drawn larger on a
canvas, `python demo.py` started as a learner starts it, on a free port, and one request to it."""
import http.client
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_style import crop_to_ink

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "results" / "reference"
# The committed runs with their weights: both MLPs, and both CNNs of seed 0.
REFERENCE_RUNS = [REFERENCE / "numpy_metrics.json", REFERENCE / "pytorch_metrics.json",
                  REFERENCE / "cnn" / "numpy_seed0_metrics.json",
                  REFERENCE / "cnn" / "pytorch_seed0_metrics.json"]
NAMES = ["NumPy MLP", "PyTorch MLP", "NumPy CNN", "PyTorch CNN"]
CANVAS = 280


def on_canvas(image, scale, rng):
    """An MNIST image (28, 28) redrawn on a 280x280 canvas: its ink's box scaled by `scale`
    with each pixel a block of its grey (PIL's nearest neighbour), at a place drawn from rng.
    Returns the canvas."""
    digit = crop_to_ink(image)
    height, width = (round(side * scale) for side in digit.shape)
    big = np.asarray(Image.fromarray(digit, "F").resize((width, height), Image.NEAREST))
    canvas = np.zeros((CANVAS, CANVAS), np.float32)
    top, left = rng.integers(0, CANVAS - height + 1), rng.integers(0, CANVAS - width + 1)
    canvas[top:top + height, left:left + width] = big
    return canvas


def _ctrl_c_as_usual():
    """In the child: SIGINT back to its default (a suite started with `&` has it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_demo(*flags, stderr):
    """`python demo.py --port 0 <flags>`; returns (process, url) once it serves. stderr: an
    open file for what it logs (a pipe that nobody reads could fill and stall the server)."""
    process = subprocess.Popen([sys.executable, str(REPO / "demo.py"), "--port", "0", *map(str, flags)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True,
                               preexec_fn=_ctrl_c_as_usual)
    for line in process.stdout:
        if line.startswith("serving "):
            return process, line.split()[1]
    raise AssertionError(f"demo.py stopped before serving, exit status {process.wait()}")


def stop_demo(process, signum=signal.SIGINT):
    """Stop the server as a learner would (Ctrl-C), or as kill does; returns (exit status,
    what it printed after 'serving')."""
    process.send_signal(signum)
    try:
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, out


JSON = {"Content-Type": "application/json"}   # what every POST must say it sends (as the page does)


def ask(server, method, path, body=None, headers=None):
    """One request: (status, Content-Type, body bytes). A POST says it sends JSON unless
    headers are given."""
    if headers is None:
        headers = JSON if method == "POST" else {}
    connection = http.client.HTTPConnection(*server, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


def ask_raw(server, request):
    """Send bytes as they are (a request http.client would not write); (status, body)."""
    with socket.create_connection(server, timeout=60) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)  # all sent: a body shorter than announced ends here
        answer = b"".join(iter(lambda: connection.recv(65536), b""))
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def assert_one_line_error(status, body, expected_status, expected):
    """An answer (status, body bytes) is the refusal expected: its status, and one line of
    JSON whose error starts with expected."""
    assert status == expected_status, body
    assert body.endswith(b"\n") and body.count(b"\n") == 1, body
    assert json.loads(body)["error"].startswith(expected)
