"""The demo's web server: one page and a small JSON API, on 127.0.0.1 only.

    GET  /              the page (demo/page.html, read once at start)
    GET  /api/models    {"models": [names], "notes": [why a run is missing, how to train it]}
    POST /api/predict   {"ink": H x W numbers in [0, 1], 1 = ink, 28 <= H, W <= 512}
                        -> {"input": the 28x28 image the networks read,
                            "models": [{"name", "probabilities": 10 numbers}, ...]}
                        (a NumPy MLP's entry adds "hidden": its hidden layers' activations)
    POST /api/train     {"framework": "numpy" | "pytorch" | "both", <trainer flags>, e.g. "lr": 0.003}
                        -> {"ids": [one per framework], "folder"}: runs its trainer (demo/training.py)
    GET  /api/train     {"runs": [each run's status and latest figures], "digits": the test digits}
    POST /api/train/lr  {"lr": X} -> {"lr", "step": the first step that takes it, "ids"}
    POST /api/train/stop  Ctrl-C to every run still training -> {"stopping": ids}

Anything else gets a 4xx answer whose body is {"error": "<one line>"}, and the server goes
on; a failure nobody foresaw is a 500 in the same form. Only requests for this machine
(Host 127.0.0.1 or localhost) are answered, so a web page elsewhere cannot read the API
through DNS rebinding (421). Any web page the learner visits can still send this server
requests; so every POST must be JSON, `Content-Type: application/json` (415 otherwise: a
form, or a script's "simple" request, cannot send that type without the browser asking
this server first, and it answers no such question), and an Origin, where the browser
sends one, must be this server's own (403 otherwise). The client never names a file: the
page is the one file, read before serving starts.
"""
import json
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from demo.page_flags import Refused
from demo.training import TRAIN_DIR, Trainings
from harness.experiment import shown
from mnist_style import NoInk, mnist_style

PAGE = Path(__file__).resolve().parent / "page.html"
HOST = "127.0.0.1"          # this machine only: the demo is not for the network
MAX_BODY = 2 * 1024 * 1024  # bytes; 512x512 numbers written with 3 decimals take 1.6 MB at most
MAX_FLAGS_BODY = 4096       # bytes, for the training routes: every flag the page sets takes under 1 kB
SIDES = (28, 512)           # the smallest and largest drawing, per side
ROUTES = {"/": ("GET",), "/api/models": ("GET",), "/api/predict": ("POST",), "/api/train": ("GET", "POST"),
          "/api/train/lr": ("POST",), "/api/train/stop": ("POST",)}


