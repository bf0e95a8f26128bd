"""compare.py with CNN runs: the names, the table and the warnings beside an MLP, the
weights file of the wrong kind refused in words, and the pictures only a CNN gets: its
first-layer filters and the feature maps of one test digit, checked against the weights
and against PyTorch's own convolution.

The CNN runs are untrained networks saved as the trainers save them (experiment.finish),
with their real test accuracy in the record, built and compared once for the module. Here the
test set is MNIST's first TEST_IMAGES test images (first_test_images, below): compare.py
evaluates a NumPy CNN run with the plain layers (report/runs.py), and a pass over all 10,000
took ~15 s on a busy 2-core machine, twice per run. The names, the check of the weights
against the record and the pictures come out of any test set the same way.
"""
import contextlib
import io
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

import compare
from conftest import (
    SIZES,
    assert_png,
    error_of,
    make_record,
    mnist_test_set,
    pictures_not_drawn_in,
    run_main,
    run_result,
    saved_run,
    write,
)
from harness.metrics_file import file_sha256
from numpy_nn.cnn import CNN
from numpy_nn.neural_network import NeuralNetwork
from pytorch_nn import cnn as torch_cnn
from pytorch_nn.model import MLP
from pytorch_nn.numpy_weights import numpy_params
from report import curves, inside, table
from report import runs as report_runs
from report.run import name_runs

MLP_NAME, CNN_NAME = "MLP 784-128-64-10", "CNN 32-64 conv"
TEST_IMAGES = 1000


@pytest.fixture(autouse=True, scope="module")
def first_test_images():
    """The test set compare.py and the runs saved here are evaluated on: the first TEST_IMAGES
    of MNIST's test images (see the module's docstring)."""
    real = report_runs.load_test_set

    def first(dataset, *data_dir):
        x_test, y_test = real(dataset, *data_dir)
        return x_test[:TEST_IMAGES], y_test[:TEST_IMAGES]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report_runs, "load_test_set", first)   # what saved_run and compare's checks read
        patch.setattr(compare, "load_test_set", first)       # what compare draws the pictures from
        yield


def cnn_record(framework="numpy", **changes):
    """make_record for a CNN run: the record a trainer writes with --model cnn."""
    record = make_record(framework, **changes)
    record["config"].update(model="cnn", hidden=None)
    return record


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """A NumPy MLP, a NumPy CNN and a PyTorch CNN run, compared once with every picture; the
    pictures only a CNN gets (its filters and feature maps) drawn, the others made but not
    drawn (conftest.pictures_not_drawn_in: test_compare.py draws those kinds).
    Returns the folder, the metrics files, the output folder, what compare printed, and what
    the CNN pictures were drawn from: {run key: (the arguments, the figure)} for
    plot_filters and plot_feature_maps, and {run key: Evaluation}."""
    folder = tmp_path_factory.mktemp("runs")
    runs = [saved_run(folder, "numpy"), saved_run(folder, "numpy", model="cnn"), saved_run(folder, "pytorch", model="cnn")]
    out = folder / "out"
    drawn = {"filters": {}, "feature_maps": {}, "evaluations": {}}

    def spy(kind, function):
        def spied(*args):
            figure = function(*args)
            drawn[kind][args[-1].key] = (args, figure)  # args[-1]: the run
            return figure
        return spied

    def evaluate_weights(run, x_test, y_test):
        evaluation = real_evaluate(run, x_test, y_test)
        # the first is the test set's; the robustness sets' (report/robustness.py) come after
        drawn["evaluations"].setdefault(run.key, evaluation)
        return evaluation

    def cnn_own(fig):
        return any(fig is figure for kind in ("filters", "feature_maps") for _, figure in drawn[kind].values())

    real_evaluate = report_runs.evaluate_weights
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        pictures_not_drawn_in(patch, drawn=cnn_own)
        patch.setattr(inside, "plot_filters", spy("filters", inside.plot_filters))
        patch.setattr(inside, "plot_feature_maps", spy("feature_maps", inside.plot_feature_maps))
        patch.setattr(report_runs, "evaluate_weights", evaluate_weights)
        run_main("--runs", *runs, "--out-dir", out)
    return folder, runs, out, printed.getvalue(), drawn


