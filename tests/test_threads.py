"""threads.py: the OpenBLAS thread count is really set, the machine's load is read right and a
busy process leaves a trainer fewer cores, the user's environment wins, trainers started together
get their share, and what the thread count does to the numbers. No timings: they are measured and
reported, never asserted."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import loss_and_gradients
from harness import threads
from numpy_nn.neural_network import NeuralNetwork

ROOT = Path(__file__).resolve().parents[1]
needs_openblas = pytest.mark.skipif(threads.openblas_threads() is None,
                                    reason="NumPy's BLAS here is not an OpenBLAS this process can ask")


@pytest.fixture
def restore_openblas():
    """Put NumPy's OpenBLAS back to its thread count after the test."""
    before = threads.openblas_threads()
    yield
    threads.set_openblas_threads(before)


def run_python(code, **env):
    """Run code in a fresh interpreter (libraries read their thread variables when they load),
    with the thread variables cleared and then set as given; its last stdout line, as JSON."""
    clean = {k: v for k, v in os.environ.items() if k not in
             ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, **env},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


@needs_openblas
@pytest.mark.parametrize("n", [1, 2, 3])
def test_the_count_set_through_threadpoolctl_is_the_count_openblas_reports(restore_openblas, n):
    assert threads.set_openblas_threads(n)
    assert threads.openblas_threads() == n


def test_the_cores_are_shared_out_evenly_at_least_one_thread_each():
    """n trainers started together get cores // n each, at least one: alone, every core."""
    assert [threads.fair_share(1, cores) for cores in (1, 2, 4, 16)] == [1, 2, 4, 16]
    assert [threads.fair_share(2, cores) for cores in (1, 2, 4, 16)] == [1, 1, 2, 8]
    assert [threads.fair_share(n, 16) for n in (3, 4, 16, 40)] == [5, 4, 1, 1]


# ----------------------------------------------------------------------------- how busy the machine is

STAT = """cpu  1000 10 300 9000 50 7 3 20 40 0
cpu0 400 5 100 4000 20 2 1 10 40 0
cpu1 300 0 100 3000 10 3 1 5 0 0
cpu2 300 5 100 2000 20 2 1 5 0 0
intr 123456 0 0
ctxt 7890
"""


def test_the_clock_sums_the_busy_ticks_of_the_cpus_this_process_may_use(tmp_path, monkeypatch):
    """user + nice + system + irq + softirq + steal of cpu0 and cpu2 (the affinity mask), not
    cpu1's, not the all-CPU line's, not idle or iowait or guest (already in user)."""
    stat = tmp_path / "stat"
    stat.write_text(STAT)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 2}, raising=False)
    now, busy, own = threads.machine_clock(stat)
    ticks = (400 + 5 + 100 + 2 + 1 + 10) + (300 + 5 + 100 + 2 + 1 + 5)
    assert busy == ticks / os.sysconf("SC_CLK_TCK")
    times = os.times()
    assert 0 <= own <= times.user + times.system                 # this process's CPU time so far
    assert threads.machine_clock(tmp_path / "none") is None      # no /proc/stat: nothing to judge by


def looks(monkeypatch, *clocks, cpus=2):
    """Script the looks at the machine: (seconds, busy CPU seconds, own CPU seconds) each."""
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    monkeypatch.setattr(threads, "_last_look", clocks[0])
    rest = iter(clocks[1:])
    monkeypatch.setattr(threads, "machine_clock", lambda: next(rest))


def test_the_free_cores_are_what_the_other_processes_left(monkeypatch):
    """Each look judges the time since the last one: the others' work is the busy time less
    this process's own, in cores; the free cores are the rest, rounded, at least one."""
    looks(monkeypatch, (0, 0, 0),
          (1.0, 2.0, 1.0),     # this run 1 core, the others 1: one left for it
          (2.0, 3.5, 2.5),     # this run alone (1.5 of its own, its spinning threads too): both
          (2.1, 3.6, 2.6),     # 0.1 s later: too soon to tell, and the window goes on ...
          (3.0, 4.9, 3.1),     # ... from 2.0: the others 0.8 of a core: one left
          (4.0, 5.9, 3.7),     # the others 0.4: 1.6 cores, rounded to 2
          (5.0, 8.9, 3.7))     # a job wanting 3 cores on 2: still one thread
    assert [threads.free_cores(cores=2) for _ in range(6)] == [1, 2, None, 1, 2, 1]
    looks(monkeypatch, (0, 0, 0), (1.0, 6.0, 0.8), cpus=16)
    assert threads.free_cores(cores=16) == 11   # 5.2 cores' worth of others' work on 16
    looks(monkeypatch, (0, 0, 0), (1.0, 1.0, 1.0), cpus=16)
    assert threads.free_cores(cores=4) == 4     # a quota of 4 cores on an idle 16: 4 (usable_cores)


