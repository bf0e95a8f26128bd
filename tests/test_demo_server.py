"""python demo.py as a real server on 127.0.0.1 and a free port, with the committed runs:
its answers are what the networks compute on mnist_style's image; every bad request gets a
4xx and a one-line JSON error, and the server goes on; Ctrl-C and kill stop it cleanly."""
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import numpy as np
import pytest

from conftest import run_in_process
from demo.models import Model, find_models
from demo.server import MAX_BODY, PAGE, DemoHandler, DemoServer
from demo_helpers import NAMES, REFERENCE_RUNS, REPO, ask, ask_raw, assert_one_line_error, on_canvas, start_demo, stop_demo
from mnist_style import mnist_style


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(host, port) of demo.py serving the committed runs; at the end, it must not have
    logged a traceback."""
    log_path = tmp_path_factory.mktemp("demo") / "stderr.txt"
    with open(log_path, "w") as log:
        process, url = start_demo("--runs", *REFERENCE_RUNS, stderr=log)
        try:
            yield urlsplit(url).hostname, urlsplit(url).port
        finally:
            assert process.poll() is None, "the server stopped"
            stop_demo(process)
    assert "Traceback" not in log_path.read_text()


@pytest.fixture(scope="module")
def digit(mnist):
    """MNIST test digit 0 (a 7) drawn 9.5 times larger on a 280x280 canvas, and its label."""
    _, _, x_test, y_test = mnist
    return on_canvas(x_test[0].reshape(28, 28), 9.5, np.random.default_rng(0)), int(y_test[0])


# ----------------------------------------------------------------------------- right answers

def test_page_and_model_list(server):
    status, kind, body = ask(server, "GET", "/")
    assert (status, kind, body) == (200, "text/html; charset=utf-8", PAGE.read_bytes())
    status, kind, body = ask(server, "GET", "/api/models")
    assert (status, kind) == (200, "application/json")
    assert json.loads(body) == {"models": NAMES, "notes": []}


def test_predict_answers_what_the_networks_compute(server, digit):
    """The input is mnist_style's image, to the bit (JSON carries a float32 exactly); the
    probabilities are those the same networks give in this process, read from the same
    files: the same float32 arithmetic, so within its rounding (1e-6 of a probability)."""
    canvas, label = digit
    status, kind, body = ask(server, "POST", "/api/predict", json.dumps({"ink": canvas.tolist()}))
    assert (status, kind) == (200, "application/json")
    answer = json.loads(body)
    image = mnist_style(canvas)
    np.testing.assert_array_equal(np.array(answer["input"], np.float32), image)
    models, _ = find_models(REFERENCE_RUNS)
    assert [entry["name"] for entry in answer["models"]] == NAMES
    for model, entry in zip(models, answer["models"]):
        probabilities, hidden = model.read(image)
        np.testing.assert_allclose(entry["probabilities"], probabilities, rtol=0, atol=1e-6)
        assert np.argmax(entry["probabilities"]) == label
        assert [len(layer) for layer in entry.get("hidden", [])] == [len(layer) for layer in hidden]
    assert [len(layer) for layer in answer["models"][0]["hidden"]] == [128, 64]  # the NumPy MLP's


def test_largest_drawing_is_taken(server, digit):
    """512x512, with 3 decimals as the page sends them: under the body limit."""
    ink = np.zeros((512, 512))
    ink[100:380, 100:380] = np.round(digit[0], 3)
    body = json.dumps({"ink": ink.tolist()})
    assert len(body) < MAX_BODY
    assert ask(server, "POST", "/api/predict", body)[0] == 200


# ----------------------------------------------------------------------------- bad requests

def ink_body(rows):
    return json.dumps({"ink": rows})


SQUARE = [[0.5] * 28 for _ in range(28)]
BAD_BODIES = {
    "not JSON": (b"{ink: 1}", "the body is not JSON: Expecting property name enclosed in double quotes"),
    "not UTF-8": (b'{"ink": "\xff"}', "the body is not JSON: 'utf-8' codec can't decode byte 0xff"),
    "no ink key": (b"[1, 2]", 'expected {"ink": [[...], ...]}'),
    "ink not rows": (ink_body([1, 2, 3]), 'expected {"ink": [[...], ...]}'),
    "too small": (ink_body(SQUARE[:27]), "ink is 27x28; each side must be from 28 to 512"),
    "too large": (ink_body([[0] * 513] * 28), "ink is 28x513; each side must be from 28 to 512"),
    "ragged": (ink_body(SQUARE[:27] + [[0.5] * 29]), "the rows of ink differ in length"),
    "a string": (ink_body([["0.5"] + row[1:] for row in SQUARE]), 'ink[0][0] is "0.5", not a number'),
    "true": (ink_body(SQUARE[:3] + [[0, True] + [0] * 26] + SQUARE[4:]), "ink[3][1] is true, not a number"),
    "null": (ink_body(SQUARE[:27] + [[0] * 27 + [None]]), "ink[27][27] is null, not a number"),
    "NaN": (ink_body(SQUARE).replace("0.5", "NaN", 1), "NaN is not a number JSON allows"),
    "Infinity": (ink_body(SQUARE).replace("0.5", "-Infinity", 1), "-Infinity is not a number JSON allows"),
    "1e999": (ink_body(SQUARE).replace("0.5", "1e999", 1), "ink holds a number too large for a float"),
    "400 digits": (ink_body(SQUARE).replace("0.5", "1" + "0" * 400, 1), "ink holds a number too large for a float"),
    "5000 digits": (ink_body(SQUARE).replace("0.5", "1" * 5000, 1), "the body holds a number too large for a float"),
    "above 1": (ink_body(SQUARE).replace("0.5", "2", 1), "ink must lie in [0, 1], found 0.5 to 2"),
    "below 0": (ink_body(SQUARE).replace("0.5", "-0.25", 1), "ink must lie in [0, 1], found -0.25 to 0.5"),
    "blank": (ink_body([[0] * 28] * 28), "no ink: draw a digit first"),
    # the smallest float there is: scaled down to 20 pixels it is nothing, 0 / 0 for its centre of mass
    "subnormal ink": (ink_body([[5e-324] * 280] * 280), "no ink: the drawing is too faint to read"),
    "nested deep": (b"[" * 100_000 + b"]" * 100_000, "the body nests lists too deeply"),
}


@pytest.mark.parametrize("case", BAD_BODIES)
def test_bad_ink_is_refused_in_one_line(server, case):
    body, expected = BAD_BODIES[case]
    status, kind, answer = ask(server, "POST", "/api/predict", body)
    assert kind == "application/json"
    assert_one_line_error(status, answer, 400, expected)


POST_JSON = b"POST /api/predict HTTP/1.1\r\nContent-Type: application/json\r\n"   # a request line and its type
BAD_REQUESTS = {
    "unknown path": (b"GET /nothing HTTP/1.1\r\n\r\n", 404, "no such page: /nothing"),
    "a file's path": (b"GET /../../etc/passwd HTTP/1.1\r\n\r\n", 404, "no such page: /../../etc/passwd"),
    "page by POST": (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405, "/ takes GET, not POST"),
    "API by GET": (b"GET /api/predict HTTP/1.1\r\n\r\n", 405, "/api/predict takes POST, not GET"),
    "PUT": (b"PUT /api/predict HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405,
            "/api/predict takes POST, not PUT"),
    "made-up method": (b"BREW / HTTP/1.1\r\n\r\n", 405, "/ takes GET, not BREW"),
    "no length": (POST_JSON + b"\r\n{}", 411, "send the body with its Content-Length"),
    "length not a number": (POST_JSON + b"Content-Length: 1e3\r\n\r\n{}", 400,
                            "Content-Length must be a whole number of bytes, not '1e3'"),
    "negative length": (POST_JSON + b"Content-Length: -5\r\n\r\n{}", 400,
                        "Content-Length must be a whole number of bytes, not '-5'"),
    "length with a sign": (POST_JSON + b"Content-Length: +2\r\n\r\n{}", 400,
                           "Content-Length must be a whole number of bytes, not '+2'"),
    "length with a _": (POST_JSON + b"Content-Length: 0_2\r\n\r\n{}", 400,
                        "Content-Length must be a whole number of bytes, not '0_2'"),
    "over 2 MB": (POST_JSON + b"Content-Length: 3000000\r\n\r\n[[", 413,
                  f"the body is 3,000,000 bytes; the limit is {MAX_BODY:,}"),
    "body cut short": (POST_JSON + b"Content-Length: 100\r\n\r\n{\"ink\"", 400,
                       "the body ended after 6 of 100 bytes"),
    "not HTTP": (b"say hello there\r\n\r\n", 400, "Bad request version ('there')"),
    "not a method": (b"hello there\r\n\r\n", 400, "Bad HTTP/0.9 request type ('hello')"),
    # DNS rebinding: a page on another site whose name now points at 127.0.0.1 must not read the
    # model list (it names files on this machine)
    "another host": (b"GET /api/models HTTP/1.1\r\nHost: rebound.example\r\n\r\n", 421,
                     "this server answers for 127.0.0.1 or localhost only, not for 'rebound.example'"),
    "another host, port 80": (b"GET /api/models HTTP/1.1\r\nHost: rebound.example:80\r\n\r\n", 421,
                              "this server answers for 127.0.0.1 or localhost only, not for 'rebound.example:80'"),
    "a host's name in our name": (b"GET / HTTP/1.1\r\nHost: localhost.rebound.example\r\n\r\n", 421,
                                  "this server answers for 127.0.0.1 or localhost only"),
    "another port": (b"GET / HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n", 421,
                     "this server answers for 127.0.0.1 or localhost only, not for '127.0.0.1:1'"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_requests_are_refused_in_one_line(server, case):
    """The over-long body is refused from its Content-Length, before it is read."""
    request, expected_status, expected = BAD_REQUESTS[case]
    assert_one_line_error(*ask_raw(server, request), expected_status, expected)


def test_still_serving_after_the_bad_requests(server, digit):
    """Run after the refusals above (pytest keeps the file's order): the same server reads a digit."""
    status, _, body = ask(server, "POST", "/api/predict", json.dumps({"ink": digit[0].tolist()}))
    assert status == 200 and len(json.loads(body)["models"]) == len(NAMES)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LocalHost", "127.0.0.1:{port}", "localhost:{port}"])
def test_this_machines_names_are_answered(server, host):
    """With or without the port (a browser sends it; http.client too), in any case (names are
    case-insensitive). A request with no Host at all (HTTP/1.0; the raw ones above) is answered too."""
    status, _, body = ask(server, "GET", "/api/models", headers={"Host": host.format(port=server[1])})
    assert status == 200 and json.loads(body)["models"] == NAMES


def test_twenty_drawings_at_once_are_all_answered(server, digit):
    """Twenty clients connect at the same moment (a barrier): every one gets its 200, none a
    reset connection (a listen backlog of 5 dropped some)."""
    body = json.dumps({"ink": digit[0].tolist()})
    start_together = threading.Barrier(20)
    statuses = []

    def client():
        start_together.wait()
        try:
            statuses.append(ask(server, "POST", "/api/predict", body)[0])
        except OSError as e:
            statuses.append(type(e).__name__)

    threads = [threading.Thread(target=client) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 20


def test_an_unexpected_failure_is_a_500_in_one_line(capsys):
    """A model that fails in a way nobody foresaw (here: it divides by zero): the client still
    gets a status, 500 with a one-line JSON error; the server logs one line and goes on."""
    def broken(image):
        return 1 / 0
    server = DemoServer(0, [Model("Broken", "broken.npz", broken)], [])
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        address = server.server_address
        status, kind, body = ask(address, "POST", "/api/predict", json.dumps({"ink": SQUARE}))
        assert kind == "application/json"
        assert_one_line_error(status, body, 500, "the server failed on this request (ZeroDivisionError: division by zero)")
        assert ask(address, "GET", "/api/models")[0] == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    log = capsys.readouterr().err
    assert "ZeroDivisionError: division by zero" in log and "Traceback" not in log, log


# ----------------------------------------------------------------------------- starting and stopping

@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "kill"])
def test_without_models_it_serves_how_to_train_and_stops_cleanly(tmp_path, signum):
    with open(tmp_path / "stderr.txt", "w") as log:
        process, url = start_demo("--results-dir", tmp_path, stderr=log)
        address = urlsplit(url).hostname, urlsplit(url).port
        status, _, body = ask(address, "GET", "/api/models")
        code, out = stop_demo(process, signum)
    answer = json.loads(body)
    assert status == 200 and answer["models"] == []
    assert any("run `python numpy_nn/train.py --metrics" in note for note in answer["notes"])
    assert (code, out) == (0, "stopped\n")
    assert (tmp_path / "stderr.txt").read_text() == ""