# ----------------------------------------------------------------------------- names, table, warnings

def test_an_mlp_and_cnns_compared_name_each_model(compared):
    folder, runs, out, printed, _ = compared
    comparison = "comparison_numpy_vs_numpy_cnn_vs_pytorch_cnn"   # the runs' keys: not the default pair
    pictures = [f"{comparison}.png", "weights_numpy.png"] + [
        f"{kind}_{key}.png" for key in ("numpy", "numpy_cnn", "pytorch_cnn")
        for kind in ("confusion", "mistakes")] + [
        f"{kind}_{key}.png" for key in ("numpy_cnn", "pytorch_cnn") for kind in ("filters", "feature_maps")]
    assert sorted(p.name for p in out.iterdir()) == sorted(pictures + [f"{comparison}.md"])
    for name in pictures:
        if name.startswith(("filters_", "feature_maps_")):
            assert_png(out / name)                                       # drawn
        else:
            assert (out / name).read_bytes().startswith(b"figure "), name  # made, not drawn (the fixture)
    for metrics, weights in zip(runs, ["numpy_model.npz", "numpy_cnn.npz", "pytorch_cnn.pt"]):
        assert f"checked {folder / weights}: its SHA-256 and its " in printed, printed
        assert f"of {TEST_IMAGES:,} test images right are what {metrics} records" in printed

    md = (out / f"{comparison}.md").read_text()
    assert md.startswith(f"# model: {MLP_NAME} → {CNN_NAME} → {CNN_NAME}: test accuracy "), md
    assert "\nNumPy MLP vs NumPy CNN vs PyTorch CNN\n" in md, md
    assert "| run | model | epochs |" in md
    assert f"| NumPy MLP | {MLP_NAME} | 1 | " in md and f"| NumPy CNN | {CNN_NAME} | 1 | " in md
    assert f"| PyTorch CNN | {CNN_NAME} | 1 | " in md
    assert f"- NumPy CNN: {CNN_NAME}, mnist (60,000 train), adam lr 0.003" in md
    assert "hidden sizes" not in md  # a CNN has none; one MLP has nothing to differ from
    assert "warning:" not in md, md  # the model is the experiment, not a mistake
    assert "Their settings change the work per sample (model " in md, md

    fig = curves.plot_comparison(report_runs.load_runs(runs))
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["NumPy MLP train", "NumPy MLP test", "NumPy CNN train", "NumPy CNN test",
                      "PyTorch CNN train", "PyTorch CNN test"], labels
    assert f"PyTorch CNN: {CNN_NAME}, mnist" in fig._suptitle.get_text()
    plt.close(fig)


def names(*runs):
    """name_runs of (framework, model, file stem) triples."""
    records = [make_record(framework, config={"model": model}) for framework, model, _ in runs]
    return name_runs(records, [Path(f"{stem}.json") for _, _, stem in runs])


def test_run_names_say_the_model_when_a_cnn_is_among_them():
    """The names say the model beside a CNN; the keys (file names) are the stems (run_keys)."""
    assert names(("numpy", "mlp", "a"), ("pytorch", "mlp", "b")) == [
        ("NumPy", "a"), ("PyTorch", "b")]  # MLPs only: named as before
    assert names(("numpy", "mlp", "a"), ("numpy", "cnn", "b")) == [
        ("NumPy MLP", "a"), ("NumPy CNN", "b")]
    assert names(("numpy", "cnn", "a"), ("pytorch", "cnn", "b")) == [
        ("NumPy CNN", "a"), ("PyTorch CNN", "b")]
    assert names(("numpy", "cnn", "lr_1e-3"), ("numpy", "cnn", "lr_3e-3"), ("numpy", "mlp", "x")) == [
        ("NumPy CNN (lr_1e-3)", "lr_1e-3"), ("NumPy CNN (lr_3e-3)", "lr_3e-3"), ("NumPy MLP", "x")]


