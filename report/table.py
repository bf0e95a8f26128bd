"""The markdown report: what an experiment changed, what ran, the table, the speed ratio, warnings."""
import numpy as np

from harness.metrics_file import median_epoch_seconds, steady_epoch_seconds
from report.robustness import RANGES, SEED
from report.run import MODEL_NAMES, divergence, model_layers, model_name, plural, with_results

# A run's epochs do the same work, so their times differ only by what else the machine did.
# The committed reference runs that had the machine to themselves spread 1.03x to 1.25x from
# fastest to slowest (after epoch 1); beyond 1.3x (perf/reference_results.py's MAX_SPREAD, for
# the same reason) other work slowed the run by more than most speed ratios between our
# implementations, so no verdict is drawn from it.
NOISY_SPREAD = 1.3
# A verdict needs at least this many epochs after epoch 1 from each run: epoch 1 carries
# one-off start-up costs, and the spread that shows whether the machine was quiet
# (NOISY_SPREAD) needs two epochs to compare; one is 1.00x by construction, however busy
# the machine was. (A sweep's 1-epoch cells, 0.09 s against 0.12 s for the same model,
# were once called "1.4x faster".)
MIN_STEADY_EPOCHS = 2


def steady_epochs(run):
    """The epoch times a speed is read from (harness/metrics_file.py steady_epoch_seconds)."""
    return np.array(steady_epoch_seconds(run.record))


def summarize(run):
    """The numbers in a run's table row. Its speed is one statistic, the median of its steady
    epochs (steady_epochs), in seconds and as training samples per second; the speed verdict
    reads the same numbers."""
    test_acc = run.series("test_acc")
    best = int(np.argmax(test_acc))  # the first epoch that reached the best accuracy
    steady = steady_epochs(run)
    median_seconds = median_epoch_seconds(run.record)
    return {
        "final_test_acc": float(test_acc[-1]),
        "best_test_acc": float(test_acc[best]),
        "best_epoch": run.record["epochs"][best]["epoch"],
        "total_seconds": run.record["total_train_seconds"],
        "median_epoch_seconds": median_seconds,
        "median_samples_per_second": run.record["data"]["train_samples"] / median_seconds,
        "epoch_spread": float(steady.max() / steady.min()),   # slowest / fastest steady epoch
    }


def mode_note(record):
    """" (graph)" or " (compile)" for a PyTorch run not in the eager loop (--mode), else ""."""
    mode = record["config"].get("mode", "eager")  # NumPy runs and older records have none: eager
    return "" if mode == "eager" else f" ({mode})"


def device_name(record):
    """Where a run trained, for sentences: "CPU (AMD EPYC)" or "GPU (NVIDIA H100)", and how,
    when not in the eager loop: "GPU (NVIDIA H100) (graph)"."""
    hardware = record["hardware"]
    if hardware["device"] == "cpu":
        return f"CPU ({hardware['cpu']})" + mode_note(record)
    return f"GPU ({hardware.get('gpu') or hardware['device']})" + mode_note(record)


def _epochs_shown(run):
    """Which epochs the median covers, e.g. "epochs 2-10", or "epoch 1" for a one-epoch run."""
    n = len(run.record["epochs"])
    return "epoch 1" if n == 1 else f"epoch {n}" if n == 2 else f"epochs 2-{n}"


BENCHMARK = ("`python perf/benchmark.py` measures the speed properly (the two take turns, "
             "medians of repeats).")


def too_few_epochs(a, b):
    """The sentence that declines a verdict when either run has fewer than MIN_STEADY_EPOCHS
    epochs after epoch 1; None when both have enough."""
    short = [run for run in (a, b) if len(run.record["epochs"]) - 1 < MIN_STEADY_EPOCHS]
    if not short:
        return None
    had = "; ".join(f"{run.label} has {plural(len(run.record['epochs']), 'epoch')}" for run in short)
    return (f"No speed verdict: {had}, and a verdict needs at least {MIN_STEADY_EPOCHS} epochs "
            f"after epoch 1 from each run (epoch 1 carries one-off start-up costs, and one epoch "
            f"cannot show whether the machine was busy). {BENCHMARK}")


