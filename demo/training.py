"""The page's training runs, for demo/server.py: started, watched, steered and stopped.

Each run is its trainer's own command, `python numpy_nn/train.py ...` or pytorch_nn's, in a
process of its own (demo/live.py adds only the live feed): the same loop, record and files as
on the command line, and its stop is the command's Ctrl-C (SIGINT), which saves the finished
epochs and marks the record interrupted (completed, if every epoch had trained). A process
rather than a thread: the trainers' stop, their share of the cores (harness/threads.py) and
their BLAS threads are per process, and the
server stays free to answer while both twins compute. The runs are in their own session, so a
Ctrl-C in the server's terminal reaches the server alone, which then stops and saves them. A
server that dies without doing so (kill -9) still stops them: each run's stdin is a pipe from
the server, and when it closes the run stops as on Ctrl-C (demo/live.py).

The page's flags become a command line only once typed as the trainers' own parser types
them, and that parser checks them here, in the server, before anything starts (demo/page_flags.py).

Twins started together ("both") take their first steps together: each gets ready (torch
imported, the data loaded, the model built), says so in its feed and waits; once all have,
the server sends each "begin" (Trainings._release). Without it NumPy began at once while
PyTorch still imported torch (~2-3 s here), finished small runs alone, and a rate change
reached one twin. A twin that ends before the release (failed, or stopped) has the others
stopped, with that reason as their error: a run asked for side by side does not train alone.

A run writes into one folder under the server's --train-dir (results/live/ by default):

    <framework>_metrics.json, <framework>_model.npz|.pt    what the trainer writes
    <framework>_feed.jsonl                                 its live figures (demo/live.py)
    <framework>_log.txt                                    what it printed

The server reads the feed when asked (GET /api/train), so a page closed and opened again
finds the run where it is.
"""
import dataclasses
import json
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from data_loader import DataError, fetch
from demo.live import STARTED_TOGETHER
from demo.models import find_models
from demo.page_flags import Refused, check_flags, learning_rate, trainer_argv
from harness.experiment import shown
from harness.flags import RESULTS_DIR
from harness.metrics_file import WEIGHT_SUFFIX
from harness.pace import about
from harness.threads import for_children
from report.run import FRAMEWORK_NAMES, MODEL_NAMES

REPO = Path(__file__).resolve().parents[1]
TRAIN_DIR = RESULTS_DIR / "live"
FRAMEWORKS = {"numpy": ["numpy"], "pytorch": ["pytorch"], "both": ["numpy", "pytorch"]}
HOLD_SECONDS = 120  # how long an lr change waits for the runs to reach a step boundary
DIGITS = 10         # demo/live.py's: the first test images, read by each network as it learns
# steps_per_second: over the last WINDOW ticks, timed by the trainer (a tick every 0.25 s at
# most: about 2 s of training, smooth enough to read, recent enough to follow a change)
WINDOW = 8
LEFT_AFTER = 3.0    # seconds of ticks before a run says how long it has left (a pace from less is noise)


def time_left(first, last, total_steps):
    """How long a run has left at its pace so far: first and last, the (step, time) of its first
    and latest ticks, by the trainer's clock. The pace so far takes in what slowed it (a twin
    beside it, the evaluations after each epoch, other work on the machine), where the estimate
    a run prints early times its first steps only, before a twin's first steps slow it.
    None until LEFT_AFTER seconds of ticks."""
    (step0, t0), (step, t) = first, last
    if t - t0 < LEFT_AFTER or step <= step0:
        return None
    seconds = (total_steps - step) * (t - t0) / (step - step0)
    return {"seconds": round(seconds, 1), "about": about(seconds)}


