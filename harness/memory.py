"""Will a run fit in memory? An estimate from the layer shapes, made before training, and
what this machine (or its container) has available.

A training step keeps, per sample, the input batch's copy and each layer's outputs (for a
convolution also its im2col columns); backward then makes about one gradient per kept array.
So a step needs about 2 x (those numbers) x batch size x bytes per number. Measured with
tracemalloc for one NumPy step (tests/test_memory.py), this is 1.4x the real peak: an upper
bound, never far above it. Evaluation runs the forward pass alone, in bites of EVAL_BATCH.

NumPy and the standard library only.
"""
from pathlib import Path

import numpy as np

GIB = 2 ** 30


def numbers_per_sample(model, hidden, layers="fast"):
    """How many numbers one sample's forward pass keeps, from the layer shapes."""
    if model == "cnn" and layers == "plain":   # cnn.py keeps each conv's output before and after its ReLU
        return numbers_per_sample(model, hidden) + 32 * 26 * 26 + 64 * 11 * 11
    if model == "cnn":                    # numpy_nn/cnn.py: 1x28x28 -> 32x13x13 -> 64x5x5 -> 10
        return (28 * 28                   # the batch's copy of the image
                + 26 * 26 * (1 * 9 + 1)   # conv1's im2col columns, 3x3 windows (+1: the bias's input)
                + 32 * 26 * 26            # conv1's outputs
                + 32 * 13 * 13            # pooled
                + 11 * 11 * (32 * 9 + 1)  # conv2's im2col columns
                + 64 * 11 * 11            # conv2's outputs
                + 64 * 5 * 5              # pooled: the 1600 features
                + 10)                     # logits
    widths = [*hidden, 10]
    return 28 * 28 + 2 * sum(widths)      # the input; each layer's pre-activation and activation


def step_bytes(model, hidden, dtype, batch, layers="fast"):
    """Upper estimate of one training step's (or evaluation bite's) memory, in bytes."""
    return 2 * numbers_per_sample(model, hidden, layers) * np.dtype(dtype).itemsize * batch


def _read_bytes(path):
    """An integer from a cgroup file; None if absent or 'max' (no limit)."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_bytes():
    """(bytes, where the number comes from): the smaller of MemAvailable in /proc/meminfo and
    the room left under this process's cgroup memory limit (v2 memory.max, or v1's
    memory.limit_in_bytes); (None, None) where neither can be read."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"))
    except OSError:
        pass
    for limit, used in (("memory.max", "memory.current"),
                        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        cap, now = _read_bytes(f"/sys/fs/cgroup/{limit}"), _read_bytes(f"/sys/fs/cgroup/{used}")
        if cap is not None and now is not None and cap < 2 ** 60:  # v1 writes 2^63 for none
            found.append((cap - now, f"the cgroup's {Path(limit).name}"))
    return min(found) if found else (None, None)


def check_memory(args, n_train, eval_bite, available=None):
    """Exit with one line, before training, if the run's largest step would not fit.
    available: (bytes, source) as available_bytes() gives, which tests replace."""
    limit, source = available or available_bytes()
    if limit is None:
        return
    batch = min(args.batch_size, n_train)
    train = step_bytes(args.model, args.hidden, args.dtype, batch, args.layers)
    evaluate = step_bytes(args.model, args.hidden, args.dtype, eval_bite, args.layers)
    if max(train, evaluate) <= limit:
        return
    if train >= evaluate:
        fits = int(limit // step_bytes(args.model, args.hidden, args.dtype, 1, args.layers))
        what, hint = f"a {args.model} step of {batch} samples", f"; try --batch-size {fits} or less"
    else:
        what, hint = f"evaluating the {args.model} in bites of {eval_bite} samples", ""
    raise SystemExit(f"error: {what} in {args.dtype} needs about {max(train, evaluate) / GIB:.1f} GiB, "
                     f"more than the {limit / GIB:.1f} GiB available ({source}){hint}")
