"""Training from the page (demo/training.py, demo/live.py, Session.set_lr in harness/session.py).

In this process: a change of learning rate is the update rule with the new rate from the next
step on, and both twins, changed at the same step, still agree in float64. Against a real
`python demo.py`: a run started by the API, its progress, a change of rate for both twins at
the same step, stop (the finished epochs kept, marked interrupted), the network reading digits
at once, bad parameters (the trainer's own message), a second start (409), and Ctrl-C on the
server (the runs saved). Small runs: --limit 500, the MLP."""
import json
import math
import re
import signal
import subprocess
import sys
import time
import warnings
from types import SimpleNamespace
from urllib.parse import urlsplit

import numpy as np
import pytest

from demo import training
from demo.live import STARTED_TOGETHER, UNITS, first_layer, started_together
from demo.training import Refused, trainer_argv
from demo_helpers import REPO, start_demo, stop_demo
from harness import threads
from harness.flags import build_parser
from harness.session import Session
from numpy_nn.utils import cosine_lr
from test_demo_server import ask

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


BAD_FLAGS = [{"lr": -1}, {"lr": "fast"}, {"model": "rnn"}, {"epochs": 1.5}, {"hidden": [0]},
             {"model": "cnn", "hidden": [10]}, {"dropout": 1}, {"batch_size": 0},
             {"batch-size": 0}, {"dtype": "float16"}]


@pytest.mark.parametrize("flags", BAD_FLAGS, ids=json.dumps)
def test_trainer_argv_is_refused_with_the_flags_message(server, flags):
    """POST /api/train answers 400 with what `python numpy_nn/train.py <the same flags>` says,
    the flag named as the body spells its key (batch_size or batch-size, not --batch-size)."""
    key = list(flags)[-1]                      # each case's bad flag is its last
    message = refusal("numpy", trainer_argv(flags))
    prefix = f"argument --{key.replace('_', '-')}: "
    assert message.startswith(prefix)
    status, _, body = ask(server[:2], "POST", "/api/train", json.dumps({"framework": "numpy", **flags}))
    assert (status, json.loads(body)) == (400, {"error": f"{key}: {message[len(prefix):]}"})


SERVER_REFUSALS = {
    "a file to write": ({"metrics": "/etc/passwd"}, "metrics is not one the page sets; it sets framework, model, lr,"),
    "a data folder": ({"data_dir": "/"}, "data_dir is not one the page sets"),
    "no such framework": ({"framework": "jax"}, 'framework must be numpy, pytorch or both, not "jax"'),
    "an object": ({"lr": {"x": 1}}, 'lr: give a number, a string or a list, not {"x": 1}'),
    "true for a value": ({"lr": True}, "lr: give a number, a string or a list, not true"),
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


def test_a_switch_takes_true_and_false(own_server):
    """--augment, a flag with no value: true in the body is the flag given (the record's
    augment ranges set), false the flag left out (null: no augmentation). Before, false went
    to the trainer as --augment=False, and came back as argparse's 400 "augment: ignored
    explicit argument 'False'"."""
    assert training.SWITCHES == {"augment"}       # the only such flag the page sets
    for number, augment in enumerate([False, True], start=1):
        status, answer = post(own_server, "/api/train", {"framework": "numpy", "augment": augment,
                                                         "limit": 100, "epochs": 1})
        assert status == 200, answer
        assert answer["ids"] == [f"numpy-{number}"]
        run = until(own_server, lambda runs: runs[-1]["status"] == "completed")[-1]
        assert ("--augment" in run["flags"]) is augment
        config = json.loads((REPO / run["metrics"]).read_text())["config"]
        assert (config["augment"] is not None) is augment
        assert feed(run, "ready") == []           # a run started alone does not wait


def test_nothing_to_stop_or_change(server):
    assert ask(server[:2], "POST", "/api/train/stop")[:1] == (409,)
    status, _, body = ask(server[:2], "POST", "/api/train/lr", json.dumps({"lr": -2}))
    assert refusal("numpy", ["--lr=-2"]) == "argument --lr: must be positive, got -2"
    assert (status, json.loads(body)["error"]) == (400, "lr: must be positive, got -2")


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


def test_the_reference_lists_the_keys_the_server_takes():
    """docs/reference.md's demo API names exactly training.FLAGS, in their order (before, it
    said "the trainers' flags as on the command line", which the server does not take)."""
    text = (REPO / "docs" / "reference.md").read_text()
    listed = text[text.index("and no other:"):text.index("Any other key")]
    names = re.findall(r"`([a-z-]+)`", listed)
    assert list(dict.fromkeys(name for name in names if name not in ("null", "true", "false"))) == list(training.FLAGS)


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
    while len(seen) < 6:
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
