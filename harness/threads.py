"""How many threads the matrix products of a training run use: one run, two at once, many cores.

    from harness import threads
    threads.register()                  # once, before training: count this trainer in
    threads.share_cores("numpy")        # at every epoch's start: this run's share of the cores

    NN_TRAINERS_STARTED_TOGETHER=2 python ...   # twins started at once share from their first step

NumPy hands its matrix products to OpenBLAS, PyTorch on the CPU to MKL and OpenMP. Each
starts one worker thread per core, splits every product among them and waits for the
slowest part. Alone on an idle machine that is faster (1.1-1.65x on 2 cores here); but when
anything else wants a core (a second trainer, another user's job), some worker is always
waiting for a core, every product waits for that worker, and products of microseconds
take milliseconds. So the cores are shared out among the trainers running on this machine:
alone, a run gets every core (the libraries' default); two at once get half each. The
measurements behind that are in fair_share.

A thread count the user sets in the environment always wins: the policy only replaces the
library's own default. NumPy and the standard library only: the from-scratch side must
not need torch, which is imported only when framework == "pytorch".
"""
import atexit
import ctypes
import functools
import os
import tempfile
from pathlib import Path

from harness.metrics_file import process_start

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


# ----------------------------------------------------------------------------- the policy
# Every trainer running on this machine leaves an empty file here named by its process id and
# the time that process started, so that each can see how many share the cores. An entry whose
# process is gone is stale and removed. The start time tells a live trainer from a process that
# was handed the pid of one killed without cleaning up. The registry is advice only: whatever
# goes wrong with it (no temporary folder, a read-only one, an entry that cannot be removed),
# a trainer counts itself alone and trains on.
REGISTRY = Path(tempfile.gettempdir()) / "nn-from-scratch-trainers"


def entry_name(pid):
    """The registry's name for process pid: 'pid-start', or 'pid' where there is no /proc."""
    start = process_start(pid)
    return str(pid) if start is None else f"{pid}-{start}"


def _open_registry():
    """A file descriptor of the registry folder, or None. It must be a real folder, not a
    symbolic link (O_NOFOLLOW): every name below is then read, made and removed inside it
    (dir_fd), never somewhere a link points. None also where the system cannot do that."""
    if not (os.unlink in os.supports_dir_fd and os.scandir in os.supports_fd
            and hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY")):
        return None  # Windows: each trainer counts itself alone
    try:
        return os.open(REGISTRY, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:  # absent, a symbolic link, not a folder, not ours to read
        return None


def register():
    """Count this process among the trainers running on this machine, until it exits."""
    try:
        os.mkdir(REGISTRY)
    except OSError:  # already there (or cannot be: _open_registry then finds nothing)
        pass
    folder = _open_registry()
    if folder is None:
        return
    name = entry_name(os.getpid())
    try:
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644, dir_fd=folder))
    except OSError:  # a read-only folder, say: this trainer then is not counted by others
        return
    finally:
        os.close(folder)
    atexit.register(_unregister, name)


def _unregister(name):
    folder = _open_registry()
    if folder is None:
        return
    try:
        os.unlink(name, dir_fd=folder)
    except OSError:
        pass
    finally:
        os.close(folder)


def _is_running(name):
    """Whether the trainer an entry names ('pid-start' or 'pid') is running; None if the name
    is not an entry's."""
    pid, _, start = name.partition("-")
    try:
        pid, start = int(pid), int(start) if start else None
    except ValueError:
        return None
    if pid <= 0:                 # kill(0, ...) would ask about this process's own group
        return None
    try:
        os.kill(pid, 0)          # signal 0 only asks whether the process exists
    except OverflowError:        # no process has such a pid
        return False
    except ProcessLookupError:   # it ended without cleaning up (SIGKILL)
        return False
    except PermissionError:      # it exists, another user's
        pass
    now = process_start(pid)
    if now is None:              # no /proc here, or another user's process hidden: trust the pid
        return True
    return start == now          # an entry without a start time comes from no /proc: stale here


