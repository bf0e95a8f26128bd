"""Training from the page (demo/training.py, demo/live.py, Session.set_lr in harness/session.py).

In this process: a change of learning rate is the update rule with the new rate from the next
step on, and both twins, changed at the same step, still agree in float64. Against a real
`python demo.py`: a run started by the API, its progress, a change of rate for both twins at
the same step, stop (the finished epochs kept, marked interrupted), the network reading digits
at once, bad parameters (the trainer's own message), a second start (409), Ctrl-C on the
server (the runs saved) and kill -9 (the runs stop all the same), and what a web page on
another site may not send (not JSON, another origin) or smuggle in a value (a flag of its
own). Small runs: --limit 500, the MLP."""
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import numpy as np
import pytest

from demo import page_flags, training
from demo.live import STARTED_TOGETHER, UNITS, first_layer, started_together
from demo.models import Model
from demo.page_flags import Refused, trainer_argv
from demo.server import MAX_BODY, MAX_FLAGS_BODY
from demo_helpers import (
    JSON,
    REPO,
    ask,
    ask_raw,
    assert_one_line_error,
    start_demo,
    stop_demo,
)
from harness import threads
from harness.flags import build_parser
from harness.session import Session
from numpy_nn.utils import cosine_lr

NEW_LR = 0.01
# How far apart the twins' first steps may end, in seconds: the release is two lines on two
# pipes; each twin wakes on its line (a blocked read, not a poll), and a step 1 of the MLP at
# batch 50 takes milliseconds (PyTorch's first, with its lazy setup, ~10 ms). A quarter second
# leaves room for a busy 2-core machine's scheduling, and is a tenth of torch's import here.
FIRST_STEPS = 0.25


def flags(framework, *argv):
    return build_parser(framework, "").parse_args(["--no-progress", *argv])


@pytest.fixture(scope="module")
def data():
    """Random images and labels (the update rule does not care what it learns): 256 to train on,
    64 to test."""
    rng = np.random.default_rng(0)
    return (rng.random((256, 784)), rng.integers(0, 10, 256), rng.random((64, 784)), rng.integers(0, 10, 64))


class ChangeAt:
    """An observer that sets the rate NEW_LR after step `at`, and keeps each step's parameters
    and gradients (NumPy: flat_params, flat_grads) to check the update rule against."""

    def __init__(self, at):
        self.at, self.params, self.grads, self.lrs = at, {}, {}, {}

    def step_done(self, session, loss):
        if session.step == self.at:
            session.set_lr(NEW_LR)
        self.lrs[session.step] = session.lr()
        if session.framework == "numpy":
            net = session.watch.net
            self.params[session.step] = net.flat_params.copy()
            self.grads[session.step] = net.flat_grads.copy()

    def epoch_done(self, session):
        pass


def train(framework, data, observer, *argv, monkeypatch):
    if framework == "numpy":
        from numpy_nn.train import train
    else:
        from pytorch_nn.train import train
    monkeypatch.setattr(Session, "observer", observer)
    _, run = train(flags(framework, "--dtype", "float64", "--batch-size", "64", *argv), *data)
    return run.record


def test_a_new_rate_is_the_next_steps_rate(data, monkeypatch):
    """Plain SGD, constant rate 0.1, changed after step 3: step 3 moved the weights by
    -0.1 * its gradient, step 4 by -NEW_LR * its gradient (the rule p = p - lr g). float64:
    the difference of two weights within a few ulps of the weights (~1e-16 of 0.1), 1e-15."""
    watch = ChangeAt(3)
    record = train("numpy", data, watch, "--optimizer", "sgd", "--lr", "0.1", "--schedule", "constant",
                   "--epochs", "2", monkeypatch=monkeypatch)
    for step, lr in [(3, 0.1), (4, NEW_LR), (5, NEW_LR)]:
        np.testing.assert_allclose(watch.params[step] - watch.params[step - 1], -lr * watch.grads[step],
                                   rtol=0, atol=1e-15)
    assert record["lr_changes"] == [{"step": 4, "lr": NEW_LR}]


def test_with_cosine_the_schedule_goes_on_from_the_new_peak(data, monkeypatch):
    """After the change at step 3 the rate of step t + 1 is cosine_lr(NEW_LR, t, T), as if
    --lr had been NEW_LR; in both twins (closed form against torch's recursive one, 1e-12
    relative: a few roundings per step)."""
    for framework in ("numpy", "pytorch"):
        watch = ChangeAt(3)
        train(framework, data, watch, "--epochs", "2", monkeypatch=monkeypatch)
        total = 2 * 4
        assert math.isclose(watch.lrs[2], cosine_lr(3e-3, 2, total), rel_tol=1e-12)
        for step in range(3, total):
            assert math.isclose(watch.lrs[step], cosine_lr(NEW_LR, step, total), rel_tol=1e-12), (framework, step)


def test_twins_changed_at_the_same_step_agree(data, monkeypatch):
    """Adam, cosine, float64, the rate changed after step 5 in both: the records agree to
    1e-10 relative (the twins' usual float64 agreement, tests/test_equivalence.py), and differ
    from a run without the change (the change did something)."""
    records = [train(framework, data, ChangeAt(5), "--epochs", "3", monkeypatch=monkeypatch)
               for framework in ("numpy", "pytorch")]
    unchanged = train("numpy", data, ChangeAt(0), "--epochs", "3", monkeypatch=monkeypatch)
    for key in ("train_loss", "test_loss"):
        a, b = ([epoch[key] for epoch in record["epochs"]] for record in records)
        np.testing.assert_allclose(a, b, rtol=1e-10)
        assert abs(a[-1] - unchanged["epochs"][-1][key]) > 1e-3
    assert records[0]["lr_changes"] == records[1]["lr_changes"] == [{"step": 6, "lr": NEW_LR}]