def run_demo(*flags):
    """demo.py run to its end (an error before serving), its main(argv) in this process."""
    return run_in_process(demo_command().main, REPO / "demo.py", flags, timeout=120)


def test_a_port_in_use_is_one_line(tmp_path):
    """The port of a socket already listening: refused in one line, exit status 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_demo("--port", port, "--results-dir", tmp_path)
    assert done.returncode == 1
    assert done.stderr == (f"error: port {port} is already in use on 127.0.0.1; choose another "
                           f"with --port, or leave it out for a free one\n")


def test_a_broken_metrics_file_is_one_line(tmp_path):
    broken = tmp_path / "numpy_metrics.json"
    broken.write_text("{")
    done = run_demo("--results-dir", tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: {broken}") and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize("kind", ["FIFO", "folder"])
def test_runs_that_are_not_regular_files_are_one_line(tmp_path, kind):
    """--runs naming a FIFO (before: open() waited for a writer forever, and demo.py never
    served) or a folder: refused in one line, exit status 1, before anything is read."""
    path = tmp_path / "numpy_metrics.json"
    if kind == "FIFO":
        if not hasattr(os, "mkfifo"):
            pytest.skip("this system has no FIFOs (os.mkfifo)")
        os.mkfifo(path)
    else:
        path.mkdir()
    done = run_demo("--runs", path)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (f"error: {path} is not a regular file (a folder, FIFO, device or socket): "
                           f"give a run's metrics file\n")


def test_a_client_gone_silent_mid_body_is_answered_and_dropped(monkeypatch):
    """The handler waits DemoHandler.timeout seconds for a body that stops coming (here 0.2,
    in a server in this process), then answers 408 and serves the next request."""
    monkeypatch.setattr(DemoHandler, "timeout", 0.2)
    server = DemoServer(0, [], [])
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        address = server.server_address
        with socket.create_connection(address, timeout=60) as connection:
            connection.sendall(POST_JSON + b"Content-Length: 100\r\n\r\n{\"ink\"")
            answer = b"".join(iter(lambda: connection.recv(65536), b""))   # the socket stays open for writing
        head, _, body = answer.partition(b"\r\n\r\n")
        assert_one_line_error(int(head.split()[1]), body, 408, "the body stopped coming before its 100 bytes")
        assert ask(address, "GET", "/api/models")[0] == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def demo_command():
    """demo.py as a module (the name `demo` is the package demo/)."""
    spec = importlib.util.spec_from_file_location("demo_command", REPO / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("port", ["\u0668\u0660\u0660\u0660", "\uff18\uff10", "8000 ", "-1", "65536", "0x50"])
def test_a_port_is_ascii_digits_in_range(capsys, port):
    """'٨٠٠٠' (Arabic-Indic digits) and '８０' (full-width) are digits to str.isdigit and to
    int(), but not a port anyone types: argparse's one-line error, exit status 2."""
    with pytest.raises(SystemExit) as done:
        demo_command().build_parser().parse_args(["--port", port])
    assert done.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        f"argument --port: must be a port number from 0 to 65535, got {port!r}")