def running_trainers():
    """How many trainers (this one included) are running on this machine now."""
    alive = {entry_name(os.getpid())}
    folder = _open_registry()
    if folder is None:
        return 1
    try:
        names = [e.name for e in os.scandir(folder) if e.is_file(follow_symlinks=False)]
    except OSError:
        names = []
    for name in names:
        running = _is_running(name)
        if running:
            alive.add(name)
        elif running is False:
            try:
                os.unlink(name, dir_fd=folder)
            except OSError:      # another user's, a read-only folder: it is not counted anyway
                pass
    os.close(folder)
    return len(alive)


def fair_share(trainers, cores=None):
    """Threads for one of `trainers` runs at once: the usable cores shared out evenly, at least one.

    Measured here on 2 cores (AMD EPYC), seconds per epoch of 20,000 samples at batch 128,
    median of 3 runs, threads per process:

                              idle machine          other users' jobs holding ~1 core
                              2 threads  1 thread   2 threads  1 thread
        NumPy alone             0.081     0.111       0.68      0.18
        two NumPy at once       0.29      0.11        9.4       0.25
        PyTorch alone           0.104     0.155       0.90      0.15
        two PyTorch at once     0.56      0.16        5.5       0.38

    Alone, a run is fastest with a thread per core (1.1x at batch 32 to 1.65x at batch 512
    over one thread, perf/benchmark.py --threads 1 2), and that is the libraries' own default, so a
    lone run keeps today's speed on any number of cores. Two runs with a thread per core each
    wait on each other's workers (3.6-5.3x slower, 50-120x when anything else runs too); with
    the cores shared out, one thread each on 2 cores, each is 1.4-1.5x slower than alone.
    """
    cores = usable_cores() if cores is None else cores
    return max(1, cores // max(1, trainers))


# Trainers started at the same moment (the demo's twins, demo/training.py) are told in this
# variable how many they are. The registry alone would not do for a trainer that starts before
# its twin registers: the NumPy twin, which used to reach its first step while the PyTorch twin
# still imported torch, took every core for its first epoch while the other took half (6.8 s
# instead of 0.46 s on 2 cores). Each counts the number it was given until it has seen that
# many running; from then on the registry alone, so a twin that ends hands its cores back.
# (demo/live.py's twins also wait for each other before their first step, told by this variable.)
STARTED_TOGETHER = "NN_TRAINERS_STARTED_TOGETHER"
_together_seen = False     # has this trainer seen all those started with it running?


def started_together():
    """How many trainers (this one included) were started together with this one: 1 unless
    the variable STARTED_TOGETHER gives a whole number."""
    text = os.environ.get(STARTED_TOGETHER, "")
    return int(text) if text.isascii() and text.isdigit() and int(text) > 0 else 1


def sharing_trainers():
    """How many trainers share the cores now: those running, and until all those started
    together with this one have been seen running, at least that many."""
    global _together_seen
    running = running_trainers()
    if running >= started_together():
        _together_seen = True
    return running if _together_seen else started_together()


def share_cores(framework):
    """Give the library doing framework's products ("numpy" or "pytorch") its fair share of
    the cores among the trainers running now, unless the user set a thread count in the
    environment; return the count now in use (None if it cannot be read), for the record.

    The trainers call this at the start of every epoch: a trainer started beside one already
    running takes its share at once, and the other gives up its extra threads at its next epoch;
    twins started together (STARTED_TOGETHER) take their share from their first epoch."""
    if framework not in USER_VARIABLES:
        raise ValueError(f"unknown framework {framework!r} (expected one of {', '.join(USER_VARIABLES)})")
    chosen = None if user_setting(framework) else fair_share(sharing_trainers())
    if framework == "numpy":
        if chosen:
            set_openblas_threads(chosen)
        return openblas_threads()
    import torch
    if chosen and chosen != torch.get_num_threads():
        torch.set_num_threads(chosen)
    return torch.get_num_threads()