def test_hidden_sizes_are_compared_among_the_mlps_only():
    runs = [run_result(make_record(), "NumPy MLP (a)", "a"),
            run_result(make_record(config={"hidden": [256, 128]}), "NumPy MLP (b)", "b"),
            run_result(cnn_record(), "NumPy CNN", "numpy_cnn")]
    assert table.changed_settings(runs) == [
        ("model", [MLP_NAME, "MLP 784-256-128-10", CNN_NAME]),
        ("hidden sizes", ["128-64", "256-128", None])]
    assert table.changed_settings(runs[:2])[0] == ("hidden sizes", ["128-64", "256-128"])
    twins = [run_result(cnn_record()), run_result(cnn_record("pytorch"), "PyTorch", "pytorch")]
    assert table.changed_settings(twins) == []  # hidden None in both: nothing to compare, no crash
    assert table.table_row(twins[0]).startswith(f"| NumPy | {CNN_NAME} | 3 | 93.00% |")
    assert table.describe_config(twins[1]).startswith(f"PyTorch: {CNN_NAME}, mnist (60,000 train)")


def test_an_unknown_model_is_one_error_line(tmp_path):
    path = write(tmp_path, "m.json", make_record(config={"model": "transformer"}))
    message = error_of("--runs", path, "--out-dir", tmp_path / "out", "--no-inside")
    assert message == (f"error: {path}: unknown model 'transformer' (expected one of mlp, cnn, "
                       f"as the trainers' --model)"), message


def test_fan_ins_of_both_models():
    """What the rounding-tie bound sums over: each layer's terms per output."""
    assert report_runs.fan_ins(NeuralNetwork(SIZES).params) == (784, 128, 64)
    assert report_runs.fan_ins(CNN().params) == (9, 288, 1600)
    assert report_runs.fan_ins(numpy_params(torch_cnn.CNN())) == (9, 288, 1600)


# ----------------------------------------------------------------------------- weights of the wrong kind

def weights_of(folder, framework, model):
    """A weights file of this framework and model, as its trainer saves it."""
    path = folder / f"{framework}_{model}{'.npz' if framework == 'numpy' else '.pt'}"
    if framework == "numpy":
        (CNN() if model == "cnn" else NeuralNetwork((784, 32, 10))).save(path)
    else:
        torch.save((torch_cnn.CNN() if model == "cnn" else MLP((784, 32, 10))).state_dict(), path)
    return path


KIND_CASES = [(framework, run_model, file_model) for framework in ("numpy", "pytorch")
              for run_model, file_model in (("mlp", "cnn"), ("cnn", "mlp"))]


@pytest.mark.parametrize("framework, run_model, file_model", KIND_CASES,
                         ids=[f"{f}-{r}_run-{w}_file" for f, r, w in KIND_CASES])
def test_weights_of_the_other_model_are_refused_in_words(tmp_path, framework, run_model, file_model):
    """A CNN's weights for an MLP run, or the reverse, given by the flag, found beside the
    metrics, or even the very file the record names (a record edited by hand): one line
    that says what is wrong, before the SHA-256 check or any loading."""
    wrong = weights_of(tmp_path, framework, file_model)
    record = (cnn_record if run_model == "cnn" else make_record)(framework)
    metrics = write(tmp_path, "m.json", record)
    out = tmp_path / "out"
    a_run = {"mlp": "an MLP run", "cnn": "a CNN run"}[run_model]
    holds = f"holds {file_model.upper()} weights but {metrics} is {a_run}"
    flag = f"--{framework}-weights"
    message = error_of("--runs", metrics, "--out-dir", out, flag, wrong)
    assert message == f"error: {flag} {wrong} {holds}: pass that run's own weights file, or use --no-inside"

    record["config"]["weights"] = str(tmp_path / "elsewhere" / wrong.name)  # found beside the metrics
    write(tmp_path, "m.json", record)
    message = error_of("--runs", metrics, "--out-dir", out)
    assert message == (f"error: {wrong} {holds} (written over by a later {file_model.upper()} run?): "
                       f"pass its own weights with {flag}, or use --no-inside"), message

    record["weights_sha256"] = file_sha256(wrong)  # the record's own file, but of the other model
    write(tmp_path, "m.json", record)
    assert holds in error_of("--runs", metrics, "--out-dir", out)
    assert not out.exists()


