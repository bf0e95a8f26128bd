"""One trainer run for the page's "Train" part: the trainer's own command, watched live.

    python -m demo.live numpy FEED -- --model mlp --limit 2000 ...   (demo/training.py starts it)

This is `python numpy_nn/train.py ...` (or pytorch_nn/train.py) itself: the same flags, loop,
record, files and Ctrl-C (harness/session.py's run_trainer), with one addition, a Feed set as
the Session's observer. The Feed appends one JSON object a line to FEED, which the server
reads, and takes commands, one a line, on stdin:

    begin       (a twin started with others) take the first step: all are ready
    hold        at the next step boundary write {"kind": "held", "step": s} and wait for:
    lr X S      the rate X from step S + 1 on (now if S steps are done, else once they are)
    go          go on unchanged

and the end of stdin stops the run as Ctrl-C does: the server that holds the pipe is gone,
however it ended (kill -9 too), and a trainer nobody watches must not train on.

A twin started with others (STARTED_TOGETHER below, set by the server) writes
"ready" once it can take its first step (torch imported, the data loaded, the model built) and
waits for begin, which the server sends every twin once all are ready: so they train side by
side from their first step, and a rate change reaches both. A run started alone does not wait.
The server holds every twin, then gives each the same S (the furthest step any reached), so
twins change their rate at the same step. What the Feed writes:

    ready       a twin started with others: ready for its first step, waiting for begin
    start       the run's size and layers, and the time step 1 ended (time.time()), once
    tick        the step, its loss and rate, and the time it was written (time.time(): one
                clock for both twins' feeds): at most every TICK seconds
    estimate    how long the whole run will take at its first steps' pace (harness/pace.py):
                seconds, as a learner reads it ("2.5 min"), and the line the trainer prints;
                once, early in epoch 1
    diag        a diagnostics record (numpy_nn/diagnostics.py) as soon as the trainer makes one
    snapshot    the first layer's weights and the predictions for DIGITS test images: at most
                every SNAPSHOT seconds, and after each epoch
    epoch       the epoch's record (train and test loss and accuracy, seconds), its last step
                and the rate the next step would take
    lr          a change of rate made: the first step it applies to, and the rate

Every figure but the snapshot is one the trainer computes anyway, so watching costs little:
see docs/demo.md's "Watch it learn, live" for the measured cost.
"""
import signal
import sys


def stopped_while_starting(signum, frame):
    """A stop (the page's Stop, Ctrl-C on the server) that comes while this process is still
    starting: importing torch takes a second or more. One line and the shell's code for
    Ctrl-C, as the trainers' own stop while loading the data, not a traceback."""
    print("interrupted while starting: nothing written", file=sys.stderr, flush=True)
    sys.exit(128 + signal.SIGINT)


if __name__ == "__main__":  # the process demo/training.py starts; until main() hands Ctrl-C to the trainer
    signal.signal(signal.SIGINT, stopped_while_starting)

import json  # noqa: E402
import os  # noqa: E402
import queue  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from harness import experiment  # noqa: E402
from harness.session import Session, run_trainer  # noqa: E402
from numpy_nn.diagnostics import finite  # noqa: E402

TICK = 0.25        # seconds between two ticks: the page polls twice a second
SNAPSHOT = 1.0     # seconds between two snapshots: they cost a forward pass and ~40 kB
DIGITS = 10        # the first test images, shown with each network's reading
UNITS = 16         # the MLP's first-layer units shown as 28x28 images (all the CNN's filters)
# How many runs the server started together with this one (demo/training.py sets it): more
# than one, and this twin waits for the others before its first step (Feed.ready)
STARTED_TOGETHER = "NN_TRAINERS_STARTED_TOGETHER"


def started_together():
    """How many trainers (this one included) were started together with this one: 1 unless
    the variable STARTED_TOGETHER gives a whole number."""
    text = os.environ.get(STARTED_TOGETHER, "")
    return int(text) if text.isascii() and text.isdigit() and int(text) > 0 else 1


