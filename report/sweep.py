"""What sweep.py draws, from the cells' records alone: the accuracy heatmap, every cell's
training loss, the table, and the range test's loss against the learning rate."""
import matplotlib.pyplot as plt
import numpy as np

from report.run import FRAMEWORK_NAMES, model_name

# Below this final test accuracy a cell learned (almost) nothing: a network that predicts one
# digit for every image scores that digit's share of the test set, 8.9% (5) to 11.4% (1); one
# that tells only two digits apart scores about 20%. Two opposite causes get two marks:
NEAR_CHANCE_BELOW = 0.2
# "collapsed": the rate was too large and the run blew up into predicting one digit. Its record
# shows it one way or both: the loss of some recorded step rose above ROSE_ABOVE x the first one
# (the reference sweep's collapsed cells: 33x to 1e15; its slow ones at most 1.08x, one batch's
# noise), or at the last recorded step at least DEAD_AT_LEAST of a hidden layer's ReLUs were dead
# (collapsed: 0.99 or 1.0 in a layer; slow: 0 to 0.02). The 10-epoch collapse run of
# results/reference/learning/ never recorded a loss above its first (it blew up between two
# recorded steps) but ended with 99% and 100% dead.
# "too slow": neither; the rate was too small to move the weights far in so few steps.
ROSE_ABOVE, DEAD_AT_LEAST = 2.0, 0.9
# "sensitive": a cell that trained (NEAR_CHANCE_BELOW or more) but shows the start of a blow-up:
# a recorded loss above ROSE_ABOVE x the first, or at least HALF_DEAD of a hidden layer's ReLUs
# dead at the end. Such a run is at the edge of divergence, where the last bits of a float32 sum,
# which another CPU or thread count adds in another order, can tip it: SGD at lr 1, batch 32
# read 84.4% in the reference sweep and 74.0% on a learner's machine. (Reference sweep: of the
# six cells at SGD lr 1 and Adam lr 0.1, four rose 2.3x to 23x, and five ended with 72-98% of
# layer 1 dead, SGD at batch 512 with 42%; every other cell that trained rose at most 1.04x,
# and ended with at most 35% of a layer dead.)
HALF_DEAD = 0.5
LOSS_CEILING = 3.0  # the loss panels' top: a fresh network starts at ln 10 = 2.3


def outcome(record):
    """"diverged" (the loss became NaN or infinite), "trained" (final test accuracy of at least
    NEAR_CHANCE_BELOW), or, below it: "collapsed" (the diagnostics show a blow-up, see above),
    "too slow" (they show none), or "near chance" (a record without diagnostics: no telling)."""
    if record["status"] == "diverged":
        return "diverged"
    if record["final_test_acc"] >= NEAR_CHANCE_BELOW:
        return "trained"
    d = record.get("diagnostics")
    if not d or not d["steps"]:
        return "near chance"
    first = d["loss"][0]
    rose = first is None or any(loss is None or loss > ROSE_ABOVE * first for loss in d["loss"])
    dead = any(layer[-1] is not None and layer[-1] >= DEAD_AT_LEAST for layer in d["dead_fraction"].values())
    return "collapsed" if rose or dead else "too slow"


def near_divergence(record):
    """Does the record show the start of a blow-up (see HALF_DEAD above)? False without diagnostics."""
    d = record.get("diagnostics")
    if not d or not d["steps"] or d["loss"][0] is None:
        return False
    rose = any(loss is None or loss > ROSE_ABOVE * d["loss"][0] for loss in d["loss"])
    dead = any(layer[-1] is not None and layer[-1] >= HALF_DEAD for layer in d["dead_fraction"].values())
    return rose or dead


def mark(record):
    """A cell's mark: its outcome, or "sensitive" for a cell that trained near divergence."""
    kind = outcome(record)
    return "sensitive" if kind == "trained" and near_divergence(record) else kind


MARKS = {"diverged": "the loss became NaN or infinite",
         "collapsed": f"under {NEAR_CHANCE_BELOW:.0%}, the run blew up (a recorded loss above {ROSE_ABOVE:g}x "
                      f"the first, or {DEAD_AT_LEAST:.0%} of a layer's ReLUs dead at the end): rate too large",
         "too slow": f"under {NEAR_CHANCE_BELOW:.0%}, no blow-up: rate too small for so few steps",
         "near chance": f"under {NEAR_CHANCE_BELOW:.0%}, no diagnostics recorded to tell why",
         "sensitive": f"trained, but at the edge of divergence (a recorded loss above {ROSE_ABOVE:g}x the first, or "
                      f"{HALF_DEAD:.0%} of a layer's ReLUs dead at the end): the float32 sum order of another "
                      f"machine can tip it"}