def too_noisy(a, b):
    """The sentence that declines a verdict when either run's steady epochs spread more than
    NOISY_SPREAD; None when both are steady enough."""
    noisy = [run for run in (a, b) if summarize(run)["epoch_spread"] > NOISY_SPREAD]
    if not noisy:
        return None
    spreads = "; ".join(f"{run.label}'s {_epochs_shown(run)} took from {steady_epochs(run).min():.3f} s "
                        f"to {steady_epochs(run).max():.3f} s ({summarize(run)['epoch_spread']:.2f}x)"
                        for run in noisy)
    return (f"The machine was too noisy to judge which trains faster: {spreads} for the same work, "
            f"more than the {NOISY_SPREAD}x a quiet machine shows. {BENCHMARK}")


def speed_sentence(a, b):
    """Which of two runs trains faster and by how much, from the statistic the table shows:
    the median training samples per second of each run's steady epochs (steady_epochs). No
    verdict when a run has too few epochs (too_few_epochs) or the machine was too noisy
    (too_noisy)."""
    declined = too_few_epochs(a, b) or too_noisy(a, b)
    if declined:
        return declined
    r_a, r_b = (summarize(run)["median_samples_per_second"] for run in (a, b))
    (r_slow, slow), (r_fast, fast) = sorted([(r_a, a), (r_b, b)], key=lambda pair: pair[0])
    which = (f"{_epochs_shown(fast)} of each" if _epochs_shown(fast) == _epochs_shown(slow)
             else f"{_epochs_shown(fast)} and {_epochs_shown(slow)}")
    rates = f"median {r_fast:,.0f} against {r_slow:,.0f} training samples/s ({which})"
    if device_name(a.record) == device_name(b.record):
        where = f"on this {device_name(a.record)}"
        if f"{r_fast / r_slow:.1f}" == "1.0":
            return f"{a.label} and {b.label} train equally fast {where}: {rates}."
        return f"{fast.label} is {r_fast / r_slow:.1f}x faster than {slow.label} {where}: {rates}."
    return (f"{fast.label} on its {device_name(fast.record)} is {r_fast / r_slow:.1f}x faster than "
            f"{slow.label} on its {device_name(slow.record)}: {rates}.")


def _hidden(record):
    """An MLP's hidden sizes, e.g. "128-64"; None for a CNN, whose layers are fixed."""
    hidden = record["config"]["hidden"]
    if record["config"]["model"] != "mlp" or hidden is None:
        return None
    return "-".join(str(size) for size in hidden)


# What must be the same for a like-for-like comparison, in two kinds: the name the report
# gives it, and where the record keeps it; None where a run has no such setting (it is
# compared among the others).
# SETTINGS: what a learner changes on purpose, among the trainers' flags (harness/flags.py;
# --limit shows up as the number of training samples). A difference is the experiment, and
# the report's first line names it (experiment_line).
SETTINGS = {
    "model": lambda record: MODEL_NAMES[record["config"]["model"]],
    "dataset": lambda record: record["data"]["dataset"],
    "training samples": lambda record: record["data"]["train_samples"],
    "epochs": lambda record: record["config"]["epochs"],
    "batch size": lambda record: record["config"]["batch_size"],
    "optimizer": lambda record: record["config"]["optimizer"],
    "learning rate": lambda record: record["config"]["lr"],
    "schedule": lambda record: record["config"]["schedule"],
    "hidden sizes": _hidden,                         # among the MLPs only
    "activation": lambda record: record["config"]["activation"],
    "normalization": lambda record: record["config"].get("norm", "none"),   # older records: none
    "weight initialisation": lambda record: record["config"]["weight_init"],  # None: PyTorch's own
    "dtype": lambda record: record["config"]["dtype"],
    "weight decay": lambda record: record["config"]["weight_decay"],
    "dropout": lambda record: record["config"]["dropout"],
    "augmentation": lambda record: augmentation(record["config"].get("augment")),
}
# CIRCUMSTANCES: not a setting of the experiment but where or how far it ran. A difference in
# these is a warning (unfair_differences).
CIRCUMSTANCES = {
    "finished epochs": lambda record: len(record["epochs"]),
    "hardware": device_name,
}


