"""reference_results.py accepts a reference run only when its epoch times are steady: a run
slowed by other work on the machine is run again, and never committed as it is."""
import json
from pathlib import Path

import pytest

from perf import reference_results as ref

REPO = Path(__file__).resolve().parents[1]


def fake_trainer(monkeypatch, epoch_times):
    """Replace the trainer command: each call writes a metrics file whose epochs took the next
    list of seconds in epoch_times. Returns the list of commands run."""
    calls = []

    def run(*command):
        calls.append(command)
        metrics = command[command.index("--metrics") + 1]
        seconds = epoch_times[len(calls) - 1]
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text(json.dumps({"epochs": [{"epoch_seconds": s} for s in seconds]}))
    monkeypatch.setattr(ref, "run", run)
    return calls


def test_spread_leaves_out_the_first_epoch(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"epochs": [{"epoch_seconds": s} for s in (0.9, 0.30, 0.36, 0.33)]}))
    assert ref.spread(path) == pytest.approx(0.36 / 0.30)


def test_a_steady_run_is_kept_at_once(tmp_path, monkeypatch):
    calls = fake_trainer(monkeypatch, [[0.5, 0.34, 0.35, 0.34]])
    ref.train("numpy", "numpy", folder=tmp_path, steady=True)
    assert len(calls) == 1


def test_a_noisy_run_is_run_again(tmp_path, monkeypatch, capsys):
    """Epochs from 0.34 s to 0.64 s for the same work (a committed run once showed this):
    rejected, and the second, steady run is the one kept."""
    calls = fake_trainer(monkeypatch, [[0.4, 0.34, 0.64, 0.64], [0.4, 0.34, 0.35, 0.35]])
    metrics = ref.train("numpy", "numpy", folder=tmp_path, steady=True)
    assert len(calls) == 2
    assert "the machine was busy" in capsys.readouterr().out
    assert ref.spread(metrics) <= ref.MAX_SPREAD


def test_always_noisy_runs_stop_the_script(tmp_path, monkeypatch):
    calls = fake_trainer(monkeypatch, [[0.4, 0.34, 0.64]] * ref.ATTEMPTS)
    with pytest.raises(SystemExit, match="noisy epoch times; regenerate on a quieter machine"):
        ref.train("numpy", "numpy", folder=tmp_path, steady=True)
    assert len(calls) == ref.ATTEMPTS


def test_experiments_are_not_held_to_the_spread(tmp_path, monkeypatch):
    calls = fake_trainer(monkeypatch, [[0.4, 0.34, 0.64]])
    ref.train("numpy", "numpy_seed1", folder=tmp_path)
    assert len(calls) == 1


def test_lesson_numbers_read_the_record_as_the_docs_say():
    """learning/summary.json's numbers: step 1's figures, the first/last layer gradient ratio at
    step 1 and its median over the steps of epoch 1 only (469 steps of 128 from 60,000), the
    largest update ratio and the dead fraction at the end."""
    record = {"data": {"train_samples": 60000}, "config": {"batch_size": 128},
              "epochs": [{"test_acc": 0.9}, {"test_acc": 0.95}],
              "diagnostics": {"layers": ["layer1", "layer2"], "steps": [1, 32, 63, 470],
                              "loss": [2.3, 1.0, 0.5, 0.4],
                              "grad_rms": {"layer1": [1.0, 2.0, 3.0, 100.0], "layer2": [10.0, 10.0, 10.0, 10.0]},
                              "update_ratio": {"layer1": [0.5, 0.01, None, 0.001], "layer2": [0.1] * 4},
                              "activation_std": {"layer1": [1.0] * 4, "layer2": [2.0] * 4},
                              "dead_fraction": {"layer1": [0.0, 0.25, 0.5, 0.75]}}}
    numbers = ref.lesson_numbers(record)
    assert numbers["grad_rms_layer1_over_layer2"] == {"step_1": 0.1, "median_epoch_1": 0.2, "median_run": 0.25}
    assert numbers["update_ratio_median_epoch_1"]["layer1"] == pytest.approx(0.255)  # the null left out
    assert numbers["update_ratio_max"] == {"layer1": 0.5, "layer2": 0.1}
    assert numbers["dead_fraction_end"] == {"layer1": 0.75}
    assert numbers["step_1"]["activation_std"] == {"layer1": 1.0, "layer2": 2.0}
    assert numbers["dead_fraction_at_recorded_steps"]["layer1"]["32"] == 0.25


