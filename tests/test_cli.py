"""Both trainers' command lines: the same flag values accepted and refused, output paths
checked before training, a stdout that closes early, stopping by Ctrl-C or SIGTERM, and
divergence. Each case runs both twins, which must behave alike.

The flags, the paths and divergence go through each trainer's main(argv) in this process
(conftest.run_trainer_main: the exit status, stdout and stderr a process would give). What only
a process shows, a signal or a pipe its reader closes, runs the trainer as a user runs it, in a
subprocess of its own: those tests are marked slow. Trainers get OPENBLAS_NUM_THREADS=1: on
this busy 2-core machine spinning BLAS threads made such small runs many times slower; only
timings change.
"""
import errno
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import mnist_arrays, run_trainer_main
from harness import experiment
from harness.metrics_file import file_sha256, load_metrics

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
FRAMEWORKS = ["numpy", "pytorch"]
SUFFIX = {"numpy": ".npz", "pytorch": ".pt"}
SHORT = ["--limit", "500", "--epochs", "1", "--no-progress"]


def trainer_flags(framework, *flags):
    return [*(["--device", "cpu"] if framework == "pytorch" else []), *flags]


def command(framework, *flags):
    return [sys.executable, str(REPO / f"{framework}_nn" / "train.py"), *trainer_flags(framework, *flags)]


def outputs(folder, framework):
    return folder / "m.json", folder / f"w{SUFFIX[framework]}"


def out_flags(folder, framework):
    metrics, weights = outputs(folder, framework)
    return ["--metrics", str(metrics), "--weights", str(weights)]


def run(framework, *flags, cwd=REPO):
    """The trainer's main(argv) in this process, from cwd: its exit status, stdout and stderr."""
    return run_trainer_main(framework, *trainer_flags(framework, *flags), cwd=cwd)


def error_line(done, code):
    """The one line that says what went wrong: no traceback, the expected exit status."""
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, done.stderr
    return errors[0]


def ctrl_c_as_usual():
    """In the child before it starts: SIGINT back to its default. A suite started in the
    background by a shell (`pytest &`) has SIGINT ignored, the children inherit that, and
    Python then never turns Ctrl-C into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(framework, *flags):
    return subprocess.Popen(command(framework, *flags), cwd=REPO, env=ENV, preexec_fn=ctrl_c_as_usual,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_line(proc, prefix):
    """Read the trainer's stdout until a line starting with prefix (the trainer flushes each)."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting {prefix!r}: {''.join(seen)}")


def finish(proc):
    try:
        return proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# ----------------------------------------------------------------------------- flag values

SEED_CASES = [("-1", "argument --seed: must be from 0 to 2^64 - 1, got -1"),
              (str(2 ** 64), f"argument --seed: must be from 0 to 2^64 - 1, got {2 ** 64}"),
              ("1.5", "argument --seed: '1.5' is not an integer")]


@pytest.mark.parametrize("value, message", SEED_CASES, ids=[v for v, _ in SEED_CASES])
def test_twins_refuse_the_same_seeds_with_the_same_words(tmp_path, value, message):
    """NumPy refuses negative seeds and torch.manual_seed ones from 2^64: both trainers accept
    exactly what both libraries take, and say so in the same line."""
    lines = {fw: error_line(run(fw, "--seed", value, *SHORT, *out_flags(tmp_path, fw)), 2)
             for fw in FRAMEWORKS}
    assert lines["numpy"] == lines["pytorch"] == f"train.py: error: {message}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_largest_seed_trains(tmp_path, framework):
    done = run(framework, "--seed", str(2 ** 64 - 1), *SHORT, *out_flags(tmp_path, framework))
    assert done.returncode == 0, done.stderr
    assert load_metrics(tmp_path / "m.json")["seed"] == 2 ** 64 - 1


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_epoch_line_shows_the_thread_count_the_record_gives(tmp_path, framework):
    """Each epoch's line shows the threads its products used, as the record has them: a float32
    run's last bits depend on the count, and a learner saw two runs split at epoch 3 with
    nothing on screen to say why. ENV sets 1 thread for both libraries, which the trainers'
    policy leaves alone (harness/threads.py)."""
    done = run(framework, *SHORT, *out_flags(tmp_path, framework))
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("epoch  1 |"))
    assert load_metrics(tmp_path / "m.json")["epochs"][0]["threads"] == 1
    assert line.split(" | ")[-2] == "1 thread", line


