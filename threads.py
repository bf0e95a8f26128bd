"""How many threads the matrix products of a training run use: one run, two at once, many cores.

    import threads
    threads.apply_policy(args.batch_size, "numpy")   # once, after parsing the flags

NumPy hands its matrix products to OpenBLAS, PyTorch on the CPU to MKL and OpenMP. Each
starts one worker thread per core, splits every product among them and waits for the
slowest part. Alone on an idle machine that is faster (1.1-1.65x on 2 cores here); but when
anything else wants a core (a second trainer, another user's job), some worker is always
waiting for a core, every product waits for that worker, and products of microseconds
take milliseconds. The measurements behind the policy are in policy_threads.

A thread count the user sets in the environment always wins: the policy only replaces the
library's own default. NumPy and the standard library only: the from-scratch side must
not need torch, which is imported only when framework == "pytorch".
"""
import ctypes
import functools
import os
from pathlib import Path

# The variables each library reads for its thread count, in the library's order. A user who
# sets one has chosen, and the policy leaves that library alone.
USER_VARIABLES = {
    "numpy": ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"),  # OpenBLAS
    "pytorch": ("OMP_NUM_THREADS", "MKL_NUM_THREADS"),                          # ATen, MKL
}
# The C functions of the OpenBLAS builds NumPy ships with (get, set): the wheels' 64-bit
# integer build renames them with a prefix and a suffix.
OPENBLAS_SYMBOLS = (
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
)


@functools.lru_cache(maxsize=None)
def _openblas():
    """(get, set) C functions of the OpenBLAS that NumPy loaded, or None where there is none
    (NumPy built on another BLAS) or it cannot be found (no /proc/self/maps: not Linux)."""
    import numpy  # noqa: F401  (importing NumPy loads its BLAS into this process)
    try:  # as experiment.numpy_blas finds it: the library in this process's memory map
        with open("/proc/self/maps") as maps:
            path = next(line.split()[-1] for line in maps if "openblas" in line)
        lib = ctypes.CDLL(path)
    except (OSError, StopIteration):
        return None
    for get_name, set_name in OPENBLAS_SYMBOLS:
        if hasattr(lib, get_name) and hasattr(lib, set_name):
            get, set_ = getattr(lib, get_name), getattr(lib, set_name)
            get.restype, get.argtypes = ctypes.c_int, []
            set_.restype, set_.argtypes = None, [ctypes.c_int]
            return get, set_
    return None


def openblas_threads():
    """The number of threads NumPy's OpenBLAS uses now, or None where it cannot be asked."""
    functions = _openblas()
    return functions[0]() if functions else None


def set_openblas_threads(n):
    """Make NumPy's OpenBLAS use n threads from its next call on; True if it now does."""
    functions = _openblas()
    if not functions:
        return False
    functions[1](int(n))
    return functions[0]() == n


def usable_cores():
    """The cores this process may use: those it may run on (a taskset or a container's cpuset
    may allow fewer than exist), and no more than a cgroup CPU quota (docker --cpus) pays for."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cores, int(quota))) if quota else cores


def cgroup_cpu_quota(root="/sys/fs/cgroup"):
    """CPUs' worth of time per second this process's cgroup may use, or None for no limit
    (or no cgroup files: not Linux). cgroup v2 writes "max 100000" or "200000 100000" in
    cpu.max; v1 a quota of -1 (none) or microseconds per period in two files."""
    try:
        quota, period = (Path(root) / "cpu.max").read_text().split()
    except (OSError, ValueError):
        try:
            quota = (Path(root) / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (Path(root) / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1"):
        return None
    return int(quota) / int(period)


def user_setting(framework):
    """'NAME=value' of the first variable the framework's library reads that the user set, or None."""
    for name in USER_VARIABLES[framework]:
        if os.environ.get(name):
            return f"{name}={os.environ[name]}"
    return None


SAMPLES_PER_THREAD = 64  # the smallest share of a batch worth a thread of its own (see below)


def policy_threads(batch_size, cores=None):
    """The thread count for a run at this batch size on this many cores (default: usable_cores()):
    at most half the cores, so that a second run fits beside it, and at most one thread per
    SAMPLES_PER_THREAD samples of the batch. Always 1 on 2 cores.

    Measured here on 2 cores (AMD EPYC), seconds per epoch of 20,000 samples at batch 128,
    median of 3 runs, threads per process:

                              idle machine          other users' jobs holding ~1 core
                              2 threads  1 thread   2 threads  1 thread
        NumPy alone             0.081     0.111       0.68      0.18
        two NumPy at once       0.29      0.11        9.4       0.25
        PyTorch alone           0.104     0.155       0.90      0.15
        two PyTorch at once     0.56      0.16        5.5       0.38

    With 1 thread each, two runs at once are each 1.4-1.5x slower than one alone with 2; with
    2 threads each, 3.6-5.3x when nothing else runs and 50-120x when something does. The price
    is paid alone on an idle machine: with 1 thread NumPy is 1.1x (batch 32) to 1.5x (batch 512)
    slower, PyTorch 1.2x to 1.65x (benchmark.py --threads 1 2). A user who knows the machine is
    theirs sets OPENBLAS_NUM_THREADS (NumPy) or OMP_NUM_THREADS (both), which win over this.

    On many cores (measured once by the issue's reporter, 16-core Xeon, not here): at batch 64,
    1 thread gave 97.7k samples/s, 16 threads 99.3k and 2-8 threads less (69.9k-80.8k); at
    batch 512, 1 thread 198k, 8 threads 297k, 16 threads 320k. A thread per 64 samples keeps
    batch 64 on one thread and gives batch 512 eight; batch 128 and 256 (2 and 4 threads) were
    not measured there.
    """
    cores = usable_cores() if cores is None else cores
    return max(1, min(cores // 2, batch_size // SAMPLES_PER_THREAD))


def apply_policy(batch_size, framework):
    """Give the library doing framework's products ("numpy" or "pytorch") the policy's thread
    count, unless the user set one in the environment; return the count now in use (None if
    it cannot be read), for the metrics record."""
    if framework not in USER_VARIABLES:
        raise ValueError(f"unknown framework {framework!r} (expected one of {', '.join(USER_VARIABLES)})")
    chosen = None if user_setting(framework) else policy_threads(batch_size)
    if framework == "numpy":
        if chosen:
            set_openblas_threads(chosen)
        return openblas_threads()
    import torch
    if chosen:
        torch.set_num_threads(chosen)
    return torch.get_num_threads()
