"""demo/models.py: which runs the demo serves. A run's network is used only when a weights
file has the SHA-256 its metrics file records, as in compare.py; every run left out gets a
one-line note that says why."""
import json
import shutil

import numpy as np

from demo.models import default_runs, find_models
from demo_helpers import REFERENCE
from harness.flags import RESULTS_DIR
from harness.metrics_file import sha256_bytes
from report.runs import how_to_make


def copied_run(folder, **changes):
    """The committed NumPy MLP run copied into folder, its weights beside its metrics and
    recorded at a path that does not exist (so only the copy can match), with changes made
    to the record: {key: value} at the top, or config={...}. Returns the metrics path."""
    record = json.loads((REFERENCE / "numpy_metrics.json").read_text())
    record["config"]["weights"] = str(folder / "elsewhere" / "numpy_model.npz")
    record["config"].update(changes.pop("config", {}))
    record.update(changes)
    shutil.copy(REFERENCE / "numpy_model.npz", folder / "numpy_model.npz")
    metrics = folder / "numpy_metrics.json"
    metrics.write_text(json.dumps(record))
    return metrics


def test_the_copy_beside_its_metrics_is_used(tmp_path):
    metrics = copied_run(tmp_path)
    models, notes = find_models([metrics])
    assert [model.name for model in models] == ["NumPy"] and notes == []
    probabilities, hidden = models[0].read(np.zeros((28, 28), np.float32))
    assert abs(probabilities.sum() - 1) < 1e-12          # a softmax, in float64
    assert [len(layer) for layer in hidden] == [128, 64]


def test_weights_of_another_run_are_not_used(tmp_path):
    metrics = copied_run(tmp_path)
    shutil.copy(REFERENCE / "cnn" / "numpy_seed0_model.npz", tmp_path / "numpy_model.npz")
    assert find_models([metrics]) == ([], [f"no weights file has the SHA-256 that {metrics} records "
                                           f"(written over by a later run?): train it again"])


def test_a_network_trained_on_clothes_is_not_used(tmp_path):
    metrics = copied_run(tmp_path, config={"dataset": "fashion-mnist"})
    assert find_models([metrics]) == ([], [f"{metrics} was trained on fashion-mnist, not on digits"])


def test_a_diverged_run_is_noted(tmp_path):
    metrics = copied_run(tmp_path, status="diverged", weights_sha256=None, final_test_acc=None,
                         diverged={"epoch": 1, "batch": 5, "loss": "nan"})
    assert find_models([metrics]) == ([], [f"{metrics} diverged: it has no weights"])


def test_weights_that_do_not_load_are_noted(tmp_path):
    """A file with the recorded SHA-256 that is not an .npz at all (the record made to name it)."""
    garbage = b"not an npz file"
    metrics = copied_run(tmp_path, weights_sha256=sha256_bytes(garbage))
    (tmp_path / "numpy_model.npz").write_bytes(garbage)
    models, notes = find_models([metrics])
    assert models == [] and notes == [f"cannot load {tmp_path / 'numpy_model.npz'} (ValueError): train it again"]


def test_a_missing_run_says_which_command_trains_it(tmp_path):
    missing = tmp_path / "numpy_cnn_metrics.json"
    assert find_models([missing]) == ([], [f"{missing} not found: run `python numpy_nn/train.py --metrics "
                                          f"{missing}` or `python pytorch_nn/train.py --metrics {missing}` first"])


def test_the_page_reads_each_networks_augmented_run_where_there_is_one(tmp_path):
    """--augment's runs read drawn digits better (results/reference/augment/summary.md), so the
    page takes them first; a network with only its plain run keeps it; one with neither is
    asked for with --augment."""
    for name in ("numpy", "numpy_augment", "pytorch", "pytorch_cnn_augment"):
        (tmp_path / f"{name}_metrics.json").write_text("{}")
    assert default_runs(tmp_path) == [tmp_path / f"{name}_metrics.json" for name in
                                      ("numpy_augment", "pytorch", "numpy_cnn_augment", "pytorch_cnn_augment")]
    assert how_to_make(RESULTS_DIR / "numpy_cnn_augment_metrics.json") == \
        "run `python numpy_nn/train.py --model cnn --augment` first"
    assert how_to_make(RESULTS_DIR / "pytorch_metrics.json") == "run `python pytorch_nn/train.py` first"