def _shown(setting, run, value):
    """A run's value as a warning shows it, after the run's label. When the models differ,
    the labels already name them ("NumPy CNN", name_runs), so the model warning gives their
    layers instead: "NumPy MLP 784-128-64-10, NumPy CNN 32-64 conv"."""
    if setting == "model":
        value = model_layers(run.record) or value
    return f"{run.label} {value}"


# The settings that change the work one training sample costs: the speed of runs that differ
# in them measures the settings as much as the implementations.
WORK_SETTINGS = ("model", "hidden sizes", "normalization", "batch size", "dtype", "augmentation")


def changed_settings(runs):
    """[(setting, [each run's value])] for every entry of SETTINGS that differs between the
    runs, in run order; a run with no such setting shows None. (Whether a record is a run of
    given flags at all, every flag counted, is harness/metrics_file.py's differing_settings.)"""
    differing = []
    for setting, value_of in SETTINGS.items():
        values = [value_of(run.record) for run in runs]
        if len({v for v in values if v is not None}) > 1:
            if setting == "model":  # the layers say more than "MLP" and "CNN"
                values = [model_name(run.record) for run in runs]
            differing.append((setting, values))
    return differing


def _changes(values, shown=str):
    """"relu → sigmoid": the runs' values in their order."""
    return " → ".join("–" if value is None else shown(value) for value in values)


def _median_grad_rms(run):
    """{layer: median gradient RMS over the recorded steps}, the output layer named "logits";
    None for a run without diagnostics."""
    diagnostics = run.record["diagnostics"]
    if not diagnostics:
        return None
    layers = diagnostics["layers"]
    medians = {}
    for layer in layers:
        recorded = [v for v in diagnostics["grad_rms"][layer] if v is not None]
        medians["logits" if layer == layers[-1] else layer] = float(np.median(recorded)) if recorded else None
    return medians


def consequences(runs):
    """What the runs' settings did to learning: final test accuracy and loss, and each layer's
    median gradient RMS over the recorded steps (when every run recorded the same layers)."""
    def final(run, field, shown):
        return "diverged" if run.diverged else shown(run.record["epochs"][-1][field])

    parts = [f"test accuracy {' → '.join(final(run, 'test_acc', lambda a: f'{a:.2%}') for run in runs)}",
             f"test loss {' → '.join(final(run, 'test_loss', lambda loss: f'{loss:.3f}') for run in runs)}"]
    grads = [_median_grad_rms(run) for run in runs]
    if None not in grads and len({tuple(g) for g in grads}) == 1:
        per_layer = ", ".join(f"{layer} {_changes([g[layer] for g in grads], lambda v: f'{v:.1e}')}"
                              for layer in grads[0])
        parts.append(f"gradient RMS sqrt(mean(dW^2)), median over the run: {per_layer}")
    return ", ".join(parts)


def experiment_line(runs):
    """The report's first line when the runs differ in their settings: the differences, then
    what they did to learning, e.g. "activation: relu → sigmoid: test accuracy 97.93% →
    91.02%, ..."; None when the runs share every setting (twins compared)."""
    differing = changed_settings(runs)
    if not differing:
        return None
    changed = "; ".join(f"{setting}: {_changes(values, lambda v: f'{v:g}' if isinstance(v, float) else str(v))}"
                        for setting, values in differing)
    return f"{changed}: {consequences(runs)}"


