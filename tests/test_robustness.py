"""report/robustness.py, the perturbed and drawn test digits, and the two numbers compare.py
reports from them: the sets are the same on every call, each change does what a known
transform does, and compare's accuracies are the trainers' own evaluate() on those sets."""
import numpy as np
import pytest

import compare
from mnist_style import mnist_style
from numpy_nn.augment import dilate
from report import robustness, table
from report import runs as report_runs

REFERENCE = compare.ROOT / "results" / "reference"


def mnist_test_set():
    """MNIST's test set, as compare loads it (cached for the whole session)."""
    return report_runs.load_test_set("mnist")


def one_change(n=1, rotate=0.0, scale=1.0, thickness=0.0, shift=(0.0, 0.0)):
    """A change (robustness.draw's form) with the same numbers for n images."""
    return {"rotate": np.full(n, rotate), "scale": np.full(n, scale),
            "thickness": np.full(n, thickness), "shift": np.tile(shift, (n, 1))}


def test_the_sets_are_the_same_on_every_call():
    x, y = mnist_test_set()
    first = robustness.robustness_sets(x[:300], y[:300])
    again = robustness.robustness_sets(x[:300], y[:300])
    for name in ("perturbed", "drawn"):
        np.testing.assert_array_equal(first[name][0], again[name][0])
        np.testing.assert_array_equal(first[name][1], again[name][1])
    np.testing.assert_array_equal(first["perturbed"][1], y[:300])  # the labels stay
    np.testing.assert_array_equal(first["drawn"][1], y[:300])      # no image lost all its ink
    other_seed = robustness.perturbed(x[:300], seed=robustness.SEED + 1)
    assert not np.array_equal(other_seed, first["perturbed"][0])   # the seed is what fixes them
    # every draw lies in its range, and the thickness goes both ways about equally
    change = robustness.draw(10_000)
    r = robustness.RANGES
    assert np.abs(change["rotate"]).max() <= r["rotate"] and np.abs(change["shift"]).max() <= r["shift"]
    assert np.abs(change["scale"] - 1).max() <= r["scale"]
    assert 0.45 < (change["thickness"] > 0).mean() < 0.55  # half thicker: 10,000 draws, sd 0.005


def test_no_change_gives_the_test_set_and_its_recorded_accuracy():
    """With every range 0, set A is the test set to the bit, and the committed reference
    networks, evaluated on it by compare, get exactly the accuracy their records hold."""
    x, y = mnist_test_set()
    unchanged = robustness.perturbed(x, robustness.NO_CHANGE)
    np.testing.assert_array_equal(unchanged, x)  # float32 -> float64 is exact; so is an identity warp
    for framework, weights in (("numpy", "numpy_model.npz"), ("pytorch", "pytorch_model.pt")):
        run = report_runs.load_runs([REFERENCE / f"{framework}_metrics.json"])[0]
        run.weights = REFERENCE / weights
        correct = report_runs.evaluate_weights(run, unchanged, y).correct
        assert correct == round(run.record["final_test_acc"] * 10_000), (framework, correct)


def test_a_rotation_by_a_right_angle_turns_the_image():
    """90 degrees turns the image counter-clockwise as seen (numpy_nn/augment.py's affine):
    np.rot90 with k=1, which turns the array's first axis towards its second. The
    bilinear weights come from cos(90°) = 6e-17, not 0, so the pixels agree to 1e-15 (values
    up to 1, a few roundings of 1e-16 each)."""
    x, _ = mnist_test_set()
    image = x[:1].astype(np.float64)
    turned = robustness.perturb(image, one_change(rotate=90.0))
    expected = np.rot90(image.reshape(28, 28), k=1).reshape(1, -1)
    np.testing.assert_allclose(turned, expected, rtol=0, atol=1e-15)


def test_a_shift_moves_by_whole_pixels_and_stops_at_the_frame():
    """A square of ink at columns 10-13, rows 12-15: moved 3 pixels right and 2 up, it is
    np.roll's; moved 20 right and 20 down, it stops where it touches the frame's last column
    and row (its last pixel's centre on 13.5 from the centre)."""
    image = np.zeros((28, 28))
    image[12:16, 10:14] = 0.8
    flat = image.reshape(1, -1)
    moved = robustness.perturb(flat, one_change(shift=(3.0, -2.0)))
    np.testing.assert_array_equal(moved.reshape(28, 28), np.roll(image, (-2, 3), axis=(0, 1)))
    stopped = robustness.perturb(flat, one_change(shift=(20.0, 20.0)))
    expected = np.zeros((28, 28))
    expected[24:28, 24:28] = 0.8
    np.testing.assert_array_equal(stopped.reshape(28, 28), expected)


