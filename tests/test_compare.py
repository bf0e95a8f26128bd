"""compare.py and what it draws (report/): the numbers in its table, its warnings, its
pictures, and a one-line error for every bad input. Most metrics files are made up here, in the shape Run.save writes, so no
test trains a network; the pictures of the trained networks, and the checks that weights are
their run's own, use untrained networks saved the way the trainers save them
(experiment.finish), with their real test accuracy in the record.
"""
import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

import compare
from conftest import (
    HARDWARE,
    SIZES,
    assert_png,
    error_of,
    made_up_diagnostics,
    make_record,
    mnist_test_set,
    run_main,
    run_result,
    saved_run,
    write,
)
from harness.experiment import TrainingDiverged, build_parser, finish
from harness.metrics_file import Run, file_sha256, load_metrics
from numpy_nn.neural_network import NeuralNetwork
from report import curves, inside, learning, table
from report import runs as report_runs

REPO = Path(__file__).resolve().parents[1]
FAN_INS = SIZES[:-1]  # the terms each layer's dot products sum


def rewrite(path, change):
    """Apply change(record) to a metrics file in place."""
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def twin_files(tmp_path, numpy_seconds=10.0, pytorch_seconds=25.0, **pytorch_changes):
    """numpy_metrics.json and pytorch_metrics.json with these total training seconds."""
    numpy = make_record("numpy", epoch_seconds=[numpy_seconds / 3] * 3)
    pytorch = make_record("pytorch", epoch_seconds=[pytorch_seconds / 3] * 3, **pytorch_changes)
    return [write(tmp_path, "numpy_metrics.json", numpy),
            write(tmp_path, "pytorch_metrics.json", pytorch)]


# ----------------------------------------------------------------------------- the schema

def test_load_metrics_reads_what_the_trainers_write(tmp_path):
    """The checker and the writer agree: a record written by experiment.finish loads unchanged,
    and names its weights file by SHA-256."""
    metrics = saved_run(tmp_path)
    record = load_metrics(metrics)
    assert record == json.loads(metrics.read_text())
    assert record["weights_sha256"] == file_sha256(tmp_path / "numpy_model.npz")
    assert record["config"]["dtype"] == "float32"


def with_diagnostics(change):
    """make_record() with made-up diagnostics, and change(diagnostics) applied to them."""
    def apply(record):
        record["diagnostics"] = made_up_diagnostics()
        change(record["diagnostics"])
    return broken(apply)


def broken(change):
    """make_record() with one change applied to a deep copy."""
    record = copy.deepcopy(make_record())
    change(record)
    return record


BAD_FILES = {
    "malformed JSON": ('{"schema": 1, "epochs": [', "is not valid JSON"),
    "not an object": ("[1, 2, 3]", "is not a metrics record (its JSON is a list)"),
    "unknown schema": (broken(lambda r: r.update(schema=99)),
                       "schema version 99, but this code reads versions 2 and 3"),
    "schema 1": (broken(lambda r: r.update(schema=1)), "run the trainer again to write a current file"),
    "NaN": (broken(lambda r: r["epochs"][1].update(test_loss=float("nan"))),
            "epochs[1]['test_loss'] should be a finite number, got nan"),
    "no schema": (broken(lambda r: r.pop("schema")), "schema version None"),
    "missing key": (broken(lambda r: r.pop("epochs")), "the record lacks the key 'epochs'"),
    "missing config key": (broken(lambda r: r["config"].pop("lr")), "config lacks the key 'lr'"),
    "missing epoch key": (broken(lambda r: r["epochs"][1].pop("test_acc")),
                          "epochs[1] lacks the key 'test_acc'"),
    "wrong type": (broken(lambda r: r.update(total_train_seconds="10")),
                   "the record['total_train_seconds'] should be a number, got '10'"),
    "bool for a number": (broken(lambda r: r["epochs"][0].update(test_acc=True)),
                          "should be a number, got True"),
    "zero seconds": (broken(lambda r: r["epochs"][0].update(epoch_seconds=0)), "should be positive"),
    # an epoch number past float's range: matplotlib's axis raised OverflowError (a traceback)
    "epoch 10**400": (broken(lambda r: r["epochs"][0].update(epoch=10 ** 400)),
                      "epochs[0]['epoch'] should be 1, the epochs in order from 1, got 10000000000000000000... "
                      "(401 characters)"),
    "epochs out of order": (broken(lambda r: r["epochs"][1].update(epoch=3)),
                            "epochs[1]['epoch'] should be 2, the epochs in order from 1, got 3"),
    "unknown framework": (broken(lambda r: r.update(framework="jax")), "unknown framework 'jax'"),
    "unknown status": (broken(lambda r: r.update(status="running")), "unknown status 'running'"),
    "diagnostics short of a step": (with_diagnostics(lambda d: d["update_ratio"]["layer2"].pop()),
                                    "diagnostics['update_ratio']['layer2'] should be a list of 3 values"),
    "diagnostics with a NaN": (with_diagnostics(lambda d: d["grad_rms"]["layer1"].__setitem__(0, float("nan"))),
                               "should hold finite numbers or null, got nan"),
    "diagnostics of another layer": (with_diagnostics(lambda d: d["dead_fraction"].pop("layer2")),
                                     "diagnostics['dead_fraction'] should have the layers layer1, layer2"),
    "zero epochs": (make_record(test_acc=(), epoch_seconds=(), status="interrupted"),
                    "no finished epochs (the run stopped during epoch 1), nothing to compare"),
}


def schema_2(record):
    """A record as the trainers wrote it before diagnostics (schema 2)."""
    record = copy.deepcopy(record)
    record["schema"] = 2
    del record["diagnostics"], record["config"]["activation"], record["config"]["weight_init"]
    return record


def test_schema_2_records_are_still_read(tmp_path, capsys):
    """A schema-2 record (tests/data/: the NumPy reference run as committed before schema 3)
    loads as the schema-3 record of the same run (ReLU, He initialisation, no diagnostics), and
    compare.py makes its table and curves, and no learning picture, from such records."""
    committed = load_metrics(REPO / "tests" / "data" / "schema2_numpy_metrics.json")
    assert committed["schema"] == 2 and committed["diagnostics"] is None
    assert (committed["config"]["activation"], committed["config"]["weight_init"]) == ("relu", "he")
    torch_init = schema_2(make_record("pytorch", config={"init": "torch"}))
    runs = [write(tmp_path, "numpy_metrics.json", schema_2(make_record())),
            write(tmp_path, "pytorch_metrics.json", torch_init)]
    assert load_metrics(runs[1])["config"]["weight_init"] is None     # PyTorch drew its own
    run_main("--runs", *runs, "--out-dir", tmp_path / "out", "--no-inside")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["comparison.md", "comparison.png"]
    assert "warning: the runs differ" not in capsys.readouterr().out


LAYER_SETS = {"mlp": ("layer1", "layer2", "layer3"), "cnn": ("conv1", "conv2", "linear"),
              "mlp with 3 hidden layers": ("layer1", "layer2", "layer3", "layer4")}


