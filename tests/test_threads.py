"""threads.py: the OpenBLAS thread count is really set, the user's environment wins, and what the
thread count does to the numbers. No timings: they are measured and reported, never asserted."""
import json
import os
import subprocess
import sys
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
def test_the_count_set_through_ctypes_is_the_count_openblas_reports(restore_openblas, n):
    assert threads.set_openblas_threads(n)
    assert threads.openblas_threads() == n


def test_the_cores_are_shared_out_evenly_at_least_one_thread_each():
    """Alone a run gets every core (the libraries' own default); n runs get cores // n each."""
    assert [threads.fair_share(1, cores) for cores in (1, 2, 4, 16)] == [1, 2, 4, 16]
    assert [threads.fair_share(2, cores) for cores in (1, 2, 4, 16)] == [1, 1, 2, 8]
    assert [threads.fair_share(n, 16) for n in (3, 4, 16, 40)] == [5, 4, 1, 1]


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.setattr(threads, "REGISTRY", tmp_path / "trainers")
    return tmp_path / "trainers"


def test_running_trainers_counts_live_processes_and_drops_stale_entries(registry):
    """Each trainer leaves a file named by its pid and start time; one whose process has ended is removed."""
    assert threads.running_trainers() == 1                   # no registry yet: this process alone
    registry.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    try:
        live = [threads.entry_name(os.getpid()), threads.entry_name(other.pid)]
        for name in live + [f"{int(ended.stdout)}-12345"]:
            (registry / name).touch()
        for name in ("not-a-pid", "0-1", "-1"):                # no trainer's: left alone
            (registry / name).touch()
        (registry / f"{2 ** 70}-1").touch()                   # no process has such a pid: stale
        assert threads.running_trainers() == 2               # this one and the sleeping one
        assert sorted(p.name for p in registry.iterdir()) == sorted(live + ["not-a-pid", "0-1", "-1"])
    finally:
        other.kill()
        other.wait()
    assert threads.running_trainers() == 1


def dead_pid():
    """The pid of a process that has ended (the kernel hands it out again only much later)."""
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    return int(ended.stdout)


def test_an_entry_that_cannot_be_removed_is_skipped_not_raised(registry, monkeypatch):
    """A folder named like a dead trainer's entry, and a file the system refuses to remove
    (a read-only file system): the count goes on, and training with it."""
    registry.mkdir()
    folder = registry / str(dead_pid())
    folder.mkdir()
    assert threads.running_trainers() == 1
    assert folder.is_dir()                                    # not the registry's to remove
    stuck = registry / f"{dead_pid()}-1"
    stuck.touch()

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")
    with monkeypatch.context() as patch:
        patch.setattr(threads.os, "unlink", read_only)
        assert threads.running_trainers() == 1
        assert stuck.exists()
    assert threads.running_trainers() == 1 and not stuck.exists()


def test_a_registry_that_is_a_symbolic_link_is_not_followed(tmp_path, monkeypatch):
    """Someone points the registry's name at another folder: no trainer removes, or writes,
    anything there; each counts itself alone."""
    elsewhere = tmp_path / "somebody-elses"
    elsewhere.mkdir()
    theirs = [str(dead_pid()), f"{dead_pid()}-1", "notes.txt"]
    for name in theirs:
        (elsewhere / name).write_text("keep me")
    link = tmp_path / "trainers"
    link.symlink_to(elsewhere)
    monkeypatch.setattr(threads, "REGISTRY", link)
    assert threads.running_trainers() == 1
    threads.register()
    assert threads.running_trainers() == 1
    assert sorted(p.name for p in elsewhere.iterdir()) == sorted(theirs)
    assert all((elsewhere / name).read_text() == "keep me" for name in theirs)


@pytest.mark.skipif(threads.process_start(os.getpid()) is None, reason="no /proc: the pid alone is all there is")
def test_a_reused_pid_is_not_taken_for_the_trainer_that_had_it(registry):
    """A trainer killed with SIGKILL leaves its entry; the kernel gives its pid to another
    process (here: a sleeping one). The start time in the entry is not that process's, so the
    entry is stale: removed, and not counted."""
    registry.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = threads.process_start(other.pid)
        old_trainer = registry / f"{other.pid}-{start - 1}"   # started earlier: not this process
        old_trainer.touch()
        assert threads.running_trainers() == 1
        assert not old_trainer.exists()
        (registry / str(other.pid)).touch()                   # no start time where /proc exists: stale too
        assert threads.running_trainers() == 1
        (registry / threads.entry_name(other.pid)).touch()   # the process itself, registered
        assert threads.running_trainers() == 2
    finally:
        other.kill()
        other.wait()


