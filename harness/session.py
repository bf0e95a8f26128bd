"""A training session: what a training loop needs that is not the lesson.

    session = Session("numpy", args, x_train, x_test)
    with session.watching(model, watch, optimizer, scheduler):  # a stop keeps the finished epochs
        for epoch in session.epochs():              # this run's share of the cores; the clock starts
            for idx in session.batches(batch_rng):  # the progress bar; the diagnostics' "before"
                loss = train_step(...)              # the lesson: forward, loss, backward, update
                session.step_done(loss)             # NaN check; the diagnostics' "after"; Ctrl-C
            session.epoch_done(evaluate(...), evaluate(...))  # the epoch's line and record

Both trainers run their loop inside one, so they share, line for line:
- the record: a metrics_file.Run, with the versions and the hardware of the run;
- the batches: the same shuffled order in both (data_loader.batches), under a tqdm bar; on
  an accelerator their indices go to the device;
- the cores: at each epoch's start this run's share of them (harness/threads.py), handed to
  use_cores when the trainer sets one (the NumPy CNN's halves, numpy_nn/parallel.py);
- the clock: an epoch's time is its training steps only, the device waited for;
- the divergence check: the first NaN or infinite loss stops the run (TrainingDiverged); on
  an accelerator the losses are read back CHECK_EVERY steps at a time, since each read makes
  the host wait for the device;
- the diagnostics (numpy_nn/diagnostics.py): the weights before a recorded step, the
  gradients, update ratios and activations after it;
- stopping: Ctrl-C or SIGTERM ends the loop at the next step boundary (harness/experiment.py), and
  the weights kept are those of the last finished epoch, taken right after its evaluation,
  so that the record and the weights always describe the same network;
- the pace: once, early in epoch 1, how long the whole run will take at the pace of its
  first steps (harness/pace.py), a line among the epoch lines;
- an outside observer (Session.observer; the demo's live page, demo/live.py), told when the
  run is ready to take its first step, and of every step and epoch, which may change the
  learning rate between two steps (set_lr): the record's "lr_changes" then say at which step
  and to what.

NumPy and the standard library only: torch is imported only by a PyTorch run's session.
"""
import contextlib
import io
import math
import sys
import time

import numpy as np
from tqdm import tqdm

from data_loader import batches
from harness import ctrl_c, experiment, threads
from harness.experiment import TrainingDiverged, check_finite
from harness.flags import project_file_problem
from harness.memory import check_memory
from harness.metrics_file import Run, numpy_blas
from harness.pace import Pace

# On an accelerator, reading a loss back makes the host wait for the device: there the
# divergence check reads the losses of CHECK_EVERY steps at once.
CHECK_EVERY = 100
DESCRIPTIONS = {"numpy": "Train the from-scratch NumPy network on MNIST.",
                "pytorch": "Train the PyTorch twin of the NumPy network on MNIST."}


def run_trainer(framework, train, argv=None, check=None, flags=None):
    """A trainer's command: its flags (and those flags(parser) adds), the checks made before
    anything starts (check(parser, args)), the data, train(args, x_train, y_train, x_test,
    y_test), and the files it earned."""
    ctrl_c.hand_over()                            # from here KeyboardInterrupt: load_data, train
    parser = experiment.build_parser(framework, DESCRIPTIONS[framework])
    if flags:
        flags(parser)
    args = parser.parse_args(argv)
    for flag in ("metrics", "weights"):           # the project's own files are never written over
        problem = project_file_problem(getattr(args, flag))
        if problem:
            parser.error(f"argument --{flag}: {problem}")
    if check:
        check(parser, args)
    experiment.prepare(parser, args)
    data = experiment.load_data(parser, args)
    if _in_host_memory(framework, args):          # (an accelerator's memory is not the host's)
        check_memory(args, len(data[0]), train.__globals__["EVAL_BATCH"])  # too big to fit: refused now
    np.seterr(over="ignore", invalid="ignore")  # a diverging run is reported once, by the NaN check
    experiment.stopping.hold = True             # a signal during the save is noted, not raised
    with experiment.out_of_memory_is_one_line(args):
        try:
            _, run = train(args, *data)
        except KeyboardInterrupt:               # while the model was being built
            experiment.stop("interrupted before training started: nothing written")
        experiment.finish(run, args)


