"""Try learning rates and batch sizes: a grid of real training runs, and a learning-rate range test.

    python sweep.py                                   # the MLP in NumPy: 6 rates x 3 batch sizes x SGD, Adam
    python sweep.py --lr 1e-3 1e-2 --batch-size 64 --optimizer momentum --framework pytorch
    python sweep.py --dropout 0.2                     # any other trainer flag goes to every cell
    python sweep.py --lr-range 1e-6 10                # the range test: one short run per optimizer

The grid. Each cell is one ordinary run of the trainer (numpy_nn/train.py or
pytorch_nn/train.py, started as a reader would type it), with its own record and weights in
--out-dir: <optimizer>_lr<rate>_bs<batch size>_metrics.json and _model.npz (or .pt), its
output in <cell>.log. compare.py --runs takes any of them. Cells run side by side, as many as
--jobs (the cores: each cell is given its share of them, harness/threads.py). A cell that finished
(completed, or diverged: it would diverge again) is kept, so running the same command again
runs only the rest; Ctrl-C stops the running cells (a cell stopped mid-way is run again next
time) and keeps the finished ones. One sweep at a time in a folder: a second one started
there is refused, naming the first one's process (the lock file .sweep.lock). At the end, from
the records alone (report/sweep.py):

    sweep.png          final test accuracy, learning rate against batch size, a panel per optimizer;
                       cells under 20% marked collapsed (the rate too large: the run blew up into one
                       digit for every image) or too slow (the rate too small), diverged ones grey, and
                       cells that trained at the edge of divergence marked sensitive (another machine's
                       float32 sums can tip them)
    sweep_losses.png   every cell's training loss, one small panel each
    sweep.md           the same numbers as a table

python sweep.py --redraw DIR draws these three again from the records in DIR, training nothing,
and the range test's pictures where DIR holds its records and range.json.

The range test (Smith, 2015; fast.ai's lr_find). One short run (--range-steps steps of the first
--batch-size, one epoch) with --schedule exponential: the learning rate grows from LO to HI by
the same factor at every step, and the record keeps the loss of every step
(--diagnostics-every 1). Rates too small barely move the loss; it falls faster as they grow,
until they are too large and it shoots up. The suggestion (suggest_lr) is a tenth of the rate
at the lowest smoothed loss. Writes range_<optimizer>.png and range.json beside the run.

The defaults (2 epochs on 10,000 images) keep the default grid of 36 cells within 5 minutes on
2 cores (ANALYSIS.md, section 6, "Learning rates and batch sizes").
"""
import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # the repo root, so the imports below work from any cwd
from harness.experiment import GOOD_LR, keep_running_if_stdout_closes, save_bytes, shown  # noqa: E402
from harness.flags import RESULTS_DIR, HelpWithDefaults, OneLineParser, build_parser, project_file_problem  # noqa: E402
from harness.metrics_file import WEIGHT_SUFFIX, MetricsError, differing_settings, load_metrics, recorded_config  # noqa: E402
from harness.threads import for_children  # noqa: E402
from numpy_nn.utils import exponential_factor  # noqa: E402
from report.figure import png  # noqa: E402

DEFAULT_LRS = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]  # from too small to too large for both optimizers
DEFAULT_BATCH_SIZES = [32, 128, 512]
OPTIMIZERS = ["sgd", "momentum", "adam"]
DEFAULT_OPTIMIZERS = ["sgd", "adam"]
# 2 epochs of 10,000 images: 36 cells in about 2 minutes on 2 busy cores (ANALYSIS.md); the full
# 60,000 images take 6x the steps
DEFAULT_EPOCHS, DEFAULT_LIMIT = 2, 10000
RANGE_STEPS, RANGE_BATCH = 200, 128  # 200 steps over 7 decades: ~28 a decade
SMOOTHING = 0.9   # the moving average's weight on the past: ~10 steps, a third of a decade at the defaults
RULE = "a tenth of the rate at the lowest smoothed loss"
SET_BY_THE_SWEEP = ("--metrics", "--weights")          # for every run, besides the sweep's own flags
SET_BY_THE_RANGE_TEST = ("--schedule", "--lr-end", "--diagnostics-every", "--no-diagnostics")


class SweepError(Exception):
    """Bad input or a folder that is not this sweep's; the message is one line."""


# ----------------------------------------------------------------------------- the cells