def test_a_pytorch_first_layer_is_read_without_a_warning():
    """demo/live.py's snapshot of the PyTorch MLP's first layer: its first UNITS units, exactly
    the weights in float64, and no warning (np.array on a tensor called torch's __array__
    without the copy keyword NumPy 2 asks for, and the live log showed NumPy's DeprecationWarning)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    layer = torch.nn.Linear(784, 32)
    session = SimpleNamespace(framework="pytorch", args=SimpleNamespace(model="mlp"),
                              watch=SimpleNamespace(weights=[layer.weight]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        units, side = first_layer(session)
    assert (side, units.dtype) == (28, np.float64)
    np.testing.assert_array_equal(units, layer.weight.detach().double().numpy()[:UNITS])  # float32 -> 64: exact


# ----------------------------------------------------------------------------- the page's flags

def refusal(framework, argv):
    """The trainer's own one-line message for argv (argparse's, as its command prints it)."""
    parser = build_parser(framework, "")
    messages = []
    parser.error = lambda message: (messages.append(message), exit(2))
    with pytest.raises(SystemExit):
        parser.parse_args(argv)
    return messages[0]


def command_line(flags):
    """The flags as a learner would type them: {"hidden": [32, 16], "lr": 1} is --hidden 32 16 --lr=1."""
    argv = []
    for key, value in flags.items():
        flag = "--" + key.replace("_", "-")
        argv += [flag, *map(str, value)] if isinstance(value, list) else [f"{flag}={value}"]
    return argv


# Values of the right kind (numbers, a choice's string) that the trainer's parser refuses
BAD_FLAGS = [{"lr": -1}, {"epochs": 1.5}, {"hidden": [0]}, {"hidden": [32, -1]},
             {"model": "cnn", "hidden": [10]}, {"dropout": 1}, {"batch_size": 0},
             {"batch-size": 0}, {"hidden": [32] * 11}, {"hidden": [1025]}]


@pytest.mark.parametrize("flags", BAD_FLAGS, ids=json.dumps)
def test_trainer_argv_is_refused_with_the_flags_message(server, flags):
    """POST /api/train answers 400 with what `python numpy_nn/train.py <the same flags>` says,
    the flag named as the body spells its key (batch_size or batch-size, not --batch-size)."""
    key = list(flags)[-1]                      # each case's bad flag is its last
    message = refusal("numpy", command_line(flags))
    prefix = f"argument --{key.replace('_', '-')}: "
    assert message.startswith(prefix)
    status, _, body = ask(server[:2], "POST", "/api/train", json.dumps({"framework": "numpy", **flags}))
    assert (status, json.loads(body)) == (400, {"error": f"{key}: {message[len(prefix):]}"})


SERVER_REFUSALS = {
    "a file to write": ({"metrics": "/etc/passwd"}, "metrics is not one the page sets; it sets framework, model, lr,"),
    "a data folder": ({"data_dir": "/"}, "data_dir is not one the page sets"),
    "no such framework": ({"framework": "jax"}, 'framework must be numpy, pytorch or both, not "jax"'),
    "an object": ({"lr": {"x": 1}}, 'lr: give a number, not {"x": 1}'),
    "true for a value": ({"lr": True}, "lr: give a number, not true"),
    "a string for a number": ({"lr": "fast"}, 'lr: give a number, not "fast"'),
    "no such choice": ({"model": "rnn"}, 'model: give one of "mlp", "cnn", not "rnn"'),
    "a number for a choice": ({"dtype": 64}, 'dtype: give one of "float32", "float64", not 64'),
    "a list for a number": ({"epochs": [1, 2]}, "epochs: give a number, not [1, 2]"),
    "a number for a list": ({"hidden": 32}, "hidden: give a list of numbers, e.g. [128, 64], not 32"),
    "an empty list": ({"hidden": []}, "hidden: give a list of numbers, e.g. [128, 64], not []"),
    "a flag twice": ({"batch_size": 32, "batch-size": 64}, "batch_size and batch-size are the same flag: give it once"),
    "a switch's 1": ({"augment": 1}, "augment: give true or false, not 1"),
    "a switch's string": ({"augment": "false"}, 'augment: give true or false, not "false"'),
    "a switch's null": ({"augment": None}, "augment: give true or false, not null"),
    "a switch's list": ({"augment": [True]}, "augment: give true or false, not [true]"),
}


@pytest.mark.parametrize("case", SERVER_REFUSALS)
def test_what_the_page_does_not_set_is_refused(server, case):
    body, expected = SERVER_REFUSALS[case]
    status, _, answer = ask(server[:2], "POST", "/api/train", json.dumps(body))
    assert status == 400 and json.loads(answer)["error"].startswith(expected)


@pytest.mark.slow  # a real server that starts real trainers
def test_a_switch_takes_true_and_false(own_server):
    """--augment, a flag with no value: true in the body is the flag given (the record's
    augment ranges set), false the flag left out (null: no augmentation). Before, false went
    to the trainer as --augment=False, and came back as argparse's 400 "augment: ignored
    explicit argument 'False'"."""
    assert [name for name, action in page_flags.ACTIONS.items() if action.nargs == 0] == ["augment"]  # the only one
    for number, augment in enumerate([False, True], start=1):
        status, answer = post(own_server, "/api/train", {"framework": "numpy", "augment": augment,
                                                         "limit": 100, "epochs": 1})
        assert status == 200, answer
        assert answer["ids"] == [f"numpy-{number}"]
        run = until(own_server, lambda runs: runs[-1]["status"] == "completed")[-1]
        assert run["network"] in get(own_server, "/api/models")["models"]   # completed: it reads digits
        assert ("--augment" in run["flags"]) is augment
        config = json.loads((REPO / run["metrics"]).read_text())["config"]
        assert (config["augment"] is not None) is augment
        assert feed(run, "ready") == []           # a run started alone does not wait


