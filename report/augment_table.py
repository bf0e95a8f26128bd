"""The augmentation table: each model without and with --augment, in both twins: test
accuracy, accuracy on the perturbed and the drawn test digits (report/robustness.py, through
compare.py's own evaluation), the epoch that first reached 99% (the CNN), and the cost of an
epoch. perf/reference_results.py --only augment trains the runs and calls summarize().
"""
import json
import statistics

from data_loader import DATA_DIR
from harness.metrics_file import median_epoch_seconds
from report.run import FRAMEWORK_NAMES, MODEL_NAMES
from report.runs import load_runs, measure_robustness

TARGET = 0.99  # the CNN's target test accuracy (perf/reference_results.py TARGET_ACC)


def _spread(values):
    """{"median", "min", "max", "runs"} of a list of numbers (None: left out)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def _first_epoch_at(record, target=TARGET):
    return next((e["epoch"] for e in record["epochs"] if e["test_acc"] >= target), None)


def summarize(paths, weight_suffix):
    """{model: {framework: {"plain"|"augmented": figures over its seeds}}} from the runs'
    metrics files, each with its weights beside it (NAME_model.npz/.pt)."""
    groups = {}
    for run in load_runs(paths):
        run.weights = run.path.with_name(run.path.name.replace("_metrics.json", "_model" + weight_suffix[run.framework]))
        robust = measure_robustness(run, DATA_DIR)
        kind = "augmented" if run.record["config"].get("augment") else "plain"
        group = groups.setdefault(run.model, {}).setdefault(run.framework, {}).setdefault(kind, [])
        group.append({"run": run.path.name, "test": run.record["epochs"][-1]["test_acc"], **robust,
                      "epoch_to_99": _first_epoch_at(run.record), "epoch_seconds": median_epoch_seconds(run.record),
                      "blas_threads": run.record["hardware"]["blas_threads"]})
    summary = {}
    for model, frameworks in groups.items():
        for framework, kinds in frameworks.items():
            for kind, runs in kinds.items():
                summary.setdefault(model, {}).setdefault(framework, {})[kind] = {
                    "runs": runs, **{figure: _spread([r[figure] for r in runs])
                                     for figure in ("test", "perturbed", "drawn", "epoch_to_99", "epoch_seconds")}}
    return summary


def _accuracy(figure):
    if figure["runs"] == 1:
        return f"{figure['median']:.2%}"
    return f"{figure['median']:.2%} ({figure['min']:.2%}-{figure['max']:.2%})"


def markdown(summary, command):
    """summary.md: one row per model, framework and augmentation."""
    lines = [f"# Augmentation: what it buys and what it costs\n\nWritten by `{command}`. Accuracies on the "
             "10,000 MNIST test images: as they are (test), perturbed (rotated, scaled, thickened or thinned, "
             "shifted: report/robustness.py) and the same drawn as the demo page sends them (drawn). Several "
             "seeds: median (lowest-highest). Epoch cost: the median of epochs 2+, one BLAS thread per run, "
             "on a shared machine; perf/benchmark.py times the augmentation itself.\n",
             "| model | framework | augment | seeds | test | perturbed | drawn | first epoch at 99% | s/epoch |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for model, frameworks in summary.items():
        for framework, kinds in frameworks.items():
            for kind in ("plain", "augmented"):
                s = kinds[kind]
                to_99 = "–" if model == "mlp" else (
                    "never" if s["epoch_to_99"] is None else f"{s['epoch_to_99']['median']:g}"
                    + ("" if s["epoch_to_99"]["runs"] == len(s["runs"]) else
                       f" ({len(s['runs']) - s['epoch_to_99']['runs']} never)"))
                lines.append(f"| {MODEL_NAMES[model]} | {FRAMEWORK_NAMES[framework]} | "
                             f"{'yes' if kind == 'augmented' else 'no'} | {len(s['runs'])} | {_accuracy(s['test'])} | "
                             f"{_accuracy(s['perturbed'])} | {_accuracy(s['drawn'])} | {to_99} | "
                             f"{s['epoch_seconds']['median']:.2f} |")
    return "\n".join(lines) + "\n"


def write(summary, folder, command):
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (folder / "summary.md").write_text(markdown(summary, command))