@pytest.mark.parametrize("model", LAYER_SETS)
def test_a_run_with_diagnostics_gets_its_learning_picture(tmp_path, capsys, model):
    """learning_<run>.png for each run whose record has diagnostics, one histogram per layer (a
    null loss and a missing end histogram, a run that blew up, are left out of the drawing, not
    refused)."""
    layers = LAYER_SETS[model]
    config = {"model": "cnn", "hidden": None} if model == "cnn" else {"hidden": [128, 64, 32][:len(layers) - 1]}
    with_diagnostics = make_record(config=config)
    with_diagnostics["diagnostics"] = made_up_diagnostics(layers=layers)
    runs = [write(tmp_path, "numpy_metrics.json", with_diagnostics),
            write(tmp_path, "pytorch_metrics.json", make_record("pytorch"))]
    run_main("--runs", *runs, "--out-dir", tmp_path / "out", "--no-inside")
    key = "numpy"                                                      # the stem of numpy_metrics.json
    assert f"wrote out/learning_{key}.png" in capsys.readouterr().out.replace(str(tmp_path) + "/", "")
    assert_png(tmp_path / "out" / f"learning_{key}.png")
    assert [p.name for p in (tmp_path / "out").glob("learning_*")] == [f"learning_{key}.png"]
    run = report_runs.load_runs([runs[0]])[0]
    figure = learning.learning_figure(run)
    titles = [ax.get_title().split("\n")[0] for ax in figure.axes if ": outputs on the probe images" in ax.get_title()]
    assert titles == [f"{name}: outputs on the probe images" for name in (*layers[:-1], "logits")]
    plt.close(figure)


def test_no_run_overwrites_the_default_runs_pictures(tmp_path, capsys, pictures_not_drawn):
    """Every picture carries its run's name, the stem of its metrics file: compare.py --runs
    with other runs, even a kept copy named numpy_metrics.json, writes beside the default
    runs' pictures, never over them. (The pictures are made but not drawn: each file's bytes
    name its figure and when it was made, so a file written again would change.)"""
    out = tmp_path / "results"
    out.mkdir()
    defaults = []
    for framework in ("numpy", "pytorch"):
        record = make_record(framework)
        record["diagnostics"] = made_up_diagnostics()
        defaults.append(write(out, f"{framework}_metrics.json", record))
    run_main("--runs", *defaults, "--out-dir", out, "--no-inside")
    first = {p.name: p.read_bytes() for p in out.glob("learning_*.png")}
    assert sorted(first) == ["learning_numpy.png", "learning_numpy_vs_pytorch.png", "learning_pytorch.png"]

    (tmp_path / "kept").mkdir()
    others = []
    for folder, name in ((tmp_path / "kept", "numpy_metrics.json"), (tmp_path, "some_run.json")):
        record = make_record("numpy", config={"activation": "sigmoid"})
        record["diagnostics"] = made_up_diagnostics(steps=(1, 40, 80))  # another picture
        others.append(write(folder, name, record))
    run_main("--runs", *others, "--out-dir", out, "--no-inside")
    printed = capsys.readouterr().out
    assert f"wrote {out / 'learning_numpy_kept.png'}" in printed, printed
    assert f"wrote {out / 'learning_some_run.png'}" in printed, printed
    assert sorted(p.name for p in out.glob("learning_*.png")) == [
        "learning_numpy.png", "learning_numpy_kept.png", "learning_numpy_kept_vs_some_run.png",
        "learning_numpy_vs_pytorch.png", "learning_pytorch.png", "learning_some_run.png"]
    assert {name: (out / name).read_bytes() for name in first} == first   # untouched


def test_no_runs_overwrite_another_comparison(tmp_path, monkeypatch, capsys, pictures_not_drawn):
    """compare.py --runs in the default results/ folder wrote its table and curves over the
    default pair's comparison.md and comparison.png, and two comparisons of other runs into one
    --out-dir wrote over each other's. Only the default pair (the runs named numpy and pytorch)
    writes comparison.*; other runs' carry their keys (comparison_<key>_vs_<key>) in any folder.
    (The pictures are made but not drawn, as in the test above.)"""
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setattr(compare, "RESULTS_DIR", results)   # the defaults of --runs and --out-dir
    for framework in ("numpy", "pytorch"):
        write(results, f"{framework}_metrics.json", make_record(framework))
    run_main("--no-inside")
    default = {name: (results / name).read_bytes() for name in ("comparison.md", "comparison.png")}
    assert default["comparison.md"].startswith(b"# NumPy vs PyTorch\n"), default["comparison.md"]

    others = [write(tmp_path, f"{name}.json", make_record("numpy", config={"activation": name}))
              for name in ("relu", "sigmoid")]
    run_main("--runs", *others, "--no-inside")
    printed = capsys.readouterr().out
    for name in ("comparison_relu_vs_sigmoid.md", "comparison_relu_vs_sigmoid.png"):
        assert f"wrote {results / name}" in printed, printed
    assert {name: (results / name).read_bytes() for name in default} == default   # untouched
    assert (results / "comparison_relu_vs_sigmoid.md").read_text().startswith("# activation: relu → sigmoid")

    kept = tmp_path / "kept"
    run_main("--runs", *others, "--no-inside", "--out-dir", kept)        # a folder of its own
    first = {p.name: p.read_bytes() for p in kept.iterdir()}
    assert sorted(first) == ["comparison_relu_vs_sigmoid.md", "comparison_relu_vs_sigmoid.png"]
    tanh = write(tmp_path, "tanh.json", make_record("numpy", config={"activation": "tanh"}))
    run_main("--runs", others[0], tanh, "--no-inside", "--out-dir", kept)  # other runs, the same folder
    assert sorted(p.name for p in kept.iterdir()) == sorted([*first, "comparison_relu_vs_tanh.md",
                                                             "comparison_relu_vs_tanh.png"])
    assert {name: (kept / name).read_bytes() for name in first} == first   # untouched
    run_main("--runs", results / "numpy_metrics.json", results / "pytorch_metrics.json", "--no-inside",
             "--out-dir", tmp_path / "pair")                                # the default pair, kept elsewhere
    assert sorted(p.name for p in (tmp_path / "pair").iterdir()) == ["comparison.md", "comparison.png"]
    many = [run_result(make_record(), f"NumPy {i}", f"a_rather_long_run_name_{i}") for i in range(10)]
    assert compare.overlay_name(many, "comparison", ".md") == "comparison_a_rather_long_run_name_0_and_9_more.md"


def test_run_keys_are_stems_made_unique():
    """run_keys: the stem less _metrics; a shared stem adds the folder, then the place."""
    from report.run import picture_name, run_keys
    paths = [Path("a/numpy_metrics.json"), Path("b/numpy_metrics.json"), Path("lr_1e-3.json"),
             Path("c/x.json"), Path("c/x.json")]
    assert run_keys(paths) == ["numpy_a", "numpy_b", "lr_1e-3", "x_c_4", "x_c_5"]
    runs = [run_result(make_record(), "NumPy (relu)", "relu"),
            run_result(make_record(), "NumPy (sigmoid)", "sigmoid")]
    assert picture_name("learning", runs[0]) == "learning_relu.png"
    assert picture_name("learning", *runs) == "learning_relu_vs_sigmoid.png"


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_metrics_file_is_one_error_line(tmp_path, case):
    content, expected = BAD_FILES[case]
    path = write(tmp_path, "bad.json", content)
    good = write(tmp_path, "good.json", make_record("pytorch"))
    message = error_of("--runs", good, path, "--out-dir", tmp_path / "out", "--no-inside")
    assert message.startswith(f"error: {path}") and expected in message, message
    assert not (tmp_path / "out").exists()  # nothing written for bad input


