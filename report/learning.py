"""Watch it learn: the numbers numpy_nn/diagnostics.py records every N steps (it says what each
one is), drawn so that every panel explains itself.

learning_figure(run), one run:
    top       the training loss; each layer's gradient size sqrt(mean(g²)) and update size
              ||ΔW|| / ||W|| (log scales; the update panel has the 1e-3 guide and the 1e-2 mark)
    middle    the dead units of each hidden layer (a sigmoid or tanh run's saturated outputs instead,
              where its record has them); the mean and the spread of each layer's outputs
    bottom    per layer, the histogram of its outputs on the probe images at the start and the end
overlay_figure(runs), several runs with the same layers: the loss, then one row per number and
    one column per layer, one colour and line style per run, the legend naming the settings
    that differ between the runs. Two runs with no setting apart are twins, whose lines lie on
    top of each other: they get a panel of how far apart their losses are, and a note saying so.

Each panel's title says what it plots, in words and symbols, and how a healthy run looks. The
last layer is named after what it outputs: the logits. A log axis cannot draw a 0 (a gradient
that vanished), and no axis can draw a value that is not finite (a run that blew up): those are
marked at the panel's bottom and top edges, with a note that says what they mean.
"""
from collections import namedtuple

import matplotlib.pyplot as plt
import numpy as np

from report.table import changed_settings, describe_config

GUIDE_RATIO = 1e-3   # Karpathy, makemore part 3: updates about a thousandth of the weights
TOO_LARGE = 1e-2     # far above this, steps are too large for the weights they change
NOT_FINITE = "the run blew up"   # what a value that is not finite means, on any panel

# A panel: the record's number it draws, its title (what, in words and symbols), how it looks
# in a healthy run, whether its axis is logarithmic, and what a 0 means there (a log axis
# cannot draw one, so it is marked at the bottom edge instead).
Panel = namedtuple("Panel", "figure title healthy log zero")
LOSS = Panel("loss", "Training loss: cross-entropy of the step's batch",
             "healthy: falls fast, then slowly (one batch a point: noisy)", False, None)
GRADIENT = Panel("grad_rms", "Gradient size: sqrt(mean(g²)), g = ∂loss/∂W",
                 "healthy: within about 10x across layers, none sinking to 0", True,
                 "the gradient vanished (dead ReLUs)")
UPDATE = Panel("update_ratio", "Update size: ||ΔW|| / ||W||, ΔW = the step's change",
               f"healthy: near the {GUIDE_RATIO:g} guide, below {TOO_LARGE:g}; the schedule lowers it", True,
               "the step left W unchanged")
DEAD = Panel("dead_fraction", "Dead units: share of units 0 on every probe image",
             "healthy: few, and not growing", False, None)
SATURATED = Panel("saturated_fraction", "Saturated outputs: share within 2% of the range's ends (slope < 8% of its peak)",
                  "healthy: few, and not growing", False, None)
MEAN = Panel("activation_mean", "Output mean: the layer's outputs on the probe images",
             "healthy: hidden layers steady; the logits' mean falls\n(for each image, 9 of the 10 logits are wrong "
             "digits, pushed down)", False, None)
SPREAD = Panel("activation_std", "Output spread: their standard deviation",
               "healthy: steady; the logits widen as the net grows sure", True,
               "every output the same (all units dead)")
DIFFERENCE = Panel("loss", "How far apart the twins' training losses are",
                   "expected: 0 or a rounding error at first, growing as training magnifies it", True,
                   "the same loss to the last bit")
HISTOGRAM = "outputs on the probe images"
HEALTHY_OUTPUTS = "healthy: spread wide, not piled at the ends (saturated)"
HEALTHY_LOGITS = "healthy: spreading out as the digits are told apart"

# Why a hidden layer of these activations has no dead units to count (diagnostics.py)
NO_DEAD_UNITS = {
    "sigmoid": "Does not apply to sigmoid:\nit is never exactly 0, so no unit is ever dead.\n"
               "Its trouble is saturation: outputs piled\nnear 0 and 1 in the histograms below.",
    "tanh": "Does not apply to tanh:\nit is 0 only where its input is exactly 0,\nso no unit is "
            "ever dead. Its trouble is saturation:\noutputs piled near -1 and 1 in the histograms below.",
}
RUN_STYLES = ("-", "--", ":", "-.")  # one line style per run of an overlay, with its colour


def series(values):
    """A recorded series as floats, null (not finite) as NaN, which matplotlib leaves out."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def shown_name(name, layers):
    """A layer's name on the figure: the last layer is the logits (the record's layer3, or the
    CNN's linear)."""
    return "logits" if name == layers[-1] else name