class Session:
    """One training run's machinery; the module's docstring shows how a loop uses it.

    framework: "numpy" or "pytorch". args: the trainer's flags. x_train, x_test: the data (for
    the record's sizes; an observer may show the network some test images). device: a
    torch.device for a PyTorch run.
    """
    # Who else watches the run, if anyone: observer.ready(session), if it has one, before the
    # first step (the data loaded, the model built; it may wait there: a stop while it waits
    # ends the run before its first step), observer.step_done(session, loss) after each step,
    # observer.epoch_done(session) after each epoch's record. Set before train() is called.
    observer = None

    def __init__(self, framework, args, x_train, x_test, device=None):
        self.framework, self.args, self.device = framework, args, device
        self.n_train, self.x_test = len(x_train), x_test
        self.steps_per_epoch = math.ceil(self.n_train / args.batch_size)
        self.total_steps = args.epochs * self.steps_per_epoch
        if framework == "numpy":
            versions, hardware, self.sync = {"numpy": np.__version__}, {"device": "cpu", **numpy_blas()}, None
        else:
            versions, hardware, self.sync = _torch_run(device)
        self.run = Run(framework, args, versions, hardware, self.n_train, len(x_test))
        self.use_cores = None         # set by a trainer that splits its batches (numpy_nn/parallel.py)
        self.step = 0                 # steps taken in the whole run
        self.recording = False        # does the diagnostics record the step now running?
        self.unchecked = []           # losses on the device, not read back yet
        self.pace = Pace(self.steps_per_epoch, args.epochs, args.batch_size, self.n_train + len(x_test))

    # ------------------------------------------------------------------------- the loop's calls

    @contextlib.contextmanager
    def watching(self, model, watch, optimizer, scheduler):
        """The training loop runs inside: model is the network being trained (its weights are
        kept after each epoch), watch its diagnostics, optimizer and scheduler (None: a constant
        rate) those set_lr changes. A stop (Ctrl-C, SIGTERM) or a diverged loss ends the loop,
        not the program: the record says how the run ended, and the finished epochs are kept."""
        self.watch, self.optimizer, self.scheduler = watch, optimizer, scheduler
        self.base_lr = self.args.lr                   # the peak rate the schedule scales
        if self.framework == "numpy":
            self.save_weights = model.save
        else:
            import torch
            self.save_weights = lambda file: torch.save(model.state_dict(), file)
        experiment.stopping.begin()                   # from here a signal is noted, acted on below
        try:
            yield
        except experiment.StopRequested:
            # A stop during the last epoch's evaluation cut nothing: every epoch is recorded,
            # and the weights kept are the last one's. That run is complete (its exit status
            # still says a stop came); only one that ended with epochs to go was interrupted.
            self.run.interrupted = len(self.run.record["epochs"]) < self.args.epochs
        except TrainingDiverged as e:
            self.run.diverged = e
        finally:
            experiment.stopping.release()             # (the trainer's command holds on until its save)
        self.run.record["diagnostics"] = watch.finish()

    def epochs(self):
        """1, 2, ..., --epochs; at each start this run's share of the cores, and the clock
        (it stops when batches() runs out)."""
        if hasattr(self.observer, "ready"):
            self.observer.ready(self)                 # the demo's twins wait here for each other
            experiment.stopping.check()               # a stop while it waited: no step taken
        for epoch in range(1, self.args.epochs + 1):
            self.epoch, self.batch = epoch, 0
            cores = threads.share_cores(self.framework)
            self.threads = self.use_cores(cores) if self.use_cores else cores
            self.t0 = time.perf_counter()
            yield epoch

    def batches(self, rng):
        """The indices of each mini-batch of the epoch, in the order rng shuffles them."""
        bar = tqdm(batches(self.n_train, self.args.batch_size, rng), total=self.steps_per_epoch,
                   desc=f"epoch {self.epoch}", leave=False, disable=self.args.no_progress or None)
        for idx in bar:
            self.batch += 1
            self.recording = self.watch.due(self.epoch, self.batch)  # every --diagnostics-every steps
            if self.recording:
                self.watch.before_step()              # a copy of the weights
            yield idx if self.device is None else _to_device(idx, self.device)
        if self.sync:                                 # the device's steps, done
            self.sync()
        self.seconds = time.perf_counter() - self.t0  # the epoch's training, evaluation aside
        self._check_unchecked()
        if not self.use_cores:                        # evaluation: all this run's cores (halves keep
            threads.share_cores(self.framework)       # their share: they evaluate in halves too)

    def step_done(self, loss):
        """After each step: the divergence check, the diagnostics, and a stop asked for."""
        self.step += 1
        if self.recording:
            self.watch.after_step(_value(loss))       # gradients, update ratios, activations
        if self.sync is None:
            check_finite(_value(loss), self.epoch, self.batch, self.args)
        else:
            self.unchecked.append(loss.detach())
            if len(self.unchecked) == CHECK_EVERY:
                self._check_unchecked()
        if not self.pace.over:
            self._time_the_pace()
        if self.observer:
            self.observer.step_done(self, loss)
        experiment.stopping.check()                   # Ctrl-C or SIGTERM: leave at this step boundary

    def epoch_done(self, train, test):
        """After each epoch's evaluation, given (loss, accuracy) on the training and on the
        test set: the epoch's line and record, and the weights that go with it."""
        buffer = io.BytesIO()
        self.save_weights(buffer)
        self.run.log_epoch(self.epoch, *train, *test, self.seconds, self.n_train, self.threads,
                           weights=buffer.getvalue())
        if self.observer:
            self.observer.epoch_done(self)
        experiment.stopping.check()                   # a stop during evaluation keeps this epoch

    # ------------------------------------------------------------------------- for an observer

    def lr(self):
        """The learning rate the next step will take."""
        if self.framework == "numpy":
            return self.optimizer.lr
        return float(self.optimizer.param_groups[0]["lr"])

    def set_lr(self, lr):
        """From the next step on, train with peak rate lr instead, as if --lr had said so: a
        constant schedule takes lr itself, a cosine one goes on decaying from where it is, now
        scaled to lr (numpy_nn/utils.py's CosineSchedule from its base_lr, torch's
        CosineAnnealingLR from the rate it last set). The record notes the first step with
        the new rate. Called between two steps (an observer's step_done); the eager and
        compiled steps only (a CUDA graph sets its own rate)."""
        scale = lr / self.base_lr
        if self.framework == "numpy":
            self.optimizer.lr *= scale
            if self.scheduler:
                self.scheduler.base_lr = lr
        else:
            for group in self.optimizer.param_groups:
                group["lr"] *= scale
            if self.scheduler:
                self.scheduler.base_lrs = [lr] * len(self.optimizer.param_groups)
        self.base_lr = lr
        self.run.record.setdefault("lr_changes", []).append({"step": self.step + 1, "lr": lr})

    def _time_the_pace(self):
        """The first steps' pace: once it is known, its line, how long the run will take."""
        if self.sync:                                 # (on a device: the steps done, not just queued)
            self.sync()
        line = self.pace.step_done(self.step, time.perf_counter())
        if line:
            tqdm.write(line)                          # above the progress bar, not through it
            sys.stdout.flush()

    def _check_unchecked(self):
        check_losses(self.unchecked, self.batch - len(self.unchecked) + 1, self.epoch, self.args)
        self.unchecked = []