def test_missing_default_file_names_the_trainer_to_run(tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "RESULTS_DIR", tmp_path)  # where the defaults point
    monkeypatch.setattr(report_runs, "RESULTS_DIR", tmp_path)  # ... and what the message says to run
    write(tmp_path, "numpy_metrics.json", make_record("numpy"))
    message = error_of("--out-dir", tmp_path / "out")
    expected = "pytorch_metrics.json not found: run `python pytorch_nn/train.py` first"
    assert message == f"error: {tmp_path / expected}", message


def test_missing_runs_file_names_both_trainers(tmp_path):
    missing = tmp_path / "lr_1e-3.json"
    message = error_of("--runs", missing, "--out-dir", tmp_path)
    assert message == (f"error: {missing} not found: run `python numpy_nn/train.py --metrics {missing}` "
                       f"or `python pytorch_nn/train.py --metrics {missing}` first")


def test_cli_error_is_one_stderr_line_without_traceback(tmp_path):
    """Run as a program from another folder: imports work, the error is one line, exit 1."""
    done = subprocess.run([sys.executable, str(REPO / "compare.py"), "--runs", "missing.json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "error: missing.json not found: run `python numpy_nn/train.py --metrics missing.json` "
        "or `python pytorch_nn/train.py --metrics missing.json` first"]


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_unwritable_out_dir_is_one_error_line(tmp_path, where):
    runs = twin_files(tmp_path)
    blocker = write(tmp_path, "blocker", "I am a file")
    out_dir = blocker if where == "a file" else blocker / "results"
    message = error_of("--runs", *runs, "--out-dir", out_dir, "--no-inside")
    expected = "is a file, not a folder" if where == "a file" else "(Not a directory)"
    assert "out" in message and expected in message, message


def test_failed_write_is_one_error_line_and_leaves_no_temporary_file(tmp_path):
    out = tmp_path / "out"
    (out / "comparison.png").mkdir(parents=True)  # a folder where the picture should go
    message = error_of("--runs", *twin_files(tmp_path), "--out-dir", out, "--no-inside")
    assert "cannot write" in message and "comparison.png" in message, message
    assert sorted(p.name for p in out.iterdir()) == ["comparison.md", "comparison.png"]


# ----------------------------------------------------------------------------- the numbers

@pytest.mark.parametrize("numpy_s, pytorch_s, sentence", [
    (10.0, 25.0, "NumPy is 2.5x faster than PyTorch on this CPU (Test CPU): median 18,000 against "
                 "7,200 training samples/s (epochs 2-3 of each)."),
    (25.0, 10.0, "PyTorch is 2.5x faster than NumPy on this CPU (Test CPU): median 18,000 against "
                 "7,200 training samples/s (epochs 2-3 of each)."),
    (12.0, 12.3, "NumPy and PyTorch train equally fast on this CPU (Test CPU)"),
])
def test_speed_ratio_value_and_direction(tmp_path, numpy_s, pytorch_s, sentence):
    text = table.markdown(report_runs.load_runs(twin_files(tmp_path, numpy_s, pytorch_s)))
    assert sentence in text, text


def verdict_and_table(tmp_path, numpy_seconds, pytorch_seconds):
    """The markdown of a made-up pair with these epoch times, its speed verdict, and the
    median samples/s cell of each table row."""
    accuracy = (0.90, 0.95, 0.96, 0.97)
    runs = report_runs.load_runs([
        write(tmp_path, "numpy_metrics.json", make_record("numpy", accuracy, numpy_seconds)),
        write(tmp_path, "pytorch_metrics.json", make_record("pytorch", accuracy, pytorch_seconds))])
    text = table.markdown(runs)
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith(("| NumPy |", "| PyTorch |"))]
    column = next(i for i, name in enumerate(table.TABLE_HEADER) if name.startswith("samples/s"))
    return text, text.split("\n\n")[3].strip(), [row[column] for row in rows]


def test_speed_verdict_reads_the_tables_median(tmp_path):
    """A clean pair (epochs 2-4 within NOISY_SPREAD): the verdict quotes the two cells of the
    table's median samples/s, and its ratio, and nothing else. Both runs' fastest epochs are
    0.500 s: a verdict from the fastest epoch said "equally fast" beside a table 1.2x apart;
    and NumPy's fastest is its epoch 1, which the busy-machine note left out."""
    text, verdict, cells = verdict_and_table(tmp_path, (0.5, 0.6, 0.6, 0.55), (0.5, 0.5, 0.5, 0.5))
    assert cells == ["100,000", "120,000"], cells    # 60,000 samples / 0.6 s and / 0.5 s
    assert verdict == ("PyTorch is 1.2x faster than NumPy on this CPU (Test CPU): median 120,000 "
                       "against 100,000 training samples/s (epochs 2-4 of each)."), verdict
    assert "0.500" not in verdict and "note:" not in text, text


def test_a_noisy_run_gets_no_speed_verdict(tmp_path):
    """The issue's record: the fastest epochs agree, the medians are 10,021 and 85,053
    samples/s, because NumPy's later epochs ran beside other work (8.5x apart). No verdict,
    "too noisy", and the command that measures speed properly; the note quotes the same epochs."""
    numpy_seconds = (0.706, 5.9874, 5.9874, 0.706)      # median 5.9874 s: 10,021 samples/s
    pytorch_seconds = (0.706, 0.70544, 0.70544, 0.706)  # median 0.70544 s: 85,053 samples/s
    text, verdict, cells = verdict_and_table(tmp_path, numpy_seconds, pytorch_seconds)
    assert cells == ["10,021", "85,053"], cells
    assert verdict == (
        "The machine was too noisy to judge which trains faster: NumPy's epochs 2-4 took from 0.706 s "
        "to 5.987 s (8.48x) for the same work, more than the 1.3x a quiet machine shows. "
        "`python perf/benchmark.py` measures the speed properly (the two take turns, medians of "
        "repeats)."), verdict
    assert "note: NumPy's epochs 2-4 took from 0.706 s to 5.987 s for the same work" in text, text
    assert "note: PyTorch's" not in text and "equally fast" not in text


