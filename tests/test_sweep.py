"""sweep.py: the range test's schedule in both trainers, the suggestion rule, the marks on the
heatmap and the table, and the grid's bookkeeping (a rerun skips finished cells; Ctrl-C keeps
them). sweep.py and the trainers run through their main(argv) in this process (conftest.py),
except where a process of their own is the point: a sweep from another folder, and Ctrl-C
(slow). The cells a sweep starts are always processes. Trainers get one BLAS thread, as in
test_cli.py: only timings change."""
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import sweep  # noqa: E402
from conftest import run_in_process, run_trainer_main  # noqa: E402
from harness import threads  # noqa: E402
from harness.flags import build_parser  # noqa: E402
from numpy_nn.utils import SGD, ExponentialSchedule, exponential_factor  # noqa: E402
from report import sweep as report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
LO, HI, STEPS = 1e-6, 10.0, 71   # 71 steps: a tenth of a decade each, 1e-6 ... 10


def expected_rate(k, lo=LO, hi=HI, n=STEPS):
    """The range test's rate at step k (0, ..., n - 1): lo (hi/lo)^(k/(n-1)), as defined."""
    return lo * (hi / lo) ** (k / (n - 1))


# ----------------------------------------------------------------------------- the schedule

def test_exponential_schedule_is_exact_in_both_trainers():
    """The rate of every step, as numpy_nn/train.py's ExponentialSchedule and pytorch_nn/train.py's
    LambdaLR hand it out, is exactly lo (hi/lo)^(k/(n-1)): both compute that very expression in
    float64, so equality, not closeness. It starts at lo exactly and ends at hi (to one rounding
    of the power: 2 ulp)."""
    numpy_opt = SGD(np.zeros(3), lr=LO)
    numpy_schedule = ExponentialSchedule(numpy_opt, STEPS, HI)
    torch_opt = torch.optim.SGD([torch.zeros(3, requires_grad=True)], lr=LO)
    torch_schedule = torch.optim.lr_scheduler.LambdaLR(torch_opt, lambda t: exponential_factor(LO, HI, t, STEPS))
    numpy_rates, torch_rates = [], []
    for _ in range(STEPS):
        numpy_rates.append(numpy_opt.lr)
        torch_rates.append(torch_opt.param_groups[0]["lr"])
        numpy_schedule.step()
        torch_opt.step()
        torch_schedule.step()
    expected = [expected_rate(k) for k in range(STEPS)]
    assert numpy_rates == expected
    assert torch_rates == expected
    assert sweep.range_rates(LO, HI, STEPS) == expected   # what the picture plots them against
    assert numpy_rates[0] == LO
    assert abs(numpy_rates[-1] - HI) <= 2 * math.ulp(HI)
    ratios = np.diff(np.log(expected))
    assert np.allclose(ratios, math.log(HI / LO) / (STEPS - 1), rtol=1e-9)  # float64 logs of rates 1e-6..10


# float64 twins: the trainers agree to ~1e-15 (tests/test_equivalence.py); 1e-9 leaves six orders
# of margin and still fails if either trainer ran another schedule (the constant run below
# differs from the exponential one in the first digits).
def test_both_trainers_run_the_exponential_schedule(tmp_path):
    """The same range-test run in float64 from both trainers gives the same losses, and not a
    constant-rate run's: the schedule reaches the trainers' loops."""
    flags = ["--limit", "640", "--batch-size", "64", "--epochs", "1", "--optimizer", "sgd", "--lr", "1e-3",
             "--dtype", "float64", "--no-diagnostics", "--no-progress"]
    losses = {}
    for framework, schedule in (("numpy", "exponential"), ("pytorch", "exponential"), ("numpy", "constant")):
        extra = ["--schedule", "exponential", "--lr-end", "3"] if schedule == "exponential" else ["--schedule", "constant"]
        extra += ["--device", "cpu"] if framework == "pytorch" else []
        metrics = tmp_path / f"{framework}_{schedule}.json"
        done = run_trainer_main(framework, *flags, *extra, "--metrics", metrics,
                                "--weights", tmp_path / f"{framework}_{schedule}.w")
        assert done.returncode == 0, done.stderr
        epoch = json.loads(metrics.read_text())["epochs"][0]
        losses[framework, schedule] = np.array([epoch["train_loss"], epoch["test_loss"]])
    a, b, constant = losses["numpy", "exponential"], losses["pytorch", "exponential"], losses["numpy", "constant"]
    print(f"twins: {np.max(np.abs(a - b) / b):.1e} apart; constant rate: {np.max(np.abs(a - constant) / constant):.1e}")
    assert np.max(np.abs(a - b) / b) < 1e-9
    assert np.max(np.abs(a - constant) / constant) > 1e-2