def test_epoch_lines_thread_count_in_words():
    from harness.metrics_file import threads_shown
    assert [threads_shown(n) for n in (1, 2, None)] == ["1 thread", "2 threads", "threads unknown"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_hidden_sizes_do_not_apply_to_the_cnn(tmp_path, framework):
    done = run(framework, "--model", "cnn", "--hidden", "32", *SHORT, *out_flags(tmp_path, framework))
    assert "argument --hidden: sets the MLP's hidden layers; the CNN's layers are fixed" in error_line(done, 2)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_each_model_has_its_own_default_files(framework):
    """Training the CNN must not overwrite the MLP's run (the demo and compare.py read both)."""
    parse = experiment.build_parser(framework, "").parse_args
    suffix = SUFFIX[framework]
    mlp, cnn = parse([]), parse(["--model", "cnn"])
    assert (mlp.metrics, mlp.weights) == (experiment.RESULTS_DIR / f"{framework}_metrics.json",
                                          experiment.RESULTS_DIR / f"{framework}_model{suffix}")
    assert (cnn.metrics, cnn.weights) == (experiment.RESULTS_DIR / f"{framework}_cnn_metrics.json",
                                          experiment.RESULTS_DIR / f"{framework}_cnn_model{suffix}")
    assert parse(["--model", "cnn", "--metrics", "m.json"]).metrics == Path("m.json")


def test_epochs_in_scientific_notation_is_not_an_integer():
    parser = experiment.build_parser("numpy", "")
    with pytest.raises(SystemExit):
        parser.parse_args(["--epochs", "1e3"])
    with pytest.raises(Exception, match="'1e3' is not an integer"):
        parser._option_string_actions["--epochs"].type("1e3")


# ----------------------------------------------------------------------------- output paths

def bad_outputs(tmp_path, framework):
    """(flags, the words of the error) for outputs that cannot be written; found before training."""
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "afolder").mkdir()
    os.mkfifo(tmp_path / "afifo")              # as /dev/null is a character device: not a file
    metrics, weights = outputs(tmp_path, framework)
    return {
        "metrics under a file": (["--metrics", str(tmp_path / "afile" / "x.json"), "--weights", str(weights)],
                                 f"argument --metrics: {tmp_path / 'afile'} is a file, not a folder"),
        "weights a folder": (["--metrics", str(metrics), "--weights", str(tmp_path / "afolder")],
                             f"argument --weights: {tmp_path / 'afolder'} is a folder; give a file name"),
        "the same file": (["--metrics", str(metrics), "--weights", str(metrics)],
                          "argument --weights: the same file as --metrics"),
        "metrics a FIFO": (["--metrics", str(tmp_path / "afifo"), "--weights", str(weights)],
                           f"argument --metrics: {tmp_path / 'afifo'} exists and is not a regular file"),
    }


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("case", ["metrics under a file", "weights a folder", "the same file", "metrics a FIFO"])
def test_unwritable_outputs_fail_before_training(tmp_path, framework, case):
    """A place the results cannot go is a one-line error naming the path given, before any
    data is loaded or epoch trained (it used to fail after the whole run)."""
    flags, words = bad_outputs(tmp_path, framework)[case]
    done = run(framework, *SHORT, *flags)
    assert words in error_line(done, 2)
    assert "mnist:" not in done.stdout and "epoch" not in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afifo", "afile", "afolder"]
    assert stat.S_ISFIFO((tmp_path / "afifo").lstat().st_mode)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_outputs_inside_the_project_go_under_results_only(tmp_path, framework):
    """`--metrics train.py --weights README.md` wrote the run over the project's own files. An
    output path inside the project but not under results/ is refused in one line before the
    data loads, whether it is given as is, relative to the cwd, or as a symlink pointing there
    (the paths here do not exist, so the old code would only have created them)."""
    inside = REPO / "numpy_nn" / "not_a_project_file.json"          # beside the project's files
    link = tmp_path / "link.json"
    link.symlink_to(REPO / "README_not_a_project_file.md")
    metrics, weights = outputs(tmp_path, framework)
    cases = [(["--metrics", str(inside), "--weights", str(weights)], REPO, f"argument --metrics: {inside} is"),
             (["--metrics", str(metrics), "--weights", "w.pt"], REPO / "docs", "argument --weights: w.pt is"),
             (["--metrics", str(metrics), "--weights", str(link)], REPO, f"argument --weights: {link} is")]
    try:
        for flags, cwd, words in cases:
            done = run(framework, *SHORT, *flags, cwd=cwd)
            assert error_line(done, 2).endswith(
                f"{words} inside the project but not under results/: a run writes its files under results/ or "
                f"outside the project, never over the project's own"), done.stderr
            assert "mnist:" not in done.stdout
        assert not inside.exists() and not (REPO / "docs" / "w.pt").exists()
        assert not (REPO / "README_not_a_project_file.md").exists() and sorted(tmp_path.iterdir()) == [link]
    finally:
        for made in (inside, REPO / "docs" / "w.pt", REPO / "README_not_a_project_file.md"):
            made.unlink(missing_ok=True)                             # (only if the refusal failed)
    allowed = experiment.RESULTS_DIR / "test_cli_allowed" / "m.json"   # under results/: the trainer's place
    assert experiment.build_parser(framework, "").parse_args(["--metrics", str(allowed)]).metrics == allowed
    from harness.flags import project_file_problem
    assert project_file_problem(allowed) is None and project_file_problem(tmp_path / "m.json") is None


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_outputs_through_symlinks_land_in_their_targets(tmp_path, framework):
    """--metrics and --weights given as symlinks: the links stay, their targets get the run."""
    metrics, weights = outputs(tmp_path, framework)
    for link in (metrics, weights):
        target = tmp_path / f"target-{link.name}"
        target.write_bytes(b"an older run")
        link.symlink_to(target)
    done = run(framework, *SHORT, *out_flags(tmp_path, framework))
    assert done.returncode == 0, done.stderr
    assert metrics.is_symlink() and weights.is_symlink()
    assert load_metrics(tmp_path / f"target-{metrics.name}")["weights_sha256"] == \
        file_sha256(tmp_path / f"target-{weights.name}")