def test_full_thickness_is_the_dilation_and_scale_two_doubles_a_line():
    x, _ = mnist_test_set()
    image = x[:1].astype(np.float64)
    thick = robustness.perturb(image, one_change(thickness=1.0))
    np.testing.assert_array_equal(thick.reshape(28, 28), dilate(image.reshape(1, 28, 28))[0])
    # a vertical line on columns 13 and 14 (x = -0.5 and 0.5 from the centre, 13.5) scaled by
    # 2: output column j reads x = (j - 13.5) / 2, so columns 11 and 12 read x = -1.25 and
    # -0.75, a quarter and three quarters of the way into the ink, and 10 reads paper
    line = np.zeros((28, 28))
    line[10:18, 13:15] = 1.0
    wide = robustness.perturb(line.reshape(1, -1), one_change(scale=2.0)).reshape(28, 28)
    np.testing.assert_array_equal(wide[14, 10:18], [0, 0.25, 0.75, 1, 1, 0.75, 0.25, 0])


def test_the_drawn_set_is_what_the_page_and_server_make():
    """Each drawn image is mnist_style of the page's 280x280 canvas (each pixel a 10x10
    square, 8-bit opacity, 3 decimals). drawn() reads the 28x28 image instead; the two sum
    the same ink in another order in float64 and round to float32, so they may differ by
    one float32 step: 2^-24 = 6e-8 below 1."""
    x, y = mnist_test_set()
    moved = robustness.perturbed(x[:100])
    images, labels = robustness.drawn(moved, y[:100])
    for image, sent_on_canvas in zip(images, moved):
        canvas = robustness.on_canvas(sent_on_canvas.reshape(28, 28))
        canvas = np.round(np.round(canvas * 255) / 0.255) / 1000   # page.html's ink()
        np.testing.assert_allclose(image.reshape(28, 28), mnist_style(canvas), rtol=0, atol=2 ** -24)
    assert images.dtype == np.float32 and (labels == y[:100]).all()
    blank = robustness.drawn(np.zeros((2, 784)), np.array([3, 7]))
    np.testing.assert_array_equal(blank[1], [robustness.NO_DIGIT] * 2)  # no ink: counted wrong


@pytest.fixture(scope="module")
def sets():
    """The robustness sets of the first 2,000 test images, built here, apart from compare's
    cache: the same code as the full sets, at a fifth of the cost."""
    x, y = mnist_test_set()
    return robustness.robustness_sets(x[:2000], y[:2000])


def test_compare_reports_what_the_trainers_evaluate_gives(tmp_path, sets, monkeypatch, pictures_not_drawn):
    """compare.py's two numbers for the committed reference MLPs are the trainers' own
    evaluate() of those weights on the sets, and its table shows them. (Its pictures are made
    but not drawn: conftest.pictures_not_drawn.)"""
    import torch

    from numpy_nn.neural_network import NeuralNetwork
    from numpy_nn.train import evaluate as numpy_evaluate
    from pytorch_nn.model import load_model
    from pytorch_nn.train import evaluate as torch_evaluate

    net, model = NeuralNetwork.load(REFERENCE / "numpy_model.npz"), load_model(REFERENCE / "pytorch_model.pt")
    expected = {"numpy": {}, "pytorch": {}}
    for name, (x, y) in sets.items():
        x32 = x.astype(np.float32)  # the dtype both trained in
        expected["numpy"][name] = numpy_evaluate(net, x32, y)[1]
        with torch.inference_mode():
            expected["pytorch"][name] = torch_evaluate(model, torch.from_numpy(x32), torch.from_numpy(y))[1]
    monkeypatch.setattr(report_runs, "load_robustness_sets", lambda data_dir: sets)

    for framework, weights in (("numpy", "numpy_model.npz"), ("pytorch", "pytorch_model.pt")):
        run = report_runs.load_runs([REFERENCE / f"{framework}_metrics.json"])[0]
        run.weights = REFERENCE / weights
        assert report_runs.measure_robustness(run, compare.DATA_DIR) == expected[framework]
    # what the reference MLP reads: far less than its 98% on perturbed digits
    assert 0.4 < expected["numpy"]["perturbed"] < 0.7 and 0.85 < expected["numpy"]["drawn"] < 0.95, expected

    compare.main(["--runs", str(REFERENCE / "numpy_metrics.json"), "--out-dir", str(tmp_path)])
    md = (tmp_path / "comparison_numpy.md").read_text()   # one run: its own name (the pair's is comparison.md)
    numbers = expected["numpy"]
    assert (f"| NumPy | MLP 784-128-64-10 | 10 | 98.17% | 98.17% (epoch 10) | "
            f"{numbers['perturbed']:.2%} | {numbers['drawn']:.2%} | 7.01 |") in md, md
    assert "- perturbed acc, drawn acc: the saved weights on the test digits each rotated up to 20°" in md


def test_no_weights_no_robustness_numbers():
    record = report_runs.load_metrics(REFERENCE / "numpy_metrics.json")
    run = report_runs.RunResult(REFERENCE / "numpy_metrics.json", record, "NumPy", "numpy")
    assert "| 98.17% (epoch 10) | – | – |" in table.table_row(run)
    assert table.robustness_lines([run]) == []