def test_nothing_to_stop_or_change(server):
    assert ask(server[:2], "POST", "/api/train/stop")[:1] == (409,)
    status, _, body = ask(server[:2], "POST", "/api/train/lr", json.dumps({"lr": -2}))
    assert refusal("numpy", ["--lr=-2"]) == "argument --lr: must be positive, got -2"
    assert (status, json.loads(body)["error"]) == (400, "lr: must be positive, got -2")


# ----------------------------------------------------------------------------- what a web page may send

@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """(host, port, folder) of a demo.py that the requests below must not get to start anything."""
    yield from serving(tmp_path_factory.mktemp("guarded"))


def assert_nothing_started(server):
    """No run listed, no run's folder made (none started, even to fail)."""
    assert get(server)["runs"] == []
    assert not (server[2] / "runs").exists() or list((server[2] / "runs").iterdir()) == []


EVIL = "http://evil.example"
# What a page on another site can make a browser send (a form: text/plain, urlencoded or
# multipart, with no script; a script's fetch: any of those, or JSON after a CORS preflight
# that the server refuses), and what a program might: each refused before its body is read.
FOREIGN = {
    "another site, as a form": ({"Origin": EVIL, "Content-Type": "text/plain"}, 403,
                                "this API takes requests from its own page only, not from 'http://evil.example'"),
    "another site, as JSON": ({"Origin": EVIL, **JSON}, 403, "this API takes requests from its own page only"),
    "a sandboxed page": ({"Origin": "null", **JSON}, 403, "this API takes requests from its own page only, not from 'null'"),
    "our name, another port": ({"Origin": "http://127.0.0.1:1", **JSON}, 403, "this API takes requests from its own page only"),
    "our address by https": ({"Origin": "https://127.0.0.1:{port}", **JSON}, 403,
                             "this API takes requests from its own page only"),
    "a form with no origin": ({"Content-Type": "text/plain"}, 415,
                              "send the body as JSON, with Content-Type: application/json (not 'text/plain')"),
    "an urlencoded form": ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "send the body as JSON"),
    "a multipart form": ({"Content-Type": "multipart/form-data; boundary=x"}, 415, "send the body as JSON"),
    "JSON's look-alike": ({"Content-Type": "application/json-seq"}, 415, "send the body as JSON"),
    "no type": ({}, 415, "send the body as JSON, with Content-Type: application/json (none was given)"),
}
# The audit's bodies: each would change something if it were taken
BODIES = {"/api/train": {"framework": "numpy", "limit": 500, "epochs": 1}, "/api/train/lr": {"lr": 0.01},
          "/api/train/stop": {}, "/api/predict": {"ink": [[0.0] * 10 + [1.0] * 8 + [0.0] * 10] * 28}}


@pytest.mark.parametrize("path", BODIES)
@pytest.mark.parametrize("case", FOREIGN)
def test_only_the_pages_own_json_is_taken(guarded, case, path):
    """CSRF: every POST must say it sends JSON (415), and an Origin, where one is sent, must
    be the page's own (403), or nothing happens. Before, the first case started a trainer
    (200), and /api/train/lr and /api/train/stop took such requests too."""
    headers, status, expected = FOREIGN[case]
    headers = {key: value.format(port=guarded[1]) for key, value in headers.items()}
    answer = ask(guarded[:2], "POST", path, json.dumps(BODIES[path]), headers)
    assert answer[1] == "application/json"
    assert_one_line_error(answer[0], answer[2], status, expected)
    assert_nothing_started(guarded)


@pytest.mark.parametrize("origin", ["http://127.0.0.1:{port}", "http://localhost:{port}", None])
def test_the_pages_own_requests_are_taken(guarded, origin):
    """The page's own origin, by either name, or none (curl, a script: not a browser), with
    JSON, a charset too: past the guard (stop: 409, nothing to stop; a drawing: read)."""
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if origin:
        headers["Origin"] = origin.format(port=guarded[1])
    assert ask(guarded[:2], "POST", "/api/train/stop", "{}", headers)[0] == 409
    status, _, body = ask(guarded[:2], "POST", "/api/predict", json.dumps(BODIES["/api/predict"]), headers)
    assert status == 200 and json.loads(body)["input"]


# Values that smuggled a flag of their own past the page's list (a list's words went to the
# command line as they were), or that the trainer only refused once started. Each is a 400
# now, with the trainer started for none.
SMUGGLED = {
    "--data-dir": ({"hidden": [32, "--data-dir", "{folder}/elsewhere"]}, 'hidden: give a number, not "--data-dir"'),
    "--dataset": ({"hidden": [32, "--dataset", "fashion-mnist"]}, 'hidden: give a number, not "--dataset"'),
    "--exercise": ({"hidden": [32, "--exercise", "mlp_backward"]}, 'hidden: give a number, not "--exercise"'),
    "--device": ({"framework": "pytorch", "hidden": [32, "--device", "cpu"]}, 'hidden: give a number, not "--device"'),
    "--help": ({"hidden": [32, "--help"]}, 'hidden: give a number, not "--help"'),   # before: no answer at all
    "a number as a string": ({"epochs": "1"}, 'epochs: give a number, not "1"'),
    "a flag as a choice": ({"model": "--help"}, 'model: give one of "mlp", "cnn", not "--help"'),
    "more than the data": ({"limit": 60001}, "limit: 60001 is more than the 60000 training samples"),
    "too many layers": ({"hidden": [32] * 11}, "hidden: at most 10 layers, got 11"),
    "too wide a layer": ({"hidden": [100_000]}, "hidden: at most 1024 units a layer, got 100000"),
}


