"""batchnorm/summary.md and summary.json: Ioffe & Szegedy's MNIST experiment (2015, section 4.1,
figure 1) as we ran it, beside what the paper says, and the depth lesson's numbers. Written by
perf/reference_results.py --only batchnorm, with the pictures of report/batchnorm.py, from the
runs' records."""
import json
import statistics

from harness.metrics_file import load_metrics
from numpy_nn.diagnostics import SATURATION, TRACKED_UNIT
from numpy_nn.neural_network import NeuralNetwork
from report import batchnorm as figures
from report.figure import png
from report.run import FRAMEWORK_NAMES

STEPS = (1000, 2000, 5000, 10000, 20000, 30000, 40000, 50000)   # where the accuracy table reads the curves
SETTLED = 5000    # from this step on, the percentiles' range says how much the distribution still moves


def accuracy_at(record, step):
    """The test accuracy of the epoch that ended at step, or None."""
    by_step = dict(zip(figures.steps_of(record), (e["test_acc"] for e in record["epochs"])))
    return by_step.get(step)


def _spread(values):
    values = [v for v in values if v is not None]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def paper_numbers(paper):
    """{framework: {norm: {step: accuracy spread over the seeds}}}, the percentiles of the last
    hidden layer's tracked unit (seed 0, NumPy and PyTorch), the saturated share of each hidden
    layer's outputs at the last record (spread over the seeds), and the runs' seconds."""
    accuracy, units, seconds, saturated = {}, {}, {}, {}
    for record in paper.values():
        framework, norm = record["framework"], record["config"]["norm"]
        accuracy.setdefault(framework, {}).setdefault(norm, []).append(record)
        for layer, values in record["diagnostics"]["saturated_fraction"].items():
            saturated.setdefault(f"{framework} {norm}", {}).setdefault(layer, []).append(values[-1])
        seconds.setdefault(f"{framework} {norm}", []).append(record["total_train_seconds"])
        if record["seed"] == 0:
            last = f"layer{len(record['config']['hidden'])}"
            steps = record["diagnostics"]["steps"]
            p = figures.percentiles(record, last)
            settled = [i for i, s in enumerate(steps) if s >= SETTLED]
            units.setdefault(framework, {})[norm] = {
                "layer": last, "at_steps": {str(steps[i]): {q: float(p[q][i]) for q in p}
                                            for i in (0, 1, *[k for k, s in enumerate(steps) if s in (1001, 5001, 20001)], -1)},
                f"range_from_step_{SETTLED}": {q: float(p[q][settled].max() - p[q][settled].min()) for q in p}}
    table = {framework: {norm: {step: _spread([accuracy_at(r, step) for r in accuracy[framework][norm]])
                                for step in STEPS} for norm in figures.NORM_NAMES if norm in accuracy[framework]}
             for framework in FRAMEWORK_NAMES if framework in accuracy}
    saturated = {name: {layer: _spread(values) for layer, values in saturated[name].items()}
                 for name in (f"{f} {n}" for f in FRAMEWORK_NAMES for n in figures.NORM_NAMES) if name in saturated}
    return table, units, {name: _spread(values) for name, values in seconds.items()}, saturated


def tracked_unit_scale(weights):
    """The tracked unit's gamma and beta in the last hidden layer of a batch-normalised NumPy
    network's saved weights: where its input's distribution sits, once normalised."""
    net = NeuralNetwork.load(weights)
    last = net.num_layers - 1
    return {"layer": f"layer{last}", "gamma": float(net.params[f"gamma{last}"][TRACKED_UNIT]),
            "beta": float(net.params[f"beta{last}"][TRACKED_UNIT])}