class Cell:
    """One run of the grid: its flags, its files, and the config its record must have."""

    def __init__(self, args, optimizer, lr, batch_size, passed):
        self.optimizer, self.lr, self.batch_size = optimizer, lr, batch_size
        self.name = f"{optimizer}_lr{lr:g}_bs{batch_size}"
        self.metrics = args.out_dir / f"{self.name}_metrics.json"
        self.weights = args.out_dir / f"{self.name}_model{WEIGHT_SUFFIX[args.framework]}"
        self.log = args.out_dir / f"{self.name}.log"
        self.argv = ["--optimizer", optimizer, "--lr", repr(lr), "--batch-size", str(batch_size),
                     "--model", args.model, "--epochs", str(args.epochs), *limit_flag(args.limit),
                     "--no-progress", *passed, "--metrics", str(self.metrics), "--weights", str(self.weights)]
        self.config = trainer_config(args.framework, self.argv)
        self.command = [sys.executable, "-u", str(ROOT / f"{args.framework}_nn" / "train.py"), *self.argv]

    def state(self, framework):
        """"todo" (no record, or one stopped mid-way), "completed" or "diverged"; SweepError
        for a file that is not this cell's (other settings, or not a record at all)."""
        if not self.metrics.exists():
            return "todo"
        try:
            record = load_metrics(self.metrics)
        except MetricsError as e:
            raise SweepError(f"{e}: not a cell of this sweep; give another --out-dir") from None
        mine = {"framework": framework, **self.config}
        theirs = {"framework": record["framework"], **record["config"]}
        differ = differing_settings(mine, theirs)  # every recorded setting, not a list to keep up
        if differ:
            key = differ[0]
            mine, theirs = mine.get(key), theirs.get(key)
            raise SweepError(f"{shown(self.metrics)} is a run with other settings ({key} {theirs}, this "
                             f"sweep's {mine}): give another --out-dir, or move that run away")
        if stopped_mid_way(record):
            return "todo"
        return "completed" if record["status"] == "interrupted" else record["status"]  # (every epoch done)


def stopped_mid_way(record):
    """A record of a run stopped before its last epoch ended: a cell to run again. (One stopped
    during its last evaluation says "completed"; written by an older trainer, it says
    "interrupted" but has every epoch: it is complete too.)"""
    return record["status"] == "interrupted" and len(record["epochs"]) < record["config"]["epochs"]


