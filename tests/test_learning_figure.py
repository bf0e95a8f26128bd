"""report/learning.py: a learning figure that explains itself, and several runs in one picture.
The figures are read as matplotlib objects (titles, texts, legend entries, marker lines), not
as pixels, from made-up records in the shape the trainers write (test_compare.py's)."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.text import Text

import compare
from conftest import assert_png, made_up_diagnostics, make_record, run_main, run_result, write
from report import learning
from report import runs as report_runs

STEPS = [1, 32, 63]


def record_with_diagnostics(activation="relu", layers=("layer1", "layer2", "layer3"), **figures):
    """make_record() with made-up diagnostics, each of figures ({layer: values}) put in."""
    record = make_record(config={"activation": activation})
    record["diagnostics"] = made_up_diagnostics(steps=STEPS, layers=layers)
    for figure, values in figures.items():
        record["diagnostics"][figure].update(values)
    return record


@pytest.fixture
def figure_of():
    """figure_of(record): its learning figure, closed after the test."""
    figures = []

    def draw(record, name="NumPy"):
        figures.append(learning.learning_figure(run_result(record, name)))
        return figures[-1]
    yield draw
    for figure in figures:
        plt.close(figure)


def panel(figure, starts):
    """The one axes whose title starts with starts."""
    found = [ax for ax in figure.axes if ax.get_title().startswith(starts)]
    assert len(found) == 1, [ax.get_title() for ax in figure.axes]
    return found[0]


def texts(figure):
    return [t.get_text() for t in figure.findobj(Text)]


def data_lines(ax):
    """The plotted series of a panel: not the guide lines, not the edge marks."""
    return [line for line in ax.get_lines() if line.get_gid() is None and not line.get_label().startswith("0.0")]


def test_gradient_and_update_panels_name_what_they_plot_distinctly(figure_of):
    """The gradient panel is sqrt(mean(g²)) of g = ∂loss/∂W, the update panel ||ΔW|| / ||W||:
    neither calls its number "dW", and every panel's second title line says how a healthy run
    looks."""
    figure = figure_of(record_with_diagnostics())
    gradient, update = panel(figure, "Gradient size"), panel(figure, "Update size")
    assert "sqrt(mean(g²)), g = ∂loss/∂W" in gradient.get_title()
    assert "||ΔW|| / ||W||" in update.get_title()
    titles = [ax.get_title() for ax in figure.axes]
    assert not [title for title in titles if "dW" in title], titles
    assert len(titles) == 6 + 3                       # six panels over time, a histogram per layer
    assert all(title.split("\n")[1].startswith("healthy: ") for title in titles), titles


def test_the_guide_lines_and_the_reading_guide_are_on_the_figure(figure_of):
    """The 1e-3 line says it is the guide of a healthy step, the 1e-2 line that far above it
    steps are too large, and a reading guide sits under the figure's title."""
    figure = figure_of(record_with_diagnostics())
    labels = panel(figure, "Update size").get_legend_handles_labels()[1]
    assert labels == ["layer1", "layer2", "logits", "0.001 guide: a healthy step (Karpathy)",
                      "0.01: far above, steps too large"]
    assert figure.get_suptitle().split("\n")[-2].startswith("How to read: each panel's title says what it plots")


def test_the_figures_say_what_the_probe_images_are():
    """Three panels and the histograms are measured on "the probe images": both figures say
    what they are, with the record's count (made_up_diagnostics: 256)."""
    probe = ("Probe images: the first 256 training images, the same at every record; the outputs, dead units "
             "and histograms are measured on them (no update, dropout off).")
    run = run_result(record_with_diagnostics())
    for figure in (learning.learning_figure(run), learning.overlay_figure([run, run_result(record_with_diagnostics("tanh"))])):
        assert figure.get_suptitle().split("\n")[-1] == probe
        plt.close(figure)


def test_the_logits_mean_is_explained_not_called_a_sink(figure_of):
    """The output-mean panel said "logits sink (most classes wrong)", which puzzled a learner:
    it now says why their mean falls."""
    figure = figure_of(record_with_diagnostics())
    healthy = panel(figure, "Output mean").get_title().split("\n")[1:]
    assert healthy == ["healthy: hidden layers steady; the logits' mean falls",
                       "(for each image, 9 of the 10 logits are wrong digits, pushed down)"]
    assert not [text for text in texts(figure) if "logits sink" in text or "most classes wrong" in text]


