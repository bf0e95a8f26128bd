"""The markdown report: what ran, the table, the speed ratio, then warnings and notes."""
import numpy as np

from report.run import MODEL_NAMES, divergence, model_layers, model_name, with_results


def summarize(run):
    """The numbers in a run's table row."""
    test_acc = run.series("test_acc")
    best = int(np.argmax(test_acc))  # the first epoch that reached the best accuracy
    return {
        "final_test_acc": float(test_acc[-1]),
        "best_test_acc": float(test_acc[best]),
        "best_epoch": run.record["epochs"][best]["epoch"],
        "total_seconds": run.record["total_train_seconds"],
        "mean_epoch_seconds": float(run.series("epoch_seconds").mean()),
        "fastest_epoch_seconds": float(run.series("epoch_seconds").min()),
        # the median, because a first epoch slowed by one-off start-up costs would drag a mean down
        "median_samples_per_second": float(np.median(run.series("samples_per_second"))),
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


def speed_sentence(a, b):
    """Which of two runs trains faster and by how much, from each run's fastest epoch.

    Every epoch does the same work, so the fastest one is the one least disturbed by
    whatever else the machine was doing (on a shared machine, other tenants can slow a
    whole run down by half); totals and means carry those disturbances.
    """
    t_a, t_b = (summarize(run)["fastest_epoch_seconds"] for run in (a, b))
    (t_fast, fast), (t_slow, slow) = sorted([(t_a, a), (t_b, b)], key=lambda pair: pair[0])
    seconds = (f"fastest epoch {t_fast:.3f} s against {t_slow:.3f} s "
               f"({fast.record['total_train_seconds']:.2f} s and "
               f"{slow.record['total_train_seconds']:.2f} s of training in all)")
    if device_name(a.record) == device_name(b.record):
        where = f"on this {device_name(a.record)}"
        if f"{t_slow / t_fast:.1f}" == "1.0":
            return f"{a.label} and {b.label} train equally fast {where}: {seconds}."
        return f"{fast.label} is {t_slow / t_fast:.1f}x faster than {slow.label} {where}: {seconds}."
    return (f"{fast.label} on its {device_name(fast.record)} is {t_slow / t_fast:.1f}x faster than "
            f"{slow.label} on its {device_name(slow.record)}: {seconds}.")


def _hidden(record):
    """An MLP's hidden sizes, e.g. "128-64"; None for a CNN, whose layers are fixed."""
    hidden = record["config"]["hidden"]
    if record["config"]["model"] != "mlp" or hidden is None:
        return None
    return "-".join(str(size) for size in hidden)


# What must be the same for a like-for-like comparison: the name a warning uses, and where
# the record keeps it; None where a run has no such setting (it is compared among the
# others). --limit shows up as the number of training samples.
LIKE_FOR_LIKE = {
    "model": lambda record: MODEL_NAMES[record["config"]["model"]],
    "dataset": lambda record: record["data"]["dataset"],
    "training samples": lambda record: record["data"]["train_samples"],
    "epochs": lambda record: record["config"]["epochs"],
    "finished epochs": lambda record: len(record["epochs"]),
    "batch size": lambda record: record["config"]["batch_size"],
    "optimizer": lambda record: record["config"]["optimizer"],
    "learning rate": lambda record: record["config"]["lr"],
    "schedule": lambda record: record["config"]["schedule"],
    "hidden sizes": _hidden,                         # among the MLPs only
    "activation": lambda record: record["config"]["activation"],
    "weight initialisation": lambda record: record["config"]["weight_init"],  # None: PyTorch's own
    "dtype": lambda record: record["config"]["dtype"],
    "weight decay": lambda record: record["config"]["weight_decay"],
    "dropout": lambda record: record["config"]["dropout"],
    "hardware": device_name,
}


def _shown(setting, run, value):
    """A run's value as a warning shows it, after the run's label. When the models differ,
    the labels already name them ("NumPy CNN", name_runs), so the model warning gives their
    layers instead: "NumPy MLP 784-128-64-10, NumPy CNN 32-64 conv"."""
    if setting == "model":
        value = model_layers(run.record) or value
    return f"{run.label} {value}"


def differing_settings(runs):
    """[(setting, [each run's value])] for every setting of LIKE_FOR_LIKE that differs between
    the runs, in run order; a run with no such setting shows None."""
    differing = []
    for setting, value_of in LIKE_FOR_LIKE.items():
        values = [value_of(run.record) for run in runs]
        if len({value for value in values if value is not None}) > 1:
            differing.append((setting, values))
    return differing


def unfair_differences(runs):
    """One warning per setting that differs between the runs, naming each run's value."""
    warnings = []
    for setting, values in differing_settings(runs):
        each = ", ".join(_shown(setting, run, value) for run, value in zip(runs, values) if value is not None)
        warnings.append(f"warning: the runs differ in {setting} ({each}): "
                        f"not a like-for-like comparison")
    return warnings


def divergence_lines(runs):
    return [f"{run.name} diverged at {divergence(run)}: no result" for run in runs if run.diverged]


def interrupted_warnings(runs):
    return [f"warning: {run.name} was interrupted after {len(run.record['epochs'])} of "
            f"{run.record['config']['epochs']} epochs; its numbers cover those epochs only"
            for run in runs if run.interrupted]


def warmup_notes(runs):
    """Point out a first epoch much slower than the rest (one-off start-up costs), and epoch
    times that wander within a run (a busy machine): both weigh on the totals."""
    notes = []
    for run in runs:
        seconds = run.series("epoch_seconds")
        if len(seconds) > 1 and seconds[0] > 2 * np.median(seconds[1:]):
            notes.append(f"note: {run.label}'s epoch 1 took {seconds[0] / np.median(seconds[1:]):.1f}x "
                         f"as long as its later epochs (one-off start-up costs): they weigh on its "
                         f"total seconds but hardly move its median samples/s")
        later = seconds[1:] if len(seconds) > 1 else seconds
        if later.max() > 1.3 * later.min():
            notes.append(f"note: {run.label}'s epochs took from {later.min():.3f} s to {later.max():.3f} s "
                         f"for the same work: the machine was busy part of the time, so its total "
                         f"is slower than the implementation; the speed ratio uses the fastest epoch")
    return notes


def describe_config(run):
    """One line with the settings that shape a run, e.g. for the figure's title."""
    config, data = run.record["config"], run.record["data"]
    text = (f"{run.label}: {model_name(run.record)}, {data['dataset']} ({data['train_samples']:,} "
            f"train), {config['optimizer']} lr {config['lr']:g} {config['schedule']}, batch "
            f"{config['batch_size']}, {config['epochs']} epochs, {config['dtype']}")
    if config["activation"] != "relu":
        text += f", {config['activation']}"
    if config["weight_init"] not in ("he", None):
        text += f", {config['weight_init']} initialisation"
    if config["weight_decay"]:
        text += f", weight decay {config['weight_decay']:g}"
    if config["dropout"]:
        text += f", dropout {config['dropout']:g}"
    return f"{text}, {device_name(run.record)}"


def table_row(run):
    """A run's row of the markdown table."""
    s, hardware = summarize(run), run.record["hardware"]
    finished, planned = len(run.record["epochs"]), run.record["config"]["epochs"]
    threads = f" ({hardware['blas_threads']} threads)" if hardware["blas_threads"] else ""
    cores = f" ({hardware['cores']} cores)" if hardware["cores"] else ""
    cells = [
        run.label,
        model_name(run.record),
        f"{finished}" if finished == planned else f"{finished} of {planned}",
        f"{s['final_test_acc']:.2%}",
        f"{s['best_test_acc']:.2%} (epoch {s['best_epoch']})",
        f"{s['total_seconds']:.2f}",
        f"{s['fastest_epoch_seconds']:.3f}, {s['mean_epoch_seconds']:.3f}",
        f"{s['median_samples_per_second']:,.0f}",
        f"{hardware['cpu']}{cores}",
        f"{hardware['blas']}{threads}",
        (hardware.get("gpu") or hardware["device"]) + mode_note(run.record),
        ", ".join(f"{library} {version}" for library, version in run.record["versions"].items()),
    ]
    return "| " + " | ".join(cells) + " |"


TABLE_HEADER = ["run", "model", "epochs", "final test acc", "best test acc", "train s (total)",
                "s/epoch (fastest, mean)", "samples/s (median)", "CPU", "BLAS", "device", "versions"]


def markdown(runs):
    """The markdown report: what ran, the table, the speed ratio, then warnings and notes.
    A diverged run is listed with where it diverged, and has no row, ratio or warning."""
    results = with_results(runs)
    lines = [f"# {' vs '.join(run.label for run in runs)}", ""]
    lines += [f"- {describe_config(run)} (from `{run.path}`)" for run in runs]
    lines += ["", "| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    lines += [table_row(run) for run in results]
    lines.append("")
    if len(results) > 1:
        # the first two runs with results: NumPy and PyTorch by default
        lines += [speed_sentence(results[0], results[1]), ""]
    remarks = (divergence_lines(runs) + interrupted_warnings(results) + unfair_differences(results)
               + warmup_notes(results))
    lines += [f"- {remark}" for remark in remarks]
    return "\n".join(lines).rstrip() + "\n"