def reading_guide(layers):
    return (f"How to read: each panel's title says what it plots and, below it, how a healthy run "
            f"looks; one line per layer, from the input ({layers[0]}) to the output (logits), "
            f"at the recorded training steps.")


def probe_note(diagnostics):
    """What the probe images are: the panels of outputs, dead units and histograms are measured on them."""
    return (f"Probe images: the first {diagnostics['probe_images']} training images, the same at every record; "
            f"the outputs, dead units and histograms are measured on them (no update, dropout off).")


def _plot(ax, steps, values, log, **style):
    """values against steps, one line. What the axis cannot draw is marked in the line's colour
    on the panel's edge: a 0 on a log axis at the bottom (▼), a value that is not finite at the
    top (▲). Returns the line and which marks it needed: {"zero", "not finite"}."""
    steps, y = np.asarray(steps), series(values)
    zero = (y <= 0) if log else np.zeros(len(y), dtype=bool)   # these numbers are never negative
    not_finite = np.isnan(y)
    line, = ax.plot(steps, np.where(zero, np.nan, y), **{"marker": ".", "markersize": 3, **style})
    edge = ax.get_xaxis_transform()   # x in steps, y from 0 (bottom edge) to 1 (top edge)
    for which, where, marker in ((zero, 0.0, "v"), (not_finite, 1.0, "^")):
        if which.any():
            ax.plot(steps[which], np.full(which.sum(), where), transform=edge, linestyle="none",
                    marker=marker, markersize=7, color=line.get_color(), clip_on=False,
                    gid="zero" if marker == "v" else "not finite")
    return line, {mark for mark, which in (("zero", zero), ("not finite", not_finite)) if which.any()}


def _note(ax, lines, y=0.04, va="bottom"):
    """Notes in the panel's lower left corner, on a white box so that lines do not hide them."""
    ax.text(0.02, y, "\n".join(lines), transform=ax.transAxes, fontsize="small", va=va,
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"}, gid="note")


def _where(labels):
    """" in layer1, logits" for the lines named, "" when they have no names."""
    labels = [label for label in labels if label]
    return f" in {', '.join(labels)}" if labels else ""


def _draw(ax, panel, lines, title):
    """A panel: lines [(steps, values, style)], its title, its scale, and the notes on what its
    edges mark, naming the lines marked when they have labels."""
    marked = {"zero": [], "not finite": []}   # the labels of the lines with such marks
    for steps, values, style in lines:
        for mark in _plot(ax, steps, values, panel.log, **style)[1]:
            marked[mark].append(style.get("label"))
    if panel.log:
        ax.set_yscale("log")
    if panel in (DEAD, SATURATED):
        ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize="medium")
    notes = [f"{symbol}{_where(marked[mark])}, {meaning}"
             for mark, symbol, meaning in (("zero", "▼ at the bottom: 0", panel.zero),
                                           ("not finite", "▲ at the top: not finite (NaN or inf)", NOT_FINITE))
             if marked[mark]]
    if notes:
        _note(ax, notes)
    ax.grid(alpha=0.3)


def _ratio_guides(ax):
    ax.axhline(GUIDE_RATIO, color="grey", linestyle="--",
               label=f"{GUIDE_RATIO:g} guide: a healthy step (Karpathy)")
    ax.axhline(TOO_LARGE, color="red", linestyle=":", label=f"{TOO_LARGE:g}: far above, steps too large")


def _not_applicable(ax, activation):
    ax.text(0.5, 0.5, NO_DEAD_UNITS[activation], transform=ax.transAxes, ha="center", va="center",
            gid="does not apply")


def _histograms(axes, diagnostics):
    """Each layer's outputs on the probe images at the start and at the end, as step outlines
    (log-scale counts: the pile at exactly 0 of a ReLU layer would flatten the rest)."""
    histograms, layers = diagnostics["histograms"], diagnostics["layers"]
    for ax, name in zip(axes, layers):
        for when, style in (("init", {"fill": True, "alpha": 0.5, "label": "start"}),
                            ("end", {"linewidth": 1.5, "label": "end"})):
            h = (histograms.get(when) or {}).get(name)
            if h is None:  # not finite: a run that blew up has nothing to bin
                continue
            ax.stairs(h["counts"], h["edges"], color="tab:blue" if when == "init" else "tab:orange", **style)
        ax.set_yscale("log")
        healthy = HEALTHY_LOGITS if name == layers[-1] else HEALTHY_OUTPUTS
        ax.set_title(f"{shown_name(name, layers)}: {HISTOGRAM}\n{healthy}", fontsize="medium")
        ax.set(xlabel="output value", ylabel="count")
        ax.legend(fontsize="small")