def test_metrics_and_weights_are_written_as_a_pair(tmp_path, monkeypatch):
    """If the second file cannot be renamed into place, neither is, and no temporary file stays:
    weights without their metrics (or the reverse) never appear."""
    weights, metrics = tmp_path / "w.npz", tmp_path / "m.json"
    metrics.write_text("the earlier run's metrics")
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if Path(dst) == metrics:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(experiment.os, "replace", replace)
    with pytest.raises(OSError):
        experiment.write_pair({metrics: b"{}", weights: b"weights"})
    assert metrics.read_text() == "the earlier run's metrics" and not weights.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]
    monkeypatch.setattr(experiment.os, "replace", real_replace)
    experiment.write_pair({weights: b"weights", metrics: b"{}"})
    assert weights.read_bytes() == b"weights" and metrics.read_bytes() == b"{}"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_metrics_name_their_weights_by_sha256(tmp_path, framework):
    done = run(framework, *SHORT, *out_flags(tmp_path, framework))
    assert done.returncode == 0, done.stderr
    metrics, weights = outputs(tmp_path, framework)
    record = load_metrics(metrics)
    assert record["weights_sha256"] == file_sha256(weights)
    assert record["diagnostics"]["steps"] == [1, 2, 3, 4]  # a default run records them: 4 steps, each


# ----------------------------------------------------------------------------- stdout closed early