def test_the_time_panels_warn_of_a_busy_machine(tmp_path):
    """The picture warns as the table does (the PNG travels without the .md): under both time
    panels, the runs whose epochs 2 on spread more than 1.3x for the same work, with their
    fastest and slowest; a steady pair gets no warning, and epoch 1 alone (start-up costs)
    does not make a run noisy."""
    accuracy = (0.90, 0.95, 0.96, 0.97)

    def busy_notes(numpy_seconds, pytorch_seconds):
        runs = report_runs.load_runs([
            write(tmp_path, "numpy_metrics.json", make_record("numpy", accuracy, numpy_seconds)),
            write(tmp_path, "pytorch_metrics.json", make_record("pytorch", accuracy, pytorch_seconds))])
        fig = curves.plot_comparison(runs)
        notes = {ax.get_title(): [t.get_text() for t in ax.texts if t.get_gid() == "busy machine"] for ax in fig.axes}
        plt.close(fig)
        return notes

    notes = busy_notes((0.706, 5.9874, 5.9874, 0.706), (0.706, 0.70544, 0.70544, 0.706))
    warning = ("Busy machine: for the same work,\nNumPy's epochs 2-4 took 0.706-5.99 s (8.5x);\na quiet one stays "
               "within 1.3x. So these panels show\nhow busy it was, not which trains faster:\npython "
               "perf/benchmark.py measures that.")
    assert notes == {"Loss per epoch (train solid, test dashed)": [],
                     "Accuracy per epoch (train solid, test dashed)\nthe gap between train and test is where "
                     "overfitting shows": [],
                     "Training time per epoch (lower is faster; epoch 1 carries start-up costs)": [warning],
                     "Throughput per epoch (higher is faster)": [warning]}
    steady = busy_notes((16.0, 1.0, 1.2, 1.1), (2.0, 1.0, 1.0, 1.3))   # 1.2x and 1.3x: within
    assert not [note for texts in steady.values() for note in texts]


@pytest.mark.parametrize("epochs, had", [
    (1, "NumPy (sgd_lr0.1_bs128) has 1 epoch; NumPy (sgd_lr0.01_bs128) has 1 epoch"),
    (2, "NumPy (sgd_lr0.1_bs128) has 2 epochs; NumPy (sgd_lr0.01_bs128) has 2 epochs"),
])
def test_too_few_epochs_get_no_speed_verdict(tmp_path, epochs, had):
    """The newcomer's case: two 1-epoch sweep cells, the same model timed at 0.09 s and
    0.12 s, were called "1.4x faster". With fewer than MIN_STEADY_EPOCHS (2) epochs after
    epoch 1 there is no verdict, the sentence says why and names the benchmark; a one-epoch
    run's median cell says it is epoch 1 (the header says epochs 2+)."""
    paths = [write(tmp_path, f"sgd_lr{lr}_bs128.json",
                   make_record(test_acc=(0.9,) * epochs, epoch_seconds=(seconds,) * epochs,
                               config={"lr": lr, "optimizer": "sgd"}))
             for lr, seconds in ((0.1, 0.09), (0.01, 0.12))]
    text = table.markdown(report_runs.load_runs(paths))
    verdict = text.split("\n\n")[4].strip()
    assert verdict == (
        f"No speed verdict: {had}, and a verdict needs at least 2 epochs after epoch 1 from each "
        f"run (epoch 1 carries one-off start-up costs, and one epoch cannot show whether the "
        f"machine was busy). `python perf/benchmark.py` measures the speed properly (the two take "
        f"turns, medians of repeats)."), verdict
    assert "faster" not in text and "equally fast" not in text, text
    one_epoch_cell = "| 0.090 (epoch 1) | 666,667 |"  # 60,000 samples / 0.09 s
    assert (one_epoch_cell in text) == (epochs == 1), text


def test_counts_agree_with_their_nouns(tmp_path):
    """"1 epochs", "1 threads", "1 cores" never appear in compare's output."""
    paths = [write(tmp_path, f"{name}.json", make_record(
        test_acc=(0.9,), epoch_seconds=(1.0,), config={"epochs": 1, "lr": lr},
        hardware={"cores": 1, "blas_threads": 1})) for name, lr in (("a", 0.1), ("b", 0.2))]
    text = table.markdown(report_runs.load_runs(paths))
    assert "batch 128, 1 epoch, float32" in text and "Test CPU (1 core)" in text, text
    assert "openblas (1 thread)" in text and "has 1 epoch;" in text, text
    for wrong in ("1 epochs", "1 threads", "1 cores"):
        assert wrong not in text, text
    assert "batch 128, 3 epochs," in table.describe_config(run_result(make_record()))


def test_speed_ratio_names_both_devices_when_they_differ(tmp_path):
    runs = twin_files(tmp_path, 30.0, 3.0, hardware={"device": "cuda", "gpu": "Test GPU"})
    text = table.markdown(report_runs.load_runs(runs))
    assert "PyTorch on its GPU (Test GPU) is 10.0x faster than NumPy on its CPU (Test CPU)" in text, text
    assert "warning: the runs differ in hardware" in text


def test_a_cuda_graph_run_says_so_in_the_table_and_the_sentence(tmp_path):
    """--mode graph or compile is recorded in the config; the table's device cell and the
    speed sentence show it (an eager run, and any record without the key, shows nothing)."""
    runs = twin_files(tmp_path, 30.0, 3.0, hardware={"device": "cuda", "gpu": "Test GPU"})
    rewrite(runs[1], lambda record: record["config"].update(mode="graph"))
    text = table.markdown(report_runs.load_runs(runs))
    assert "PyTorch on its GPU (Test GPU) (graph) is 10.0x faster than NumPy on its CPU (Test CPU):" in text, text
    assert "| Test GPU (graph) |" in text, text


def test_table_row_numbers(tmp_path):
    """Final and best test accuracy (the first epoch that reached it), total seconds, the
    median seconds and throughput of epochs 2 on, and their spread."""
    record = make_record(test_acc=(0.90, 0.95, 0.95, 0.93), epoch_seconds=(6.0, 1.0, 2.0, 3.0))
    run = run_result(record)
    assert table.summarize(run) == {
        "final_test_acc": 0.93, "best_test_acc": 0.95, "best_epoch": 2, "total_seconds": 12.0,
        "median_epoch_seconds": 2.0, "median_samples_per_second": 30_000,  # epochs 2-4: 1, 2, 3 s
        "epoch_spread": 3.0}
    assert table.table_row(run).startswith(
        "| NumPy | MLP 784-128-64-10 | 4 | 93.00% | 95.00% (epoch 2) | – | – | 12.00 | 2.000 | 30,000 | 3.00x "
        "| Test CPU (2 cores) | "
        "openblas (2 threads) | cpu | python 3.11.7, numpy 1.0 |")


def test_same_framework_twice_gets_labels_from_file_names(tmp_path):
    paths = [write(tmp_path, "lr_1e-3.json", make_record(epoch_seconds=(1, 1, 1))),
             write(tmp_path, "lr_3e-3.json", make_record(epoch_seconds=(2, 2, 2), config={"lr": 3e-3}))]
    (tmp_path / "copy").mkdir()
    paths.append(write(tmp_path / "copy", "lr_1e-3.json", make_record()))
    runs = report_runs.load_runs(paths)
    assert [(run.name, run.key) for run in runs] == [  # two lr_1e-3: their folders' names added
        ("NumPy (lr_1e-3)", f"lr_1e-3_{tmp_path.name}"), ("NumPy (lr_3e-3)", "lr_3e-3"),
        ("NumPy (lr_1e-3) #3", "lr_1e-3_copy")]
    assert "NumPy (lr_1e-3) is 2.0x faster than NumPy (lr_3e-3)" in table.markdown(runs)


@pytest.mark.parametrize("second", ["the same path", "another name for it", "a link to it"])
def test_the_same_run_given_twice_is_refused(tmp_path, second):
    """Comparing a run with itself says nothing: one line, exit non-zero, nothing written."""
    path = write(tmp_path, "numpy_metrics.json", make_record())
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.json").symlink_to(path)
    other = {"the same path": path, "another name for it": tmp_path / "sub" / ".." / path.name,
             "a link to it": tmp_path / "link.json"}[second]
    message = error_of("--runs", path, other, "--out-dir", tmp_path / "out", "--no-inside")
    assert message == f"error: {other} is the same file as {path}: give each run once", message
    assert not (tmp_path / "out").exists()


