"""What perf/benchmark.py writes about a run of it: the markdown tables (benchmark.md) and the
throughput picture (throughput.png), from its record (benchmark.json) alone, so a record can
be written up again without measuring anything.
"""
from report.figure import png


def threads_cell(row):
    """A row's thread counts as a table cell: "2", or "1 / 2" when NumPy's and PyTorch's differ."""
    counts = row["threads"]
    if counts["numpy"] == counts["pytorch"]:
        return str(counts["numpy"])
    return f"{counts['numpy']} / {counts['pytorch']}"


def markdown(record, cnn_products=None):
    """The tables of benchmark.json, for people. cnn_products: batch size -> the CNN step's
    matrix products (perf/flops.py's), for the per-layer table of a CNN record."""
    names = list(record["rows"][0]["samples_per_second"])
    hw = record["hardware"]
    swept = bool(record.get("threads_swept"))  # then a row per batch size and thread count
    cnn = record.get("model") == "cnn"
    if cnn:
        per_sample, forward = record["flops_per_sample"], record["forward_flops_per_sample"]
        costs = (f"One training sample costs {per_sample / 1e6:.3f} MFLOP (forward {forward / 1e6:.3f}, "
                 f"backward {(per_sample - forward) / 1e6:.3f}: dW for every layer, dx for all but "
                 f"conv1), {record['epoch_samples'] * per_sample / 1e12:.3f} TFLOP per "
                 f"{record['epoch_samples']:,}-sample epoch: 2 FLOPs per multiply-add of the im2col "
                 f"products and the linear layer's, counted from the layer shapes.")
    else:
        costs = f"One training sample costs {record['flops_per_sample'] / 1e6:.3f} MFLOP."
    lines = [
        "# Training throughput" + ": the CNN" * cnn,
        "",
        f"Written by `python perf/benchmark.py{' --model cnn' * cnn}`. {record['what']}; "
        f"{record['samples_per_repeat']:,} "
        f"samples per timed repeat, median of {record['repeats']}. CPU: {hw['cpu']}, "
        f"{hw['cores']} cores; NumPy BLAS {hw['numpy']['blas']} ({hw['numpy']['blas_threads']} "
        f"threads); torch BLAS {hw['torch']['blas']} ({hw['torch']['threads']} threads). Versions: "
        + ", ".join(f"{k} {v}" for k, v in record["versions"].items()) + ".",
        "",
        f"{costs} The float32 "
        f"matmul peak is measured between the timings of each row (median over the run: "
        f"{record['matmul_peak_gflops']:.0f} GFLOP/s, so the roofline is "
        f"{record['roofline_samples_per_second']:,.0f} samples/s); % is of the row's own roofline.",
    ]
    if hw.get("gpu"):
        gpu = hw["gpu"]
        lines += ["", f"GPU: {gpu['name']}. Its float32 matmul peak, measured the same way on an 8192 x 8192 "
                  f"product with TF32 {'on' if gpu['tf32'] else 'off (full float32 products)'}: "
                  f"{gpu['matmul_peak_gflops']:,.0f} GFLOP/s, so its roofline is "
                  f"{gpu['roofline_samples_per_second']:,.0f} samples/s; the CUDA columns' % is of that. "
                  f"pytorch-cuda is the eager loop, pytorch-cuda-graph each step replayed as a CUDA graph "
                  f"(`--mode graph`, pytorch_nn/fast_step.py)."]
    if swept:
        lines += ["", "Thread counts measured (NumPy's OpenBLAS and PyTorch both set to each, taking "
                  "turns within every repeat): " + ", ".join(map(str, record["threads_swept"])) + "."]
    lines += [
        "",
        "| batch | " + "threads | " * swept + "peak GFLOP/s | "
        + " | ".join(f"{n} samples/s (% of peak)" for n in names) + " | NumPy / PyTorch CPU |",
        "|---:|" + "---:|" * swept + "---:|" + "---:|" * (len(names) + 1),
    ]
    for row in record["rows"]:
        cells = [f"{row['samples_per_second'][n]:,.0f} ({100 * row['fraction_of_peak'][n]:.1f}%)" for n in names]
        lines.append(f"| {row['batch_size']} | " + f"{threads_cell(row)} | " * swept
                     + f"{row['matmul_peak_gflops']:.0f} | " + " | ".join(cells)
                     + f" | {row['numpy_over_pytorch_cpu']:.2f}x |")
    if cnn:
        lines += _cnn_epochs(record, swept)
    for row in record["rows"]:
        phases = row.get("microseconds_per_step")
        if not phases:
            continue
        at = f"batch {row['batch_size']}" + f", threads {threads_cell(row)}" * swept
        lines += ["", f"## Where a step's time goes at {at} (microseconds per step)", ""]
        if cnn:
            lines += _cnn_layer_table(row, record.get("warmup_steps", 10), cnn_products)  # 10 before it was recorded
            continue
        lines += [f"The matrix products alone (\"matmuls only\") take {phases['matmuls only']:.0f} us "
                  f"per step at this batch size.", ""]
        for name in ("numpy", "pytorch-cpu"):
            total = sum(phases[name].values())
            lines.append(f"- {name}: " + ", ".join(f"{k} {v:.0f}" for k, v in phases[name].items())
                         + f"; total {total:.0f}")
    lines += _adam_steps(record)
    return "\n".join(lines) + "\n"