def check_losses(losses, first_batch, epoch, args):
    """Raise TrainingDiverged at the first NaN or infinite loss of batches first_batch, ...
    (losses: tensors on the device, read back once the lot is there)."""
    for batch, loss in enumerate(losses, start=first_batch):
        check_finite(_value(loss), epoch, batch, args)


def _in_host_memory(framework, args):
    """Does the run train in this machine's own memory, not on an accelerator?"""
    if framework == "numpy" or args.device == "cpu":
        return True
    import torch
    return args.device == "auto" and not (torch.cuda.is_available() or torch.backends.mps.is_available())


def _value(loss):
    """A loss as a Python float: a float as it is, a tensor read back."""
    return loss if isinstance(loss, float) else loss.item()


def _to_device(idx, device):
    import torch
    return torch.from_numpy(idx).to(device, non_blocking=True)


def torch_hardware(device):
    """What the record names of a PyTorch run's hardware: the device, the CPU's BLAS, the GPU."""
    import re

    import torch
    blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    hardware = {"device": str(device), "blas": blas.group(1) if blas else "unknown",
                "blas_threads": torch.get_num_threads()}
    if device.type == "cuda":
        hardware["gpu"] = torch.cuda.get_device_name(device)
    return hardware


def _torch_run(device):
    """(versions, hardware, sync) of a PyTorch run on device: what the record names, and the
    function that waits for the device (None on the CPU)."""
    import torch
    sync = None if device.type == "cpu" else getattr(torch, device.type).synchronize
    return {"torch": torch.__version__, "numpy": np.__version__}, torch_hardware(device), sync