# (part of the record, key, new value, the setting the warning names)
UNFAIR = [
    ("config", "model", "cnn", "model"),  # and no "hidden sizes": a CNN has none to compare
    ("config", "epochs", 5, "epochs"),
    ("config", "batch_size", 64, "batch size"),
    ("config", "optimizer", "sgd", "optimizer"),
    ("config", "lr", 0.1, "learning rate"),
    ("config", "schedule", "constant", "schedule"),
    ("config", "hidden", [256, 128], "hidden sizes"),
    ("config", "weight_decay", 1e-4, "weight decay"),
    ("config", "dropout", 0.2, "dropout"),
    ("config", "dtype", "float64", "dtype"),
    ("data", "dataset", "fashion-mnist", "dataset"),
    ("data", "train_samples", 5000, "training samples"),
    ("hardware", "cpu", "Other CPU", "hardware"),
    ("hardware", "device", "cuda", "hardware"),
]


@pytest.mark.parametrize("part, key, value, setting", UNFAIR, ids=[u[1] + "-" + u[0] for u in UNFAIR])
def test_a_changed_setting_is_named_and_only_hardware_is_warned_about(part, key, value, setting):
    """A setting that differs is the experiment (changed_settings names it); a difference in
    hardware is not a setting, and is warned about."""
    same = [run_result(make_record("numpy")), run_result(make_record("pytorch"), "PyTorch", "pytorch")]
    assert table.unfair_differences(same) == [] and table.changed_settings(same) == []
    other = make_record("pytorch")
    other[part][key] = value
    runs = [same[0], run_result(other, "PyTorch", "pytorch")]
    warnings, differing = table.unfair_differences(runs), table.changed_settings(runs)
    if setting == "hardware":
        assert len(warnings) == 1 and warnings[0].startswith("warning: the runs differ in hardware ("), warnings
        assert differing == []
    else:
        assert warnings == [] and [name for name, _ in differing] == [setting], (warnings, differing)


def test_an_experiment_is_framed_as_one(tmp_path, capsys, pictures_not_drawn):
    """ReLU against sigmoid: the report's first line names the change and what it did to
    learning (final test accuracy and loss, each layer's median gradient RMS), no "not a
    like-for-like" warning; the speed sentence is not qualified (the work is the same). A
    change of batch size changes the work per sample, and the speed sentence says so."""
    relu, sigmoid = make_record(), make_record(test_acc=(0.80, 0.85, 0.88), config={"activation": "sigmoid"})
    relu["diagnostics"] = made_up_diagnostics()
    sigmoid["diagnostics"] = made_up_diagnostics()
    sigmoid["diagnostics"]["grad_rms"]["layer1"] = [1e-5, 2e-5, 4e-5]      # median 2e-5
    runs = [write(tmp_path, "relu_metrics.json", relu), write(tmp_path, "sigmoid_metrics.json", sigmoid)]
    run_main("--runs", *runs, "--out-dir", tmp_path / "out", "--no-inside")
    first = capsys.readouterr().out.splitlines()[0]
    assert first == ("# activation: relu → sigmoid: test accuracy 93.00% → 88.00%, test loss 0.200 → "
                     "0.200, gradient RMS sqrt(mean(dW^2)), median over the run: layer1 1.0e-02 → "
                     "2.0e-05, layer2 1.0e-03 → 1.0e-03, logits 1.0e-04 → 1.0e-04"), first
    md = (tmp_path / "out" / "comparison_relu_vs_sigmoid.md").read_text()   # the runs' names: not the pair
    assert md.startswith(first + "\n") and "like-for-like" not in md, md
    assert "NumPy (relu) and NumPy (sigmoid) train equally fast on this CPU (Test CPU): median " \
           "60,000 against 60,000 training samples/s (epochs 2-3 of each).\n" in md, md

    rewrite(runs[1], lambda record: record["config"].update(activation="relu", batch_size=64))
    text = table.markdown(report_runs.load_runs(runs))
    assert text.startswith("# batch size: 128 → 64: test accuracy 93.00% → 88.00%"), text
    assert ("(epochs 2-3 of each). Their settings change the work per sample (batch size 128 → 64): "
            "this measures the settings as much as the implementations.") in text, text


def test_unfair_warning_printed_and_written_only_when_hardware_differs(tmp_path, capsys, pictures_not_drawn):
    out = tmp_path / "out"
    run_main("--runs", *twin_files(tmp_path), "--out-dir", out, "--no-inside")
    assert "warning:" not in capsys.readouterr().out
    assert "warning:" not in (out / "comparison.md").read_text()

    run_main("--runs", *twin_files(tmp_path, hardware={"cpu": "Other CPU"}), "--out-dir", out, "--no-inside")
    expected = "warning: the runs differ in hardware (NumPy CPU (Test CPU), PyTorch CPU (Other CPU))"
    assert expected in capsys.readouterr().out
    md = (out / "comparison.md").read_text()
    assert expected in md and "is 2.5x faster than PyTorch on its CPU (Other CPU)" in md


# ----------------------------------------------------------------------------- the figure

def test_comparison_figure_and_interrupted_run(tmp_path, capsys):
    """An interrupted run is drawn as far as it got, marked in the legend, table and a warning."""
    interrupted = make_record("pytorch", test_acc=(0.91, 0.94), epoch_seconds=(2.0, 2.0),
                              status="interrupted", config={"epochs": 3})
    paths = [write(tmp_path, "numpy_metrics.json", make_record("numpy")),
             write(tmp_path, "pytorch_metrics.json", interrupted)]
    out = tmp_path / "out"
    run_main("--runs", *paths, "--out-dir", out, "--no-inside")
    printed = capsys.readouterr().out
    assert "warning: PyTorch was interrupted after 2 of 3 epochs" in printed
    assert "| PyTorch (interrupted) | MLP 784-128-64-10 | 2 of 3 | 94.00% |" in (out / "comparison.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["comparison.md", "comparison.png"]  # no temp files
    assert_png(out / "comparison.png")

    runs = report_runs.load_runs(paths)
    assert table.describe_config(runs[1]) == (
        "PyTorch (interrupted): MLP 784-128-64-10, mnist (60,000 train), adam lr 0.003 cosine, "
        "batch 128, 3 epochs, float32, CPU (Test CPU)")
    fig = curves.plot_comparison(runs)
    loss_ax = fig.axes[0]
    lines = {line.get_label(): line for line in loss_ax.get_lines()}
    assert list(lines["PyTorch (interrupted) test"].get_xdata()) == [1, 2]
    assert "PyTorch (interrupted) train" in [t.get_text() for t in loss_ax.get_legend().get_texts()]
    assert lines["NumPy test"].get_linestyle() == "--" and lines["NumPy train"].get_linestyle() == "-"
    plt.close(fig)


# ----------------------------------------------------------------------------- looking inside

def test_confusion_matrix_matches_bincount():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 10, 10_000), rng.integers(0, 10, 10_000)
    counts = inside.confusion_matrix(y_true, y_pred)
    reference = np.bincount(10 * y_true + y_pred, minlength=100).reshape(10, 10)
    np.testing.assert_array_equal(counts, reference)
    assert counts.sum() == 10_000
    small = inside.confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 2, 1, 2]), n_classes=3)
    np.testing.assert_array_equal(small, [[1, 0, 1],
                                          [0, 1, 0],
                                          [0, 0, 1]])