def test_cnn_summary_times_the_first_epoch_at_99_percent(tmp_path):
    """The time to 99.0% test accuracy is the process time at the end of the first epoch
    that reached it; a run that never did, or an old record without process_seconds, has
    None, and so has the median over runs that include one."""
    def record(framework, accs, process_seconds=True):
        epochs = [{"test_acc": a, **({"process_seconds": 10.0 + 7 * i} if process_seconds else {})}
                  for i, a in enumerate(accs)]
        return {"framework": framework, "epochs": epochs, "final_test_acc": accs[-1],
                "total_train_seconds": 6.0 * len(accs)}
    runs = {"numpy_seed0": record("numpy", [0.97, 0.985, 0.990, 0.992]),      # epoch 3: 10 + 14
            "numpy_seed1": record("numpy", [0.98, 0.9905, 0.989]),            # epoch 2: 10 + 7
            "numpy_seed2": record("numpy", [0.995]),                          # epoch 1: 10
            "pytorch_seed0": record("pytorch", [0.98, 0.989]),                # never
            "pytorch_seed1": record("pytorch", [0.991], process_seconds=False)}
    paths = []
    for name, rec in runs.items():
        paths.append(tmp_path / f"{name}_metrics.json")
        paths[-1].write_text(json.dumps(rec))
    summary = ref.cnn_summary(paths)
    key = "seconds_to_99.0%_test_acc"
    assert [summary["runs"][name][key] for name in runs] == [24.0, 17.0, 10.0, None, None]
    assert summary["median"]["numpy"] == {"final_test_acc": 0.992, "total_train_seconds": 18.0, key: 17.0}
    assert summary["median"]["pytorch"][key] is None
    assert summary["median"]["pytorch"]["total_train_seconds"] == 9.0