def unfair_differences(runs):
    """One warning per difference that is not a setting (CIRCUMSTANCES: the hardware, how many
    epochs finished), naming each run's value."""
    warnings = []
    for setting, value_of in CIRCUMSTANCES.items():
        having = [(run, value_of(run.record)) for run in runs]
        having = [(run, value) for run, value in having if value is not None]
        if len({value for _, value in having}) > 1:
            each = ", ".join(_shown(setting, run, value) for run, value in having)
            warnings.append(f"warning: the runs differ in {setting} ({each}): "
                            f"not a like-for-like comparison")
    return warnings


def work_note(a, b):
    """After the speed sentence, when the two runs' settings change the work per sample."""
    differing = [(setting, values) for setting, values in changed_settings([a, b])
                 if setting in WORK_SETTINGS]
    if not differing:
        return ""
    which = "; ".join(f"{setting} {_changes(values)}" for setting, values in differing)
    return (f" Their settings change the work per sample ({which}): this measures the settings "
            f"as much as the implementations.")


def robustness_lines(runs):
    """What the two robustness columns mean, when any run has them."""
    if not any(run.robustness for run in runs):
        return []
    r = RANGES
    return [f"perturbed acc, drawn acc: the saved weights on the test digits each rotated up to "
            f"{r['rotate']:g}°, scaled {1 - r['scale']:g}-{1 + r['scale']:g}, thickened or thinned "
            f"and moved up to {r['shift']:g} pixels (report/robustness.py, seed {SEED}): read as "
            f"they are (perturbed), and prepared as the demo page prepares a drawing: cropped, "
            f"scaled and centred (drawn; mnist_style.py)"]


def divergence_lines(runs):
    return [f"{run.name} diverged at {divergence(run)}: no result" for run in runs if run.diverged]


def interrupted_warnings(runs):
    return [f"warning: {run.name} was interrupted after {len(run.record['epochs'])} of "
            f"{run.record['config']['epochs']} epochs; its numbers cover those epochs only"
            for run in runs if run.interrupted]


def warmup_notes(runs):
    """Point out a first epoch much slower than the rest (one-off start-up costs), and steady
    epochs whose times spread more than NOISY_SPREAD (a busy machine): the first weighs on
    the total, the second on everything."""
    notes = []
    for run in runs:
        seconds, steady = run.series("epoch_seconds"), steady_epochs(run)
        if len(seconds) > 1 and seconds[0] > 2 * np.median(steady):
            notes.append(f"note: {run.label}'s epoch 1 took {seconds[0] / np.median(steady):.1f}x "
                         f"as long as its later epochs (one-off start-up costs): they weigh on its "
                         f"total seconds; its median leaves epoch 1 out")
        if steady.max() > NOISY_SPREAD * steady.min():
            notes.append(f"note: {run.label}'s {_epochs_shown(run)} took from {steady.min():.3f} s to "
                         f"{steady.max():.3f} s for the same work: the machine was busy part of the "
                         f"time, so its numbers are slower than the implementation")
    return notes


def augmentation(ranges):
    """--augment's ranges as a line reads them, or "none"."""
    if not ranges:
        return "none"
    text = (f"rotate +-{ranges['rotate']:g} deg, scale 1 +- {ranges['scale']:g}, shear +-{ranges['shear']:g} deg, "
            f"shift +-{ranges['shift']:g} px")
    return text + (f", thickness +-{ranges['thickness']:g}" if ranges["thickness"] else "")


def describe_config(run):
    """One line with the settings that shape a run, e.g. for the figure's title."""
    config, data = run.record["config"], run.record["data"]
    text = (f"{run.label}: {model_name(run.record)}, {data['dataset']} ({data['train_samples']:,} "
            f"train), {config['optimizer']} lr {config['lr']:g} {config['schedule']}, batch "
            f"{config['batch_size']}, {plural(config['epochs'], 'epoch')}, {config['dtype']}")
    if config["activation"] != "relu":
        text += f", {config['activation']}"
    if config.get("norm", "none") != "none":
        text += f", {config['norm']} norm"
    if config["weight_init"] not in ("he", None):
        text += f", {config['weight_init']} initialisation"
    if config["weight_decay"]:
        text += f", weight decay {config['weight_decay']:g}"
    if config["dropout"]:
        text += f", dropout {config['dropout']:g}"
    if config.get("augment"):
        text += ", augmented"
    return f"{text}, {device_name(run.record)}"