def test_ports_that_are_taken():
    assert [demo_command().port_number(text) for text in ["0", "8000", "65535"]] == [0, 8000, 65535]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("when", ["before any line", "once serving"])
def test_a_reader_gone_away_leaves_the_demo_serving(tmp_path, when):
    """`demo.py | head -1`: the reader closes the pipe, before the first line or after the
    address. The server goes on serving (the page is what it is for; the address was printed
    or given with --port), and Ctrl-C stops it as usual: exit status 0, nothing on stderr."""
    with open(tmp_path / "stderr.txt", "w") as log:
        if when == "once serving":
            process, url = start_demo("--results-dir", tmp_path, stderr=log)
            address = urlsplit(url).hostname, urlsplit(url).port
            process.stdout.close()
        else:
            address = "127.0.0.1", free_port()
            process = subprocess.Popen([sys.executable, str(REPO / "demo.py"), "--port", str(address[1]),
                                        "--results-dir", str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                                       stderr=log, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            process.stdout.close()
        try:
            for _ in range(600):                   # it may still be starting: up to 60 s
                try:
                    status = ask(address, "GET", "/api/models")[0]
                    break
                except ConnectionRefusedError:
                    assert process.poll() is None, "demo.py stopped"
                    time.sleep(0.1)
            assert status == 200
        finally:
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=60)
    assert (code, (tmp_path / "stderr.txt").read_text()) == (0, "")


# `--train-dir DIR`: a DIR inside the project but not under results/ (or a project file) is refused
# before the server starts, by the rule the trainers apply to their outputs
# (harness/flags.project_file_problem); so is a DIR that is a file. Before, the server started,
# made DIR and the run's folder at the page's first Start, and only then did the trainer refuse
# to write there (DIR a file: the request failed with a server error).
INSIDE = "docs/not_a_train_dir"                    # inside the project, beside its own files


@pytest.mark.parametrize("train_dir", [INSIDE, REPO / INSIDE, "README.md"], ids=["relative", "absolute", "a project file"])
def test_a_train_dir_in_the_project_outside_results_is_refused(tmp_path, train_dir):
    done = run_in_process(demo_command().main, REPO / "demo.py",
                          ["--results-dir", tmp_path, "--train-dir", train_dir], cwd=REPO, timeout=60)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (f"demo.py: error: argument --train-dir: {train_dir} is inside the project but not under "
                           f"results/: a run writes its files under results/ or outside the project, never over "
                           f"the project's own\n")
    assert not (REPO / INSIDE).exists()


def test_a_train_dir_that_is_a_file_is_refused(tmp_path):
    file = tmp_path / "runs.txt"
    file.write_text("not a folder")
    done = run_demo("--results-dir", tmp_path, "--train-dir", file)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"demo.py: error: argument --train-dir: {file} is a file, not a folder\n"
    assert file.read_text() == "not a folder"