def test_without_a_look_at_the_machine_the_library_keeps_its_count(monkeypatch):
    monkeypatch.setattr(threads, "machine_clock", lambda: None)
    assert threads.free_cores() is None


@pytest.fixture
def busy_neighbour():
    """A process of another kind holding a core the whole time (a loop that never waits). At
    the lowest priority, so that it slows the interpreters these tests start as little as it
    can; its time still counts as busy (/proc/stat's nice column)."""
    loop = subprocess.Popen([sys.executable, "-c", "import os; os.nice(19)\nwhile True: pass"])
    yield loop
    loop.kill()
    loop.wait()


two_cores = pytest.mark.skipif(threads.usable_cores() < 2,
                               reason="the libraries cap a count from the environment at the cores")


@pytest.mark.slow  # a busy loop beside this process for a second
@two_cores
def test_a_process_holding_a_core_leaves_one_fewer(busy_neighbour, monkeypatch):
    """Measured, not scripted: with a busy loop beside it (and whatever else runs on this
    machine, which can only take more), at most all the usable cores but one are free."""
    monkeypatch.setattr(threads, "_last_look", threads.machine_clock())
    time.sleep(1.0)
    free = threads.free_cores()
    print(f"free cores beside a busy loop: {free} of {threads.usable_cores()}")
    assert 1 <= free <= threads.usable_cores() - 1


@needs_openblas
def test_too_soon_after_the_last_look_the_count_stays(restore_openblas, monkeypatch):
    for name in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    threads.set_openblas_threads(1)
    monkeypatch.setattr(threads, "_last_look", threads.machine_clock())
    assert threads.share_cores("numpy") == 1


# In a fresh interpreter, a second after it started: the count the library took at start,
# the count after share_cores, and whether torch got imported.
SHARE = ("import json, sys, time; from harness import threads; {load}; before = {count}; time.sleep(1.0); "
         "after = threads.share_cores({framework!r}); print(json.dumps([before, after, 'torch' in sys.modules]))")
NUMPY = {"framework": "numpy", "load": "import numpy", "count": "threads.openblas_threads()"}
TORCH = {"framework": "pytorch", "load": "import torch", "count": "torch.get_num_threads()"}


@needs_openblas
def test_numpy_takes_at_most_every_core_and_does_not_import_torch():
    _, used, torch_loaded = run_python(SHARE.format(**NUMPY))
    assert 1 <= used <= threads.usable_cores()               # every core, or fewer on a busy machine
    assert not torch_loaded  # the from-scratch side must not need torch


@pytest.mark.slow  # a fresh interpreter beside a busy loop, for a second
@needs_openblas
@two_cores
def test_numpy_beside_a_busy_process_leaves_it_its_core(busy_neighbour):
    _, used, _ = run_python(SHARE.format(**NUMPY))
    assert 1 <= used <= threads.usable_cores() - 1