LOSS_COLOURS = {"trained": "C0", "sensitive": "C4", "diverged": "C3", "collapsed": "C3", "too slow": "C1",
                "near chance": "0.5"}
COLOUR_NAMES = {"C0": "blue", "C4": "purple", "C3": "red", "C1": "orange", "0.5": "grey"}


def legend(records):
    """What each mark the records get means, the marks they do not get left out."""
    met = {mark(r) for r in records}
    return "; ".join(f"{kind}: {meaning}" for kind, meaning in MARKS.items() if kind in met)


def colour_key(records):
    """The loss panels' colours, as words, for the marks the records get: "red: diverged or
    collapsed, orange: too slow" (blue, a cell that trained, goes without saying)."""
    met = [kind for kind in MARKS if kind in {mark(r) for r in records}]
    colours = {}
    for kind in met:
        colours.setdefault(COLOUR_NAMES[LOSS_COLOURS[kind]], []).append(kind)
    return ", ".join(f"{colour}: {' or '.join(kinds)}" for colour, kinds in colours.items())


def axes_of(records):
    """The grid's optimizers (in the order met), batch sizes and learning rates (ascending), and
    {(optimizer, batch size, rate): record}."""
    cells = {(r["config"]["optimizer"], r["config"]["batch_size"], r["config"]["lr"]): r for r in records}
    optimizers = list(dict.fromkeys(key[0] for key in cells))
    batch_sizes = sorted({key[1] for key in cells})
    lrs = sorted({key[2] for key in cells})
    return optimizers, batch_sizes, lrs, cells


def cell_text(record):
    """A cell's number as the heatmap and the table show it."""
    kind = mark(record)
    if kind == "diverged":
        return "diverged"
    accuracy = f"{100 * record['final_test_acc']:.1f}%"
    return accuracy if kind == "trained" else f"{kind} {accuracy}"


def what_ran(record):
    """One line: the trainer, the network and what every cell shared."""
    config = record["config"]
    return (f"{FRAMEWORK_NAMES[record['framework']]} {model_name(record)}, {config['epochs']} epoch(s) of "
            f"{record['data']['train_samples']:,} images, {config['schedule']} schedule, seed {config['seed']}")


def accuracy_heatmap(records):
    """Final test accuracy, learning rate across and batch size down, one panel per optimizer;
    diverged cells grey and marked, collapsed ones marked, the number in every cell."""
    optimizers, batch_sizes, lrs, cells = axes_of(records)
    fig, axes = plt.subplots(1, len(optimizers), figsize=(1.3 * len(lrs) * len(optimizers) + 2, 0.8 * len(batch_sizes) + 2.2),
                             layout="constrained", squeeze=False)
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.8")  # NaN (no cell, diverged): grey
    for ax, optimizer in zip(axes[0], optimizers):
        acc = np.full((len(batch_sizes), len(lrs)), np.nan)
        for i, batch_size in enumerate(batch_sizes):
            for j, lr in enumerate(lrs):
                record = cells.get((optimizer, batch_size, lr))
                if record is None:
                    continue
                if outcome(record) != "diverged":
                    acc[i, j] = 100 * record["final_test_acc"]
                text = "\n".join(cell_text(record).rsplit(" ", 1))  # the mark above the number
                dark = outcome(record) != "diverged" and acc[i, j] < 60  # viridis is dark at the bottom
                ax.text(j, i, text, ha="center", va="center", fontsize="small",
                        color="white" if dark else "black")
        image = ax.imshow(acc, cmap=cmap, vmin=0, vmax=100, aspect="auto")
        ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
        ax.set_yticks(range(len(batch_sizes)), [str(b) for b in batch_sizes])
        ax.set(xlabel="learning rate", ylabel="batch size", title=optimizer)
    fig.colorbar(image, ax=axes[0, -1], label="final test accuracy (%)")
    fig.suptitle(f"Final test accuracy: {what_ran(records[0])}\n" + legend(records).replace("; ", "\n"),
                 fontsize="medium")
    return fig


def loss_curves(records):
    """Every cell's training loss, a small panel each: a row per optimizer and batch size, a
    column per learning rate, the same axes everywhere. The loss at the steps the diagnostics
    recorded (about 15 an epoch), or, in a record without them, each epoch's."""
    optimizers, batch_sizes, lrs, cells = axes_of(records)
    rows = [(optimizer, batch_size) for optimizer in optimizers for batch_size in batch_sizes]
    fig, axes = plt.subplots(len(rows), len(lrs), figsize=(2.2 * len(lrs) + 1, 1.6 * len(rows) + 1.2),
                             sharex=True, sharey=True, layout="constrained", squeeze=False)
    for (optimizer, batch_size), row in zip(rows, axes):
        row[0].set_ylabel(f"{optimizer}\nbatch {batch_size}")
        for lr, ax in zip(lrs, row):
            ax.grid(alpha=0.3)
            record = cells.get((optimizer, batch_size, lr))
            if record is None:
                continue
            epochs, losses = loss_series(record)
            ax.plot(epochs, losses, color=LOSS_COLOURS[mark(record)])
            ax.text(0.97, 0.93, cell_text(record), transform=ax.transAxes, ha="right", va="top",
                    fontsize="small")
    for lr, ax in zip(lrs, axes[0]):
        ax.set_title(f"lr {lr:g}", fontsize="medium")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    axes[0, 0].set_ylim(0, LOSS_CEILING)
    key = colour_key(records)
    fig.suptitle(f"Training loss (cut at {LOSS_CEILING:g}{'; ' + key if key else ''}): {what_ran(records[0])}",
                 fontsize="medium")
    return fig