@pytest.mark.parametrize("layers", [("layer1", "layer2", "layer3"), ("conv1", "conv2", "linear")])
def test_the_output_layer_is_called_the_logits(figure_of, layers):
    """The record's last layer (the MLP's layer3, the CNN's linear) is shown as "logits", in
    the legends and in its histogram's title, and its record name appears nowhere."""
    figure = figure_of(record_with_diagnostics(layers=layers))
    assert panel(figure, "Gradient size").get_legend_handles_labels()[1] == [*layers[:2], "logits"]
    hist_titles = [ax.get_title().split("\n")[0] for ax in figure.axes
                   if ": outputs on the probe images" in ax.get_title()]
    assert hist_titles == [f"{name}: outputs on the probe images" for name in (*layers[:2], "logits")]
    assert not [text for text in texts(figure) if layers[-1] in text]


def test_zero_gradients_are_marked_at_the_bottom_with_a_note(figure_of):
    """A log axis cannot draw 0: a layer whose gradient is 0 at a step gets a ▼ on the bottom
    edge at that step, in its colour, and the panel says what a 0 means. A null (not finite)
    loss gets a ▲ on the loss panel's top edge. Panels with nothing to mark have no note."""
    figure = figure_of(record_with_diagnostics(grad_rms={"layer1": [0.0, 0.0, 0.0], "layer2": [1e-3, 0.0, 1e-3]}))
    ax = panel(figure, "Gradient size")
    colours = {line.get_label(): line.get_color() for line in data_lines(ax)}
    marks = [line for line in ax.get_lines() if line.get_gid() == "zero"]
    assert [(list(line.get_xdata()), list(line.get_ydata()), line.get_color(), line.get_marker()) for line in marks] \
        == [(STEPS, [0.0, 0.0, 0.0], colours["layer1"], "v"), ([32], [0.0], colours["layer2"], "v")]
    assert all(line.get_transform() is ax.get_xaxis_transform() for line in marks)  # y 0: the bottom edge
    assert [t.get_text() for t in ax.texts] == ["▼ at the bottom: 0 in layer1, layer2, the gradient vanished (dead ReLUs)"]
    assert not [line for line in panel(figure, "Update size").get_lines() if line.get_gid()]
    assert not panel(figure, "Update size").texts

    loss = panel(figure, "Training loss")                     # made_up_diagnostics: a null last loss
    [mark] = [line for line in loss.get_lines() if line.get_gid() == "not finite"]
    assert (list(mark.get_xdata()), list(mark.get_ydata()), mark.get_marker()) == ([63], [1.0], "^")
    assert [t.get_text() for t in loss.texts] == ["▲ at the top: not finite (NaN or inf), the run blew up"]


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_the_dead_units_panel_says_why_it_does_not_apply(figure_of, activation):
    """Sigmoid and tanh units are never dead (never exactly 0 on every image): the panel draws
    no flat line at 0 and says why, pointing to the histograms; a ReLU run's draws its layers."""
    figure = figure_of(record_with_diagnostics(activation))
    dead = panel(figure, "Dead units")
    assert not dead.get_lines()
    [text] = [t.get_text() for t in dead.texts]
    assert text.startswith(f"Does not apply to {activation}:\n") and "histograms below" in text
    relu = panel(figure_of(record_with_diagnostics("relu")), "Dead units")
    assert [line.get_label() for line in data_lines(relu)] == ["layer1", "layer2"] and not relu.texts


def test_several_runs_are_overlaid_with_a_legend_naming_what_differs(tmp_path, capsys, pictures_not_drawn):
    """compare.py --runs relu.json sigmoid.json also writes one picture of both: per layer, one
    line style per run, the legend one entry per run naming the setting that differs; the
    sigmoid run is left out of the dead-units panels, with a note that says why. (compare.py's
    pictures are made but not drawn, conftest.pictures_not_drawn; the next test draws them.)"""
    paths = [write(tmp_path, "relu.json", record_with_diagnostics("relu")),
             write(tmp_path, "sigmoid.json", record_with_diagnostics("sigmoid"))]
    run_main("--runs", *paths, "--out-dir", tmp_path / "out", "--no-inside")
    runs = report_runs.load_runs(paths)
    overlay = f"learning_{'_vs_'.join(run.key for run in runs)}.png"
    assert sorted(p.name for p in (tmp_path / "out").glob("learning_*")) == sorted(
        [f"learning_{runs[0].key}.png", f"learning_{runs[1].key}.png", overlay])
    figure = learning.overlay_figure(runs)
    assert (tmp_path / "out" / overlay).read_bytes().endswith(b": " + figure._suptitle.get_text().encode() + b"\n")
    [legend] = [ax.get_legend() for ax in figure.axes if ax.get_legend() and ax.get_legend().get_title().get_text()
                .startswith("the runs")]
    assert legend.get_title().get_text() == "the runs: what differs is activation"
    assert [t.get_text() for t in legend.get_texts()] == [f"{runs[0].label}: activation=relu",
                                                          f"{runs[1].label}: activation=sigmoid"]
    gradients = [ax for ax in figure.axes if "Gradient size" in ax.get_figure(root=False).get_suptitle()]
    assert [ax.get_title() for ax in gradients] == ["layer1", "layer2", "logits"]
    for ax in gradients:
        assert [line.get_linestyle() for line in data_lines(ax)] == ["-", "--"]   # one style per run
    dead = [ax for ax in figure.axes if "Dead units" in ax.get_figure(root=False).get_suptitle()]
    assert [len(data_lines(ax)) for ax in dead] == [1, 1, 0]                      # relu only; logits: none
    assert [t.get_text() for t in dead[0].texts] == [f"{runs[1].label}: sigmoid is never exactly 0, does not apply"]
    plt.close(figure)