def learning_figure(run):
    """The figure for one run with recorded diagnostics (see the module docstring)."""
    diagnostics = run.record["diagnostics"]
    layers, steps = diagnostics["layers"], diagnostics["steps"]
    activation = run.record["config"]["activation"]
    fig = plt.figure(figsize=(16, 15), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[2, 1])
    axes = top.subplots(2, 3)
    hist_axes = np.atleast_1d(bottom.subplots(1, len(layers)))

    _draw(axes[0, 0], LOSS, [(steps, diagnostics["loss"], {"color": "black"})], f"{LOSS.title}\n{LOSS.healthy}")
    axes[0, 0].set_ylabel("cross-entropy")
    for ax, panel in zip(axes.flat[1:], (GRADIENT, UPDATE, DEAD, MEAN, SPREAD)):
        lines = [(steps, values, {"label": shown_name(name, layers)})
                 for name, values in diagnostics[panel.figure].items()]
        if panel is DEAD and SATURATED.figure in diagnostics:      # sigmoid, tanh: no dead units, but saturated ones
            panel = SATURATED
            lines = [(steps, values, {"label": shown_name(name, layers)})
                     for name, values in diagnostics[panel.figure].items()]
        elif panel is DEAD and activation in NO_DEAD_UNITS:
            ax.set_title(f"{panel.title}\n{panel.healthy}", fontsize="medium")
            _not_applicable(ax, activation)
            ax.set(xticks=[], yticks=[])
            continue
        _draw(ax, panel, lines, f"{panel.title}\n{panel.healthy}")
        if panel is UPDATE:
            _ratio_guides(ax)
        ax.set_ylabel("log scale" if panel.log else "fraction of the layer's units" if panel is DEAD
                      else "fraction of the layer's outputs" if panel is SATURATED else "mean")
        ax.set_xlabel(f"step (recorded every {diagnostics['every']})")
        ax.legend(fontsize="small", loc="best")
    axes[0, 0].set_xlabel(f"step (recorded every {diagnostics['every']})")
    _histograms(hist_axes, diagnostics)
    fig.suptitle(f"How {run.label} learned, layer by layer\n{describe_config(run)}\n{reading_guide(layers)}\n"
                 f"{probe_note(diagnostics)}", fontsize="medium")
    return fig


# ----------------------------------------------------------------------------- several runs

def overlay_groups(runs):
    """The runs (with diagnostics) whose figures can be overlaid: those with the same layers,
    in groups of two or more, in the order given (an MLP's and a CNN's go to two groups)."""
    groups = {}
    for run in runs:
        groups.setdefault(tuple(run.record["diagnostics"]["layers"]), []).append(run)
    return [group for group in groups.values() if len(group) > 1]