def loss_series(record):
    """(epochs, losses): the loss at each recorded step, the step as a fraction of the epochs,
    so that every batch size shares the axis; above LOSS_CEILING or not finite, shown at the top."""
    d = record.get("diagnostics")
    if d and d["steps"]:
        steps_per_epoch = -(-record["data"]["train_samples"] // record["config"]["batch_size"])
        epochs = np.array(d["steps"]) / steps_per_epoch
        losses = np.array([LOSS_CEILING if loss is None else loss for loss in d["loss"]], dtype=float)
    else:
        epochs = np.array([e["epoch"] for e in record["epochs"]], dtype=float)
        losses = np.array([e["train_loss"] for e in record["epochs"]])
    return epochs, np.minimum(losses, LOSS_CEILING)


def markdown_table(records):
    """The heatmap's numbers: a table per optimizer, batch size down, learning rate across."""
    optimizers, batch_sizes, lrs, cells = axes_of(records)
    marks = legend(records)                        # (none when every cell trained)
    lines = ["# Learning rate and batch size sweep", "",
             f"{what_ran(records[0])}. Final test accuracy{f'; {marks}' if marks else ''}.", ""]
    for optimizer in optimizers:
        lines += [f"## {optimizer}", "", "| batch size | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |",
                  "|---|" + "---|" * len(lrs)]
        for batch_size in batch_sizes:
            row = [cell_text(cells[key]) if key in cells else "" for lr in lrs
                   for key in [(optimizer, batch_size, lr)]]
            lines.append(f"| {batch_size} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def range_figure(lrs, losses, smoothed, suggested, lowest, rule, beta, record, comparison):
    """The range test: each step's loss against its learning rate (log axis), the smoothed
    loss, its lowest point, and the suggested rate with the rule that chose it."""
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    finite = [(lr, loss) for lr, loss in zip(lrs, losses) if loss is not None]
    top = max(smoothed[0] * 2, min(smoothed) * 4)     # the chart's top: past it the loss only explodes
    shown = [(lr, loss) for lr, loss in finite if loss <= top]
    above = [(lr, loss) for lr, loss in finite if loss > top]
    ax.plot(*zip(*shown), ".", color="0.6", markersize=4, label="each step's loss (one batch)")
    if above:                                          # drawn on the top edge, not left off unsaid
        ax.plot([lr for lr, _ in above], [1.0] * len(above), "^", color="0.4", markersize=5, clip_on=False,
                transform=ax.get_xaxis_transform(), gid="above the top",
                label=f"{len(above)} steps' losses above the top (up to {max(loss for _, loss in above):.3g}), "
                      f"drawn on its edge")
    leaves = next((lr for lr, loss in zip(lrs, smoothed) if loss > top), None)
    ax.plot(lrs[:len(smoothed)], smoothed, color="C0", label=f"smoothed (moving average, beta {beta})" +
            (f"; past the top from lr {leaves:.2g}" if leaves is not None else ""))
    ax.plot(lrs[lowest], smoothed[lowest], "v", color="C1", markersize=9,
            label=f"lowest smoothed loss, at lr {lrs[lowest]:.2g}")
    ax.axvline(suggested, color="C2", linestyle="--", label=f"suggested lr {suggested:.2g}")
    if record["status"] == "diverged":
        ax.axvline(lrs[-1] if len(finite) == len(lrs) else lrs[len(finite)], color="C3", linestyle=":",
                   label="the loss became NaN or infinite: the run stopped")
    ax.set_xscale("log")
    ax.set_ylim(0, top)
    ax.set(xlabel="learning rate (log scale; it grows by the same factor every step)",
           ylabel="training loss (cross-entropy)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small", loc="upper left")
    config = record["config"]
    ax.set_title(f"Learning-rate range test: {FRAMEWORK_NAMES[record['framework']]} {model_name(record)}, "
                 f"{config['optimizer']}, batch {config['batch_size']}, {len(lrs)} steps\n"
                 f"rule: suggested = {rule}\n{comparison}", fontsize="medium")
    return fig