def _adam_steps(record):
    """The Adam step on a fresh state and on a trained one (markdown lines; none in records
    from before it was measured)."""
    steps = record.get("adam_step_microseconds")
    if not steps:
        return []
    share = record["adam_trained_subnormal_share"]
    lines = ["", "## The Adam step alone (microseconds per step)", "",
             f"Trained: a state as training leaves it, {100 * share:.1f}% of m subnormal (weights "
             "whose gradient stopped).", "",
             "| | fresh state | trained state | trained / fresh |", "|---|---:|---:|---:|"]
    for name, us in steps.items():
        lines.append(f"| {name} | {us['fresh']:.0f} | {us['trained']:.0f} | {us['trained'] / us['fresh']:.2f}x |")
    return lines


def _cnn_epochs(record, swept):
    """What the NumPy CNN's rates mean for an epoch, against its roofline epoch (markdown lines)."""
    tflop = record["epoch_samples"] * record["flops_per_sample"] / 1e12
    lines = ["", "## An epoch of the NumPy CNN against the roofline", "",
             f"An epoch of {record['epoch_samples']:,} samples at NumPy's rate in each row, and at the "
             f"roofline's ({tflop:.3f} TFLOP / the row's matmul peak): how far the NumPy CNN is from "
             f"what this machine's matrix products allow.", ""]
    for row in record["rows"]:
        seconds, roofline = row["epoch_seconds"]["numpy"], row["roofline_epoch_seconds"]
        lines.append(f"- epoch at batch {row['batch_size']}" + f", threads {threads_cell(row)}" * swept
                     + f": {seconds:.1f} s, {seconds / roofline:.1f}x the roofline ({roofline:.1f} s at "
                     f"{row['matmul_peak_gflops']:.0f} GFLOP/s)")
    return lines


def _cnn_layer_table(row, warmup, cnn_products):
    """Microseconds per CNN step by part, NumPy against PyTorch CPU (markdown lines); warmup:
    the untimed steps before the timed ones."""
    phases, bs = row["microseconds_per_step"], row["batch_size"]
    parts = list(phases["numpy"])              # the parts of a step, in the network's order
    at_peak = dict.fromkeys(parts, 0.0)        # the part's matrix products at this row's peak
    for p in cnn_products(bs):
        at_peak[p.part] += 1e6 * 2 * p.m * p.k * p.n / (row["matmul_peak_gflops"] * 1e9)
    lines = [
        f"Each part is timed with `time.perf_counter` around it and summed over {row['steps']} steps "
        f"after {warmup} untimed ones: one pass, so noisier than the medians above. NumPy: "
        f"`numpy_nn/fast_cnn.py`'s forward and backward (the trainer's default) written out call by call "
        f"(`benchmark.timed_numpy_cnn_step`); a convolution's forward is im2col and one product, its "
        f"backward the dW product and, for conv2, dx by col2im; its ReLU runs after the pool, on a "
        f"quarter of the values. PyTorch CPU: forward module by module; backward is one "
        f"`loss.backward()`, split by tensor hooks that run as autograd reaches each layer's output, "
        f"so a layer's backward includes autograd's own work and the accumulation of its weights' "
        f"gradients; `zero_grad` counts as optimizer. \"products at peak\": the part's matrix products "
        f"(`flops.cnn_products`) at this row's matmul peak, the least time they can take here.",
        "",
        "| part | products at peak | NumPy | PyTorch CPU |",
        "|---|---:|---:|---:|",
    ]
    for part in parts:
        ideal = f"{at_peak[part]:.0f}" if at_peak[part] else ""
        lines.append(f"| {part} | {ideal} | {phases['numpy'][part]:.0f} | {phases['pytorch-cpu'][part]:.0f} |")
    lines += [f"| total | {sum(at_peak.values()):.0f} | {sum(phases['numpy'].values()):.0f} | "
              f"{sum(phases['pytorch-cpu'].values()):.0f} |",
              "", f"The matrix products alone (\"matmuls only\", the table above) take "
              f"{phases['matmuls only']:.0f} us per step at this batch size. The NumPy column is one "
              f"whole batch on one Python thread, its products on every core: where the work is. The "
              f"trainer splits the batch into two halves that run at once, one core each "
              f"(`numpy_nn/parallel.py`), so its elementwise work uses both cores too: its step took "
              f"{1e6 * bs / row['samples_per_second']['numpy']:.0f} us (the throughput above)."]
    return lines


def plot(record):
    """samples/s against batch size per implementation, with the roofline; PNG bytes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    swept = record.get("threads_swept") or [None]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, n in enumerate(swept):
        rows = record["rows"][i::len(swept)]  # main() writes each batch size's thread counts in turn
        sizes = [r["batch_size"] for r in rows]
        style, suffix = ["-", ":", "-.", "--"][i % 4], f", threads {n}" if n else ""
        for name, colour in zip(rows[0]["samples_per_second"], colours):
            ax.plot(sizes, [r["samples_per_second"][name] for r in rows], "o", ls=style, color=colour,
                    label=name + suffix)
        roofline = (f"roofline{suffix}" if n else
                    f"roofline: matmul peak (median {record['matmul_peak_gflops']:.0f} GFLOP/s) / "
                    f"{record['flops_per_sample'] / 1e6:.2f} MFLOP per sample")
        ax.plot(sizes, [r["roofline_samples_per_second"] for r in rows], color="k",
                ls=style if n else "--", label=roofline)
    ax.set_xscale("log", base=2)
    sizes = sorted({r["batch_size"] for r in record["rows"]})
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("training samples / second")
    model = "CNN training" if record.get("model") == "cnn" else "Training"
    ax.set_title(f"{model} throughput, Adam, float32\n{record['hardware']['cpu']}, "
                 f"{record['hardware']['cores']} cores")
    if record.get("model") == "cnn":  # its lines cross the middle of the axes: the legend goes below
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    else:
        ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return png(fig, dpi=120)