@pytest.mark.slow  # drawing the overlay took 6-14 s on a busy 2-core machine
def test_the_overlay_is_drawn(tmp_path):
    """The picture of several runs (above, read as matplotlib objects) is a real PNG."""
    paths = [write(tmp_path, "relu.json", record_with_diagnostics("relu")),
             write(tmp_path, "sigmoid.json", record_with_diagnostics("sigmoid"))]
    run_main("--runs", *paths, "--out-dir", tmp_path / "out", "--no-inside")
    assert_png(tmp_path / "out" / f"learning_{'_vs_'.join(run.key for run in report_runs.load_runs(paths))}.png")


def test_only_runs_with_the_same_layers_are_overlaid():
    """An MLP's layers are not a CNN's: they go to separate groups, and a group of one run
    gets no overlay."""
    mlp, cnn = record_with_diagnostics(), record_with_diagnostics(layers=("conv1", "conv2", "linear"))
    runs = [run_result(mlp, "a", "a"), run_result(cnn, "b", "b"), run_result(mlp, "c", "c")]
    assert [[run.key for run in group] for group in learning.overlay_groups(runs)] == [["a", "c"]]
    assert learning.overlay_groups(runs[:2]) == []


def test_an_overlay_of_many_runs_gets_a_name_a_file_system_takes():
    """Ten runs' keys joined would pass the 255 characters a file name may have: the overlay is
    then named after the first run and how many more; two runs keep both keys."""
    runs = [run_result(make_record(), f"NumPy {i}", f"numpy_numpy_seed{i}_metrics") for i in range(10)]
    assert len("_vs_".join(run.key for run in runs)) > 255
    assert compare.overlay_name(runs) == "learning_numpy_numpy_seed0_metrics_and_9_more.png"
    assert compare.overlay_name(runs[:2]) == "learning_numpy_numpy_seed0_metrics_vs_numpy_numpy_seed1_metrics.png"


def twins_records():
    """Two records of the same settings (twins), their losses at steps 1, 32, 63 and 94: equal,
    apart by 1e-7, apart by 0.01, and not finite in the second."""
    a, b = record_with_diagnostics(), record_with_diagnostics()
    for record, losses in ((a, [2.3, 0.5, 0.4, 0.3]), (b, [2.3, 0.5 + 1e-7, 0.41, None])):
        d = record["diagnostics"] = made_up_diagnostics(steps=[1, 32, 63, 94])
        d["loss"], d["dead_fraction"] = losses, {name: [0.0] * 4 for name in d["dead_fraction"]}
    return a, b


def test_twins_get_the_difference_of_their_losses_and_a_note():
    """Twins' lines lie on top of each other, so the overlay of two runs with no setting apart
    draws |loss of the second - loss of the first| at each step (a 0 as a mark on the bottom
    edge, a loss that is not finite on the top edge) and says why one line hides the other."""
    a, b = twins_records()
    runs = [run_result(a, "NumPy", "numpy"), run_result(b, "PyTorch", "pytorch")]
    figure = learning.overlay_figure(runs)
    [ax] = [ax for ax in figure.axes if ax.get_title().startswith("How far apart the twins' training losses are")]
    [line] = data_lines(ax)
    assert list(line.get_xdata()) == [1, 32, 63, 94]
    np.testing.assert_allclose(line.get_ydata(), [np.nan, 1e-7, 0.01, np.nan], rtol=1e-6)   # 0 and None: not drawn
    marks = {line.get_gid(): list(line.get_xdata()) for line in ax.get_lines() if line.get_gid()}
    assert marks == {"zero": [1], "not finite": [94]}
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "|PyTorch − NumPy| (log scale)"
    [note] = [text.get_text() for text in figure.findobj(Text) if text.get_gid() == "twins"]
    assert "one visible line means the two agree" in note
    plt.close(figure)
    other = learning.overlay_figure([runs[0], run_result(record_with_diagnostics("tanh"), "tanh", "tanh")])
    assert not [ax for ax in other.axes if ax.get_title().startswith("How far apart")]   # not twins: no such panel
    assert not [text for text in other.findobj(Text) if text.get_gid() == "twins"]
    plt.close(other)