def robustness_cells(run):
    """The accuracy on the perturbed and on the drawn digits (report/robustness.py); "–" where
    it was not measured (no saved weights, --no-inside, not MNIST)."""
    if run.robustness is None:
        return ["–", "–"]
    return [f"{run.robustness['perturbed']:.2%}", f"{run.robustness['drawn']:.2%}"]


def threads_used(record):
    """The BLAS threads the run's products used, as its epochs recorded them (each epoch's line
    shows its count; the trainers take the cores the machine leaves free, so it can be fewer
    than the library's own count, which older records give instead): "1 thread", "1-2 threads"."""
    used = sorted({epoch["threads"] for epoch in record["epochs"] if epoch.get("threads")})
    if not used:
        count = record["hardware"]["blas_threads"]
        return plural(count, "thread") if count else ""
    return plural(used[0], "thread") if len(used) == 1 else f"{used[0]}-{used[-1]} threads"


def table_row(run):
    """A run's row of the markdown table."""
    s, hardware = summarize(run), run.record["hardware"]
    finished, planned = len(run.record["epochs"]), run.record["config"]["epochs"]
    threads = f" ({threads_used(run.record)})" if threads_used(run.record) else ""
    cores = f" ({plural(hardware['cores'], 'core')})" if hardware["cores"] else ""
    cells = [
        run.label,
        model_name(run.record),
        f"{finished}" if finished == planned else f"{finished} of {planned}",
        f"{s['final_test_acc']:.2%}",
        f"{s['best_test_acc']:.2%} (epoch {s['best_epoch']})",
        *robustness_cells(run),
        f"{s['total_seconds']:.2f}",
        # the header says epochs 2+; a one-epoch run has only epoch 1, and the cell says so
        f"{s['median_epoch_seconds']:.3f}" + (" (epoch 1)" if finished == 1 else ""),
        f"{s['median_samples_per_second']:,.0f}",
        f"{s['epoch_spread']:.2f}x",
        f"{hardware['cpu']}{cores}",
        f"{hardware['blas']}{threads}",
        (hardware.get("gpu") or hardware["device"]) + mode_note(run.record),
        ", ".join(f"{library} {version}" for library, version in run.record["versions"].items()),
    ]
    return "| " + " | ".join(cells) + " |"


TABLE_HEADER = ["run", "model", "epochs", "final test acc", "best test acc", "perturbed acc",
                "drawn acc", "train s (total)",
                "s/epoch (median, epochs 2+)", "samples/s (the same median)",
                "epoch spread (slowest / fastest)", "CPU", "BLAS", "device", "versions"]


def markdown(runs):
    """The markdown report: when the runs' settings differ, first what differs and what it did
    to learning (experiment_line); then what ran, the table, the speed ratio (qualified when
    the settings change the work), then warnings and notes. A diverged run is listed with where
    it diverged, and has no row, ratio or warning."""
    results = with_results(runs)
    title = " vs ".join(run.label for run in runs)
    experiment = experiment_line(runs)
    lines = [f"# {experiment}", "", title] if experiment else [f"# {title}"]
    lines += [""] + [f"- {describe_config(run)} (from `{run.path}`)" for run in runs]
    lines += ["", "| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    lines += [table_row(run) for run in results]
    lines.append("")
    if len(results) > 1:
        # the first two runs with results: NumPy and PyTorch by default
        lines += [speed_sentence(results[0], results[1]) + work_note(results[0], results[1]), ""]
    remarks = (robustness_lines(results) + divergence_lines(runs) + interrupted_warnings(results)
               + unfair_differences(results) + warmup_notes(results))
    lines += [f"- {remark}" for remark in remarks]
    return "\n".join(lines).rstrip() + "\n"