def test_most_confident_mistakes_picks_the_surest_wrong_answers():
    probs = np.array([[0.10, 0.80, 0.10],    # true 1: right
                      [0.70, 0.20, 0.10],    # true 1: wrong, 70% sure
                      [0.05, 0.05, 0.90],    # true 0: wrong, 90% sure
                      [0.30, 0.30, 0.40],    # true 2: right
                      [0.10, 0.60, 0.30],    # true 2: wrong, 60% sure
                      [0.98, 0.01, 0.01]])   # true 0: right, and the surest of all
    y = np.array([1, 1, 0, 2, 2, 0])
    assert list(inside.most_confident_mistakes(probs, y, 2)) == [2, 1]
    assert list(inside.most_confident_mistakes(probs, y, 10)) == [2, 1, 4]
    assert list(inside.most_confident_mistakes(probs, probs.argmax(axis=1), 10)) == []


def test_pictures_of_saved_models(tmp_path, capsys):
    """Untrained networks saved as the trainers save them, one found beside its metrics file
    and one through the flag: each is checked against its record, every picture is written,
    and the counts behind the confusion matrix add up."""
    import torch

    from pytorch_nn.model import load_model

    (tmp_path / "numpy").mkdir()
    (tmp_path / "pytorch").mkdir()
    runs = [saved_run(tmp_path / "numpy", "numpy"), saved_run(tmp_path / "pytorch", "pytorch")]
    flag = tmp_path / "numpy_flag.npz"
    (tmp_path / "numpy" / "numpy_model.npz").rename(flag)
    out = tmp_path / "out"
    run_main("--runs", *runs, "--out-dir", out, "--numpy-weights", flag)
    pictures = ["comparison.png", "confusion_numpy.png", "confusion_pytorch.png", "mistakes_numpy.png",
                "mistakes_pytorch.png", "weights_numpy.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(pictures + ["comparison.md"])
    for name in pictures:
        assert_png(out / name)
    printed = capsys.readouterr().out
    assert f"checked {flag}: its SHA-256 and its " in printed, printed
    assert f"checked {tmp_path / 'pytorch' / 'pytorch_model.pt'}: its SHA-256" in printed, printed

    x_test, y_test = mnist_test_set()
    with torch.inference_mode():
        model = load_model(tmp_path / "pytorch" / "pytorch_model.pt")
        torch_predicted = model(torch.from_numpy(x_test)).argmax(dim=1).numpy()
    run = report_runs.load_runs([runs[1]])[0]
    run.weights = tmp_path / "pytorch" / "pytorch_model.pt"
    evaluation = report_runs.evaluate_weights(run, x_test, y_test)
    predicted = evaluation.logits.argmax(axis=1)
    np.testing.assert_array_equal(predicted, torch_predicted)  # PyTorch weights evaluated by PyTorch
    assert evaluation.correct == round(run.record["final_test_acc"] * 10_000)
    counts = inside.confusion_matrix(y_test, predicted)
    assert counts.sum() == 10_000
    np.testing.assert_array_equal(counts.sum(axis=1), np.bincount(y_test, minlength=10))  # rows: truth
    np.testing.assert_array_equal(counts.sum(axis=0), np.bincount(predicted, minlength=10))
    assert np.trace(counts) == evaluation.correct


def test_missing_weights_are_skipped_with_a_note(tmp_path, capsys):
    out = tmp_path / "out"
    run_main("--runs", *twin_files(tmp_path), "--out-dir", out)
    printed = capsys.readouterr().out
    assert (f"note: no saved weights for NumPy (neither {tmp_path / 'weights'} nor no/such/weights "
            f"exists): skipping its pictures; pass the weights written with "
            f"{tmp_path / 'numpy_metrics.json'} as --numpy-weights") in printed, printed
    assert "note: no saved weights for PyTorch" in printed
    assert sorted(p.name for p in out.iterdir()) == ["comparison.md", "comparison.png"]


def test_bad_weights_are_one_error_line(tmp_path):
    garbage = write(tmp_path, "garbage.pt", "not a checkpoint")
    pytorch = make_record("pytorch")
    pytorch["weights_sha256"] = file_sha256(garbage)  # the right file, but unreadable
    runs = [write(tmp_path, "numpy_metrics.json", make_record()),
            write(tmp_path, "pytorch_metrics.json", pytorch)]
    common = ["--runs", *runs, "--out-dir", tmp_path / "out"]
    message = error_of(*common, "--pytorch-weights", garbage)
    assert f"cannot read {garbage} as PyTorch weights" in message, message

    message = error_of(*common, "--numpy-weights", tmp_path / "none.npz")
    assert message == f"error: --numpy-weights {tmp_path / 'none.npz'} not found"

    NeuralNetwork((784, 32, 10)).save(tmp_path / "small.npz")
    two_numpy = [write(tmp_path, "a.json", make_record()), write(tmp_path, "b.json", make_record())]
    message = error_of("--runs", *two_numpy, "--out-dir", tmp_path / "out",
                       "--numpy-weights", tmp_path / "small.npz")
    assert message == "error: --numpy-weights needs exactly one NumPy run with a result, got 2"
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- a run's own weights

def test_a_kept_run_uses_the_weights_beside_its_metrics(tmp_path, capsys, pictures_not_drawn):
    """The issue's case: keep a run (metrics and weights) in another folder, train again with
    the default paths, compare the kept run. Its metrics record the default path, which now
    holds the new run's weights; the kept copy is the one whose SHA-256 the record names."""
    results, kept = tmp_path / "results", tmp_path / "kept"
    results.mkdir()
    kept.mkdir()
    kept_metrics = shutil.copy(saved_run(results, seed=0), kept)
    shutil.copy(results / "numpy_model.npz", kept)
    saved_run(results, seed=1)  # retrained: results/numpy_model.npz is another network now
    run_main("--runs", kept_metrics, "--out-dir", tmp_path / "out")
    printed = capsys.readouterr().out
    assert f"checked {kept / 'numpy_model.npz'}: its SHA-256 and its" in printed, printed
    assert (tmp_path / "out" / "confusion_numpy.png").is_file()


@pytest.fixture
def kept_without_weights(tmp_path):
    """A kept metrics file whose weights were written over by a later run (default paths)."""
    results, kept = tmp_path / "results", tmp_path / "kept"
    results.mkdir()
    kept.mkdir()
    kept_metrics = Path(shutil.copy(saved_run(results, seed=0), kept))
    saved_run(results, seed=1)
    return kept_metrics


def test_weights_written_over_by_a_later_run_are_refused(tmp_path, kept_without_weights):
    kept = kept_without_weights
    message = error_of("--runs", kept, "--out-dir", tmp_path / "out")
    assert message == (f"error: {tmp_path / 'results' / 'numpy_model.npz'} is not the weights file "
                       f"written with {kept} (the SHA-256 it records differs: written over by a later "
                       f"run?): pass its own weights with --numpy-weights, or use --no-inside"), message
    # both candidates there, neither the run's own: both named
    shutil.copy(tmp_path / "results" / "numpy_model.npz", kept.parent)
    message = error_of("--runs", kept, "--out-dir", tmp_path / "out")
    assert message.startswith(f"error: neither {kept.parent / 'numpy_model.npz'} nor "
                              f"{tmp_path / 'results' / 'numpy_model.npz'} is the weights file "
                              f"written with {kept} "), message
    assert not (tmp_path / "out").exists()
    run_main("--runs", kept, "--out-dir", tmp_path / "out", "--no-inside")  # the way out it names


def test_weights_of_another_run_are_refused(tmp_path, kept_without_weights):
    """--numpy-weights from another run of the same architecture: one line naming both files."""
    other = tmp_path / "results" / "numpy_model.npz"
    message = error_of("--runs", kept_without_weights, "--out-dir", tmp_path / "out",
                       "--numpy-weights", other)
    assert message == (f"error: --numpy-weights {other} is not the weights file written with "
                       f"{kept_without_weights} (the SHA-256 it records differs): pass that run's "
                       f"own weights file, or use --no-inside"), message
    assert not (tmp_path / "out").exists()


def test_a_doctored_accuracy_is_refused(tmp_path):
    """The right weights (SHA-256 as recorded) but a record one test image off: refused, as
    none of the untrained network's right answers is within rounding of a wrong one."""
    metrics = saved_run(tmp_path)
    record = load_metrics(metrics)
    right = round(record["final_test_acc"] * 10_000)

    def one_less(record):
        record["final_test_acc"] = record["epochs"][-1]["test_acc"] = (right - 1) / 10_000
    rewrite(metrics, one_less)
    message = error_of("--runs", metrics, "--out-dir", tmp_path / "out")
    assert message == (f"error: {tmp_path / 'numpy_model.npz'} gets {right:,} of 10,000 test images "
                       f"right here but {metrics} records {right - 1:,} of 10,000: the weights and the "
                       f"record disagree, so no picture is made from them; run the trainer again, or "
                       f"use --no-inside"), message
    assert not (tmp_path / "out").exists()
    x_test, y_test = mnist_test_set()
    logits = NeuralNetwork.load(tmp_path / "numpy_model.npz").forward(x_test)[0]
    assert report_runs.rounding_ties(logits, y_test, FAN_INS) == (0, 0)  # so no slack: one image is too many


def test_rounding_ties_are_the_only_slack():
    """A float32 margin within rounding of the top logit is a tie when the true class is one of
    the tied, and only then; float64 rounding is 2^29 times finer, so there it is no tie.
    The accuracy check allows exactly the ties, each in the direction it could go."""
    logits = np.array([[5.0, 5.0 + 2e-5, 0.0],    # margin 2e-5 <= 1.1e-5 x (1 + 5): tied, right
                       [5.0 + 2e-5, 5.0, 0.0],    # the same tie, predicted wrong
                       [5.0, 5.0 + 2e-5, 0.0],    # tied, but the true class is neither: no matter
                       [5.0, 5.0 + 1e-4, 0.0],    # margin 1e-4 > 6.7e-5: clear
                       [3.0, 3.0, 3.0]])          # exactly equal: a tie in any dtype, predicted 0
    y = np.array([1, 1, 2, 1, 0])
    assert report_runs.rounding_ties(logits.astype(np.float32), y, FAN_INS) == (2, 1)  # rows 0, 4; row 1
    assert report_runs.rounding_ties(logits.astype(np.float64), y, FAN_INS) == (1, 0)  # row 4

    record = make_record(test_acc=(0.6,), data={"test_samples": 5})  # records 3 of 5 right
    run = run_result(record)
    run.weights = Path("w.npz")
    logits = logits.astype(np.float32)
    for correct in (2, 3, 4, 5):  # here: 3 + 2 that could be lost, - 1 that could be gained
        line = report_runs.check_accuracy(run, report_runs.Evaluation(logits, correct, FAN_INS, {}), y)
        assert line.startswith(f"checked w.npz: its SHA-256 and its {correct} of 5 test images right")
    for correct in (1, 6):
        with pytest.raises(report_runs.CompareError, match="could turn only 2 of them wrong and 1 other right"):
            report_runs.check_accuracy(run, report_runs.Evaluation(logits, correct, FAN_INS, {}), y)
    with pytest.raises(report_runs.CompareError, match="gets 5 of 5 test images right here but"):
        report_runs.check_accuracy(run, report_runs.Evaluation(logits.astype(np.float64), 5, FAN_INS, {}), y)


def test_data_dir_reaches_the_test_set_loader(tmp_path, monkeypatch, pictures_not_drawn):
    metrics, test_set = saved_run(tmp_path), mnist_test_set()
    asked = []

    def fake_load_mnist(dataset, data_dir=None):
        asked.append((dataset, data_dir))
        return test_set * 2
    monkeypatch.setattr(report_runs, "load_mnist", fake_load_mnist)
    report_runs.load_test_set.cache_clear()
    try:
        run_main("--runs", metrics, "--out-dir", tmp_path / "out", "--data-dir", tmp_path / "cache")
    finally:
        report_runs.load_test_set.cache_clear()
    assert asked == [("mnist", tmp_path / "cache")]
    assert (tmp_path / "out" / "confusion_numpy.png").is_file()


# ----------------------------------------------------------------------------- diverged runs

def test_a_diverged_run_is_listed_without_numbers_or_pictures(tmp_path, capsys):
    """A run as the trainer writes it when the loss became NaN: listed with where it
    diverged, and no table row, speed ratio, curves or pictures."""
    args = build_parser("numpy", "test").parse_args(
        ["--metrics", str(tmp_path / "numpy_metrics.json"), "--weights", str(tmp_path / "w.npz")])
    run = Run("numpy", args, {"numpy": np.__version__}, HARDWARE, n_train=60000, n_test=10000)
    run.diverged = TrainingDiverged("the loss became nan", epoch=1, batch=5, loss=float("nan"))
    with pytest.raises(SystemExit):
        finish(run, args)
    paths = [tmp_path / "numpy_metrics.json", write(tmp_path, "pytorch_metrics.json", make_record("pytorch"))]
    out = tmp_path / "out"
    run_main("--runs", *paths, "--out-dir", out)
    printed = capsys.readouterr().out
    md = (out / "comparison.md").read_text()
    assert "- NumPy diverged at epoch 1, batch 5 (loss nan): no result" in md, md
    # the made-up PyTorch record ran 3 epochs, the trainer's default is 10: named as the experiment
    assert md.startswith("# epochs: 10 → 3: test accuracy diverged → 93.00%, test loss diverged → 0.200\n"), md
    assert "\nNumPy (diverged) vs PyTorch\n" in md, md
    assert "| NumPy" not in md and "| PyTorch | MLP 784-128-64-10 | 3 | 93.00% |" in md
    assert "faster" not in md and "warning" not in md, md
    assert "note: no saved weights for NumPy" not in printed  # it has none, and none is sought
    assert sorted(p.name for p in out.iterdir()) == ["comparison.md", "comparison.png"]

    runs = report_runs.load_runs(paths)
    fig = curves.plot_comparison(runs)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["PyTorch train", "PyTorch test"], labels
    assert "NumPy (diverged)" in fig._suptitle.get_text()
    plt.close(fig)

    message = error_of("--runs", *paths, "--out-dir", out, "--numpy-weights", paths[1])
    assert message == "error: --numpy-weights needs exactly one NumPy run with a result, got 0"


def test_every_run_diverged_is_one_error_line(tmp_path):
    paths = [write(tmp_path, "numpy_metrics.json", make_record(test_acc=(), epoch_seconds=(),
                                                               status="diverged")),
             write(tmp_path, "pytorch_metrics.json", make_record("pytorch", status="diverged"))]
    message = error_of("--runs", *paths, "--out-dir", tmp_path / "out")
    assert message == ("error: every run diverged, so there is nothing to compare (NumPy at epoch 1, "
                       "batch 5 (loss nan); PyTorch at epoch 4, batch 5 (loss nan)); train again "
                       "with a smaller --lr"), message
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- as a program

@pytest.mark.slow
def test_stdout_closed_early_still_writes_every_file(tmp_path):
    """`python compare.py | head -1` when head has gone before compare.py prints: without care
    the first print raises BrokenPipeError, a traceback, exit 1, and no picture is written.
    The reader here closes the pipe at once, so that the pipe is surely closed when it prints.
    Slow: a process of its own measures the robustness sets in full (10,000 digits each)."""
    runs = [saved_run(tmp_path), write(tmp_path, "pytorch_metrics.json", make_record("pytorch"))]
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(REPO / "compare.py"), "--runs", *map(str, runs),
                             "--out-dir", str(out)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=300) == 0, stderr
    assert stderr == ""
    assert sorted(p.name for p in out.iterdir()) == [
        "comparison.md", "comparison.png", "confusion_numpy.png", "mistakes_numpy.png", "weights_numpy.png"]