@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_reader_closing_stdout_does_not_lose_the_run(tmp_path, framework):
    """`train.py | head -1`: the reader goes away after one line; the run trains on, writes its
    files, and exits 0 without a BrokenPipeError."""
    proc = start(framework, "--limit", "2000", "--epochs", "3", "--no-progress", *out_flags(tmp_path, framework))
    proc.stdout.readline()
    proc.stdout.close()                            # what head -1 does after its line
    _, err = finish(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    record = load_metrics(tmp_path / "m.json")
    assert record["status"] == "completed" and len(record["epochs"]) == 3


# ----------------------------------------------------------------------------- stopping

def epoch_seconds(line):
    """The training time an epoch's progress line reports (its last field, '0.41s')."""
    return float(line.split()[-1].rstrip("s"))


def saved_test_accuracy(framework, model, weights):
    """The saved weights' accuracy on the test set through the trainer's own evaluate(), in
    the dtype they were saved in (float32 here), with the layers the trainer used (its default,
    the fast ones): the same arithmetic in the same order as the trainer's, so it must equal
    the recorded number exactly."""
    _, _, x_test, y_test = mnist_arrays()
    if framework == "numpy":
        from numpy_nn.fast_cnn import FastCNN
        from numpy_nn.neural_network import NeuralNetwork
        from numpy_nn.train import evaluate
        net = (FastCNN if model == "cnn" else NeuralNetwork).load(weights)
        return evaluate(net, x_test.astype(net.dtype), y_test)[1]
    import torch

    from pytorch_nn import cnn
    from pytorch_nn import model as mlp
    from pytorch_nn.train import evaluate
    network = (cnn if model == "cnn" else mlp).load_model(weights)
    return evaluate(network, torch.from_numpy(x_test), torch.from_numpy(y_test))[1]


def assert_saved_is_last_finished_epoch(tmp_path, framework, model="mlp"):
    """The weights on disk are the ones the record's last epoch was measured on, and the
    record names them by SHA-256."""
    metrics, weights = outputs(tmp_path, framework)
    record = load_metrics(metrics)
    assert record["weights_sha256"] == file_sha256(weights)
    assert saved_test_accuracy(framework, model, weights) == record["epochs"][-1]["test_acc"]
    return record


STOPS = [("mlp", signal.SIGTERM, "20000"), ("mlp", signal.SIGINT, "20000"), ("cnn", signal.SIGTERM, "3000")]


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("model, signum, limit", STOPS, ids=[f"{m}-{s.name}" for m, s, _ in STOPS])
def test_a_stop_in_epoch_2_saves_epoch_1s_weights(tmp_path, framework, model, signum, limit):
    """kill (SIGTERM) or Ctrl-C in the middle of epoch 2: what is saved is epoch 1's weights
    (they once were the half-trained epoch 2's, under a record claiming epoch 1), marked
    interrupted, and the exit status is the shell's for the signal (128 + its number)."""
    proc = start(framework, "--model", model, "--limit", limit, "--epochs", "200", "--no-progress",
                 *out_flags(tmp_path, framework))
    line = wait_for_line(proc, "epoch  1 |")
    time.sleep(epoch_seconds(line) / 2)            # into the middle of epoch 2
    proc.send_signal(signum)
    out, err = finish(proc)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    record = assert_saved_is_last_finished_epoch(tmp_path, framework, model)
    assert record["status"] == "interrupted" and 1 <= len(record["epochs"]) < 200
    assert record["final_test_acc"] == record["epochs"][-1]["test_acc"]
    assert f"interrupted after {len(record['epochs'])} finished epoch(s)" in out


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("gap", [0.002, 0.02], ids=["2ms", "20ms"])
def test_two_quick_ctrl_cs_keep_the_finished_epoch(tmp_path, framework, gap):
    """A second Ctrl-C soon after the first (during the stop or the save) changes nothing:
    epoch 1 is saved. It once ended in a traceback, or in 'interrupted before training
    started: nothing written', losing the epoch."""
    proc = start(framework, "--limit", "20000", "--epochs", "200", "--no-progress",
                 *out_flags(tmp_path, framework))
    wait_for_line(proc, "epoch  1 |")
    proc.send_signal(signal.SIGINT)
    time.sleep(gap)
    proc.send_signal(signal.SIGINT)
    out, err = finish(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "nothing written" not in err, err
    record = assert_saved_is_last_finished_epoch(tmp_path, framework)
    assert record["status"] == "interrupted" and len(record["epochs"]) >= 1


def test_a_signal_inside_a_destructor_is_not_lost():
    """A signal that lands while some library's __del__ runs (tqdm's, once) must still stop the
    run: a handler that raised there had its exception swallowed ('Exception ignored in') and
    training went on. The handler records the request; check() at the next step boundary acts."""
    script = """
import os, signal
from harness import experiment
experiment.stopping.begin()

class Closing:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # bytecodes: Python runs the handler between two of them, in here
            pass

Closing()
try:
    experiment.stopping.check()
except experiment.StopRequested:
    raise SystemExit(experiment.stopping.exit_code())
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_ctrl_c_in_epoch_1_leaves_earlier_files_alone(tmp_path, framework):
    """Ctrl-C before any epoch finished: nothing to save, so the earlier run's files stay as
    they were (they used to be replaced by a 0-epoch record that compare.py refuses)."""
    metrics, weights = outputs(tmp_path, framework)
    metrics.write_text("earlier metrics")
    weights.write_bytes(b"earlier weights")
    # batch size 1 makes epoch 1 take far longer than the moment we wait after the data loaded
    proc = start(framework, "--batch-size", "1", "--no-progress", *out_flags(tmp_path, framework))
    wait_for_line(proc, "mnist: loaded")
    proc.send_signal(signal.SIGINT)
    out, err = finish(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "epoch  1 |" not in out, err
    assert "nothing written" in err.strip().splitlines()[-1]
    assert metrics.read_text() == "earlier metrics" and weights.read_bytes() == b"earlier weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([metrics.name, weights.name])


def test_ctrl_c_while_the_data_loads_is_one_line(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(experiment, "load_mnist", interrupted)
    args = experiment.build_parser("numpy", "").parse_args([])
    with pytest.raises(SystemExit) as stop:
        experiment.load_data(None, args)
    assert stop.value.code == 130
    assert capsys.readouterr().err == "interrupted while loading the data: nothing written\n"


# ----------------------------------------------------------------------------- divergence

@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_divergence_is_recorded_as_such_and_suggests_a_rate_that_works(tmp_path, framework):
    """Plain SGD at lr 1e4 overflows in epoch 1. One error line names where, and suggests SGD's
    working rate 0.1 (lr / 10 = 1000 'completes' at 11%). The metrics file says "diverged"
    and claims no result, so an older run's files are never shown as this one's."""
    metrics, weights = outputs(tmp_path, framework)
    metrics.write_text("an older run's metrics")
    weights.write_bytes(b"an older run's weights")
    done = run(framework, "--lr", "1e4", "--optimizer", "sgd", "--limit", "2000", "--epochs", "1",
               "--no-progress", *out_flags(tmp_path, framework))
    line = error_line(done, 1)
    assert line.startswith("error: the loss became ") and " at epoch 1, batch " in line
    assert "try a smaller --lr (e.g. 0.1)" in line and str(metrics) in line
    record = load_metrics(metrics)
    assert record["status"] == "diverged" and record["diverged"]["epoch"] == 1
    assert record["final_test_acc"] is None and record["weights_sha256"] is None
    assert weights.read_bytes() == b"an older run's weights"


def test_divergence_hint_for_a_rate_already_below_the_working_one():
    args = SimpleNamespace(optimizer="adam", lr=1e-3)
    with pytest.raises(experiment.TrainingDiverged, match=r"try a smaller --lr \(e\.g\. 0\.0001\)"):
        experiment.check_finite(float("nan"), 2, 7, args)
    experiment.check_finite(float(np.float32(3.5)), 2, 7, args)  # finite: nothing happens


def test_reading_the_blas_thread_count_leaves_no_file_open():
    """numpy_blas reads /proc/self/maps; it once left the file for the garbage collector
    (a ResourceWarning in every run under python -X dev)."""
    done = subprocess.run([sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c",
                           "import gc; from harness.metrics_file import numpy_blas; numpy_blas(); gc.collect()"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ResourceWarning" not in done.stderr, done.stderr


def test_a_project_inside_the_temporary_folder_keeps_its_output_rule(monkeypatch):
    """A clone in /tmp: the temporary folder holds the whole project, and allowing it allowed
    every path of the project (a CI run of a clone in /tmp let --metrics train.py through).
    The rule holds there too; a temporary folder inside the project (TMPDIR set there) is still
    allowed, and the real temporary folder outside the project is untouched."""
    import tempfile

    from harness.flags import PROJECT, project_file_problem
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(PROJECT.parent))
    assert project_file_problem(PROJECT / "README.md").startswith(f"{PROJECT / 'README.md'} is inside the project")
    assert project_file_problem(PROJECT / "results" / "m.json") is None
    assert project_file_problem(PROJECT.parent / "elsewhere.json") is None
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(PROJECT / "tmp"))
    assert project_file_problem(PROJECT / "tmp" / "m.json") is None
    assert project_file_problem(PROJECT / "docs" / "m.json") is not None
