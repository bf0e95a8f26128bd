"""The learning curves: loss, accuracy, seconds and samples/s per epoch, every run in one figure."""
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from report.run import with_results
from report.table import NOISY_SPREAD, describe_config, steady_epochs


def _log_scale_if_wide(ax, values):
    """A log axis when values span more than 10x, so one slow epoch does not flatten the rest."""
    values = np.concatenate(values)
    if values.max() > 10 * values.min():
        ax.set_yscale("log")
        ax.set_ylabel(ax.get_ylabel() + " (log scale)")


def busy_machine_note(runs):
    """The time panels' warning, as the table's (report/table.py too_noisy): the runs whose steady
    epochs (all but epoch 1) spread more than NOISY_SPREAD for the same work, which says how
    busy the machine was, not which trains faster; None when every run's agree."""
    lines = []
    for run in runs:
        steady = steady_epochs(run)
        if len(steady) > 1 and steady.max() > NOISY_SPREAD * steady.min():
            lines.append(f"{run.label}'s epochs 2-{len(run.record['epochs'])} took {steady.min():.3g}-"
                         f"{steady.max():.3g} s ({steady.max() / steady.min():.1f}x);")
    if not lines:
        return None   # short lines: the note sits under a panel, as wide as it
    return "\n".join(["Busy machine: for the same work,", *lines,
                      f"a quiet one stays within {NOISY_SPREAD}x. So these panels show",
                      "how busy it was, not which trains faster:", "python perf/benchmark.py measures that."])


def plot_comparison(runs):
    """The 2x2 figure: loss, accuracy, seconds and samples/s per epoch; one colour per run,
    train solid and test dashed. A diverged run is named in the title only: it has no curves."""
    described, runs = runs, with_results(runs)
    fig, axes = plt.subplots(2, 2, figsize=(13, 9 + 0.25 * len(runs)), layout="constrained")
    loss_ax, acc_ax, time_ax, speed_ax = axes.flat
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(runs):
        # earlier runs drawn wider: identical curves (twins trained from the same start) then
        # show as one line inside another instead of one hiding the other
        width = 1.5 + 2.5 * (len(runs) - 1 - i) / max(len(runs) - 1, 1)     # 4 down to 1.5
        style = {"color": colours[i % len(colours)], "marker": "o", "linewidth": width,
                 "markersize": 2 + width}
        epochs = run.series("epoch")
        loss_ax.plot(epochs, run.series("train_loss"), "-", label=f"{run.label} train", **style)
        loss_ax.plot(epochs, run.series("test_loss"), "--", label=f"{run.label} test", **style)
        acc_ax.plot(epochs, 100 * run.series("train_acc"), "-", label=f"{run.label} train", **style)
        acc_ax.plot(epochs, 100 * run.series("test_acc"), "--", label=f"{run.label} test", **style)
        time_ax.plot(epochs, run.series("epoch_seconds"), "-", label=run.label, **style)
        speed_ax.plot(epochs, run.series("samples_per_second"), "-", label=run.label, **style)

    loss_ax.set(title="Loss per epoch (train solid, test dashed)", ylabel="mean cross-entropy")
    acc_ax.set(ylabel="accuracy (%)")
    acc_ax.set_title("Accuracy per epoch (train solid, test dashed)\n"
                     "the gap between train and test is where overfitting shows",
                     fontsize="medium")
    time_ax.set(title="Training time per epoch (lower is faster; epoch 1 carries start-up costs)", ylabel="seconds")
    speed_ax.set(title="Throughput per epoch (higher is faster)", ylabel="training samples / second")
    _log_scale_if_wide(time_ax, [run.series("epoch_seconds") for run in runs])
    _log_scale_if_wide(speed_ax, [run.series("samples_per_second") for run in runs])
    for ax in axes.flat:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    busy = busy_machine_note(runs)
    for ax in (time_ax, speed_ax) if busy else ():
        ax.annotate(busy, (0, 0), xycoords="axes fraction", xytext=(0, -32), textcoords="offset points",
                    va="top", fontsize="small", color="firebrick", gid="busy machine")   # under the epoch axis
    fig.suptitle("\n".join(describe_config(run) for run in described), fontsize="medium")
    return fig