# One field of a real record (a committed CNN run with diagnostics) edited by hand, each to a
# value of the right JSON type or shape for the old checks but one no run writes; each path is
# a chain of keys, and the error must name the field.
REAL_RECORD = REPO / "results" / "reference" / "cnn" / "numpy_seed0_metrics.json"
HAND_EDITS = {
    "histograms not a mapping": (("diagnostics", "histograms", "init"), [1, 2], "['histograms']['init']"),
    "histograms a list": (("diagnostics", "histograms"), [], "diagnostics['histograms']"),
    "histogram a string": (("diagnostics", "histograms", "end", "conv1"), "x", "['end']['conv1']"),
    "histogram count negative": (("diagnostics", "histograms", "end", "conv1", "counts", 0), -1, "['counts']"),
    "histogram count a fraction": (("diagnostics", "histograms", "end", "conv1", "counts", 0), 0.5, "['counts']"),
    "histogram edge text": (("diagnostics", "histograms", "init", "linear", "edges", 1), "a", "['edges']"),
    "histogram edges decreasing": (("diagnostics", "histograms", "init", "linear", "edges", 0), 1e9, "['edges']"),
    "steps a fraction": (("diagnostics", "steps", 1), 1.5, "diagnostics['steps']"),
    "steps null": (("diagnostics", "steps", 0), None, "diagnostics['steps']"),
    "every zero": (("diagnostics", "every"), 0, "diagnostics['every']"),
    "probe images negative": (("diagnostics", "probe_images"), -5, "diagnostics['probe_images']"),
    "dead fraction above 1": (("diagnostics", "dead_fraction", "conv1", 0), 2.0, "['dead_fraction']['conv1']"),
    "gradient negative": (("diagnostics", "grad_rms", "linear", 0), -1.0, "['grad_rms']['linear']"),
    "diagnostics loss negative": (("diagnostics", "loss", 0), -2.0, "diagnostics['loss']"),
    "accuracy 1e308": (("epochs", 0, "test_acc"), 1e308, "epochs[0]['test_acc']"),
    "accuracy negative": (("epochs", 1, "train_acc"), -0.1, "epochs[1]['train_acc']"),
    "loss negative": (("epochs", 0, "train_loss"), -1.0, "epochs[0]['train_loss']"),
    "epoch number zero": (("epochs", 0, "epoch"), 0, "epochs[0]['epoch']"),
    "throughput zero": (("epochs", 2, "samples_per_second"), 0, "epochs[2]['samples_per_second']"),
    "threads text": (("epochs", 0, "threads"), "two", "epochs[0]['threads']"),
    "test samples negative": (("data", "test_samples"), -10, "data['test_samples']"),
    "train samples zero": (("data", "train_samples"), 0, "data['train_samples']"),
    "batch size negative": (("config", "batch_size"), -1, "config['batch_size']"),
    "epochs zero": (("config", "epochs"), 0, "config['epochs']"),
    "learning rate negative": (("config", "lr"), -0.1, "config['lr']"),
    "dropout above 1": (("config", "dropout"), 1.5, "config['dropout']"),
    "weight decay negative": (("config", "weight_decay"), -1e-4, "config['weight_decay']"),
    "limit negative": (("config", "limit"), -5, "config['limit']"),
    "hidden sizes text": (("config", "hidden"), ["a", 64], "config['hidden']"),
    "weights a number": (("config", "weights"), 5, "config['weights']"),
    "mode a number": (("config", "mode"), 3, "config['mode']"),
    "cores negative": (("hardware", "cores"), -2, "hardware['cores']"),
    "gpu a number": (("hardware", "gpu"), 7, "hardware['gpu']"),
    "version a number": (("versions", "numpy"), 2.4, "versions"),
    "training time negative": (("total_train_seconds",), -3.0, "['total_train_seconds']"),
}