class Feed:
    """The observer a Session calls after each step and each epoch (Session.observer)."""

    def __init__(self, path, commands):
        self.file = open(path, "a", encoding="utf-8")
        self.commands = commands       # lines from stdin, read by another thread
        self.early = []                # commands that came while waiting for begin (a hold)
        self.pending = None            # (step, lr): a change waiting for its step
        self.rows = 0                  # diagnostics records written so far
        self.estimated = False         # has the pace's estimate been written
        self.next_tick = self.next_snapshot = 0.0

    def write(self, kind, **fields):
        self.file.write(json.dumps({"kind": kind, **fields}) + "\n")
        self.file.flush()              # the server reads as it comes

    # ------------------------------------------------------------------------- the Session's calls

    def ready(self, session):
        """Before the first step: a twin started with others says it is ready and waits for
        begin (or stdin's end: nobody left to wait for; or a stop, which the Session acts on)."""
        if started_together() == 1:
            return
        self.write("ready")
        while experiment.stopping.signum is None:
            try:
                command = self.commands.get(timeout=0.1)   # woken by the line, not the timeout
            except queue.Empty:
                continue
            if command in ("begin", "end"):
                return
            self.early.append(command)   # a hold sent before the start: for the first step boundary

    def step_done(self, session, loss):
        if session.step == 1:
            self.write("start", framework=session.framework, model=session.args.model,
                       total_steps=session.total_steps, steps_per_epoch=session.steps_per_epoch,
                       layers=session.watch.log.names, lr=session.lr(), time=time.time())
        last = session.step == session.total_steps
        if not last:                   # after the last step no rate applies: a hold goes unanswered
            self.obey(session)
        now = time.monotonic()
        if now >= self.next_tick or last:  # the last tick tells the server no step is left
            self.next_tick = now + TICK
            loss = loss if isinstance(loss, float) else loss.item()
            self.write("tick", step=session.step, epoch=session.epoch, loss=finite(loss), lr=session.lr(),
                       time=time.time())
        if session.pace.line and not self.estimated:
            self.estimated = True
            self.write("estimate", seconds=session.pace.seconds, about=session.pace.about, line=session.pace.line)
        self.diagnostics(session)
        if now >= self.next_snapshot:
            self.snapshot(session)

    def epoch_done(self, session):
        # with the step and rate it ended on: a finished run's status is its last epoch's
        self.write("epoch", **session.run.record["epochs"][-1], step=session.step, lr=session.lr())
        self.diagnostics(session)
        self.snapshot(session)

    # ------------------------------------------------------------------------- commands

    def obey(self, session):
        """Act on the commands that came, at this step boundary; a hold waits here."""
        while True:
            try:
                command = self.early.pop(0) if self.early else self.commands.get_nowait()
            except queue.Empty:
                break
            if command == "hold":
                self.write("held", step=session.step)
                command = self.wait()
            if command.startswith("lr "):
                _, lr, step = command.split()
                self.pending = (int(step), float(lr))
        if self.pending and session.step >= self.pending[0]:
            step, lr = self.pending
            self.pending = None
            session.set_lr(lr)
            self.write("lr", step=session.step + 1, lr=lr)

    def wait(self):
        """The next command after a hold; "go" if a stop came meanwhile, "end" (the same) if
        stdin closed."""
        while experiment.stopping.signum is None:
            if self.early:
                return self.early.pop(0)
            try:
                return self.commands.get(timeout=0.1)
            except queue.Empty:
                continue
        return "go"

    # ------------------------------------------------------------------------- figures

    def diagnostics(self, session):
        """Each diagnostics record the trainer made since the last call."""
        rows = session.watch.log.rows
        for step, loss, figures in rows[self.rows:]:
            self.write("diag", step=step, loss=loss, **figures)
        self.rows = len(rows)

    def snapshot(self, session):
        self.next_snapshot = time.monotonic() + SNAPSHOT
        units, side = first_layer(session)
        scale = np.abs(units).max(axis=1, keepdims=True)
        scale[scale == 0] = 1
        self.write("snapshot", step=session.step, side=side,
                   weights=np.round(127 * units / scale).astype(int).tolist(),   # each unit -127..127
                   predictions=readings(session))


def first_layer(session):
    """(units, side): the first layer's weights as one row per unit (MLP: UNITS of them, each
    a 28x28 image; CNN: each filter, side x side), float64 on the CPU."""
    W = session.watch.weights[0]
    if session.framework == "pytorch":   # torch's own conversion: np.array would call its __array__,
        W = W.detach().cpu().double().numpy()  # which lacks NumPy 2's copy keyword (a DeprecationWarning)
    W = np.array(W, dtype=np.float64)
    if session.args.model == "cnn":                       # C_out, 1, k, k
        return W.reshape(W.shape[0], -1), W.shape[-1]
    if session.framework == "numpy":                      # 784, units: a column per unit
        W = W.T
    return W[:UNITS], 28                                  # torch's Linear: units, 784 already


def readings(session):
    """[[digit, probability], ...] of the network as it is now for the first DIGITS test
    images, dropout off (as the diagnostics' probe pass: no update, no random draw)."""
    x = session.x_test[:DIGITS]
    if session.framework == "numpy":
        logits, _ = session.watch.net.forward(x)
        logits = np.asarray(logits, dtype=np.float64)
    else:
        import torch
        model = session.watch.model
        training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                logits = model(torch.from_numpy(x).to(session.device)).double().cpu().numpy()
        finally:
            model.train(training)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return [[int(k), round(float(p[i, k]), 4)] for i, k in enumerate(p.argmax(axis=1))]


def read_commands(commands):
    """In a thread: each line of stdin into the queue. At its end the server is gone (the
    server closes it only once this process has ended), whatever ended it, SIGKILL included:
    the run stops as on Ctrl-C, keeping its finished epochs, and "end" releases a wait for
    begin or after a hold (nobody is left to send either)."""
    for line in sys.stdin:
        commands.put(line.strip())
    os.kill(os.getpid(), signal.SIGINT)
    commands.put("end")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    framework, feed, flags = argv[0], argv[1], argv[3:]   # argv[2] is "--"
    if framework == "numpy":
        from numpy_nn.train import train
        check = None
    else:
        from pytorch_nn.build import check_flags as check
        from pytorch_nn.train import train
    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here Ctrl-C is the trainer's
    commands = queue.SimpleQueue()
    threading.Thread(target=read_commands, args=(commands,), daemon=True).start()
    Session.observer = Feed(feed, commands)
    run_trainer(framework, train, flags, check)


if __name__ == "__main__":
    main()