class BadRequest(Exception):
    """A request the server refuses: an HTTP status and a one-line reason."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status


# ----------------------------------------------------------------------------- the request body

def _not_json(constant):
    """json.loads calls this for NaN, Infinity and -Infinity, which JSON itself does not allow."""
    raise BadRequest(400, f"{constant} is not a number JSON allows")


def _first_non_number(rows):
    """(row, column, value) of the first entry that is not a JSON number (true/false are not), or None."""
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if type(value) not in (int, float):
                return r, c, value
    return None


def parse_json(body):
    """The request body (bytes) as JSON; BadRequest says why it is not."""
    try:
        return json.loads(body, parse_constant=_not_json)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(400, f"the body is not JSON: {e}") from None
    except ValueError:                         # an integer of over 4,300 digits, which Python will not read
        raise BadRequest(400, "the body holds a number too large for a float") from None
    except RecursionError:
        raise BadRequest(400, "the body nests lists too deeply") from None


def parse_ink(body):
    """The request body (bytes) -> the drawing as an (H, W) float64 array; BadRequest says
    what is wrong with it."""
    request = parse_json(body)
    rows = request.get("ink") if isinstance(request, dict) else None
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise BadRequest(400, 'expected {"ink": [[...], ...]}: a list of rows, each a list of numbers')
    height, width = len(rows), len(rows[0]) if rows else 0
    if any(len(row) != width for row in rows):
        raise BadRequest(400, "the rows of ink differ in length")
    if not (SIDES[0] <= height <= SIDES[1] and SIDES[0] <= width <= SIDES[1]):
        raise BadRequest(400, f"ink is {height}x{width}; each side must be from {SIDES[0]} to {SIDES[1]}")
    bad = _first_non_number(rows)
    if bad:
        raise BadRequest(400, f"ink[{bad[0]}][{bad[1]}] is {json.dumps(bad[2])}, not a number")
    try:
        ink = np.array(rows, dtype=np.float64)
    except OverflowError:                      # an integer of hundreds of digits
        raise BadRequest(400, "ink holds a number too large for a float") from None
    if not np.isfinite(ink).all():             # 1e999 parses as infinity
        raise BadRequest(400, "ink holds a number too large for a float")
    if ink.min() < 0 or ink.max() > 1:
        raise BadRequest(400, f"ink must lie in [0, 1], found {ink.min():g} to {ink.max():g}")
    return ink


# ----------------------------------------------------------------------------- the answer

def predict(models, ink):
    """Preprocess the drawing as MNIST was made, and let every model read it."""
    try:
        image = mnist_style(ink)                                   # 28,28 float32
    except NoInk as e:
        raise BadRequest(400, str(e)) from None
    answers = []
    for model in models:
        probabilities, hidden = model.read(image)
        answer = {"name": model.name, "probabilities": probabilities.tolist()}
        if hidden:
            answer["hidden"] = [layer.tolist() for layer in hidden]  # 128, then 64 numbers
        answers.append(answer)
    return {"input": image.tolist(), "models": answers}


class DemoServer(ThreadingHTTPServer):
    """Serves the page and the API for a list of models (demo.models.find_models), to which
    each network trained from the page is added when its run ends (demo/training.py writes
    the runs under train_dir). Each request has its own thread, so one slow client does not
    hold up the page; the networks read one drawing at a time (the lock), as they were not
    written for threads."""
    # Connections the system holds while the server is busy accepting others. socketserver's
    # default, 5, reset some of twenty clients that connected at once.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, port, models, notes, train_dir=TRAIN_DIR):
        self.page = PAGE.read_bytes()
        self.models, self.notes = models, notes
        self.lock = threading.Lock()
        self.trainings = Trainings(train_dir, self.add_model)
        super().__init__((HOST, port), DemoHandler)
        port = self.server_address[1]
        self.hosts = {HOST, "localhost"}       # the names a request may use, with our port or without
        self.hosts |= {f"{name}:{port}" for name in self.hosts}
        # the page's own origin, as a browser writes it: scheme, name and port (none for 80)
        self.origins = {f"http://{name}" + ("" if port == 80 else f":{port}") for name in (HOST, "localhost")}

    def predict(self, ink):
        with self.lock:
            return predict(self.models, ink)

    def add_model(self, model):
        with self.lock:
            self.models = self.models + [model]

    def model_names(self):
        with self.lock:
            return [model.name for model in self.models]

    def handle_error(self, request, client_address):
        """A request that broke off (the client went away): one line, not a traceback."""
        error = sys.exc_info()[1]
        print(f"demo: request from {client_address[0]} failed: {type(error).__name__}: {error}",
              file=sys.stderr)


class DemoHandler(BaseHTTPRequestHandler):
    """One request per connection (HTTP/1.0, http.server's default, so a refused body is never
    read as the next request): the route decides; every refusal is send_error's one-line JSON."""
    timeout = 10  # seconds a client may go silent mid-request before it is dropped
    default_request_version = "HTTP/1.0"  # so a garbled request line gets a status line too

    def handle_one_request(self):
        """http.server's, with a last resort: a failure in a handler that nobody foresaw is
        answered 500 in one line of JSON, and logged in one line, instead of dropping the
        connection without a status."""
        try:
            super().handle_one_request()
        except ConnectionError:                 # the client went away: nobody to answer
            raise
        except Exception as e:
            reason = f"{type(e).__name__}: {e}"
            self.log_error("%s", f"failed on {self.command} {self.path}: {reason}")
            self.close_connection = True
            self.send_error(500, f"the server failed on this request ({reason})")

    def do_GET(self):
        path = self._route("GET")
        if path == "/":
            self._send(200, self.server.page, "text/html; charset=utf-8")
        elif path == "/api/models":
            self._send_json(200, {"models": self.server.model_names(), "notes": self.server.notes})
        elif path == "/api/train":
            self._send_json(200, self.server.trainings.state())

    def do_POST(self):
        path = self._route("POST")
        trainings = self.server.trainings
        try:
            if path:
                self._check_sender()
            if path == "/api/predict":
                self._send_json(200, self.server.predict(parse_ink(self._body(MAX_BODY))))
            elif path == "/api/train":
                self._send_json(200, trainings.start(parse_json(self._body(MAX_FLAGS_BODY))))
            elif path == "/api/train/lr":
                self._send_json(200, trainings.change_lr(parse_json(self._body(MAX_FLAGS_BODY))))
            elif path == "/api/train/stop":
                self._send_json(200, trainings.stop())
        except (BadRequest, Refused) as e:
            self.send_error(e.status, str(e))

    def __getattr__(self, name):
        """Any other method (do_PUT, do_DELETE, do_HEAD, ...) gets 405."""
        if name.startswith("do_"):
            return lambda: self._route(name[3:])
        raise AttributeError(name)

    def _route(self, method):
        """The path, when it exists and takes this method; otherwise None, once 404 or 405
        has been answered."""
        path = urlsplit(self.path).path
        host = self.headers.get("Host")         # HTTP/1.0 may leave it out; a browser never does
        if host is not None and host.lower() not in self.server.hosts:
            # 421 Misdirected Request: this server is not the one that name stands for
            self.send_error(421, f"this server answers for {HOST} or localhost only, not for {host!r}")
        elif path not in ROUTES:
            self.send_error(404, f"no such page: {path} (the page is /, the API /api/predict)")
        elif method not in ROUTES[path]:
            takes = " or ".join(ROUTES[path])
            self.send_error(405, f"{path} takes {takes}, not {method}", allow=", ".join(ROUTES[path]))
        else:
            return path
        return None

    def _check_sender(self):
        """A POST changes something (a run started, steered or stopped) or costs a model's
        work: it must come from this server's own page, or from a program that is not a
        browser (curl, a test), never from another site's page. A browser sends an Origin
        with every POST (the Fetch standard's rule); only this server's own is taken. And
        the body must be declared JSON: a plain HTML form can send text/plain to any
        address, no script needed, but application/json from another origin needs the
        browser to ask this server first (a CORS preflight, OPTIONS), which gets 405."""
        for origin in self.headers.get_all("Origin") or []:
            if origin.lower() not in self.server.origins:
                raise BadRequest(403, f"this API takes requests from its own page only, not from {origin!r}")
        kind = self.headers.get("Content-Type")
        if kind is None or self.headers.get_content_type() != "application/json":
            sent = f"not {kind!r}" if kind is not None else "none was given"
            raise BadRequest(415, f"send the body as JSON, with Content-Type: application/json ({sent})")

    def _body(self, limit):
        """The request's body, at most limit bytes, read only after its length is checked."""
        text = self.headers.get("Content-Length")
        if text is None:
            raise BadRequest(411, "send the body with its Content-Length")
        if not (text.isascii() and text.isdigit()):  # int() would also take "+2", "0_2", " 2"
            raise BadRequest(400, f"Content-Length must be a whole number of bytes, not {text!r}")
        length = int(text)
        if length > limit:                      # refused unread: the connection closes after the answer
            raise BadRequest(413, f"the body is {length:,} bytes; the limit is {limit:,}")
        try:
            body = self.rfile.read(length)
        except TimeoutError:                    # the client went silent for `timeout` seconds
            raise BadRequest(408, f"the body stopped coming before its {length:,} bytes") from None
        if len(body) < length:
            raise BadRequest(400, f"the body ended after {len(body):,} of {length:,} bytes")
        return body

    # ------------------------------------------------------------------------- writing answers

    def send_error(self, code, message=None, explain=None, allow=None):
        """Every refusal, ours and http.server's own (a malformed request line, say), as one
        line of JSON instead of http.server's HTML page."""
        reason = message or HTTPStatus(code).phrase
        self._send_json(code, {"error": " ".join(str(reason).split())}, allow)

    def _send_json(self, code, answer, allow=None):
        self._send(code, json.dumps(answer).encode() + b"\n", "application/json", allow)

    def _send(self, code, body, content_type, allow=None):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if allow:
            self.send_header("Allow", allow)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_request(self, code="-", size="-"):
        """Log refusals only: a line per stroke drawn would bury the ones that matter."""
        if isinstance(code, int) and code >= 400:
            super().log_request(code, size)


def serve(server):
    """Serve until Ctrl-C (or SIGTERM, which demo.py turns into it), then stop the runs still
    training, which save their finished epochs, and close the socket."""
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        for run in server.trainings.close():
            print(f"{run.id}: {run.status} ({shown(run.metrics.parent)})")