class Run:
    """One trainer process and what its feed has said so far. together: how many runs are
    started with this one (the twins); each is given its share of the cores in its environment
    (harness/threads.py's for_children), so they share them from their first step."""

    def __init__(self, number, framework, argv, args, folder, together=1):
        self.id, self.framework, self.argv = f"{framework}-{number}", framework, argv
        self.name = f"{FRAMEWORK_NAMES[framework]} {MODEL_NAMES[args.model]}, page run {number}"
        suffix = WEIGHT_SUFFIX[framework]
        self.metrics, self.weights = folder / f"{framework}_metrics.json", folder / f"{framework}_model{suffix}"
        self.feed, self.log = folder / f"{framework}_feed.jsonl", folder / f"{framework}_log.txt"
        self.lock = threading.Lock()
        self.offset, self.rest = 0, b""      # how far the feed is read; a line not yet ended
        self.status, self.error, self.network, self.held = "starting", None, None, None
        self.ready = False                   # has it said it can take its first step (a twin's "ready")
        self.stopping, self.reason = False, None   # a stop sent; why the server sent it, if not asked
        self.writing = threading.Lock()      # one line at a time on its stdin (the release, a hold)
        self.start = self.tick = self.snapshot = self.estimate = None
        self.diag, self.epochs, self.lr_changes = {"steps": [], "loss": []}, [], []
        self.recent = deque(maxlen=WINDOW)   # (step, time) of the last ticks, as the trainer wrote them
        self.first_tick = None               # (step, time) of its first tick
        # Its stdin is a pipe that only this server holds: when the server ends, however it
        # ends (kill -9 too), the pipe closes and demo/live.py stops the run as Ctrl-C would.
        # (Not Linux's PR_SET_PDEATHSIG: it fires when the thread that started the child ends,
        # and here that is a request's thread, which ends with its answer.)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "demo.live", framework, str(self.feed), "--", *argv,
                 "--metrics", str(self.metrics), "--weights", str(self.weights), "--no-progress"],
                cwd=REPO, env={**for_children(together), STARTED_TOGETHER: str(together)}, stdin=subprocess.PIPE,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, text=True)

    def running(self):
        return self.process.poll() is None

    def training(self):
        """Running, with steps still to take (after its last step it evaluates and saves)."""
        last = self.tick and self.start and self.tick["step"] >= self.start["total_steps"]
        return self.running() and not last

    def send(self, command):
        """One line to the run's stdin; False if it has ended."""
        with self.writing:
            try:
                self.process.stdin.write(command + "\n")
                self.process.stdin.flush()
                return True
            except (BrokenPipeError, ValueError):   # ended (its stdin closed by the server's wait)
                return False

    def stop(self, reason=None):
        """Ctrl-C to the run (its own stop: finished epochs saved); reason: why, if the
        learner did not ask (it becomes the run's error)."""
        if not self.stopping:
            self.stopping, self.reason = True, reason
        self.process.send_signal(signal.SIGINT)

    def read(self):
        """Take in what the feed says since the last read."""
        with self.lock:
            try:
                with open(self.feed, "rb") as f:
                    f.seek(self.offset)
                    chunk = f.read()
            except FileNotFoundError:           # not started yet
                return
            self.offset += len(chunk)
            *lines, self.rest = (self.rest + chunk).split(b"\n")
            for line in lines:
                self._take(json.loads(line))

    def _take(self, item):
        kind = item.pop("kind")
        if kind == "ready":
            self.ready = True
        elif kind == "start":
            self.start, self.status = item, "running"
        elif kind == "tick":                   # its time is the trainer's: ticks read together
            self.tick = item                   # by the server were written ~0.25 s apart
            self.recent.append((item["step"], item["time"]))
            self.first_tick = self.first_tick or (item["step"], item["time"])
        elif kind == "diag":                   # a row: step, loss, each figure's list over the layers
            item["steps"] = item.pop("step")
            for figure, values in item.items():
                self.diag.setdefault(figure, []).append(values)
        elif kind == "estimate":               # {"seconds", "line"}: the whole run, at its first steps' pace
            self.estimate = item
        elif kind == "snapshot":
            self.snapshot = item
        elif kind == "epoch":
            self.epochs.append(item)
        elif kind == "lr":
            self.lr_changes.append(item)
        elif kind == "held":
            self.held = item["step"]

    def finish(self):
        """Once the process has ended: how the run ended, from its record and its log. Returns
        that status; Trainings._wait shows it once the network reads digits."""
        self.process.wait()
        with self.writing:
            self.process.stdin.close()
        self.read()
        with self.lock:                        # (state() may be reading it in another thread)
            self.recent.clear()                # a rate of steps means nothing once it ended
        try:
            record = json.loads(self.metrics.read_text())
            status = record["status"]
            self.tick = self.ended_at(record)
        except (OSError, ValueError, KeyError):
            self.tick = None                   # nothing kept: no step to show
            lines = self.log.read_text(errors="replace").strip().splitlines()
            stopped = lines and lines[-1].startswith("interrupted")
            status = "interrupted" if stopped else "failed"
            self.error = lines[-1] if lines else f"the trainer ended with exit status {self.process.returncode}"
        if self.reason:
            self.error = self.reason
        return status

    def ended_at(self, record):
        """Where a run ended, from its record: the last finished epoch (the network it kept),
        with the step and rate the feed gave that epoch; or the step whose loss diverged."""
        if record.get("diverged"):             # null unless it diverged
            e = record["diverged"]
            steps_per_epoch = (self.start or {}).get("steps_per_epoch", 0)
            return {**(self.tick or {}), "epoch": e["epoch"], "loss": None,
                    "step": (e["epoch"] - 1) * steps_per_epoch + e["batch"]}
        if not record["epochs"]:
            return None
        last = record["epochs"][-1]
        fed = next((item for item in self.epochs if item["epoch"] == last["epoch"]), {})
        return {"step": fed.get("step"), "epoch": last["epoch"], "loss": last["train_loss"], "lr": fed.get("lr")}

    def speed(self):
        """Steps a second over the recent ticks, by the trainer's clock; None before two ticks."""
        with self.lock:
            recent = list(self.recent)
        if len(recent) < 2:
            return None
        (first, t0), (last, t1) = recent[0], recent[-1]
        return (last - first) / (t1 - t0) if t1 > t0 else None

    def left(self):
        """time_left for a run still taking steps; None otherwise."""
        if not (self.training() and self.first_tick and self.tick and self.start):
            return None
        return time_left(self.first_tick, (self.tick["step"], self.tick["time"]), self.start["total_steps"])

    def state(self, figures=True):
        """What GET /api/train says of this run; without figures, not its diagnostics and
        snapshot (an older run, which the page no longer draws)."""
        tick = {k: v for k, v in (self.tick or {}).items() if k != "time"}
        state = {**(self.start or {}), "id": self.id, "framework": self.framework, "flags": self.argv,
                 "status": self.status, "error": self.error, "network": self.network,
                 "metrics": shown(self.metrics), **tick, "steps_per_second": self.speed(), "epochs": self.epochs,
                 "lr_changes": self.lr_changes, "estimate": self.estimate, "left": self.left()}
        if figures:
            state.update(diagnostics=self.diag, snapshot=self.snapshot)
        return state