def test_process_seconds_counts_from_the_process_start():
    """A process that sleeps 1 s before it imports metrics_file reports at least that second
    (start-up counts), and not much more (0.01 s clock ticks, Python's start-up)."""
    import subprocess
    import sys
    code = ("import time; time.sleep(1.0); import sys; sys.path.insert(0, '.'); "
            "from harness import metrics_file; print(metrics_file.process_seconds())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(ref.__file__).parents[1])
    assert done.returncode == 0, done.stderr
    assert 1.0 <= float(done.stdout) < 10.0


def test_the_collapse_is_what_the_docs_say(mnist):
    """The committed --lr 10 --optimizer sgd run (learning/collapse_*): every ReLU of the second
    layer dead from the second record on, every weight gradient exactly 0, so the logits are
    the output bias for every image; softmax of that bias is the training set's share of each
    digit (1s the most common), so every test image is called a 1, and the test accuracy is the
    share of 1s in the test set: 1,135 of 10,000, as ANALYSIS.md and docs/experiments.md say."""
    import numpy as np

    from numpy_nn.neural_network import NeuralNetwork
    record = json.loads((ref.LEARNING / "collapse_metrics.json").read_text())
    assert record["config"]["lr"] == 10 and record["config"]["optimizer"] == "sgd"
    d = record["diagnostics"]
    assert d["steps"][1] == 32 and d["dead_fraction"]["layer2"][1:] == [1.0] * (len(d["steps"]) - 1)
    assert all(v == 0.0 for layer in d["grad_rms"].values() for v in layer[1:])
    net = NeuralNetwork.load(ref.LEARNING / "collapse_model.npz")
    _, y_train, x_test, y_test = mnist
    assert np.array_equal(net.predict(x_test), np.ones(len(y_test), dtype=int))
    assert (y_test == 1).sum() == 1135 and record["final_test_acc"] == 0.1135
    b = net.params["b3"].astype(np.float64)
    share = np.exp(b - b.max()) / np.exp(b - b.max()).sum()
    # SGD settles where the bias gradient, a batch's mean of softmax(b3) - onehot(y), is 0 on
    # average; each batch of 128 has its own mix of digits, so it wanders about that point
    # (1.8e-3 at most in this run). 4e-3 is half the gap between the 1s' share (0.1124) and the
    # next digit's (7s, 0.1044): within it, the largest share is still the 1s'.
    np.testing.assert_allclose(share, np.bincount(y_train, minlength=10) / len(y_train), atol=4e-3)
    for doc in ("ANALYSIS.md", "docs/experiments.md"):
        text = (ref.ROOT / doc).read_text()
        assert "1,135 of" in text and "11.35%" in text, doc


# ----------------------------------------------------------------------------- batch normalization

def test_the_paper_experiments_rate_is_the_one_with_the_lowest_training_loss(tmp_path, monkeypatch):
    """batchnorm_rate trains each of PAPER_RATES without BN and keeps the lowest final training
    loss; it never reads a test number."""
    losses = dict(zip(ref.PAPER_RATES, (2.3, 2.2, 1.4, 0.25, 0.12, 2.36)))
    commands = []

    def run(*command):
        commands.append(command)
        lr = command[command.index("--lr") + 1]
        metrics = command[command.index("--metrics") + 1]
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text(json.dumps({"epochs": [{"epoch_seconds": 1.0, "train_loss": losses[lr], "test_acc": 0.0}]}))
    monkeypatch.setattr(ref, "run", run)
    monkeypatch.setattr(ref, "BATCHNORM", tmp_path)
    lr, found = ref.batchnorm_rate()
    assert lr == "3" and found == losses
    assert all("--norm" not in command and "--no-diagnostics" in command for command in commands)


def test_the_committed_batchnorm_summary_is_what_its_code_writes_from_the_committed_runs(tmp_path):
    """results/reference/batchnorm/summary.md and summary.json are report/batchnorm_table.py's
    output from the committed records (the rate search's included), and the numbers
    docs/experiments.md and ANALYSIS.md cite are in them."""
    from report import batchnorm_table
    folder = ref.BATCHNORM
    search = {lr: json.loads((folder / "search" / f"lr_{lr}_metrics.json").read_text())["epochs"][-1]["train_loss"]
              for lr in ref.PAPER_RATES}
    paper = {f"{fw}_{n}_seed{s}": folder / "paper" / f"{fw}_{n}_seed{s}_metrics.json"
             for s in ref.PAPER_SEEDS for n in ("none", "batch") for fw in ("numpy", "pytorch")}
    depth = {name: folder / "depth" / f"{name}_metrics.json" for name in ref.DEPTH_RUNS}
    (tmp_path / "paper").mkdir()
    (tmp_path / "paper" / "numpy_batch_seed0_model.npz").write_bytes(
        (folder / "paper" / "numpy_batch_seed0_model.npz").read_bytes())
    batchnorm_table.write(tmp_path, paper, depth, {"lr": min(search, key=search.get), "search": search,
                                                   "epochs": ref.SEARCH_EPOCHS},
                          "python perf/reference_results.py --only batchnorm")
    assert (tmp_path / "summary.md").read_text() == (folder / "summary.md").read_text()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == json.loads((folder / "summary.json").read_text())
    accuracy = summary["test_accuracy"]["numpy"]
    cited = {"55.27%": accuracy["none"]["1000"], "93.85%": accuracy["batch"]["1000"],
             "97.29%": accuracy["none"]["50000"], "97.90%": accuracy["batch"]["50000"],
             "97.43%": accuracy["batch"]["10000"], "97.10%": {"median": summary["depth"]["depth_sigmoid_batch"]["test_acc"]},
             "11.35%": {"median": summary["depth"]["depth_sigmoid_none"]["test_acc"]}}
    experiments = (Path(ref.ROOT) / "docs" / "experiments.md").read_text()
    analysis = (Path(ref.ROOT) / "ANALYSIS.md").read_text()
    for text, value in cited.items():
        assert f"{100 * value['median']:.2f}%" == text
        assert text in analysis, text
    for text in ("11.35%", "97.10%", "97.90%", "97.29%"):
        assert text in experiments, text
    ratio = summary["depth"]["depth_sigmoid_none"]["first_over_last_step_1"]
    assert f"{ratio:.1e}".replace("e-06", "e-6") == "2.0e-6" and "2.0e-6" in experiments and "2.0e-6" in analysis


def test_the_readme_counts_the_twins_diff_as_it_is():
    """README's `diff numpy_nn/train.py pytorch_nn/train.py`: the lines of each side it names
    are the diff's (it said 23 for NumPy's side after --norm batch made it 24)."""
    import difflib
    import re
    numpy_lines, torch_lines = ((REPO / f"{twin}_nn" / "train.py").read_text().splitlines() for twin in ("numpy", "pytorch"))
    diff = list(difflib.ndiff(numpy_lines, torch_lines))
    mine, theirs = sum(line.startswith("- ") for line in diff), sum(line.startswith("+ ") for line in diff)
    said = re.search(r"`diff numpy_nn/train.py pytorch_nn/train.py`: (\d+) lines\s+of one against (\d+) of the other",
                     (REPO / "README.md").read_text())
    assert said and (int(said[1]), int(said[2])) == (mine, theirs), (mine, theirs)
