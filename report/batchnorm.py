"""The pictures of batch normalization's reference runs (perf/reference_results.py --only
batchnorm), drawn from the runs' records:

paper_figure(paper)   Ioffe & Szegedy's figure 1, redrawn from our runs: (a) test accuracy
                      over the training steps, without and with batch normalization, every
                      seed of both twins; (b, c) the input to one sigmoid of the last hidden
                      layer (its 15th, 50th and 85th percentiles over the probe images), without
                      and with, as numpy_nn/diagnostics.py records it
depth_figure(depth)   the depth lesson: each layer's gradient size at the first step and at the
                      end, the share of saturated (sigmoid) or dead (ReLU) units per layer at the
                      end, and the test accuracy per epoch, for each activation without and with
                      batch normalization

paper and depth map a run's name to its record (json, as the trainers write it).
"""
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from numpy_nn.diagnostics import PERCENTILES, SATURATION, TRACKED_UNIT

NORM_NAMES = {"none": "without BN", "batch": "with BN"}
NORM_COLOURS = {"none": "tab:red", "batch": "tab:blue"}
FRAMEWORK_STYLES = {"numpy": "-", "pytorch": "--"}
PERCENTILE_STYLES = {15: ":", 50: "-", 85: "--"}
ACTIVATION_COLOURS = {"sigmoid": "tab:purple", "relu": "tab:green"}


def steps_of(record):
    """The training step at each epoch's end: the test accuracy's x."""
    per_epoch = -(-record["data"]["train_samples"] // record["config"]["batch_size"])
    return [epoch["epoch"] * per_epoch for epoch in record["epochs"]]


def percentiles(record, layer):
    """{q: the q-th percentile of the tracked unit's input at each recorded step} of one layer."""
    return {q: np.array(record["diagnostics"][f"input_p{q}"][layer], dtype=float) for q in PERCENTILES}


def paper_figure(paper):
    """Figure 1 of the paper, from our runs (module docstring)."""
    fig, (acc_ax, *unit_axes) = plt.subplots(1, 3, figsize=(16, 5), layout="constrained")
    for name, record in paper.items():
        norm, framework = record["config"]["norm"], record["framework"]
        acc_ax.plot(steps_of(record), [e["test_acc"] for e in record["epochs"]], FRAMEWORK_STYLES[framework],
                    color=NORM_COLOURS[norm], linewidth=1, alpha=0.8,
                    label=f"{NORM_NAMES[norm]}, {framework}" if record["seed"] == 0 else None)
    acc_ax.set(ylim=(0.7, 1.0), xlabel="training step", ylabel="test accuracy",
               title="(a) test accuracy: every seed of both twins\n(evaluated after each epoch of 1,000 steps)")
    acc_ax.legend(fontsize="small", loc="lower right")
    last = f"layer{len(next(iter(paper.values()))['config']['hidden'])}"
    shown = {norm: next(r for r in paper.values() if r["config"]["norm"] == norm and r["framework"] == "numpy"
                        and r["seed"] == 0) for norm in NORM_NAMES}
    low = min(np.nanmin(p) for r in shown.values() for p in percentiles(r, last).values())
    high = max(np.nanmax(p) for r in shown.values() for p in percentiles(r, last).values())
    for ax, (norm, record), letter in zip(unit_axes, shown.items(), "bc"):
        steps = record["diagnostics"]["steps"]
        for q, values in percentiles(record, last).items():
            ax.plot(steps, values, PERCENTILE_STYLES[q], color=NORM_COLOURS[norm], label=f"{q}th percentile")
        ax.set(ylim=(low - 0.5, high + 0.5), xlabel="training step", ylabel="input to the sigmoid",
               title=f"({letter}) {NORM_NAMES[norm]}: one sigmoid's input, {last} unit {TRACKED_UNIT}\n"
                     f"over the {record['diagnostics']['probe_images']} probe images (NumPy, seed 0)")
        ax.legend(fontsize="small")
    for ax in (acc_ax, *unit_axes):
        ax.grid(alpha=0.3)
    config = next(iter(paper.values()))["config"]
    fig.suptitle(f"Ioffe & Szegedy (2015), figure 1, reproduced: MLP 784-{'-'.join(map(str, config['hidden']))}-10, "
                 f"sigmoid, {config['weight_init']} initialisation, {config['optimizer']} lr {config['lr']:g}, "
                 f"batch {config['batch_size']}, {config['epochs'] * 1000:,} steps", fontsize="medium")
    return fig


def layer_values(record, figure, step_index):
    """A diagnostics figure across the layers, input to output, at one recorded step."""
    diagnostics = record["diagnostics"]
    return [diagnostics[figure][layer][step_index] for layer in diagnostics["layers"] if layer in diagnostics[figure]]


def depth_figure(depth):
    """The depth lesson (module docstring)."""
    fig, axes = plt.subplots(2, 2, figsize=(14, 9), layout="constrained")
    (first_ax, end_ax), (unit_ax, acc_ax) = axes
    for name, record in depth.items():
        activation, norm = record["config"]["activation"], record["config"]["norm"]
        style = {"color": ACTIVATION_COLOURS[activation], "linestyle": "-" if norm == "batch" else "--",
                 "marker": "o", "label": f"{activation}, {NORM_NAMES[norm]}"}
        layers = record["diagnostics"]["layers"]
        x = np.arange(1, len(layers) + 1)
        first_ax.plot(x, layer_values(record, "grad_rms", 0), **style)
        end_ax.plot(x, layer_values(record, "grad_rms", -1), **style)
        unit_figure = "saturated_fraction" if activation in SATURATION else "dead_fraction"
        unit_ax.plot(x[:-1], layer_values(record, unit_figure, -1), **style)
        acc_ax.plot([e["epoch"] for e in record["epochs"]], [e["test_acc"] for e in record["epochs"]], **style)
    ticks = [*(str(i) for i in range(1, len(layers))), "logits"]
    for ax, when in ((first_ax, "at step 1"), (end_ax, "at the last recorded step")):
        ax.set(yscale="log", xticks=x, xticklabels=ticks, xlabel="layer (input to output)",
               ylabel="sqrt(mean(dW²)), log scale",
               title=f"Gradient size of each layer's weights {when}\nhealthy: about level from layer to layer")
    unit_ax.set(xticks=x[:-1], xticklabels=ticks[:-1], xlabel="hidden layer", ylim=(-0.02, 1.02),
                ylabel="share of the layer's outputs (sigmoid) or units (ReLU)",
                title="At the end: sigmoid outputs saturated (below 0.02 or above 0.98),\n"
                      "ReLU units dead (0 on every probe image)")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy", ylim=(0, 1), title="Test accuracy per epoch")
    acc_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    config = next(iter(depth.values()))["config"]
    fig.suptitle(f"Depth: MLP 784-{'-'.join(map(str, config['hidden']))}-10 ({len(config['hidden'])} hidden layers), "
                 f"{config['optimizer']} lr {config['lr']:g}, batch {config['batch_size']}, {config['epochs']} epochs, "
                 f"{config['weight_init']} initialisation; BN: batch normalization before each activation",
                 fontsize="medium")
    return fig