class Trainings:
    """Every run the page started, at most one per framework at a time.

    folder: where the runs' folders go. on_model(model): called with each run's network
    (a demo.models.Model) as soon as the run has saved one."""

    def __init__(self, folder, on_model):
        self.folder, self.on_model = Path(folder), on_model
        self.runs = []
        # One start or stop at a time; held only while processes are started or signalled, so
        # a Stop never waits for more than that. A rate change, which may wait HOLD_SECONDS
        # for a step boundary, takes its own lock instead (one change at a time), and the data
        # is loaded under a third.
        self.lock = threading.Lock()
        self.changing = threading.Lock()
        self.loading = threading.Lock()
        self.count = 0
        self.digits = None
        self.train_size = None                # the training set's samples, once loaded: --limit's most

    def running(self):
        return [run for run in self.runs if run.running()]

    # ------------------------------------------------------------------------- the API

    def start(self, request):
        """POST /api/train: {"framework": "numpy" | "pytorch" | "both", <trainer flags>}."""
        if not isinstance(request, dict):
            raise Refused(400, 'expected a JSON object of flags, e.g. {"framework": "both", "lr": 0.003}')
        flags = dict(request)
        framework = flags.pop("framework", "both")
        if framework not in FRAMEWORKS:
            raise Refused(400, f"framework must be numpy, pytorch or both, not {json.dumps(framework)}")
        argv = trainer_argv(flags)
        args = check_flags(FRAMEWORKS[framework], argv, flags)
        self._load_data()
        if args.limit is not None and self.train_size is not None and args.limit > self.train_size:
            # the trainer's own check once it has the data (harness/experiment.py load_data), made now
            raise Refused(400, f"limit: {args.limit} is more than the {self.train_size} "
                               f"training samples")
        with self.lock:
            busy = [run for run in self.running() if run.framework in FRAMEWORKS[framework]]
            if busy:
                raise Refused(409, f"{busy[0].id} is still training: stop it first (POST /api/train/stop)")
            self.count += 1
            folder = self.folder / f"run{self.count}-{time.strftime('%Y%m%d-%H%M%S')}"
            folder.mkdir(parents=True)
            names = FRAMEWORKS[framework]
            runs = [Run(self.count, name, argv, args, folder, len(names)) for name in names]
            self.runs = self.runs + runs       # a new list: a rate change or a GET may be going through the old
        for run in runs:
            run.waiter = threading.Thread(target=self._wait, args=(run,), daemon=True)
            run.waiter.start()
        if len(runs) > 1:
            threading.Thread(target=self._release, args=(runs,), daemon=True).start()
        return {"ids": [run.id for run in runs], "folder": shown(folder)}

    def state(self):
        """GET /api/train: every run, newest last, and the test digits they read."""
        for run in self.runs:
            if run.status in ("starting", "running"):
                run.read()
        newest = {run.framework: run for run in self.runs}
        return {"runs": [run.state(figures=run is newest[run.framework]) for run in self.runs],
                "digits": self.digits}

    def stop(self):
        """POST /api/train/stop: Ctrl-C to every run still training."""
        with self.lock:
            runs = self.running()
            if not runs:
                raise Refused(409, "no training is running")
            for run in runs:
                run.stop()
        return {"stopping": [run.id for run in runs]}

    def change_lr(self, request):
        """POST /api/train/lr: {"lr": X}. Every run still training holds at its next step
        boundary; all then take rate X from the step after the furthest one reached, so
        twins change at the same step. Answers that step."""
        if not isinstance(request, dict) or set(request) != {"lr"}:
            raise Refused(400, 'expected {"lr": <the new learning rate>}')
        lr = learning_rate(request["lr"])
        if not self.changing.acquire(blocking=False):
            raise Refused(409, "another rate change is waiting for the runs to reach a step boundary")
        try:
            runs = self.runs
            for run in runs:
                run.read()
            runs = [run for run in runs if run.training()]
            if not runs:
                raise Refused(409, "no training is running")
            for run in runs:
                run.held = None
                run.send("hold")
            deadline = time.monotonic() + HOLD_SECONDS
            while True:
                for run in runs:
                    run.read()
                runs = [run for run in runs if run.held is not None or run.training()]
                if all(run.held is not None for run in runs) or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            held = [run for run in runs if run.held is not None]
            if not runs:                          # each took its last step or stopped meanwhile
                raise Refused(409, "the runs ended before a step boundary")
            if len(held) < len(runs):
                for run in runs:   # the held go on; the others' hold, still to come, is answered too
                    run.send("go")
                raise Refused(503, f"the runs did not reach a step boundary within {HOLD_SECONDS} s")
            step = max(run.held for run in held)
            for run in held:
                run.send(f"lr {lr!r} {step}")
        finally:
            self.changing.release()
        return {"lr": lr, "step": step + 1, "ids": [run.id for run in held]}

    def close(self):
        """The server is stopping: Ctrl-C to the runs, and wait for them to save."""
        for run in self.running():
            run.stop()
        for run in self.runs:
            try:
                run.process.wait(timeout=HOLD_SECONDS)
            except subprocess.TimeoutExpired:
                run.process.kill()
                print(f"demo: {run.id} did not stop within {HOLD_SECONDS} s: killed", file=sys.stderr)
            run.waiter.join()
        return self.runs

    # ------------------------------------------------------------------------- in the background

    def _wait(self, run):
        """In a thread: when the run ends, let its network read digits, then say how it ended:
        a run shown completed (or interrupted, with finished epochs) reads digits already."""
        status = run.finish()
        if status in ("completed", "interrupted") and run.metrics.exists():
            try:
                models, _ = find_models([run.metrics])
            except Exception as e:             # a record the trainer wrote but compare cannot read
                models = []
                run.error = f"its network cannot be loaded: {type(e).__name__}: {e}"
            for model in models:
                self.on_model(dataclasses.replace(model, name=run.name))
                run.network = run.name         # the name the draw-a-digit part shows it by
        run.status = status

    def _release(self, runs):
        """In a thread, for twins started together: "begin" to each once all are ready (their
        feeds say "ready"), one right after the other. If one ends first (it failed, or was
        stopped), the others are stopped too, saying why, unless a stop was asked for."""
        while True:
            for run in runs:
                run.read()
            ended = next((run for run in runs if not run.running()), None)
            if ended:
                for run in runs:
                    if run.running() and not run.stopping:
                        run.stop(f"stopped before its first step: its twin {ended.id} ended while starting")
                return
            if all(run.ready for run in runs):
                for run in runs:
                    run.send("begin")
                return
            time.sleep(0.01)                   # a 10 ms poll: ~1% of a core for the seconds of a start

    def _load_data(self):
        """Once: the first DIGITS test images (0-255, 28x28) and their labels, and the size of
        the training set (what --limit may take). The trainers read the same cache."""
        with self.loading:
            if self.digits is not None:
                return
            try:
                arrays, _ = fetch("mnist")
            except DataError:                  # the trainer will say why, in its log
                return
            self.train_size = len(arrays["train_labels"])
            self.digits = {"images": arrays["test_images"][:DIGITS].reshape(DIGITS, 28, 28).tolist(),
                           "labels": arrays["test_labels"][:DIGITS].tolist()}