@pytest.mark.parametrize("case", HAND_EDITS)
def test_a_hand_edited_record_is_refused_in_one_line_naming_the_field(tmp_path, case):
    keys, value, field = HAND_EDITS[case]
    record = json.loads(REAL_RECORD.read_text())
    load_metrics(REAL_RECORD)  # the record as committed is good
    part = record
    for key in keys[:-1]:
        part = part[key]
    part[keys[-1]] = value
    if keys[:2] == ("epochs", len(record["epochs"]) - 1) and keys[-1] == "test_acc":
        record["final_test_acc"] = value  # consistent with the last epoch, as a careful editor would
    path = write(tmp_path, "edited.json", record)
    # in this process: a reader that failed on the value would raise here (a traceback), not exit
    message = error_of("--runs", path, "--no-inside", "--out-dir", tmp_path / "out")
    assert message.startswith(f"error: {path}: ") and field in message, message
    assert not (tmp_path / "out").exists()  # nothing written for bad input


@pytest.mark.parametrize("used, said", [((1, 1, 1), "openblas (1 thread)"), ((2, 1, 1), "openblas (1-2 threads)"),
                                        ((None, None, None), "openblas (2 threads)")])
def test_the_table_gives_the_threads_the_products_used(used, said):
    """The BLAS cell gives the threads each epoch's products used, as the epoch lines show them
    (a learner saw '1 thread' on every epoch line and '2 threads' in the table, the library's
    own count, which the trainer had lowered on a busy machine); a record without them, the
    library's count."""
    record = make_record()
    for epoch, threads in zip(record["epochs"], used):
        if threads:
            epoch["threads"] = threads
    assert f"| {said} |" in table.table_row(run_result(record))