@pytest.mark.parametrize("case", SMUGGLED)
def test_no_flag_is_smuggled_in_a_value(guarded, case):
    """Each value is typed as the trainer's parser types its flag (a list of numbers for
    --hidden, a choice's own strings), and checked by that parser and against the data's
    size in the server: 400, nothing started, no file written where a smuggled flag said."""
    flags, expected = SMUGGLED[case]
    flags = json.loads(json.dumps(flags).replace("{folder}", str(guarded[2])))
    status, answer = post(guarded, "/api/train", {"framework": "numpy", "limit": 500, "epochs": 1, **flags})
    assert (status, answer) == (400, {"error": expected})
    assert_nothing_started(guarded)
    assert not (guarded[2] / "elsewhere").exists()


def test_the_most_a_page_may_send_to_train(guarded):
    """Bounded requests: 200,000 layer sizes (800 kB, under the drawing's 2 MB) once grew a
    trainer to 1.7 GB that ignored Stop, and made every later GET 4 MB. The training routes
    now take 4,096 bytes at most (every flag the page sets, each a number of 17 digits, fits in
    under 1 kB), and a longer body is refused unread (413)."""
    body = json.dumps({"framework": "numpy", "limit": 500, "epochs": 1, "hidden": [32] * 200_000}).encode()
    assert len(body) < MAX_BODY
    # its first 1,000 bytes only: the server answers from the Content-Length and closes, and
    # a client still sending the rest may find the connection reset before it reads the answer
    head = f"POST /api/train HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    status, answer = ask_raw(guarded[:2], head.encode() + body[:1000])
    assert_one_line_error(status, answer, 413, f"the body is {len(body):,} bytes; the limit is {MAX_FLAGS_BODY:,}")
    every_flag = {"framework": "both", **{key: 0.123456789012345678 for key in page_flags.FLAGS}}
    assert len(json.dumps(every_flag)) < 1024
    assert_nothing_started(guarded)


@pytest.mark.parametrize("framework", ["numpy", "pytorch"])
def test_the_trainers_bound_the_hidden_layers(framework, capsys):
    """The bound is the trainer's own, so its command line refuses it too, in one line
    (exit status 2), and the page gets the same message: at most 10 layers of 1024 units."""
    parser = build_parser(framework, "")
    assert parser.parse_args(["--hidden", *["1024"] * 6]).hidden == [1024] * 6
    for sizes, message in [(["32"] * 11, "at most 10 layers, got 11"), (["64", "1025"], "at most 1024 units a layer, got 1025")]:
        with pytest.raises(SystemExit) as done:
            parser.parse_args(["--hidden", *sizes])
        err = capsys.readouterr().err
        assert done.value.code == 2 and err.count("\n") == 1 and err.endswith(f"argument --hidden: {message}\n"), err


# A stand-in for demo/live.py's process: a feed that says the run started (10 steps) and has
# taken step S, then SECONDS of no step (the trainer evaluating and saving, or ending); it
# never answers a hold.
STAND_IN = """import json, sys, time
with open(sys.argv[1], "w") as feed:
    feed.write(json.dumps({"kind": "start", "total_steps": 10, "steps_per_epoch": 5}) + "\\n")
    feed.write(json.dumps({"kind": "tick", "step": int(sys.argv[2]), "epoch": 1, "loss": 1.0, "lr": 0.1,
                           "time": time.time()}) + "\\n")
time.sleep(float(sys.argv[3]))
"""


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """stand_in(S, SECONDS): Trainings holding one Run whose process is STAND_IN."""
    popen, processes, behaviour = subprocess.Popen, [], []

    def start(command, **kwargs):                   # Run's command, with the stand-in for demo.live
        feed = command[command.index("demo.live") + 2]
        processes.append(popen([sys.executable, "-c", STAND_IN, feed, *behaviour], **kwargs))
        return processes[-1]
    monkeypatch.setattr(training.subprocess, "Popen", start)

    def make(step, seconds, *more):
        behaviour[:] = [str(step), str(seconds), *map(str, more)]
        trainings = training.Trainings(tmp_path, on_model=None)
        run = training.Run(1, "numpy", [], flags("numpy"), tmp_path)
        trainings.runs = [run]
        while not run.feed.exists() or run.feed.read_text().count("\n") < 2:  # its feed written
            time.sleep(0.01)
        return trainings
    yield make
    for process in processes:
        process.kill()
        process.wait()


def test_lr_after_the_last_step_is_refused_at_once(stand_in):
    """A run past its last step (evaluating, saving) takes no new rate: 409 at once, not a
    wait for a step boundary that will not come (the stand-in lives 30 s; 10 s is far above
    the time a refusal takes)."""
    trainings = stand_in(10, 30)
    t0 = time.monotonic()
    with pytest.raises(Refused) as refused:
        trainings.change_lr({"lr": NEW_LR})
    assert (refused.value.status, str(refused.value)) == (409, "no training is running")
    assert time.monotonic() - t0 < 10


def test_lr_when_the_runs_end_while_held_is_refused(stand_in):
    """A run at step 3 that ends (after 1 s) before it reaches a step boundary: 409, the runs ended."""
    with pytest.raises(Refused) as refused:
        stand_in(3, 1).change_lr({"lr": NEW_LR})
    assert (refused.value.status, str(refused.value)) == (409, "the runs ended before a step boundary")


# A stand-in that has taken step 3 of 10 and then, for SECONDS, reaches no step boundary (a
# long step), writing each line the server sends it to LOG.
LISTENER = STAND_IN.replace("time.sleep(float(sys.argv[3]))", """import select
end = time.time() + float(sys.argv[3])
with open(sys.argv[4], "w") as log:
    while time.time() < end:
        if select.select([sys.stdin], [], [], 0.05)[0]:
            log.write(sys.stdin.readline()); log.flush()
""")