REGISTER = ("import json; from harness import threads; threads.REGISTRY = __import__('pathlib').Path({registry!r}); "
            "threads.register(); print(json.dumps(sorted(p.name for p in threads.REGISTRY.iterdir())))")


def test_a_trainer_registers_itself_until_it_exits(registry):
    inside = run_python(REGISTER.format(registry=str(registry)))
    assert len(inside) == 1                                   # it was there while it ran
    assert list(registry.iterdir()) == []                     # and gone when it exited


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


# In a fresh interpreter with `others` more trainers registered (live: this test's own pid):
# the count the library took at start, the count after share_cores, the fair share, and
# whether torch got imported.
SHARE = ("import json, os, sys; from harness import threads; from pathlib import Path; {load}; "
         "threads.REGISTRY = Path({registry!r}); threads.register(); before = {count}; "
         "after = threads.share_cores({framework!r}); "
         "print(json.dumps([before, after, threads.fair_share(threads.running_trainers()), "
         "'torch' in sys.modules]))")
NUMPY = {"framework": "numpy", "load": "import numpy", "count": "threads.openblas_threads()"}
TORCH = {"framework": "pytorch", "load": "import torch", "count": "torch.get_num_threads()"}
two_cores = pytest.mark.skipif(threads.usable_cores() < 2,
                               reason="the libraries cap a count from the environment at the cores")


def share(registry, spec, others=0, **env):
    registry.mkdir(exist_ok=True)
    for _ in range(others):
        (registry / threads.entry_name(os.getpid())).touch()  # this test process, alive: one more trainer
    return run_python(SHARE.format(registry=str(registry), **spec), **env)


@needs_openblas
def test_numpy_alone_keeps_every_core_and_does_not_import_torch(registry):
    before, used, fair, torch_loaded = share(registry, NUMPY)
    assert used == fair == threads.usable_cores()
    assert not torch_loaded  # the from-scratch side must not need torch


@needs_openblas
@two_cores
def test_numpy_beside_another_trainer_takes_half_the_cores(registry):
    _, used, fair, _ = share(registry, NUMPY, others=1)
    assert used == fair == threads.usable_cores() // 2


@needs_openblas
@two_cores
@pytest.mark.parametrize("variable", ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"])
def test_a_thread_count_in_the_environment_wins_for_numpy(registry, variable):
    """Beside another trainer the share would be half the cores; the user's 2 stays."""
    before, used, fair, _ = share(registry, NUMPY, others=1, **{variable: "2"})
    assert (before, used) == (2, 2) and fair == threads.usable_cores() // 2


@two_cores
def test_pytorch_shares_and_a_thread_count_in_the_environment_wins(registry):
    pytest.importorskip("torch")
    _, used, fair, _ = share(registry, TORCH, others=1)
    assert used == fair == threads.usable_cores() // 2
    before, used, _, _ = share(registry, TORCH, others=1, OMP_NUM_THREADS="2")
    assert (before, used) == (2, 2)


@needs_openblas
@two_cores
def test_twins_started_together_take_half_the_cores_before_the_other_registers(registry):
    """The demo's twins are told they are two (STARTED_TOGETHER): the first to reach its first
    epoch takes half the cores though it sees only itself in the registry."""
    _, used, fair, _ = share(registry, NUMPY, **{threads.STARTED_TOGETHER: "2"})
    assert fair == threads.usable_cores()                    # the registry alone: every core
    assert used == threads.usable_cores() // 2


def test_twins_count_each_other_until_seen_then_the_registry_alone(monkeypatch):
    """Started as two: 2 while the other is not yet registered, 2 once it is, then 1 when it
    has ended (its cores handed back): the variable is a floor only until all have been seen."""
    monkeypatch.setattr(threads, "_together_seen", False)
    monkeypatch.setenv(threads.STARTED_TOGETHER, "2")
    registered = iter([1, 1, 2, 1])
    monkeypatch.setattr(threads, "running_trainers", lambda: next(registered))
    assert [threads.sharing_trainers() for _ in range(4)] == [2, 2, 2, 1]


@pytest.mark.parametrize("text", ["", "0", "-2", "two", "\u0662", "1"])
def test_started_together_is_one_unless_a_whole_number_says_more(monkeypatch, text):
    monkeypatch.setenv(threads.STARTED_TOGETHER, text)
    assert threads.started_together() == 1


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