def make_out_dir(path):
    """Create the sweep's folder and check that a file can be written in it, before any run
    starts; SweepError (one line) if not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        raise SweepError(f"cannot write in the folder {shown(path)} ({e.strerror or e}); give another --out-dir") from None


LOCK = ".sweep.lock"  # in the sweep's folder: who is sweeping there now


@contextlib.contextmanager
def alone_in(folder):
    """Inside the block this process is the only sweep in folder: it holds an exclusive lock on
    folder/LOCK (fcntl.flock, which the system releases when the process ends, however it ends),
    and a second sweep into the folder is refused in one line naming this one's pid. (Where
    there is no fcntl, Windows, there is no lock.)"""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        lock = open(folder / LOCK, "a+")
    except OSError as e:
        raise SweepError(f"cannot write in the folder {shown(folder)} ({e.strerror}); give another --out-dir") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            other = lock.read().strip() or "unknown"
            raise SweepError(f"another sweep (pid {other}) is running in {shown(folder)}: wait for it to end, "
                             f"or give another --out-dir") from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


def limit_flag(limit):
    return [] if limit is None else ["--limit", str(limit)]


def trainer_config(framework, argv):
    """The config the trainer records for these flags: its own parser's reading of them, kept
    as its record keeps them."""
    parser = build_parser(framework, "")
    if framework == "numpy":                  # numpy_nn/train.py's own: a learner's function
        from checker.exercise import exercise_flags
        exercise_flags(parser)
    parser.prog = f"sweep.py (a flag for {framework}_nn/train.py)"
    return recorded_config(parser.parse_args(argv))


class Stop:
    """Ctrl-C or SIGTERM: noted, and passed on once to the running trainers, which stop at
    their next step and keep their finished epochs (harness/experiment.py)."""

    def __init__(self):
        self.signum, self.running = None, []
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._note)

    def _note(self, signum, frame):
        if self.signum is None:
            self.signum = signum
            for proc in self.running:
                proc.send_signal(signal.SIGINT)

    def start(self, command, log, side_by_side=1):
        """Start a trainer, its output into log, with its share of the cores among side_by_side
        trainers running at once (harness/threads.py's for_children). In a session of its own, so
        that a Ctrl-C at the terminal reaches it once, from here, and not while it is stopping."""
        with open(log, "w") as out:
            proc = subprocess.Popen(command, cwd=ROOT, env=for_children(side_by_side), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.running.append(proc)
        return proc

    def done(self, proc):
        self.running.remove(proc)


def last_line(path):
    lines = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def run_grid(cells, args, stop):
    """Run every cell not finished yet, --jobs at a time, with a bar over the cells; returns the
    cells that failed (neither finished nor stopped), as (cell, its last line)."""
    from tqdm import tqdm

    todo = [cell for cell in cells if cell.state(args.framework) == "todo"]
    if len(todo) < len(cells):
        print(f"{len(cells) - len(todo)} of {len(cells)} cells finished before: kept")
    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), unit="cell", desc="sweep",
               disable=args.no_progress or None)
    running, failed = {}, []
    try:
        return _run_cells(todo, running, failed, args, stop, bar)
    finally:
        for proc in running:              # an error here: the cells started are stopped, not orphaned
            proc.send_signal(signal.SIGINT)
            proc.wait()
        bar.close()


def _run_cells(todo, running, failed, args, stop, bar):
    """run_grid's loop: start cells while there is room, note each one that ends."""
    while (todo and stop.signum is None) or running:
        while todo and len(running) < args.jobs and stop.signum is None:
            side_by_side = min(args.jobs, len(running) + len(todo))  # the last cells may run alone
            cell = todo.pop(0)
            running[stop.start(cell.command, cell.log, side_by_side)] = cell
        time.sleep(0.1)
        for proc, cell in list(running.items()):
            if proc.poll() is None:
                continue
            stop.done(proc)
            del running[proc]
            state = cell.state(args.framework)
            if state == "completed":
                result = f"{100 * load_metrics(cell.metrics)['final_test_acc']:.2f}%"
            elif state == "diverged":
                result = "diverged"
            elif stop.signum is not None:
                result = "stopped: runs again next time"
            else:
                result = f"failed: {last_line(cell.log)} (the whole output: {shown(cell.log)})"
                failed.append((cell, last_line(cell.log)))
            bar.write(f"{cell.name}: {result}")
            bar.update(state != "todo")
    return failed


def grid(args, passed):
    """The grid: run it, then draw and tabulate it."""
    cells = [Cell(args, optimizer, lr, batch_size, passed)
             for optimizer in args.optimizer for batch_size in args.batch_size for lr in args.lr]
    stop = Stop()
    for cell in cells:
        cell.state(args.framework)        # a folder with another sweep's runs: refused before any starts
    make_out_dir(args.out_dir)
    with alone_in(args.out_dir):          # two sweeps into one folder would both train every cell
        failed = run_grid(cells, args, stop)
        finished = [cell for cell in cells if cell.state(args.framework) != "todo"]
        if stop.signum is not None:
            print(f"interrupted: {len(finished)} of {len(cells)} cells finished, kept in {shown(args.out_dir)}; "
                  f"the same command runs the rest", file=sys.stderr)
            sys.exit(128 + stop.signum)
        if failed:
            sys.exit(f"error: {len(failed)} cell(s) failed, e.g. {failed[0][0].name}: {failed[0][1]} "
                     f"(its output: {shown(failed[0][0].log)})")
        draw_grid(args.out_dir, [load_metrics(cell.metrics) for cell in cells])


def draw_grid(out_dir, records):
    """sweep.png, sweep_losses.png and sweep.md from the cells' records."""
    from report import sweep as report
    save_bytes(out_dir / "sweep.png", lambda f: f.write(png(report.accuracy_heatmap(records))))
    save_bytes(out_dir / "sweep_losses.png", lambda f: f.write(png(report.loss_curves(records))))
    table = report.markdown_table(records)
    save_bytes(out_dir / "sweep.md", lambda f: f.write(table.encode()))
    print(table)
    print(f"pictures -> {shown(out_dir / 'sweep.png')}, {shown(out_dir / 'sweep_losses.png')}; "
          f"table -> {shown(out_dir / 'sweep.md')}")


def redraw(out_dir):
    """draw_grid again from the finished cells' records in out_dir (no training): after a change
    to the drawing. Refuses a folder with no cells, or with cells of different sweeps."""
    paths = [path for path in sorted(out_dir.glob("*_metrics.json")) if not path.name.startswith("range_")]
    try:
        records = [load_metrics(path) for path in paths]
    except MetricsError as e:
        raise SweepError(str(e)) from None
    finished = [(path, record) for path, record in zip(paths, records) if not stopped_mid_way(record)]
    if not finished:
        raise SweepError(f"no finished cell records (*_metrics.json) in {shown(out_dir)}")
    paths, records = [path for path, _ in finished], [record for _, record in finished]
    first = {"framework": records[0]["framework"], **records[0]["config"]}
    for path, record in zip(paths, records):
        differ = [key for key in differing_settings(first, {"framework": record["framework"], **record["config"]})
                  if key not in ("optimizer", "lr", "batch_size")]  # the grid's axes
        if differ:
            raise SweepError(f"{shown(path)} is not of the same sweep as {shown(paths[0])} ({differ[0]} "
                             f"{record['config'].get(differ[0])}, not {first.get(differ[0])})")
    records = sorted(records, key=lambda r: OPTIMIZERS.index(r["config"]["optimizer"]))  # the grid's panel order
    with alone_in(out_dir):
        draw_grid(out_dir, records)
        summary = read_summary(out_dir / "range.json")    # a range test run here: its pictures too
        for optimizer, entry in summary.items():
            metrics = out_dir / f"range_{optimizer}_metrics.json"
            if metrics.exists():
                try:
                    record = load_metrics(metrics)
                    lo, hi = entry["lr_range"]
                    _, _, _, picture = draw_range(out_dir, optimizer, record, lo, hi, entry["steps"], entry["default_lr"])
                except (MetricsError, KeyError, TypeError, ValueError) as e:
                    raise SweepError(f"cannot redraw the range test of {optimizer} from {shown(metrics)} and "
                                     f"range.json: {type(e).__name__}: {e}") from None
                print(f"range test, {optimizer}: picture -> {shown(picture)}")


# ----------------------------------------------------------------------------- the range test

def smooth(losses, beta=SMOOTHING):
    """The exponential moving average of the losses, bias-corrected: each step's loss is noisy
    (one batch), the average is not. avg_k = beta avg_(k-1) + (1 - beta) loss_k, avg_0 = 0,
    divided by 1 - beta^k so that the first values are not pulled towards 0."""
    average, smoothed = 0.0, []
    for k, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        smoothed.append(average / (1 - beta ** k))
    return smoothed


def finite_prefix(losses):
    """The losses before the first one that is not finite (None in a record: NaN or infinite)."""
    prefix = []
    for loss in losses:
        if loss is None or not math.isfinite(loss):
            break
        prefix.append(loss)
    return prefix


def suggest_lr(lrs, losses, beta=SMOOTHING):
    """(suggested rate, the index of the lowest smoothed loss): RULE, over the steps before the
    first loss that is not finite (None: the trainer stopped there)."""
    finite = finite_prefix(losses)
    if not finite:
        raise SweepError("the range test's first step already had a loss that is not finite; "
                         "start lower (the first number of --lr-range)")
    smoothed = smooth(finite, beta)
    lowest = min(range(len(smoothed)), key=smoothed.__getitem__)
    return lrs[lowest] / 10, lowest


def range_rates(lo, hi, total_steps):
    """The rate of every step of the range test, as both trainers' schedules hand them out."""
    return [lo * exponential_factor(lo, hi, k, total_steps) for k in range(total_steps)]


def range_test(args, passed):
    """One short run per optimizer, its loss against its rate, and the suggested rate."""
    make_out_dir(args.out_dir)
    with alone_in(args.out_dir):
        summary = read_summary(args.out_dir / "range.json")  # a broken one: refused before any run
        range_runs(args, passed, Stop(), summary)


def read_summary(path):
    """range.json's entries so far, one per optimizer ({} when there is none yet), read before
    any run starts; SweepError (one line) for a file that is not one."""
    if not os.path.lexists(path):
        return {}
    fix = "move it away or give another --out-dir"
    if path.is_dir():
        raise SweepError(f"{shown(path)} is a folder, not the range test's summary: {fix}")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SweepError(f"cannot read {shown(path)} ({e.strerror}): {fix}") from None
    except UnicodeDecodeError:
        raise SweepError(f"{shown(path)} is not UTF-8 text, so not the range test's summary: {fix}") from None
    except json.JSONDecodeError as e:
        raise SweepError(f"{shown(path)} is not valid JSON ({e}): {fix}") from None
    if not isinstance(summary, dict) or not all(isinstance(entry, dict) for entry in summary.values()):
        raise SweepError(f"{shown(path)} is not the range test's summary (a JSON object of one object per "
                         f"optimizer): {fix}")
    return summary


def range_runs(args, passed, stop, summary):
    """The range test's runs, one per optimizer, each drawn and added to summary; then
    range.json."""
    lo, hi = args.lr_range
    batch_size = args.batch_size[0]
    steps = args.range_steps
    summary_path = args.out_dir / "range.json"
    default_lr = build_parser(args.framework, "").get_default("lr")
    for optimizer in args.optimizer:
        name = f"range_{optimizer}"
        metrics = args.out_dir / f"{name}_metrics.json"
        argv = ["--optimizer", optimizer, "--lr", repr(lo), "--lr-end", repr(hi), "--schedule", "exponential",
                "--batch-size", str(batch_size), "--epochs", "1", "--limit", str(steps * batch_size),
                "--model", args.model, "--diagnostics-every", "1", "--no-progress", *passed,
                "--metrics", str(metrics),
                "--weights", str(args.out_dir / f"{name}_model{WEIGHT_SUFFIX[args.framework]}")]
        trainer_config(args.framework, argv)  # a bad flag: one line now
        log = args.out_dir / f"{name}.log"
        print(f"range test, {optimizer}: {steps} steps of {batch_size} images, the rate from {lo:g} to "
              f"{hi:g} (output: {shown(log)})", flush=True)
        started = time.time()
        proc = stop.start([sys.executable, "-u", str(ROOT / f"{args.framework}_nn" / "train.py"), *argv], log)
        proc.wait()
        stop.done(proc)
        if stop.signum is not None:
            print("interrupted: the range test has no result", file=sys.stderr)
            sys.exit(128 + stop.signum)
        failed = SweepError(f"the range test's run failed: {last_line(log)} (its output: {shown(log)})")
        if not metrics.exists() or metrics.stat().st_mtime < started:  # none, or an earlier run's
            raise failed
        record = load_metrics(metrics)
        suggested, lowest, comparison, picture = draw_range(args.out_dir, optimizer, record, lo, hi, steps,
                                                            default_lr)
        summary[optimizer] = {"framework": args.framework, "model": args.model, "batch_size": batch_size,
                              "steps": steps, "lr_range": [lo, hi], "rule": RULE, "smoothing": SMOOTHING,
                              "lowest_smoothed_loss_at_lr": lowest, "suggested_lr": suggested,
                              "default_lr": default_lr, "readme_lr": GOOD_LR[optimizer], "status": record["status"]}
        print(f"suggested rate for {optimizer}: {suggested:.2g} ({RULE}, at {lowest:.2g}): "
              f"{comparison}; picture -> {shown(picture)}")
    save_bytes(summary_path, lambda f: f.write((json.dumps(summary, indent=2) + "\n").encode()))


def draw_range(out_dir, optimizer, record, lo, hi, steps, default_lr):
    """range_<optimizer>.png from the range test's record (its rate grew from lo to hi over
    steps); returns the suggested rate, the rate at the lowest smoothed loss, the sentence that
    compares the suggestion with the rates the project uses, and the picture's path."""
    from report import sweep as report
    d = record["diagnostics"]
    rates = range_rates(lo, hi, steps)
    lrs = [rates[step - 1] for step in d["steps"]]
    suggested, lowest = suggest_lr(lrs, d["loss"])
    good = GOOD_LR[optimizer]
    comparison = (f"{suggested / default_lr:.2g}x the trainers' default --lr {default_lr:g}, "
                  f"{suggested / good:.2g}x the rate docs/experiments.md uses for {optimizer} ({good:g})")
    fig = report.range_figure(lrs, d["loss"], smooth(finite_prefix(d["loss"])),
                              suggested, lowest, RULE, SMOOTHING, record, comparison)
    picture = out_dir / f"range_{optimizer}.png"
    save_bytes(picture, lambda f: f.write(png(fig)))
    return suggested, lrs[lowest], comparison, picture


# ----------------------------------------------------------------------------- the command

def positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not 0 < value < math.inf:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


def build_sweep_parser():
    p = OneLineParser(description=__doc__.split("\n\n")[0],
                      formatter_class=HelpWithDefaults,  # a default of None writes its own
                      epilog="Any other flag is passed to every trainer (see python numpy_nn/train.py --help).")
    p.add_argument("--lr", type=positive(float), nargs="+", default=None,
                   help=f"the grid's learning rates (default: {' '.join(f'{lr:g}' for lr in DEFAULT_LRS)})")
    p.add_argument("--batch-size", type=positive(int), nargs="+", default=None,
                   help=f"the grid's batch sizes (default: {' '.join(map(str, DEFAULT_BATCH_SIZES))}; the "
                        f"range test's: {RANGE_BATCH})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, nargs="+", default=None,
                   help=f"the grid's optimizers (a panel each), or the range test's (a run each) "
                        f"(default: {' '.join(DEFAULT_OPTIMIZERS)})")
    p.add_argument("--framework", choices=["numpy", "pytorch"], default="numpy", help="which trainer runs the cells")
    p.add_argument("--model", choices=["mlp", "cnn"], default="mlp", help="the trainers' --model")
    p.add_argument("--epochs", type=positive(int), default=DEFAULT_EPOCHS, help="each cell's epochs")
    p.add_argument("--limit", type=positive(int), default=DEFAULT_LIMIT,
                   help="each cell trains on the first N images (the test set stays whole)")
    p.add_argument("--jobs", type=positive(int), default=None,
                   help="cells running at once (default: the cores)")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="the sweep's folder: every cell's record, weights and output, and the pictures "
                        "(default: results/sweep)")
    p.add_argument("--lr-range", type=positive(float), nargs=2, metavar=("LO", "HI"), default=None,
                   help="run the range test instead of the grid: the rate grows from LO to HI")
    p.add_argument("--range-steps", type=positive(int), default=RANGE_STEPS,
                   help="the range test's steps (its run trains on steps x batch size images)")
    p.add_argument("--no-progress", action="store_true", help="hide the bar over the cells")
    p.add_argument("--redraw", type=Path, metavar="DIR", default=None,
                   help="draw sweep.png, sweep_losses.png and sweep.md in DIR again from its records, training nothing")
    return p