def depth_numbers(depth):
    """Per run: the test accuracy, the first layer's gradient RMS over the last's (logits') at
    step 1 and at the end, and the saturated (sigmoid) or dead (ReLU) share per layer at the end."""
    numbers = {}
    for name, record in depth.items():
        d, activation = record["diagnostics"], record["config"]["activation"]
        layers = d["layers"]
        unit = "saturated_fraction" if activation in SATURATION else "dead_fraction"
        numbers[name] = {
            "activation": activation, "norm": record["config"]["norm"], "test_acc": record["final_test_acc"],
            "grad_rms_step_1": [d["grad_rms"][layer][0] for layer in layers],
            "grad_rms_end": [d["grad_rms"][layer][-1] for layer in layers],
            "first_over_last_step_1": d["grad_rms"][layers[0]][0] / d["grad_rms"][layers[-1]][0],
            "first_over_last_end": d["grad_rms"][layers[0]][-1] / d["grad_rms"][layers[-1]][-1],
            unit: [d[unit][layer][-1] for layer in layers[:-1]]}
    return numbers


def _acc(spread):
    if spread is None or not spread["runs"]:
        return "–"
    return f"{spread['median']:.2%} ({spread['min']:.2%}–{spread['max']:.2%})"


def markdown(table, units, seconds, saturated, depth, search, command, hardware, scale):
    lines = [
        "# Batch normalization: Ioffe & Szegedy's MNIST experiment, and depth",
        "",
        f"Written by `{command}` ({hardware}; one BLAS thread per run). Pictures: "
        "[figure1.png](figure1.png) (the paper's figure 1, from our runs) and [depth.png](depth.png); the "
        "records: `paper/`, `depth/`, `search/`; the depth runs' layer-by-layer pictures, from "
        "`python compare.py --no-inside --runs depth/*_metrics.json`: `depth/learning_*.png`.",
        "",
        "## The setup, checked against the paper",
        "",
        "| | the paper (section 4.1) | here |",
        "|---|---|---|",
        "| input | 28x28 binary image | the 28x28 image as `data_loader.py` gives it, grey levels in [0, 1] |",
        "| network | 3 fully-connected hidden layers of 100 sigmoid units, 10 outputs, cross-entropy | "
        "the same: `--hidden 100 100 100 --activation sigmoid` |",
        "| weights | \"small random Gaussian values\" (no scale given) | N(0, 0.01²): `--weight-init small` |",
        "| BN | on each hidden layer, as in its section 3.1 (no bias: β replaces it; inference with the "
        "population statistics, variance m/(m−1)·E[σ²_B]) | the same in training (`--norm batch`: ε 1e-5, "
        "PyTorch's `nn.BatchNorm1d`); in inference, running statistics: an exponential average with "
        "momentum 0.1 of the batches' means and unbiased variances, where the paper averages over the "
        "training batches with equal weights |",
        f"| optimizer, learning rate | not given | plain SGD at a constant rate, {search['lr']}: of "
        f"{', '.join(search['search'])}, the one whose run without BN ended {search['epochs']} epochs "
        "(5,000 steps; NumPy, seed 0) with the lowest training loss (the test set plays no part); BN runs at "
        "the same rate |",
        "| mini-batch, steps | 60, 50,000 | 60, 50,000 (50 epochs of the 60,000 training images) |",
        "| seeds | one run each, as far as the figure shows | seeds 0, 1, 2, in both twins (NumPy and PyTorch) |",
        "",
        "The rate search (training loss after 5,000 steps without BN, `search/`):",
        "",
        "| lr | " + " | ".join(search["search"]) + " |",
        "|---|" + "---:|" * len(search["search"]),
        "| training loss | " + " | ".join(f"{loss:.4f}" for loss in search["search"].values()) + " |",
        "",
        "## Test accuracy over training: figure 1(a)",
        "",
        "The paper gives no numbers in its text for this experiment, only the figure, and states that "
        "\"the batch normalized network enjoys the higher test accuracy\". We could not view the "
        "published figure where these runs were made (no internet there), so we have not read its "
        "values: the paper's column below is what its text says, and a reader with figure 1(a) of "
        "arXiv:1502.03167 open can set the curves' values beside ours.",
        "",
        "Ours: the test accuracy after each 1,000 steps (one epoch), median of seeds 0-2 (lowest–highest). "
        "The twins start from the same weights and see the same batches, but in float32: their sums' last "
        "bits differ (NumPy's and PyTorch's libraries add in different orders), and 50,000 steps carry "
        "that far, so the two twins' runs of one seed end as far apart as two seeds do (the float64 twins "
        "agree to 1e-9: tests/test_batchnorm.py).",
        "",
        "| step | " + " | ".join(f"{FRAMEWORK_NAMES[f]} {figures.NORM_NAMES[n]}" for f in table for n in table[f])
        + " | the paper |",
        "|---:|" + "---:|" * sum(len(n) for n in table.values()) + "---|",
    ]
    for step in STEPS:
        cells = [_acc(table[f][n][step]) for f in table for n in table[f]]
        paper = "with BN higher (text); values: not read" if step == STEPS[-1] else ""
        lines.append(f"| {step:,} | " + " | ".join(cells) + f" | {paper} |")
    lines += [
        "",
        "## One sigmoid's input over training: figure 1(b, c)",
        "",
        "The input to unit 0 of the last hidden layer (layer3: `y` after BN, `z` without), its 15th, 50th "
        "and 85th percentiles over the 128 probe images (numpy_nn/diagnostics.py), every 200 steps, seed 0. "
        "The network is evaluated as in testing: with BN, the running statistics, which at step 1 have "
        "moved only a tenth of the way from their start (mean 0, variance 1), so the first record says "
        "little. Without BN the first record's three percentiles are one number, near 0: the unit's 100 "
        "inputs are sigmoids of near-zero sums, all near 0.5 for every image, and its weights N(0, 0.01²). "
        "The paper: \"The distributions in the original network change significantly over time, "
        "both in their mean and the variance [...] In contrast, the distributions in the batch-normalized "
        "network are much more stable as training progresses\".",
        "",
        "| twin | | step | 15th | 50th | 85th |",
        "|---|---|---:|---:|---:|---:|",
    ]
    units = {f: {n: units[f][n] for n in figures.NORM_NAMES if n in units[f]} for f in FRAMEWORK_NAMES if f in units}
    for framework, norms in units.items():
        for norm, unit in norms.items():
            for step, values in unit["at_steps"].items():
                lines.append(f"| {FRAMEWORK_NAMES[framework]} | {figures.NORM_NAMES[norm]} | {int(step):,} | "
                             + " | ".join(f"{values[q]:.2f}" for q in sorted(values)) + " |")
    lines += ["", f"How far each percentile still moved from step {SETTLED:,} on (largest minus smallest):", "",
              "| twin | | 15th | 50th | 85th |", "|---|---|---:|---:|---:|"]
    for framework, norms in units.items():
        for norm, unit in norms.items():
            moved = unit[f"range_from_step_{SETTLED}"]
            lines.append(f"| {FRAMEWORK_NAMES[framework]} | {figures.NORM_NAMES[norm]} | "
                         + " | ".join(f"{moved[q]:.2f}" for q in sorted(moved)) + " |")
    lines += ["", "The share of each hidden layer's outputs on the probe images that is saturated (below 0.02 or "
              "above 0.98, where the sigmoid's slope is under 8% of its peak) at the last record, step 49,801: "
              "median of seeds 0-2 (lowest–highest).", "",
              "| twin | | layer1 | layer2 | layer3 |", "|---|---|---:|---:|---:|"]
    for name, layers in saturated.items():
        framework, norm = name.split()
        lines.append(f"| {FRAMEWORK_NAMES[framework]} | {figures.NORM_NAMES[norm]} | "
                     + " | ".join(f"{s['median']:.0%} ({s['min']:.0%}–{s['max']:.0%})" for s in layers.values()) + " |")
    lines += ["", "## Where ours differs from the paper, and why", "",
              "- Every choice the paper leaves open is ours, stated above: the optimizer and its rate, the "
              "weights' scale, and grey-level inputs where the paper's were binary. The rate matters a great deal "
              "without BN (the search's table: at 10 the run stalls, at 0.1 and below it has not started after "
              "5,000 steps); the other choices we did not vary.",
              "- The comparison is ours only in direction until figure 1(a)'s values are set beside it: the "
              "median with BN is higher than without at every step the table shows, by the most early on, as "
              "the paper's text says.",
              "- With BN our unit's input is steadier than without, but not flat: its percentiles still move "
              "(the range table above), where the paper calls its BN network's distributions \"much more stable "
              "as training progresses\". BN fixes the mean and variance of zhat over the batch, not of "
              "`y = gamma zhat + beta`: gamma and beta are learned like any weight. By the end this unit's gamma "
              f"is {scale['gamma']:.2f} and its beta {scale['beta']:.2f} (from 1 and 0; NumPy, seed 0's saved "
              "weights), which is where its percentiles sit.",
              "- The paper shows one run per network; we ran three seeds in each twin. The twins' float32 runs "
              "of one seed drift apart over 50,000 steps as far as two seeds do (the table's ranges), so their "
              "agreement is in the float64 tests, not here."]
    lines += ["", "Seconds of training per run (the steps only, evaluation aside; median over the seeds, on a "
              "machine shared with other work): " + ", ".join(f"{name} {s['median']:.0f} s" for name, s in seconds.items())
              + ".", "",
              "## Depth", "",
              "10 hidden layers of 100 units, plain SGD at 0.1, batch 128, 10 epochs, He initialisation (NumPy, "
              "seed 0; `depth/`). The gradient RMS of the first layer's weights over the logits layer's: how much of "
              "the gradient reaches the input.", "",
              "| activation | | test accuracy | grad RMS first ÷ last, step 1 | at the end | saturated (sigmoid) or dead "
              "(ReLU) at the end, layer 1 … 10 |",
              "|---|---|---:|---:|---:|---|"]
    for name, d in depth.items():
        unit = d.get("saturated_fraction", d.get("dead_fraction"))
        lines.append(f"| {d['activation']} | {figures.NORM_NAMES[d['norm']]} | {d['test_acc']:.2%} | "
                     f"{d['first_over_last_step_1']:.1e} | {d['first_over_last_end']:.1e} | "
                     + " ".join(f"{u:.0%}" for u in unit) + " |")
    return "\n".join(lines) + "\n"