@pytest.mark.slow  # a fresh interpreter beside a busy loop, for a second
@needs_openblas
@two_cores
@pytest.mark.parametrize("variable", ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"])
def test_a_thread_count_in_the_environment_wins_for_numpy(busy_neighbour, variable):
    """Beside a busy process the share would be fewer cores; the user's 2 stays."""
    before, used, _ = run_python(SHARE.format(**NUMPY), **{variable: "2"})
    assert (before, used) == (2, 2)


@pytest.mark.slow  # two fresh interpreters that import torch, beside a busy loop
@two_cores
def test_pytorch_shares_and_a_thread_count_in_the_environment_wins(busy_neighbour):
    pytest.importorskip("torch")
    _, used, _ = run_python(SHARE.format(**TORCH))
    assert 1 <= used <= threads.usable_cores() - 1
    before, used, _ = run_python(SHARE.format(**TORCH), OMP_NUM_THREADS="2")
    assert (before, used) == (2, 2)


# ----------------------------------------------------------------------------- trainers started together

def test_trainers_started_together_are_given_their_share_unless_the_user_chose(monkeypatch):
    for name in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    share = {name: "2" for name in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    assert threads.for_children(2) == {**os.environ, **share}
    assert threads.for_children(1) == dict(os.environ)       # alone: it judges for itself
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    assert threads.for_children(2) == dict(os.environ)       # the user's count, for every library


CHILD = ("import json; from harness import threads; import torch; "
         "print(json.dumps([threads.share_cores('numpy'), threads.share_cores('pytorch')]))")


@pytest.mark.slow  # a fresh interpreter that imports torch
@needs_openblas
def test_a_child_given_its_share_keeps_it_from_its_first_look(monkeypatch):
    """Each of two children gets fair_share(2) in both libraries, without looking at the machine."""
    pytest.importorskip("torch")
    for name in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=threads.for_children(2),
                          capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == [threads.fair_share(2)] * 2


def test_a_cgroup_quota_caps_the_usable_cores(tmp_path, monkeypatch):
    """docker --cpus=2 on a 64-core host: 64 cores in the affinity mask, 2 cores' worth of time."""
    v2, v1 = tmp_path / "v2", tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    v2.mkdir()
    assert threads.cgroup_cpu_quota(tmp_path / "none") is None
    (v2 / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_quota(v2) is None
    (v2 / "cpu.max").write_text("250000 100000\n")
    assert threads.cgroup_cpu_quota(v2) == 2.5
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.cgroup_cpu_quota(v1) is None
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    assert threads.cgroup_cpu_quota(v1) == 2.0
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: 2.5)
    assert threads.usable_cores() == 2
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: None)
    assert threads.usable_cores() == 64


def test_the_user_setting_is_the_first_variable_the_library_reads(monkeypatch):
    for name in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    assert threads.user_setting("numpy") is None and threads.user_setting("pytorch") is None
    monkeypatch.setenv("MKL_NUM_THREADS", "3")       # MKL's: PyTorch reads it, OpenBLAS does not
    assert threads.user_setting("numpy") is None
    assert threads.user_setting("pytorch") == "MKL_NUM_THREADS=3"
    monkeypatch.setenv("OMP_NUM_THREADS", "4")       # both read it
    assert threads.user_setting("numpy") == "OMP_NUM_THREADS=4"
    assert threads.user_setting("pytorch") == "OMP_NUM_THREADS=4"
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "")   # empty: unset, for the libraries too
    assert threads.user_setting("numpy") == "OMP_NUM_THREADS=4"


def test_an_unknown_framework_is_an_error():
    with pytest.raises(ValueError, match="jax"):
        threads.share_cores("jax")


@needs_openblas
def test_a_product_is_repeatable_at_a_fixed_thread_count_but_the_low_bits_follow_the_count(restore_openblas):
    """The same count gives the same bits, every time. Another count may split the products
    differently and round differently: here (OpenBLAS 0.3.31, Haswell kernels) float32 results
    at 1 and 2 threads differ in their last bits, float64 ones at 1 and 3. So the count is part
    of what makes a run reproducible: the policy fixes it, and the metrics record it."""
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        a = rng.standard_normal((512, 784)).astype(dtype)
        b = rng.standard_normal((784, 128)).astype(dtype)
        results = {}
        for n in (1, 2, 3, 1, 2, 3):
            threads.set_openblas_threads(n)
            ab = a @ b
            products = (ab, a.T @ ab, ab @ b.T)         # the three shapes of a training step
            if n in results:
                assert all(np.array_equal(p, q) for p, q in zip(products, results[n])), (dtype, n)
            results[n] = products
        eps = np.finfo(dtype).eps
        for n in (2, 3):
            for p, q in zip(results[1], results[n]):
                scale = np.abs(p).max()
                print(f"{dtype.__name__}, 1 vs {n} threads: max difference {np.abs(p - q).max() / scale:.1e} "
                      f"of the largest entry")
                assert np.abs(p - q).max() <= 1e3 * eps * scale  # rounding, not a different product


@needs_openblas
def test_a_training_step_agrees_to_rounding_at_one_and_two_threads(restore_openblas):
    """The gradients the NumPy trainer computes at the policy's count and at the library's
    default (2 here) are the same up to float32 rounding."""
    rng = np.random.default_rng(0)
    x = rng.random((128, 784), dtype=np.float32)
    y = rng.integers(0, 10, 128)
    grads = {}
    for n in (1, 2):
        threads.set_openblas_threads(n)
        net = NeuralNetwork(seed=0)
        loss_and_gradients(net, x, y)
        grads[n] = net.flat_grads.copy()
    scale = np.abs(grads[1]).max()
    difference = np.abs(grads[1] - grads[2]).max() / scale
    print(f"max gradient difference, 1 vs 2 threads: {difference:.1e} of the largest")
    np.testing.assert_allclose(grads[2], grads[1], rtol=0, atol=1e-5 * scale)