def _value(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


def run_labels(runs):
    """Each run's legend entry: its name and its value of every setting that differs between
    the runs (report.table.changed_settings), e.g. "NumPy (sigmoid): activation=sigmoid"."""
    differing = changed_settings(runs)
    labels = []
    for i, run in enumerate(runs):
        settings = ", ".join(f"{setting}={_value(values[i])}" for setting, values in differing)
        labels.append(f"{run.label}: {settings}" if settings else run.label)
    return labels


TWINS_NOTE = ("Twins: the same settings, first weights and batches. Where their lines agree, the second\n"
              "(dashed) lies on the first and hides it: one visible line means the two agree.\n"
              "The panel beside the loss shows how far apart their losses are.")


def _twins_difference(ax, runs):
    """The DIFFERENCE panel: |loss of the second run - loss of the first| at the steps both
    recorded (a 0 marked at the bottom edge, a loss that is not finite at the top)."""
    first, second = (dict(zip(run.record["diagnostics"]["steps"], run.record["diagnostics"]["loss"])) for run in runs)
    steps = [step for step in first if step in second]
    values = [None if first[step] is None or second[step] is None else abs(second[step] - first[step])
              for step in steps]
    _draw(ax, DIFFERENCE, [(steps, values, {"color": "black"})], f"{DIFFERENCE.title}\n{DIFFERENCE.healthy}")
    ax.set(xlabel="step", ylabel=f"|{runs[1].label} − {runs[0].label}| (log scale)")


def overlay_figure(runs):
    """The learning figures of runs with the same layers in one picture (module docstring): a
    row per number, its title and healthy line above the row, a column per layer."""
    layers = runs[0].record["diagnostics"]["layers"]
    styles = [{"color": f"C{i % 10}", "linestyle": RUN_STYLES[i % len(RUN_STYLES)], "marker": ""}  # lines only:
              for i in range(len(runs))]                                                       # dots would crowd
    rows = (GRADIENT, UPDATE, DEAD, MEAN, SPREAD)
    fig = plt.figure(figsize=(5 * len(layers) + 1, 3.2 * (len(rows) + 2)), layout="constrained")
    top, *row_figs, hist_fig = fig.subfigures(len(rows) + 2, 1)

    differing = [setting for setting, _ in changed_settings(runs)]
    twins = len(runs) == 2 and not differing   # the same settings: lines on top of each other
    if twins:
        loss_ax, difference_ax, legend_ax = top.subplots(1, 3, width_ratios=[1, 1, max(len(layers) - 2, 1)])
        _twins_difference(difference_ax, runs)
    else:
        loss_ax, legend_ax = top.subplots(1, 2, width_ratios=[1, max(len(layers) - 1, 1)])
    _draw(loss_ax, LOSS, [(run.record["diagnostics"]["steps"], run.record["diagnostics"]["loss"],
                           {**style, "label": label}) for run, style, label in zip(runs, styles, run_labels(runs))],
          f"{LOSS.title}\n{LOSS.healthy}")
    loss_ax.set_xlabel("step")
    legend_ax.axis("off")
    legend_ax.legend(*loss_ax.get_legend_handles_labels(), loc="center", fontsize="medium",
                     title="the runs: " + (f"what differs is {', '.join(differing)}" if differing
                                           else "no setting differs"))
    if twins:
        legend_ax.text(0.5, 0.05, TWINS_NOTE, transform=legend_ax.transAxes, ha="center", va="bottom",
                       gid="twins")
    for row_fig, panel in zip(row_figs, rows):
        row_fig.suptitle(f"{panel.title}; {panel.healthy}", fontsize="medium")
        for column, (ax, name) in enumerate(zip(np.atleast_1d(row_fig.subplots(1, len(layers))), layers)):
            if panel is DEAD and name == layers[-1]:
                ax.axis("off")
                ax.text(0.5, 0.5, "The logits have no dead units to count:\nno activation follows them.",
                        transform=ax.transAxes, ha="center", va="center")
                continue
            lines, not_applicable = [], []
            for run, style in zip(runs, styles):
                activation, diagnostics = run.record["config"]["activation"], run.record["diagnostics"]
                if panel is DEAD and SATURATED.figure in diagnostics:
                    lines.append((diagnostics["steps"], diagnostics[SATURATED.figure][name], style))
                    not_applicable.append(f"{run.label}: {activation}, its saturated outputs' share instead")
                    continue
                if panel is DEAD and activation in NO_DEAD_UNITS:
                    not_applicable.append(f"{run.label}: {activation} is never exactly 0, does not apply")
                    continue
                lines.append((diagnostics["steps"], diagnostics[panel.figure][name], style))
            _draw(ax, panel, lines, shown_name(name, layers))
            if panel is UPDATE:
                _ratio_guides(ax)
                if column == 0:
                    ax.legend(fontsize="small", loc="best")
            if not_applicable:
                _note(ax, not_applicable, y=0.5, va="center")
            ax.set_xlabel("step")
    hist_fig.suptitle(f"Each layer's {HISTOGRAM} at the end; {HEALTHY_OUTPUTS}; logits: "
                      f"{HEALTHY_LOGITS.removeprefix('healthy: ')}", fontsize="medium")
    for ax, name in zip(np.atleast_1d(hist_fig.subplots(1, len(layers))), layers):
        for run, style in zip(runs, styles):
            h = (run.record["diagnostics"]["histograms"].get("end") or {}).get(name)
            if h is not None:  # not finite: a run that blew up has nothing to bin
                ax.stairs(h["counts"], h["edges"], linewidth=1.5, color=style["color"], linestyle=style["linestyle"])
        ax.set_yscale("log")
        ax.set_title(shown_name(name, layers), fontsize="medium")
        ax.set(xlabel="output value", ylabel="count")
    names = ", ".join(run.label for run in runs)
    names = names if len(names) <= 120 else f"{len(runs)} runs (the legend names them)"  # a line fits
    fig.suptitle(f"How {names} learned, layer by layer\n"
                 f"{reading_guide(layers).replace('one line per layer', 'one column per layer, one line per run')}\n"
                 f"{probe_note(runs[0].record['diagnostics'])}", fontsize="medium")
    return fig