@pytest.mark.parametrize("flags, message", [
    (["--schedule", "exponential"], "--lr-end"),
    (["--lr-end", "10"], "--lr-end"),
])
def test_lr_end_goes_with_the_exponential_schedule(flags, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        build_parser("numpy", "").parse_args(flags)
    assert stopped.value.code == 2
    assert f"argument {message}: goes with --schedule exponential" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the suggestion

def test_smoothing_is_the_bias_corrected_moving_average():
    """By hand, beta 0.5: averages 0.5, 1.25, 2.125 over 1 - 0.5^k = 0.5, 0.75, 0.875."""
    assert np.allclose(sweep.smooth([1.0, 2.0, 3.0], beta=0.5), [1.0, 5 / 3, 17 / 7], rtol=1e-15, atol=0)


def made_up_curve():
    """A range test's loss as the textbook draws it: flat at 2.3 up to lr 1e-4 (step 20), falling
    to 0.3 at lr 0.1 (step 50), rising steeply after, and NaN from step 65 on; then, past the
    NaN, values lower than any before that a rule must not read."""
    losses = []
    for k in range(STEPS):
        if k <= 20:
            losses.append(2.3)
        elif k <= 50:
            losses.append(2.3 - 2.0 * (k - 20) / 30)
        elif k < 65:
            losses.append(0.3 + 0.5 * (k - 50) ** 2)
        else:
            losses.append(None if k == 65 else 0.0)
    return losses


def test_the_suggestion_is_a_tenth_of_the_rate_at_the_lowest_loss():
    lrs = sweep.range_rates(LO, HI, STEPS)
    suggested, lowest = sweep.suggest_lr(lrs, made_up_curve(), beta=0.0)  # no smoothing: the raw minimum
    assert lowest == 50
    assert suggested == lrs[50] / 10
    assert math.isclose(suggested, 1e-2, rel_tol=1e-12)  # lr 0.1 at step 50, to float64 rounding


def test_the_smoothed_suggestion_lags_by_what_the_average_says():
    """With beta 0.9 the lowest smoothed loss comes a few steps after the raw one: the average
    still remembers the falling side. Its index, by hand from the same curve, then the rule."""
    lrs, losses = sweep.range_rates(LO, HI, STEPS), made_up_curve()
    smoothed = sweep.smooth(losses[:65], beta=0.9)
    lowest = int(np.argmin(smoothed))
    assert 50 < lowest < 55
    assert sweep.suggest_lr(lrs, losses, beta=0.9) == (lrs[lowest] / 10, lowest)


def test_a_first_loss_that_is_not_finite_has_no_suggestion():
    with pytest.raises(sweep.SweepError, match="start lower"):
        sweep.suggest_lr([1e-6, 1e-5], [None, 2.3])


# ----------------------------------------------------------------------------- the marks

STEADY = [2.3, 2.35, 2.2, 2.25, 2.1]       # one batch's noise on a slow fall: 1.02x the first at most


def made_up_diagnostics(losses=STEADY, dead=0.0):
    """What outcome reads: the loss at each recorded step, each hidden layer's dead ReLUs."""
    steps = list(range(1, 5 * len(losses), 5))
    return {"steps": steps, "loss": losses, "dead_fraction": {"layer1": [0.0] * len(losses),
                                                              "layer2": [0.0] * (len(losses) - 1) + [dead]}}


def made_up_record(optimizer, lr, batch_size, status="completed", acc=0.95, diagnostics=None):
    return {"framework": "numpy", "status": status, "final_test_acc": None if status == "diverged" else acc,
            "config": {"optimizer": optimizer, "lr": lr, "batch_size": batch_size, "model": "mlp",
                       "hidden": [128, 64], "epochs": 2, "schedule": "cosine", "seed": 0},
            "data": {"train_samples": 1000}, "diagnostics": diagnostics or made_up_diagnostics(),
            "epochs": [{"epoch": 1, "train_loss": 0.5, "test_acc": acc or 0.0},
                       {"epoch": 2, "train_loss": 0.3, "test_acc": acc or 0.0}]}


BLEW_UP = made_up_diagnostics([2.3, 4.7, 2.3, 2.3, 2.3])   # 2.04x the first: above 2x
ALL_DEAD = made_up_diagnostics(dead=0.9)                    # 90% of layer2's ReLUs dead at the end
MADE_UP = [made_up_record("sgd", 0.1, 32, acc=0.9512),
           made_up_record("sgd", 10.0, 32, status="diverged"),
           made_up_record("sgd", 0.1, 128, acc=0.1135, diagnostics=BLEW_UP),  # one digit for every image
           made_up_record("sgd", 10.0, 128, acc=0.2, diagnostics=BLEW_UP),    # at the line: trained
           made_up_record("adam", 0.1, 32, acc=0.1999, diagnostics=ALL_DEAD),
           made_up_record("adam", 0.1, 128, acc=0.127),                        # a slow fall, none dead
           made_up_record("adam", 0.1, 512, acc=0.181, diagnostics=made_up_diagnostics(dead=0.89)),
           made_up_record("adam", 10.0, 32, acc=0.1, diagnostics={"steps": []})]  # no diagnostics


def test_diverged_collapsed_and_slow_cells_are_marked_apart():
    assert [report.outcome(r) for r in MADE_UP] == ["trained", "diverged", "collapsed", "trained", "collapsed",
                                                    "too slow", "too slow", "near chance"]
    table = report.markdown_table(MADE_UP)
    assert "| 32 | 95.1% | diverged |" in table
    assert "| 128 | collapsed 11.3% | sensitive 20.0% |" in table     # trained, with a blow-up's signs
    assert "| 32 | collapsed 20.0% | near chance 10.0% |" in table  # adam's panel: 19.99% to one decimal
    assert "| 128 | too slow 12.7% |" in table and "| 512 | too slow 18.1% |" in table
    for mark in ("diverged: ", "collapsed: ", "too slow: ", "near chance: ", "sensitive: "):
        assert table.count(mark) == 1                                  # the legend says each once


def test_a_table_of_cells_that_all_trained_has_no_empty_legend():
    """With no cell marked, the table's line reads "Final test accuracy." (it read
    "Final test accuracy; .")."""
    table = report.markdown_table([MADE_UP[0]])
    assert "seed 0. Final test accuracy.\n" in table and "; ." not in table
    assert "Final test accuracy; diverged: the loss became NaN or infinite; " in report.markdown_table(MADE_UP)


def test_the_reference_sweep_and_collapse_run_get_the_marks_their_losses_show():
    """The committed records: SGD's too small rates are too slow, every lr 1 and 10 cell under 20%
    is collapsed, and so is the 10-epoch collapse run, whose recorded loss never rose above its
    first (it blew up between recorded steps) but whose ReLUs died."""
    cells = REPO / "results/reference/sweep"
    marks = {path.name[:-len("_metrics.json")]: report.outcome(json.loads(path.read_text()))
             for path in cells.glob("*_bs*_metrics.json")}
    assert {name for name, mark in marks.items() if mark == "too slow"} == {
        "sgd_lr0.0001_bs32", "sgd_lr0.0001_bs128", "sgd_lr0.0001_bs512", "sgd_lr0.001_bs128",
        "sgd_lr0.001_bs512", "sgd_lr0.01_bs512"}
    assert {name for name, mark in marks.items() if mark == "collapsed"} == {
        f"{optimizer}_lr{lr}_bs{batch}" for optimizer, lr, batch in
        [("sgd", 10, 128), ("sgd", 10, 512)] + [("adam", lr, b) for lr in (1, 10) for b in (32, 128, 512)]}
    collapse = json.loads((REPO / "results/reference/learning/collapse_metrics.json").read_text())
    assert report.outcome(collapse) == "collapsed"
    assert max(collapse["diagnostics"]["loss"]) == collapse["diagnostics"]["loss"][0]


def test_cells_that_trained_at_the_edge_of_divergence_are_marked_sensitive():
    """A cell that trained (20% or more) is "sensitive" when its record shows the start of a
    blow-up: a recorded loss above 2x the first, or half of a layer's ReLUs dead at the end.
    One batch's noise (1.08x, the reference's slow cells) or 49% dead is not; a cell that did
    not train keeps its own mark; without diagnostics there is no telling."""
    def cell(diagnostics, acc=0.9):
        return report.mark(made_up_record("sgd", 1.0, 32, acc=acc, diagnostics=diagnostics))
    assert cell(BLEW_UP) == "sensitive"                                         # 2.04x the first
    assert cell(made_up_diagnostics(dead=0.5)) == "sensitive"
    assert cell(made_up_diagnostics([2.3, 2.48, 2.0, 1.0, 0.5], dead=0.49)) == "trained"
    assert cell(made_up_diagnostics(dead=0.5), acc=0.19) == "too slow"        # did not train: not this mark
    assert cell(BLEW_UP, acc=0.1) == "collapsed"
    assert cell({"steps": []}) == "trained"
    assert report.cell_text(made_up_record("sgd", 1.0, 32, acc=0.844, diagnostics=BLEW_UP)) == "sensitive 84.4%"


def test_the_reference_sweeps_sensitive_cells_are_sgd_at_1_and_adam_at_0_1():
    """The issue's cell, SGD at lr 1 and batch 32 (84.4% here, 74.0% on a learner's machine), is
    one of them: its loss never rose above the first, but 92% of layer 1's ReLUs died."""
    cells = REPO / "results/reference/sweep"
    marks = {path.name[:-len("_metrics.json")]: report.mark(json.loads(path.read_text()))
             for path in cells.glob("*_bs*_metrics.json")}
    assert {name for name, mark in marks.items() if mark == "sensitive"} == {
        f"{optimizer}_lr{lr}_bs{batch}" for optimizer, lr in (("sgd", 1), ("adam", 0.1)) for batch in (32, 128, 512)}
    issue = json.loads((cells / "sgd_lr1_bs32_metrics.json").read_text())
    assert report.cell_text(issue) == "sensitive 84.4%" and issue["diagnostics"]["dead_fraction"]["layer1"][-1] > 0.9


def test_the_loss_panels_name_only_the_colours_they_use():
    """sweep_losses.png's title said "grey: near chance" where no curve was grey: it names the
    colour of each mark the cells get, and no other."""
    def title(records):
        fig = report.loss_curves(records)
        text = fig.get_suptitle()
        plt.close(fig)
        return text.split(": NumPy")[0]
    assert title(MADE_UP) == ("Training loss (cut at 3; red: diverged or collapsed, orange: too slow, "
                              "grey: near chance, purple: sensitive)")
    assert title(MADE_UP[:3]) == "Training loss (cut at 3; red: diverged or collapsed)"
    assert title(MADE_UP[:1]) == "Training loss (cut at 3)"
    fig = report.loss_curves(MADE_UP[2:4])                 # collapsed in red, sensitive in purple
    assert [ax.get_lines()[0].get_color() for ax in fig.axes if ax.get_lines()] == ["C3", "C4"]
    plt.close(fig)


def test_the_range_figure_marks_the_losses_above_its_top():
    """The top is twice the first smoothed loss: losses above it (the textbook curve's steep
    rise, up to 0.3 + 0.5 x 14² = 98.3 at step 64) are drawn as marks on the top edge, counted
    in the legend, not left off the chart unsaid; the smoothed line says where it leaves."""
    lrs, losses = sweep.range_rates(LO, HI, STEPS), made_up_curve()
    smoothed = sweep.smooth(losses[:65])
    suggested, lowest = sweep.suggest_lr(lrs, losses)
    record = made_up_record("adam", 1e-6, 128, status="diverged", acc=None)
    fig = report.range_figure(lrs, losses, smoothed, suggested, lowest, sweep.RULE, 0.9, record, "")
    ax = fig.axes[0]
    top = ax.get_ylim()[1]
    assert top == max(2 * smoothed[0], 4 * min(smoothed)) == pytest.approx(4.6)
    above = [k for k, loss in enumerate(losses) if loss is not None and loss > top]
    assert above == list(range(53, 65))
    [marks] = [line for line in ax.get_lines() if line.get_gid() == "above the top"]
    assert list(marks.get_xdata()) == [lrs[k] for k in above] and set(marks.get_ydata()) == {1.0}
    assert marks.get_transform() is ax.get_xaxis_transform() and marks.get_marker() == "^"
    labels = ax.get_legend_handles_labels()[1]
    assert "12 steps' losses above the top (up to 98.3), drawn on its edge" in labels
    leaves = next(lrs[k] for k, loss in enumerate(smoothed) if loss > top)
    assert f"smoothed (moving average, beta 0.9); past the top from lr {leaves:.2g}" in labels
    plt.close(fig)


def test_redraw_draws_the_committed_records_again(tmp_path):
    """--redraw DIR: the table from a copy of the reference sweep's records equals the committed one."""
    for path in (REPO / "results/reference/sweep").glob("*_metrics.json"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "range.json").write_bytes((REPO / "results/reference/sweep/range.json").read_bytes())
    sweep.redraw(tmp_path)
    assert (tmp_path / "sweep.md").read_text() == (REPO / "results/reference/sweep/sweep.md").read_text()
    assert (tmp_path / "sweep.png").stat().st_size > 0
    for optimizer in ("sgd", "adam"):                  # and the range test's pictures, from its records
        assert (tmp_path / f"range_{optimizer}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(sweep.SweepError, match="no finished cell records"):
        sweep.redraw(tmp_path / "sweep.png")


def test_the_heatmap_marks_and_numbers_every_cell():
    fig = report.accuracy_heatmap(MADE_UP)
    sgd = fig.axes[0]
    texts = {(round(t.get_position()[0]), round(t.get_position()[1])): t.get_text() for t in sgd.texts}
    # columns: lr 0.1, 10; rows: batch 32, 128
    assert texts == {(0, 0): "95.1%", (1, 0): "diverged", (0, 1): "collapsed\n11.3%", (1, 1): "sensitive\n20.0%"}
    shown = sgd.images[0].get_array()
    assert np.ma.is_masked(shown[0, 1])         # diverged: no accuracy (NaN, masked), drawn grey
    assert shown[0, 0] == pytest.approx(95.12)  # the others: their accuracy in %
    assert shown[1, 0] == pytest.approx(11.35)


# ----------------------------------------------------------------------------- the bookkeeping

def ctrl_c_as_usual():
    """SIGINT back to its default in the child: a suite started in the background has it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def sweep_flags(out_dir, *flags):
    return ["--optimizer", "sgd", "--batch-size", "64", "--limit", "500", "--jobs", "1", "--no-progress",
            "--out-dir", str(out_dir), *flags]


def sweep_command(out_dir, *flags):
    return [sys.executable, str(REPO / "sweep.py"), *sweep_flags(out_dir, *flags)]


def run_sweep(out_dir, *flags, cwd=REPO):
    """sweep.py's main(argv) in this process, from cwd (its cells are processes, with ENV's one
    BLAS thread): its exit status, stdout and stderr."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
            patch.setenv(name, ENV[name])
        return run_in_process(sweep.main, REPO / "sweep.py", sweep_flags(out_dir, *flags), cwd)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def status(path):
    return json.loads(path.read_text())["status"] if path.exists() else None


@pytest.mark.slow
def test_ctrl_c_keeps_finished_cells_and_a_rerun_skips_them(tmp_path):
    """Ctrl-C after the first cell: the sweep stops the running cell, exits 130 and keeps the
    finished one; the same command again runs only the two others, and leaves the first as it was."""
    out = tmp_path / "sweep"
    lrs = ["--lr", "0.01", "0.02", "0.03", "--epochs", "40"]  # a cell long enough to be cut short
    first, second, third = (out / f"sgd_lr{lr}_bs64_metrics.json" for lr in ("0.01", "0.02", "0.03"))
    proc = subprocess.Popen(sweep_command(out, *lrs), cwd=REPO, env=ENV, preexec_fn=ctrl_c_as_usual,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while status(first) != "completed":
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted: 1 of 3 cells finished" in stderr
    assert status(second) in (None, "interrupted")   # cut short: run again next time
    assert not third.exists()
    kept = digest(first)

    done = subprocess.run(sweep_command(out, *lrs), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "1 of 3 cells finished before: kept" in done.stdout
    assert digest(first) == kept
    assert status(second) == status(third) == "completed"
    assert "| 64 |" in (out / "sweep.md").read_text()


SHARES = ("import json, torch; from harness import threads; "
          "print(json.dumps([threads.share_cores('numpy'), threads.share_cores('pytorch')]))")


@pytest.mark.slow  # a fresh interpreter that imports torch
def test_cells_side_by_side_are_given_their_share_of_the_cores(tmp_path, monkeypatch):
    """A cell started with another beside it gets each library's thread variable set to its share
    (harness/threads.py's for_children), so its NumPy and PyTorch use that many threads from
    the start, however busy the machine is."""
    for name in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop = sweep.Stop()                     # (it takes over Ctrl-C: given back below)
        log = tmp_path / "cell.log"
        assert stop.start([sys.executable, "-c", SHARES], log, side_by_side=2).wait() == 0
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert json.loads(log.read_text().splitlines()[-1]) == [threads.fair_share(2)] * 2


def test_a_folder_with_other_settings_is_refused(tmp_path):
    """A cell's file from a sweep with other flags is neither skipped nor written over."""
    out = tmp_path / "sweep"
    done = run_sweep(out, "--lr", "0.1", "--epochs", "1")
    assert done.returncode == 0, done.stderr
    cell = out / "sgd_lr0.1_bs64_metrics.json"
    kept = digest(cell)
    again = run_sweep(out, "--lr", "0.1", "--epochs", "2")
    assert again.returncode == 1
    assert "Traceback" not in again.stderr
    assert again.stderr.strip().splitlines() == [
        f"error: {cell} is a run with other settings (epochs 1, this sweep's 2): give another --out-dir, "
        f"or move that run away"]
    assert digest(cell) == kept


def test_trainer_flags_pass_through_except_those_the_sweep_sets(capsys):
    """A grid takes any trainer flag, --schedule included; the range test sets the schedule itself,
    and every run's files are the sweep's."""
    args, passed = sweep.parse(["--schedule", "constant", "--dropout", "0.1"])
    assert passed == ["--schedule", "constant", "--dropout", "0.1"]
    assert sweep.Cell(args, "sgd", 0.1, 64, passed).config["schedule"] == "constant"
    for argv, flag in ((["--lr-range", "1e-6", "10", "--schedule", "constant"], "--schedule"),
                       (["--metrics", "m.json"], "--metrics")):
        with pytest.raises(SystemExit) as stopped:
            sweep.parse(argv)
        assert stopped.value.code == 2
        assert f"argument {flag}: the sweep sets it for every run" in capsys.readouterr().err


def cell_record_in(out_dir, argv, edit=lambda config: None):
    """A finished cell of `sweep.py --out-dir out_dir *argv` (lr 0.1, batch 128, SGD), its record
    a committed sweep cell's with the config this sweep's trainer would record, then edited."""
    args, passed = sweep.parse(["--out-dir", str(out_dir), *argv])
    cell = sweep.Cell(args, "sgd", 0.1, 128, passed)
    record = json.loads((REPO / "results/reference/sweep/sgd_lr0.1_bs128_metrics.json").read_text())
    record["config"] = json.loads(json.dumps(cell.config, default=str))  # as the trainer writes it: JSON
    edit(record["config"])
    out_dir.mkdir(exist_ok=True)
    cell.metrics.write_text(json.dumps(record))
    return args, cell


def test_every_recorded_setting_decides_whether_a_cell_is_the_same(tmp_path):
    """A cell trained without --exercise is not the cell of a sweep with it, nor the reverse; a
    setting the trainers do not have yet (a record from a newer trainer) counts too; where the
    files are does not (the folder moved: the same run)."""
    flags = ["--limit", "200", "--epochs", "1"]
    args, plain = cell_record_in(tmp_path / "plain", flags)
    assert plain.state("numpy") == "completed"
    exercise = sweep.Cell(args, "sgd", 0.1, 128, ["--exercise", "mlp_backward"])
    with pytest.raises(sweep.SweepError, match=r"other settings \(exercise None, this sweep's mlp_backward\)"):
        exercise.state("numpy")

    _, with_it = cell_record_in(tmp_path / "exercise", [*flags, "--exercise", "mlp_backward"])
    assert with_it.state("numpy") == "completed"
    args, _ = sweep.parse(["--out-dir", str(tmp_path / "exercise"), *flags])
    with pytest.raises(sweep.SweepError, match=r"other settings \(exercise mlp_backward, this sweep's None\)"):
        sweep.Cell(args, "sgd", 0.1, 128, []).state("numpy")

    _, newer = cell_record_in(tmp_path / "newer", flags, lambda config: config.update(momentum=0.5))
    with pytest.raises(sweep.SweepError, match=r"other settings \(momentum 0.5, this sweep's None\)"):
        newer.state("numpy")

    moved = lambda config: config.update(metrics="elsewhere/m.json", weights="elsewhere/w.npz", data_dir="/d")
    _, elsewhere = cell_record_in(tmp_path / "moved", flags, moved)
    assert elsewhere.state("numpy") == "completed"


def test_a_cell_stopped_after_its_last_epoch_is_complete(tmp_path):
    """A cell that finished every epoch and then got SIGINT (during its last evaluation or save)
    is recorded "interrupted", with all its epochs: it counts as complete, is not run again, and
    --redraw draws it. One stopped before its last epoch is run again."""
    _, cell = cell_record_in(tmp_path, ["--limit", "200", "--epochs", "2"])
    record = json.loads(cell.metrics.read_text())
    assert len(record["epochs"]) == 2
    cell.metrics.write_text(json.dumps({**record, "status": "interrupted"}))
    assert cell.state("numpy") == "completed"
    sweep.redraw(tmp_path)
    assert "| 128 | " in (tmp_path / "sweep.md").read_text()
    cell.metrics.write_text(json.dumps({**record, "status": "interrupted", "epochs": record["epochs"][:1],
                                        "final_test_acc": record["epochs"][0]["test_acc"]}))
    assert cell.state("numpy") == "todo"


def test_a_second_sweep_into_the_same_folder_is_refused(tmp_path):
    """While a sweep runs in a folder (here: this process holds its lock), another sweep there,
    grid or range test, is refused in one line naming the first one's pid, before it trains
    anything; both used to train every cell."""
    out = tmp_path / "sweep"
    out.mkdir()
    with sweep.alone_in(out):
        for mode in (["--lr", "0.1", "--epochs", "1"], ["--lr-range", "1e-3", "1", "--range-steps", "5"]):
            done = run_sweep(out, *mode)
            assert done.returncode == 1, done.stderr
            assert done.stderr.splitlines() == [f"error: another sweep (pid {os.getpid()}) is running in {out}: "
                                                f"wait for it to end, or give another --out-dir"]
            assert sorted(p.name for p in out.iterdir()) == [".sweep.lock"]
    done = run_sweep(out, "--lr", "0.1", "--epochs", "1", "--limit", "128")
    assert done.returncode == 0, done.stderr     # the lock is free once its holder lets go


@pytest.mark.parametrize("summary, said", [
    (b"{not json", "is not valid JSON"),
    (b"[1, 2]", "is not the range test's summary (a JSON object of one object per optimizer)"),
    (b'{"sgd": 3}', "is not the range test's summary (a JSON object of one object per optimizer)"),
    (None, "is a folder, not the range test's summary"),
    (b'{"caf\xe9": {}}', "is not UTF-8 text, so not the range test's summary"),
])
def test_a_broken_range_json_is_refused_before_training(tmp_path, monkeypatch, summary, said):
    """range.json as a bad JSON, a list (the range test trained, then failed on it), an object of
    other things, a folder or not UTF-8: one line, before any run starts, the file left as it is."""
    path = tmp_path / "range.json"
    if summary is None:
        path.mkdir()
    else:
        path.write_bytes(summary)
    monkeypatch.setattr(sweep.Stop, "start", lambda *a: pytest.fail("a run started"))
    with pytest.raises(SystemExit) as stopped:
        sweep.main(["--lr-range", "1e-3", "1", "--range-steps", "5", "--out-dir", str(tmp_path), "--no-progress"])
    assert stopped.value.code.startswith(f"error: {path} {said}"), stopped.value.code
    assert stopped.value.code.endswith(": move it away or give another --out-dir")
    assert path.is_dir() if summary is None else path.read_bytes() == summary


def test_a_folder_inside_the_project_but_not_under_results_is_refused(capsys):
    """The trainers write under results/ only, inside the project (harness/flags.py): a sweep
    into another of its folders is refused at once, not after every cell failed."""
    for flag in ("--out-dir", "--redraw"):
        with pytest.raises(SystemExit) as stopped:
            sweep.parse([flag, str(REPO / "numpy_nn" / "sweep")])
        assert stopped.value.code == 2
        assert f"argument {flag}: {REPO / 'numpy_nn' / 'sweep'} is inside the project but not under results/" \
            in capsys.readouterr().err


def test_help_shows_each_default_once():
    """Each flag's help names its default at most once, and never as None: a flag whose default
    depends on something (the cores, the range test) writes its own."""
    parser = sweep.build_sweep_parser()
    formatter = parser.formatter_class(prog="sweep.py")
    for action in parser._actions:
        text = formatter._get_help_string(action) % {"default": action.default}
        assert text.count("(default:") <= 1 and "None" not in text, text
    help_text = " ".join(parser.format_help().split())
    for shown in ("(default: 0.0001 0.001 0.01 0.1 1 10)", "(default: the cores)", "(default: sgd adam)"):
        assert help_text.count(shown) == 1
    args, _ = sweep.parse([])
    assert (args.lr, args.optimizer, args.jobs) == (sweep.DEFAULT_LRS, ["sgd", "adam"], os.cpu_count())
    assert args.out_dir == sweep.RESULTS_DIR / "sweep"


@pytest.mark.parametrize("where", ["/proc/x", "a file", "below a file"])
@pytest.mark.parametrize("mode", [["--lr", "0.1"], ["--lr-range", "1e-3", "1"]])
def test_a_folder_that_cannot_be_written_is_one_line(where, mode, tmp_path):
    """An --out-dir that cannot be created or written in: one line and exit 1 before any run
    starts, and nothing of the user's touched."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    out = {"/proc/x": Path("/proc/x"), "a file": a_file, "below a file": a_file / "sweep"}[where]
    done = run_sweep(out, *mode)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write in the folder {out} ("), done.stderr
    assert lines[0].endswith("give another --out-dir")
    assert a_file.read_text() == "mine" and sorted(tmp_path.iterdir()) == [a_file]


def test_a_relative_folder_is_the_one_below_the_cwd(tmp_path):
    """--out-dir rel from another folder: the cells' files land in ./rel, where the sweep looks
    for them, though the trainers run in the repo."""
    done = subprocess.run(sweep_command(Path("rel"), "--lr", "0.1", "--epochs", "1", "--limit", "128"),
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert status(tmp_path / "rel" / "sgd_lr0.1_bs64_metrics.json") == "completed"
    assert not (REPO / "rel").exists()