def test_the_runs_own_weights_after_a_file_of_the_other_model_are_used(tmp_path, capsys, pictures_not_drawn):
    """A kept MLP run whose folder holds a CNN's weights under the same name: the file the
    trainer wrote, the run's own, is found next and used."""
    results, kept = tmp_path / "results", tmp_path / "kept"
    results.mkdir()
    kept.mkdir()
    metrics = shutil.copy(saved_run(results), kept)
    CNN().save(kept / "numpy_model.npz")
    run_main("--runs", metrics, "--out-dir", tmp_path / "out")
    assert f"checked {results / 'numpy_model.npz'}: its SHA-256" in capsys.readouterr().out
    assert (tmp_path / "out" / "weights_numpy.png").is_file()


# ----------------------------------------------------------------------------- what the CNN pictures show

def conv_relu(x, W, b):
    """PyTorch's convolution and ReLU in float64: the reference the pictures are checked against."""
    as64 = [torch.from_numpy(np.asarray(a, np.float64)) for a in (x, W, b)]
    return torch.relu(torch.nn.functional.conv2d(*as64))


def reference_maps(params, image):
    """conv1 + ReLU, then max-pool 2x2, conv2 + ReLU, as nn.Conv2d and nn.MaxPool2d compute them."""
    maps1 = conv_relu(image.reshape(1, 1, 28, 28), params["W1"], params["b1"])      # 1,32,26,26
    maps2 = conv_relu(torch.nn.functional.max_pool2d(maps1, 2), params["W2"], params["b2"])  # 1,64,11,11
    return maps1[0].numpy(), maps2[0].numpy()


def drawn_mosaic(fig, title_start):
    """The array drawn in the axes whose title starts so, NaN in the gaps."""
    ax = next(ax for ax in fig.axes if ax.get_title().startswith(title_start))
    return np.ma.filled(ax.get_images()[0].get_array(), np.nan)


def saved_params(folder, key):
    """The run's weights read straight from its file, in numpy_nn's layout."""
    if key == "numpy_cnn":
        with np.load(folder / "numpy_cnn.npz") as f:
            return {name: f[name] for name in ("W1", "b1", "W2", "b2")}
    state = torch.load(folder / "pytorch_cnn.pt", weights_only=True)
    return {"W1": state["conv1.weight"].numpy(), "b1": state["conv1.bias"].numpy(),
            "W2": state["conv2.weight"].numpy(), "b2": state["conv2.bias"].numpy()}


@pytest.mark.parametrize("key", ["numpy_cnn", "pytorch_cnn"])
def test_feature_maps_drawn_are_the_conv_layers_outputs(compared, key):
    """The maps feature_maps_<key>.png was drawn from are conv1 + ReLU (32 of 26x26) and
    conv2 + ReLU (64 of 11x11) of the first test image under the run's saved weights, as
    PyTorch computes them; each is drawn on its own scale, in its place in the mosaic."""
    folder, _, _, _, drawn = compared
    (maps, image, index, class_name, run), fig = drawn["feature_maps"][key]
    x_test, y_test = mnist_test_set()
    assert index == 0 and class_name == str(y_test[0]) == "7"
    np.testing.assert_array_equal(image, x_test[0])
    expected = reference_maps(saved_params(folder, key), x_test[0])
    for got, want, shape in zip(maps, expected, [(32, 26, 26), (64, 11, 11)]):
        assert got.shape == want.shape == shape
        err = np.abs(got - want).max()
        print(f"{key} {shape}: max |NumPy float32 - torch float64| = {err:.2e}")
        assert err <= 1e-5 * (1 + np.abs(want).max()), err   # float32 rounding of a few hundred terms
        assert (got > 0).sum() > 0.05 * got.size                 # not a blank picture
    if key == "pytorch_cnn":  # the framework's own model gives them too
        model = torch_cnn.load_model(folder / "pytorch_cnn.pt")
        with torch.inference_mode():
            own = torch.relu(model.conv1(torch.from_numpy(x_test[:1]).reshape(1, 1, 28, 28)))[0].numpy()
        np.testing.assert_allclose(maps[0], own, rtol=1e-5, atol=1e-5)

    for title, layer_maps, rows, gap in (("after conv1", maps[0], 4, 2), ("after conv2", maps[1], 8, 1)):
        mosaic = drawn_mosaic(fig, title)
        h, w = layer_maps.shape[1:]
        cols = len(layer_maps) // rows
        assert mosaic.shape == (rows * (h + gap) - gap, cols * (w + gap) - gap)
        for m, feature_map in enumerate(layer_maps):
            r, c = divmod(m, cols)
            cell = mosaic[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w]
            top = feature_map.max()
            np.testing.assert_allclose(cell, feature_map / top if top > 0 else feature_map, rtol=1e-6)
        assert np.isnan(mosaic[h:h + gap]).all()  # the gaps between the rows of maps
    np.testing.assert_array_equal(drawn_mosaic(fig, "the first test image (index 0)"),
                                  x_test[0].reshape(28, 28))


