"""Watch it learn: one figure per run from the diagnostics its trainer recorded every N steps
(numpy_nn/diagnostics.py says what each figure is).

    top       the training loss of the recorded steps; each layer's gradient RMS (log scale);
              each layer's update ratio ||dW|| / ||W|| (log scale) with the 1e-3 guide line
    middle    the fraction of dead units per hidden layer; each layer's mean and standard
              deviation of its outputs on the probe images
    bottom    per layer, the histogram of its outputs on the probe images at the start of
              training and at the end
"""
import matplotlib.pyplot as plt
import numpy as np

from report.table import describe_config

GUIDE_RATIO = 1e-3   # Karpathy, makemore part 3: updates about a thousandth of the weights
TOO_LARGE = 1e-2     # far above this, steps are too large for the weights they change


def series(values):
    """A recorded series as floats, null (not finite) as NaN, which matplotlib leaves out."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _per_layer(ax, diagnostics, figure, log=False):
    """One line per layer of a recorded figure against the step."""
    steps = diagnostics["steps"]
    for name, values in diagnostics[figure].items():
        ax.plot(steps, series(values), marker=".", markersize=3, label=name)
    if log:
        ax.set_yscale("log")


def _histograms(axes, diagnostics):
    """Each layer's outputs on the probe images at the start and at the end, as step outlines
    (log-scale counts: the pile at exactly 0 of a ReLU layer would flatten the rest)."""
    histograms = diagnostics["histograms"]
    for ax, name in zip(axes, diagnostics["layers"]):
        for when, style in (("init", {"fill": True, "alpha": 0.5, "label": "start"}),
                            ("end", {"linewidth": 1.5, "label": "end"})):
            h = (histograms.get(when) or {}).get(name)
            if h is None:  # not finite: a run that blew up has nothing to bin
                continue
            ax.stairs(h["counts"], h["edges"], color="tab:blue" if when == "init" else "tab:orange", **style)
        ax.set_yscale("log")
        ax.set(title=f"{name}: outputs on the probe images", xlabel="output value", ylabel="count")
        ax.legend(fontsize="small")


def learning_figure(run):
    """The figure for one run with recorded diagnostics (see the module docstring)."""
    diagnostics = run.record["diagnostics"]
    layers = diagnostics["layers"]
    fig = plt.figure(figsize=(16, 14), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[2, 1])
    (loss_ax, grad_ax, ratio_ax), (dead_ax, mean_ax, std_ax) = top.subplots(2, 3)
    hist_axes = np.atleast_1d(bottom.subplots(1, len(layers)))

    loss_ax.plot(diagnostics["steps"], series(diagnostics["loss"]), marker=".", markersize=3, color="black")
    loss_ax.set(title="Training loss of the recorded steps' batches", ylabel="cross-entropy")
    _per_layer(grad_ax, diagnostics, "grad_rms", log=True)
    grad_ax.set(title="Gradient RMS per layer, sqrt(mean(dW^2))", ylabel="log scale")
    _per_layer(ratio_ax, diagnostics, "update_ratio", log=True)
    ratio_ax.axhline(GUIDE_RATIO, color="grey", linestyle="--", label=f"{GUIDE_RATIO:g} (guide)")
    ratio_ax.axhline(TOO_LARGE, color="red", linestyle=":", label=f"{TOO_LARGE:g}")
    ratio_ax.set(title="Update ratio per layer, ||dW|| / ||W|| of the step", ylabel="log scale")
    _per_layer(dead_ax, diagnostics, "dead_fraction")
    dead_ax.set(title="Dead units: 0 on every probe image", ylabel="fraction of the layer's units",
                ylim=(-0.02, 1.02))
    _per_layer(mean_ax, diagnostics, "activation_mean")
    mean_ax.set(title="Mean of each layer's outputs on the probe images", ylabel="mean")
    _per_layer(std_ax, diagnostics, "activation_std", log=True)
    std_ax.set(title="Standard deviation of each layer's outputs", ylabel="log scale")
    for ax in (loss_ax, grad_ax, ratio_ax, dead_ax, mean_ax, std_ax):
        ax.set_xlabel(f"step (recorded every {diagnostics['every']})")
        ax.grid(alpha=0.3)
        if ax is not loss_ax:
            ax.legend(fontsize="small")
    _histograms(hist_axes, diagnostics)
    fig.suptitle(f"How {run.label} learned, layer by layer\n{describe_config(run)}", fontsize="medium")
    return fig