def test_a_rate_change_that_times_out_leaves_no_run_holding(stand_in, tmp_path, monkeypatch):
    """A run that reaches no step boundary within HOLD_SECONDS: the change is a 503, and the
    run is sent "go" after its "hold", so it does not stop at its next boundary to wait for a
    rate that will never come (it was sent nothing after the hold, and would have waited
    forever). HOLD_SECONDS 1 here: the stand-in takes 20 s, so the wait runs out first."""
    log = tmp_path / "stdin.txt"
    monkeypatch.setattr(training, "HOLD_SECONDS", 1)
    monkeypatch.setitem(globals(), "STAND_IN", LISTENER)
    trainings = stand_in(3, 20, log)
    with pytest.raises(Refused) as refused:
        trainings.change_lr({"lr": NEW_LR})
    assert (refused.value.status, str(refused.value)) == (503, "the runs did not reach a step boundary within 1 s")
    deadline = time.monotonic() + 10
    while log.read_text().split() != ["hold", "go"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.read_text().split() == ["hold", "go"]


# LISTENER, stopping on Ctrl-C as a trainer does (a suite started with & has SIGINT ignored)
LONG_STEP = LISTENER.replace("import json, sys, time", "import json, signal, sys, time\n"
                             "signal.signal(signal.SIGINT, signal.default_int_handler)")


def test_a_stop_is_not_held_up_by_a_rate_change(stand_in, tmp_path, monkeypatch):
    """A rate change waits for a step boundary, here one that does not come (HOLD_SECONDS set
    to 30: the change would wait that long). A Stop sent meanwhile is answered at once (1 s:
    it signals one process), and the change then ends as well, its run having ended. Before,
    the change held the lock a Stop takes: the audit's Stop waited 34 s."""
    log = tmp_path / "stdin.txt"
    monkeypatch.setattr(training, "HOLD_SECONDS", 30)
    monkeypatch.setitem(globals(), "STAND_IN", LONG_STEP)
    trainings = stand_in(3, 60, log)
    answers = []

    def change():
        try:
            answers.append(trainings.change_lr({"lr": NEW_LR}))
        except Refused as e:
            answers.append((e.status, str(e)))
    changing = threading.Thread(target=change)
    changing.start()
    deadline = time.monotonic() + 10
    while not (log.exists() and "hold" in log.read_text()):   # the change is waiting
        assert time.monotonic() < deadline
        time.sleep(0.01)
    t0 = time.monotonic()
    assert trainings.stop() == {"stopping": ["numpy-1"]}
    assert time.monotonic() - t0 < 1
    changing.join(timeout=10)
    assert answers == [(409, "the runs ended before a step boundary")]


# A stand-in whose run completed: its record says so, and it ends
COMPLETED = """import json, sys
with open(sys.argv[1], "w") as feed:
    feed.write(json.dumps({"kind": "start", "total_steps": 10, "steps_per_epoch": 5}) + "\\n")
with open(sys.argv[1].replace("_feed.jsonl", "_metrics.json"), "w") as record:
    json.dump({"status": "completed", "epochs": [], "diverged": None}, record)
"""


def test_completed_means_the_network_reads_digits(tmp_path, monkeypatch):
    """A run's status turns completed only once its network has joined the ones that read
    digits. Loading it is held here (an Event) to see the run meanwhile: still running.
    Before, completed came first, while the network was still loading (in the audit, the
    page showed completed 1-2 s before /api/predict used the network)."""
    loading, loaded, joined = threading.Event(), threading.Event(), []

    def slow_find_models(paths):
        loading.set()
        loaded.wait(timeout=60)
        return [Model("NumPy MLP", "numpy_model.npz", None)], []
    monkeypatch.setattr(training, "find_models", slow_find_models)
    popen = subprocess.Popen

    def start(command, **kwargs):               # Run's command, with COMPLETED for demo.live
        return popen([sys.executable, "-c", COMPLETED, command[command.index("demo.live") + 2]], **kwargs)
    monkeypatch.setattr(training.subprocess, "Popen", start)
    trainings = training.Trainings(tmp_path, on_model=joined.append)
    trainings.start({"framework": "numpy", "limit": 100, "epochs": 1})
    run = trainings.runs[0]
    assert loading.wait(timeout=60)             # the process ended; its network is loading
    state = trainings.state()["runs"][0]
    assert (state["status"], state["network"], joined) == ("running", None, [])
    loaded.set()
    run.waiter.join(timeout=60)
    state = trainings.state()["runs"][0]
    assert (state["status"], state["network"]) == ("completed", run.name)
    assert [model.name for model in joined] == [run.name]


def test_the_reference_lists_the_keys_the_server_takes():
    """docs/reference.md's demo API names exactly page_flags.FLAGS, in their order (before, it
    said "the trainers' flags as on the command line", which the server does not take)."""
    text = (REPO / "docs" / "reference.md").read_text()
    listed = text[text.index("and no other:"):text.index("Any other key")]
    names = re.findall(r"`([a-z-]+)`", listed)
    assert list(dict.fromkeys(name for name in names if name not in ("null", "true", "false"))) == list(page_flags.FLAGS)


def test_argv_is_the_command_line():
    assert trainer_argv({"lr": 0.003, "hidden": [32, 16], "batch_size": 64, "dropout": None}) == \
        ["--lr=0.003", "--hidden", "32", "16", "--batch-size=64"]
    with pytest.raises(Refused):
        trainer_argv({"weights": "x.npz"})


# ----------------------------------------------------------------------------- a real server

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(host, port) of demo.py with no trained runs, writing the page's runs in a temporary folder."""
    yield from serving(tmp_path_factory.mktemp("train"))


def serving(folder):
    """Serve demo.py with no trained runs from folder; yields (host, port, folder), then stops it."""
    with open(folder / "stderr.txt", "w") as log:
        process, url = start_demo("--results-dir", folder / "none", "--train-dir", folder / "runs", stderr=log)
        try:
            yield urlsplit(url).hostname, urlsplit(url).port, folder
        finally:
            stop_demo(process)
    assert "Traceback" not in (folder / "stderr.txt").read_text()


def get(server, path="/api/train"):
    status, _, body = ask(server[:2], "GET", path)
    assert status == 200
    return json.loads(body)


def post(server, path, body=None):
    status, _, answer = ask(server[:2], "POST", path, json.dumps(body or {}))
    return status, json.loads(answer)


def until(server, done, seconds=120):
    """GET /api/train until done(runs) holds (the runs of the last start); returns them."""
    deadline = time.monotonic() + seconds
    while True:
        runs = get(server)["runs"][-2:]
        if done(runs):
            return runs
        assert time.monotonic() < deadline, runs
        time.sleep(0.1)


@pytest.mark.slow  # a real server that starts real trainers
def test_both_twins_train_change_rate_together_and_stop(server):
    """Both twins in float64: the rate changed at one step in both (the server holds both at a
    step boundary first), stopped after two epochs each, both records interrupted with their
    finished epochs, equal to 1e-10 (tests/test_equivalence.py's float64 agreement), and both
    networks read digits at once."""
    start = {"framework": "both", "model": "mlp", "lr": 0.003, "limit": 500, "epochs": 200,
             "batch-size": 50, "dtype": "float64"}
    status, answer = post(server, "/api/train", start)
    assert status == 200 and answer["ids"] == ["numpy-1", "pytorch-1"]
    assert post(server, "/api/train", {"framework": "pytorch"}) == (
        409, {"error": "pytorch-1 is still training: stop it first (POST /api/train/stop)"})
    status, change = post(server, "/api/train/lr", {"lr": NEW_LR})
    assert status == 200 and change["ids"] == ["numpy-1", "pytorch-1"] and change["lr"] == NEW_LR
    runs = until(server, lambda runs: all(run["lr_changes"] and len(run["epochs"]) >= 2 for run in runs))
    assert [run["lr_changes"] for run in runs] == [[{"step": change["step"], "lr": NEW_LR}]] * 2
    assert post(server, "/api/train/stop")[0] == 200
    runs = until(server, lambda runs: all(run["status"] == "interrupted" and run["network"] for run in runs))
    records = [json.loads((REPO / run["metrics"]).read_text()) for run in runs]
    assert [record["status"] for record in records] == ["interrupted"] * 2
    assert [record["lr_changes"] for record in records] == [[{"step": change["step"], "lr": NEW_LR}]] * 2
    if not (threads.user_setting("numpy") or threads.user_setting("pytorch")):
        # started together, each twin is given its share of the cores (harness/threads.py's
        # for_children) and keeps it from its first epoch, whatever else runs on this machine
        assert [epoch["threads"] for record in records for epoch in record["epochs"]] == \
            [threads.fair_share(2)] * sum(len(record["epochs"]) for record in records)
    n = min(len(record["epochs"]) for record in records)
    assert n >= 2
    for key in ("train_loss", "test_loss"):
        a, b = ([epoch[key] for epoch in record["epochs"][:n]] for record in records)
        np.testing.assert_allclose(a, b, rtol=1e-10)
    assert [len(run["epochs"]) for run in runs] == [len(record["epochs"]) for record in records]
    for run, record in zip(runs, records):    # where each ended: its record's last epoch, not a live tick
        step = run["steps_per_epoch"] * len(record["epochs"])
        assert (run["step"], run["epoch"], run["steps_per_second"]) == (step, len(record["epochs"]), None)
        assert run["loss"] == record["epochs"][-1]["train_loss"]
        # the next step's rate, cosine from NEW_LR (changed before this step): closed form
        # against the trainers' recursive schedules, 1e-12 relative (a few roundings per step)
        assert math.isclose(run["lr"], cosine_lr(NEW_LR, step, run["total_steps"]), rel_tol=1e-12)
    assert runs[0]["snapshot"]["side"] == 28 and len(runs[0]["snapshot"]["weights"]) == 16
    assert runs[0]["diagnostics"]["steps"][0] == 1
    assert get(server)["digits"]["labels"] == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    names = ["NumPy MLP, page run 1", "PyTorch MLP, page run 1"]
    assert get(server, "/api/models")["models"] == names
    status, _, body = ask(server[:2], "POST", "/api/predict", json.dumps({"ink": [[0.0] * 10 + [1.0] * 8 + [0.0] * 10] * 28}))
    assert status == 200 and [model["name"] for model in json.loads(body)["models"]] == names
    folder = server[2] / "runs"
    assert sorted(path.name for path in next(folder.iterdir()).iterdir()) == [
        f"{name}_{kind}" for name in ("numpy", "pytorch")
        for kind in ("feed.jsonl", "log.txt", "metrics.json", "model.npz" if name == "numpy" else "model.pt")]
    assert not (server[2] / "none").exists()


@pytest.mark.slow  # a real server that starts real trainers
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_on_the_server_stops_and_saves_the_runs(tmp_path, signum):
    """A run still training when the server gets Ctrl-C, or kill's SIGTERM (which does what
    Ctrl-C does): stopped, its finished epochs saved, the server's exit a clean one."""
    with open(tmp_path / "stderr.txt", "w") as log:
        process, url = start_demo("--results-dir", tmp_path / "none", "--train-dir", tmp_path / "runs", stderr=log)
        server = (urlsplit(url).hostname, urlsplit(url).port)
        try:
            assert post(server, "/api/train", {"framework": "numpy", "limit": 500, "epochs": 200})[0] == 200
            until(server, lambda runs: len(runs[-1]["epochs"]) >= 1)
        finally:
            code, out = stop_demo(process, signum)
    record = json.loads(next((tmp_path / "runs").glob("*/numpy_metrics.json")).read_text())
    assert record["status"] == "interrupted" and len(record["epochs"]) >= 1
    assert code == 0 and out.startswith("numpy-1: interrupted (") and out.endswith("stopped\n")


def children(pid):
    """The processes whose parent is pid, read from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()   # after "pid (name)": state, parent, ...
        except (OSError, IndexError):          # ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid):
    """Running still: not ended, and not a zombie waiting for a parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# How soon a trainer ends once its server is gone: it sees its stdin end at once, stops at
# its next step boundary (an MLP step of 50 images: milliseconds), saves its finished epochs
# and exits: both twins had ended 1.5-1.6 s after the kill in 3 runs here; 10 s leaves room
# for a loaded machine.
ORPHANED = 10


@pytest.mark.slow  # a real server that starts real trainers
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the processes' parents from /proc (Linux)")
def test_killing_the_server_stops_its_trainers(tmp_path):
    """kill -9 on demo.py, which can neither stop nor save anything: both twins (each in a
    session of its own, out of reach of the terminal's Ctrl-C) still end within ORPHANED
    seconds, as Ctrl-C would have ended them, their finished epochs saved. Before, both
    trained on, orphans, to their last epoch."""
    with open(tmp_path / "stderr.txt", "w") as log:
        process, url = start_demo("--results-dir", tmp_path / "none", "--train-dir", tmp_path / "runs", stderr=log)
    server = (urlsplit(url).hostname, urlsplit(url).port)
    trainers = []
    try:
        start = {"framework": "both", "limit": 500, "epochs": 200, "batch-size": 50}
        assert post(server, "/api/train", start)[0] == 200
        until(server, lambda runs: all(len(run["epochs"]) >= 1 for run in runs))
        trainers = children(process.pid)
        assert len(trainers) == 2
        process.kill()
        process.wait()
        t0 = time.monotonic()
        while any(alive(pid) for pid in trainers):
            assert time.monotonic() - t0 < ORPHANED, [pid for pid in trainers if alive(pid)]
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
        for pid in trainers:                   # (before the fix: they would train on)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    records = [json.loads(path.read_text()) for path in sorted((tmp_path / "runs").glob("*/*_metrics.json"))]
    assert [record["status"] for record in records] == ["interrupted"] * 2
    assert all(1 <= len(record["epochs"]) < 200 for record in records)


def test_a_stop_while_the_run_starts_is_one_line_and_interrupted(tmp_path):
    """The page's Stop (SIGINT) can reach demo/live.py while it still imports torch: it ends
    with one line and 130, which the server reads as interrupted (Run.finish), never a
    traceback. Here the signal comes at once, during demo.live's own imports."""
    child = subprocess.run(
        [sys.executable, "-c", "import os, runpy, signal, sys; sys.argv = ['live']; "
         "real = signal.signal\n"
         "def signal_then_stop(signum, handler):\n"
         "    real(signum, handler)\n"
         "    if signum == signal.SIGINT: os.kill(os.getpid(), signal.SIGINT)\n"
         "signal.signal = signal_then_stop\n"
         "runpy.run_module('demo.live', run_name='__main__')"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert (child.returncode, child.stdout, child.stderr) == (130, "", "interrupted while starting: nothing written\n")


@pytest.fixture
def own_server(tmp_path):
    """(host, port, folder) of a demo.py of the test's own (its run numbers start at 1)."""
    yield from serving(tmp_path)


def feed(run, kind):
    """The items of one kind in a run's feed (demo/live.py), in order."""
    items = [json.loads(line) for line in (REPO / run["metrics"]).with_name(f"{run['framework']}_feed.jsonl").open()]
    return [item for item in items if item["kind"] == kind]


@pytest.mark.slow  # a real server that starts real trainers
def test_steps_per_second_is_the_trainers_own_rate(own_server):
    """GET /api/train polled twice a second, as the page does (two or three ticks come in each
    read): each steps_per_second is steps over seconds between the first and last of the last
    training.WINDOW ticks, by the times the trainer wrote in its feed (1e-9 relative: the same
    floats, one division). It is no faster than the trainer trains: at most 1.5x the record's
    fastest epoch (steps over its training seconds, which include the feed's own work: a live
    window adds evaluation, so it is slower; 1.5 leaves room for the shared machine's load),
    and within a factor 3 of steps/elapsed over the whole feed so far (the same run, its load
    changing). Before, it timed ticks by when the server read them: a rate of 10^5 steps/s."""
    server = own_server
    assert post(server, "/api/train", {"framework": "numpy", "model": "mlp", "limit": 2000,
                                       "epochs": 1000, "batch-size": 50})[0] == 200
    seen = []
    while len(seen) < 6 or not seen[-1]["epochs"]:   # and an epoch finished: the record's to compare
        time.sleep(0.5)
        run = get(server)["runs"][-1]
        assert run["status"] in ("starting", "running"), run
        if run["steps_per_second"] is not None:
            seen.append(run)
    assert post(server, "/api/train/stop")[0] == 200
    run = until(server, lambda runs: runs[-1]["status"] == "interrupted")[-1]
    record = json.loads((REPO / run["metrics"]).read_text())
    fastest = max(run["steps_per_epoch"] / epoch["epoch_seconds"] for epoch in record["epochs"])
    ticks = feed(run, "tick")
    for state in seen:
        upto = [tick for tick in ticks if tick["step"] <= state["step"]]
        window = upto[-training.WINDOW:]
        rate = (window[-1]["step"] - window[0]["step"]) / (window[-1]["time"] - window[0]["time"])
        assert math.isclose(state["steps_per_second"], rate, rel_tol=1e-9), (state["steps_per_second"], rate)
        assert state["steps_per_second"] <= 1.5 * fastest, (state["steps_per_second"], fastest)
        overall = (upto[-1]["step"] - upto[0]["step"]) / (upto[-1]["time"] - upto[0]["time"])
        assert overall / 3 <= state["steps_per_second"] <= 3 * overall, (state["steps_per_second"], overall)


@pytest.mark.parametrize("text", ["", "0", "-2", "two", "\u0662", "1"])
def test_started_together_is_one_unless_a_whole_number_says_more(monkeypatch, text):
    monkeypatch.setenv(STARTED_TOGETHER, text)
    assert started_together() == 1
    monkeypatch.setenv(STARTED_TOGETHER, "2")
    assert started_together() == 2


@pytest.mark.slow  # a real server that starts real trainers
def test_twins_started_together_take_their_first_steps_together(own_server):
    """"both": each twin gets ready (imports, data, model built), says so and waits, and the
    server releases both once both are ready. The "start" items of their feeds (each written
    right after its step 1, by the trainer's clock, before a hold) are within FIRST_STEPS
    seconds of each other (0.3-9 ms in 6 runs here). Before, NumPy began at once while PyTorch
    imported torch: 1.9 s apart. An lr change sent right after the start applies at the same
    step in both records."""
    start = {"framework": "both", "model": "mlp", "lr": 0.003, "limit": 500, "epochs": 2,
             "batch-size": 50, "dtype": "float64"}
    assert post(own_server, "/api/train", start)[0] == 200
    status, change = post(own_server, "/api/train/lr", {"lr": NEW_LR})
    assert status == 200 and change["ids"] == ["numpy-1", "pytorch-1"], change
    runs = until(own_server, lambda runs: all(run["status"] == "completed" for run in runs))
    records = [json.loads((REPO / run["metrics"]).read_text()) for run in runs]
    assert [record["lr_changes"] for record in records] == [[{"step": change["step"], "lr": NEW_LR}]] * 2
    first = [feed(run, "start")[0]["time"] for run in runs]   # written right after step 1
    assert abs(first[0] - first[1]) < FIRST_STEPS, first


# A stand-in for the PyTorch twin's process: it waits until its NumPy twin (the real
# demo/live.py) says it is ready, then fails as a start can fail, or never gets ready itself.
STARTING = """import pathlib, sys, time
twin = pathlib.Path(sys.argv[1]).with_name("numpy_feed.jsonl")
while not (twin.exists() and '"ready"' in twin.read_text()):
    time.sleep(0.01)
if sys.argv[2] == "fail":
    sys.exit("error: torch is broken")
time.sleep(120)
"""


@pytest.fixture
def twins(tmp_path, monkeypatch):
    """twins(how): Trainings that have started "both", the NumPy twin its real command, the
    PyTorch twin STARTING doing how ("fail" or "hang"); returns (trainings, numpy, pytorch)."""
    popen, processes = subprocess.Popen, []

    def start(command, **kwargs):
        framework, feed = command[command.index("demo.live") + 1:][:2]
        if framework == "pytorch":
            command = [sys.executable, "-c", STARTING, feed, how[0]]
        processes.append(popen(command, **kwargs))
        return processes[-1]
    monkeypatch.setattr(training.subprocess, "Popen", start)
    how = []

    def make(behaviour):
        how.append(behaviour)
        trainings = training.Trainings(tmp_path, on_model=lambda model: None)
        trainings.start({"framework": "both", "limit": 100, "epochs": 1})
        return (trainings, *trainings.runs)
    yield make
    for process in processes:
        process.kill()
        process.wait()


def kinds(run):
    return [json.loads(line)["kind"] for line in run.feed.open()]


def test_a_twin_that_fails_while_starting_stops_the_other(twins):
    """The PyTorch twin fails while the NumPy twin waits for it: the NumPy twin does not wait
    forever, nor train alone: it is stopped before its first step (interrupted, nothing
    written), its error saying why."""
    trainings, numpy, pytorch = twins("fail")
    for run in (numpy, pytorch):
        run.waiter.join(timeout=60)
    assert (pytorch.status, pytorch.error) == ("failed", "error: torch is broken")
    assert (numpy.status, numpy.error) == (
        "interrupted", "stopped before its first step: its twin pytorch-1 ended while starting")
    assert kinds(numpy) == ["ready"] and not numpy.metrics.exists() and numpy.process.returncode == 130
    assert numpy.log.read_text().splitlines()[-1].startswith("interrupted before the first epoch finished")


def test_a_stop_while_a_twin_waits_is_interrupted_with_nothing_written(twins):
    """Stop (the page's, Ctrl-C to every run) while the NumPy twin waits for a twin that is
    not ready: it ends within seconds (it looks for a stop every 0.1 s), interrupted before
    any step, nothing written, one line from the trainer."""
    trainings, numpy, pytorch = twins("hang")
    deadline = time.monotonic() + 60
    while not numpy.ready:
        assert time.monotonic() < deadline and numpy.running()
        numpy.read()
        time.sleep(0.01)
    t0 = time.monotonic()
    assert trainings.stop() == {"stopping": ["numpy-1", "pytorch-1"]}
    numpy.waiter.join(timeout=60)
    assert time.monotonic() - t0 < 10
    assert numpy.status == "interrupted" and numpy.process.returncode == 130
    assert numpy.error.startswith("interrupted before the first epoch finished: nothing written")
    assert kinds(numpy) == ["ready"] and not numpy.metrics.exists()
    assert "Traceback" not in numpy.log.read_text()


def test_time_left_is_the_steps_left_at_the_pace_so_far():
    """What the page says is left: the steps still to take at the pace of every tick so far,
    by the trainer's clock (a twin beside it and the evaluations slow that pace, where the
    trainer's own estimate timed its first steps alone: a learner's run took 40% longer than
    that estimate said). Nothing before 3 s of ticks, or before a step was taken."""
    assert training.time_left((0, 10.0), (100, 12.0), 1000) is None           # 2 s: too early
    assert training.time_left((5, 10.0), (5, 20.0), 1000) is None             # no step since
    assert training.time_left((0, 10.0), (300, 16.0), 1000) == {"seconds": 14.0, "about": "15 s"}
    assert training.time_left((100, 0.0), (1100, 50.0), 10_000) == {"seconds": 445.0, "about": "7.5 min"}