@pytest.mark.parametrize("key", ["numpy_cnn", "pytorch_cnn"])
def test_filters_drawn_are_the_first_layer_weights(compared, key):
    """filters_<key>.png draws the run's conv1 weights exactly, (32, 1, 3, 3), each filter
    divided by its own largest |weight| (symmetric colour scale, -1 to 1)."""
    folder, _, _, _, drawn = compared
    (W1, run), fig = drawn["filters"][key]
    np.testing.assert_array_equal(W1, saved_params(folder, key)["W1"])
    assert W1.shape == (32, 1, 3, 3) and run.key == key
    mosaic = drawn_mosaic(fig, f"{run.label}: the 32 3x3 filters")
    assert mosaic.shape == (4 * 4 - 1, 8 * 4 - 1)
    for f in range(32):
        r, c = divmod(f, 8)
        np.testing.assert_array_equal(mosaic[4 * r:4 * r + 3, 4 * c:4 * c + 3],
                                      W1[f, 0] / np.abs(W1[f, 0]).max())
    assert fig.axes[0].get_images()[0].get_clim() == (-1, 1)


def test_a_pytorch_cnn_is_evaluated_by_pytorch(compared):
    """The logits behind a run's confusion matrix come from its own framework, in its
    trainer's slices (EVAL_BATCH images) and layout (channels last, pytorch_nn/fast_step.py):
    exactly what the saved model gives. Slices of another size, or another layout, may differ
    in the last bits: a convolution library may block a batch of 1,000 otherwise than one of
    128 (oneDNN does on an AVX-512 Xeon), and so add in another order."""
    from numpy_nn.train import EVAL_BATCH as NUMPY_BATCH
    from pytorch_nn.fast_step import channels_last
    from pytorch_nn.train import EVAL_BATCH
    folder, runs, _, _, drawn = compared
    x_test, y_test = mnist_test_set()
    evaluation = drawn["evaluations"]["pytorch_cnn"]
    model = channels_last(torch_cnn.load_model(folder / "pytorch_cnn.pt"))
    with torch.inference_mode():
        first = [model(torch.from_numpy(x_test[s:s + EVAL_BATCH])).numpy() for s in range(0, 1000, EVAL_BATCH)]
    np.testing.assert_array_equal(evaluation.logits[:1000], np.concatenate(first)[:1000])
    assert evaluation.logits.shape == (TEST_IMAGES, 10) and evaluation.fan_ins == (9, 288, 1600)
    numpy_evaluation = drawn["evaluations"]["numpy_cnn"]
    net = CNN.load(folder / "numpy_cnn.npz")
    first = [net.forward(x_test[s:s + NUMPY_BATCH])[0] for s in range(0, 1000, NUMPY_BATCH)]
    np.testing.assert_array_equal(numpy_evaluation.logits[:1000], np.concatenate(first)[:1000])
    for key, metrics in (("numpy_cnn", runs[1]), ("pytorch_cnn", runs[2])):
        recorded = report_runs.load_runs([metrics])[0].record["final_test_acc"]
        assert drawn["evaluations"][key].correct == round(recorded * TEST_IMAGES)
        counts = inside.confusion_matrix(y_test, drawn["evaluations"][key].logits.argmax(axis=1))
        assert np.trace(counts) == drawn["evaluations"][key].correct