def write(folder, paper_paths, depth_paths, search, command):
    """summary.json, summary.md, figure1.png and depth.png in folder, from the runs' metrics files
    ({name: path}); search: {"lr": the rate chosen, "search": {rate: training loss}, "epochs": n}."""
    paper = {name: load_metrics(path) for name, path in paper_paths.items()}
    depth = {name: load_metrics(path) for name, path in depth_paths.items()}
    table, units, seconds, saturated = paper_numbers(paper)
    depth_table = depth_numbers(depth)
    record = next(iter(paper.values()))
    hardware = f"{record['hardware']['cpu']}, {record['hardware']['cores']} cores"
    summary = {"what": "Ioffe & Szegedy's MNIST experiment (2015, section 4.1, figure 1) and the depth lesson: "
                       "report/batchnorm_table.py", "command": command, "search": search,
               "test_accuracy": {f: {n: {str(s): v for s, v in steps.items()} for n, steps in norms.items()}
                                 for f, norms in table.items()},
               "unit_percentiles": units, "saturated_at_the_end": saturated, "train_seconds": seconds,
               "depth": depth_table}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    scale = tracked_unit_scale(folder / "paper" / "numpy_batch_seed0_model.npz")
    summary["tracked_unit_at_the_end"] = scale
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (folder / "summary.md").write_text(markdown(table, units, seconds, saturated, depth_table, search, command,
                                                hardware, scale))
    (folder / "figure1.png").write_bytes(png(figures.paper_figure(paper)))
    (folder / "depth.png").write_bytes(png(figures.depth_figure(depth)))
