"""python demo.py as a real server on 127.0.0.1 and a free port, with the committed runs:
its answers are what the networks compute on mnist_style's image; every bad request gets a
4xx and a one-line JSON error, and the server goes on; Ctrl-C and kill stop it cleanly."""
import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
from urllib.parse import urlsplit

import numpy as np
import pytest

from data_loader import load_mnist
from demo.models import find_models
from demo.preprocess import mnist_style
from demo.server import MAX_BODY, PAGE, DemoHandler, DemoServer
from demo_helpers import NAMES, REFERENCE_RUNS, REPO, on_canvas, start_demo, stop_demo


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


def ask(server, method, path, body=None, headers=None):
    """One request: (status, Content-Type, body bytes)."""
    connection = http.client.HTTPConnection(*server, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
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


@pytest.fixture(scope="module")
def digit():
    """MNIST test digit 0 (a 7) drawn 9.5 times larger on a 280x280 canvas, and its label."""
    _, _, x_test, y_test = load_mnist()
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
    "above 1": (ink_body(SQUARE).replace("0.5", "2", 1), "ink must lie in [0, 1], found 0.5 to 2"),
    "below 0": (ink_body(SQUARE).replace("0.5", "-0.25", 1), "ink must lie in [0, 1], found -0.25 to 0.5"),
    "blank": (ink_body([[0] * 28] * 28), "no ink: draw a digit first"),
    "nested deep": (b"[" * 100_000 + b"]" * 100_000, "the body nests lists too deeply"),
}


def assert_one_line_error(status, body, expected_status, expected):
    assert status == expected_status, body
    assert body.endswith(b"\n") and body.count(b"\n") == 1, body
    assert json.loads(body)["error"].startswith(expected)


@pytest.mark.parametrize("case", BAD_BODIES)
def test_bad_ink_is_refused_in_one_line(server, case):
    body, expected = BAD_BODIES[case]
    status, kind, answer = ask(server, "POST", "/api/predict", body)
    assert kind == "application/json"
    assert_one_line_error(status, answer, 400, expected)


BAD_REQUESTS = {
    "unknown path": (b"GET /nothing HTTP/1.1\r\n\r\n", 404, "no such page: /nothing"),
    "a file's path": (b"GET /../../etc/passwd HTTP/1.1\r\n\r\n", 404, "no such page: /../../etc/passwd"),
    "page by POST": (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405, "/ takes GET, not POST"),
    "API by GET": (b"GET /api/predict HTTP/1.1\r\n\r\n", 405, "/api/predict takes POST, not GET"),
    "PUT": (b"PUT /api/predict HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405,
            "/api/predict takes POST, not PUT"),
    "made-up method": (b"BREW / HTTP/1.1\r\n\r\n", 405, "/ takes GET, not BREW"),
    "no length": (b"POST /api/predict HTTP/1.1\r\n\r\n{}", 411, "send the body with its Content-Length"),
    "length not a number": (b"POST /api/predict HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n{}", 411,
                            "send the body with its Content-Length"),
    "negative length": (b"POST /api/predict HTTP/1.1\r\nContent-Length: -5\r\n\r\n{}", 411,
                        "send the body with its Content-Length"),
    "over 2 MB": (b"POST /api/predict HTTP/1.1\r\nContent-Length: 3000000\r\n\r\n[[", 413,
                  f"the body is 3,000,000 bytes; the limit is {MAX_BODY:,}"),
    "body cut short": (b"POST /api/predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"ink\"", 400,
                       "the body ended after 6 of 100 bytes"),
    "not HTTP": (b"say hello there\r\n\r\n", 400, "Bad request version ('there')"),
    "not a method": (b"hello there\r\n\r\n", 400, "Bad HTTP/0.9 request type ('hello')"),
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
    """demo.py run to its end (an error before serving)."""
    return subprocess.run([sys.executable, str(REPO / "demo.py"), *map(str, flags)],
                          capture_output=True, text=True, timeout=120)


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
            connection.sendall(b"POST /api/predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"ink\"")
            answer = b"".join(iter(lambda: connection.recv(65536), b""))   # the socket stays open for writing
        head, _, body = answer.partition(b"\r\n\r\n")
        assert_one_line_error(int(head.split()[1]), body, 408, "the body stopped coming before its 100 bytes")
        assert ask(address, "GET", "/api/models")[0] == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