def parse(argv=None):
    """The sweep's flags, and the trainer flags it passes on; a bad one is one line."""
    p = build_sweep_parser()
    args, passed = p.parse_known_args(argv)
    ours = SET_BY_THE_SWEEP + (SET_BY_THE_RANGE_TEST if args.lr_range else ())
    for flag in passed:
        if flag.startswith("--") and any(own.startswith(flag.split("=")[0]) for own in ours):
            p.error(f"argument {flag.split('=')[0]}: the sweep sets it for every run")
    if args.lr_range:
        lo, hi = args.lr_range
        if not lo < hi:
            p.error(f"argument --lr-range: LO must be below HI, got {lo:g} {hi:g}")
        if args.lr:
            p.error("argument --lr: the range test tries every rate from LO to HI (--lr-range); give one or the other")
        args.batch_size = args.batch_size or [RANGE_BATCH]
        if len(args.batch_size) > 1:
            p.error("argument --batch-size: the range test runs one batch size")
        if args.range_steps * args.batch_size[0] > 60000:
            p.error(f"argument --range-steps: {args.range_steps} steps of {args.batch_size[0]} images need more "
                    f"than MNIST's 60,000 training images")
    args.lr = args.lr or DEFAULT_LRS
    args.optimizer = args.optimizer or DEFAULT_OPTIMIZERS
    # absolute: the trainers run in the repo (cwd=ROOT), and must write where the sweep looks
    args.out_dir = (args.out_dir or RESULTS_DIR / "sweep").absolute()
    for flag, folder in (("--out-dir", args.out_dir), ("--redraw", args.redraw)):
        problem = folder and project_file_problem(folder)   # the trainers would refuse every cell's files
        if problem:
            p.error(f"argument {flag}: {problem}")
    args.jobs = args.jobs or os.cpu_count() or 1
    args.batch_size = args.batch_size or DEFAULT_BATCH_SIZES
    trainer_config(args.framework, [*passed, "--model", args.model])  # a bad trainer flag: one line now
    return args, passed


def main(argv=None):
    args, passed = parse(argv)
    keep_running_if_stdout_closes()
    try:
        if args.redraw:
            redraw(args.redraw)
        else:
            (range_test if args.lr_range else grid)(args, passed)
    except SweepError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
