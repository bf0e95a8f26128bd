"""How many threads the matrix products of a training run use: alone, beside other work, many cores.

    threads.share_cores("numpy")   # at each epoch's start: the cores the rest of the machine leaves free

NumPy hands its matrix products to OpenBLAS, PyTorch on the CPU to MKL and OpenMP. Each starts
a worker thread per core, splits every product among them and waits for the slowest. When
anything else wants a core (a second trainer, another user's job), some worker is always
waiting for one, and products of microseconds take milliseconds. So at each epoch's start a
trainer reads in /proc/stat how busy other processes kept the cores since it last looked, and
takes the cores they left free: every core alone on an idle machine (the libraries' default),
one of two beside a second trainer or any busy job. No registry: two trainers started from two
terminals see each other's work. Without /proc/stat (macOS, Windows) the libraries keep their
counts. The demo's twins and sweep.py's cells get their share from their first step
(for_children). A count the user sets in the environment always wins. NumPy, threadpoolctl
and the standard library only: torch only for "pytorch".
"""
import functools
import os
import time
from pathlib import Path

# The variables each library reads for its thread count, in its order: one the user set wins.
USER_VARIABLES = {
    "numpy": ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"),  # OpenBLAS
    "pytorch": ("OMP_NUM_THREADS", "MKL_NUM_THREADS"),                          # ATen, MKL
}
MIN_WINDOW_S = 0.25  # the shortest look judged by: /proc/stat counts 10 ms ticks (on 2 cores, ~0.1 core)


@functools.lru_cache(maxsize=None)
def _openblas():
    """threadpoolctl's handle on the OpenBLAS NumPy loaded; None where NumPy uses another BLAS."""
    import numpy  # noqa: F401  (importing NumPy loads its BLAS into this process)
    from threadpoolctl import ThreadpoolController
    selected = ThreadpoolController().select(internal_api="openblas")
    return selected if selected.info() else None


def openblas_threads():
    """The number of threads NumPy's OpenBLAS uses now, or None where it cannot be asked."""
    openblas = _openblas()
    return openblas.info()[0]["num_threads"] if openblas else None


def set_openblas_threads(n):
    """Make NumPy's OpenBLAS use n threads from its next call on; True if it now does."""
    openblas = _openblas()
    if openblas:
        openblas.limit(limits=int(n))  # set now; a limit used outside a with-block is never undone
    return bool(openblas) and openblas_threads() == n


def usable_cores():
    """The cores this process may run on (a taskset, a container's cpuset), capped by a CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cores, int(quota))) if quota else cores


def cgroup_cpu_quota(root="/sys/fs/cgroup"):
    """CPUs' worth of time per second this process's cgroup may use, or None for no limit (or not
    Linux). cgroup v2 writes "max 100000" or "200000 100000" in cpu.max; v1 two files."""
    try:
        quota, period = (Path(root) / "cpu.max").read_text().split()
    except (OSError, ValueError):
        try:
            quota = (Path(root) / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (Path(root) / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    return None if quota in ("max", "-1") else int(quota) / int(period)


def user_setting(framework):
    """'NAME=value' of the first variable the framework's library reads that the user set, or None."""
    for name in USER_VARIABLES[framework]:
        if os.environ.get(name):
            return f"{name}={os.environ[name]}"
    return None


# ----------------------------------------------------------------------------- the policy

def machine_clock(stat="/proc/stat"):
    """(now, seconds the CPUs this process may run on were busy, seconds this process used), or
    None without /proc/stat. Each CPU's line counts ticks of user, nice, system, idle, iowait,
    irq, softirq, steal: all but idle and iowait are busy (steal: a VM's host took the core)."""
    try:
        cpus = os.sched_getaffinity(0)
        busy = 0
        with open(stat) as f:
            for line in f:
                name, *ticks = line.split()
                if name[:3] == "cpu" and name[3:].isdigit() and int(name[3:]) in cpus:
                    user, nice, system, idle, iowait, irq, softirq, steal = map(int, ticks[:8])
                    busy += user + nice + system + irq + softirq + steal
    except (OSError, ValueError, AttributeError):  # no /proc (or no affinity: not Linux)
        return None
    own = os.times()  # this process, every thread of it
    return time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


_last_look = machine_clock()  # the first look, as the trainer imports this module


def free_cores(cores=None):
    """The usable cores other processes left free since the last look (at least MIN_WINDOW_S
    ago), rounded, at least one; None when it is too soon to tell, or it cannot be told."""
    global _last_look
    now = machine_clock()
    if now is None or _last_look is None or now[0] - _last_look[0] < MIN_WINDOW_S:
        return None
    seconds, busy, own = (b - a for a, b in zip(_last_look, now))
    _last_look = now
    elsewhere = max(0.0, busy - own) / seconds   # cores' worth of the others' work
    return max(1, min(cores or usable_cores(), int(len(os.sched_getaffinity(0)) - elsewhere + 0.5)))


def share_cores(framework):
    """Give framework's library ("numpy" or "pytorch") the cores left free, unless the user set a
    count; return the count in use (None if unknown), for the record. Too soon: it stays as it is."""
    if framework not in USER_VARIABLES:
        raise ValueError(f"unknown framework {framework!r} (expected one of {', '.join(USER_VARIABLES)})")
    chosen = None if user_setting(framework) else free_cores()
    if framework == "numpy":
        if chosen:
            set_openblas_threads(chosen)
        return openblas_threads()
    import torch
    if chosen and chosen != torch.get_num_threads():
        torch.set_num_threads(chosen)
    return torch.get_num_threads()


def fair_share(trainers, cores=None):
    """Threads for one of `trainers` started side by side: the usable cores shared out, at least one."""
    cores = usable_cores() if cores is None else cores
    return max(1, cores // max(1, trainers))


def for_children(trainers):
    """The environment for one of `trainers` trainers started side by side: each library's thread
    variable set to their fair share. Unchanged for one (it judges), or if the user set a count."""
    if trainers <= 1 or user_setting("numpy") or user_setting("pytorch"):
        return dict(os.environ)
    variables = sorted({*USER_VARIABLES["numpy"], *USER_VARIABLES["pytorch"]})
    return {**os.environ, **dict.fromkeys(variables, str(fair_share(trainers)))}
