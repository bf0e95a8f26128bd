"""The demo page end to end, in a real browser: headless Chromium from Debian's `chromium`
package, driven by Playwright (PyPI) through the system browser's path; nothing downloads a
browser. A digit drawn with mouse moves is read by every committed network, and the page
shows the numbers the server sends. A screenshot is saved: to the test's temporary folder,
or where DEMO_SCREENSHOT says (docs/demo.md's picture:
DEMO_SCREENSHOT=results/reference/demo.png python -m pytest -q tests/test_demo_browser.py).
The Train part's picture in docs/demo.md is taken by a longer test of its own, which runs only
when TRAIN_SCREENSHOT says where to save it (46 s on a 2-core Intel Xeon shared with other work):
TRAIN_SCREENSHOT=results/reference/train.png python -m pytest -q tests/test_demo_browser.py -k picture

Without Chromium or Playwright the tests skip and say why, except under CI=true, where
they fail: CI installs both (.ci/run)."""
import importlib.util
import json
import math
import os
import re
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from demo.live import DIGITS, UNITS
from demo_helpers import JSON, NAMES, REFERENCE_RUNS, start_demo, stop_demo
from numpy_nn.diagnostics import PROBE_IMAGES
from numpy_nn.utils import cosine_lr

# Slow, as every test that starts a browser: they run with -m slow, and whenever a screenshot is
# asked for (the commands above, which name this file and no marker)
SCREENSHOT_ASKED = bool(os.environ.get("DEMO_SCREENSHOT") or os.environ.get("TRAIN_SCREENSHOT"))
pytestmark = [] if SCREENSHOT_ASKED else [pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
# What Chromium needs here: no sandbox as root, no GPU, and none of its own network traffic
# (updates, sync, field trials), which a closed network refuses. Playwright adds a fresh
# temporary profile (--user-data-dir) of its own.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def why_no_browser():
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -r requirements.txt)"
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (on Debian: apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the whole file."""
    missing = why_no_browser()
    if missing and os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{missing}; under CI=true the browser test must run")
    if missing:
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


def serving(tmp_path_factory, *flags):
    """demo.py with these flags, stopped with Ctrl-C after the tests; yields its address."""
    log = open(tmp_path_factory.mktemp("demo") / "stderr.txt", "w")
    process, url = start_demo(*flags, stderr=log)
    yield url
    stop_demo(process)
    log.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    yield from serving(tmp_path_factory, "--runs", *REFERENCE_RUNS)


def arc(x, y, radius, start, end, steps=12):
    """Points along a circle's arc around (x, y), from angle start to end in degrees
    (clockwise on the screen, where y grows downwards)."""
    angles = np.radians(np.linspace(start, end, steps + 1))
    return [(x + radius * math.cos(a), y + radius * math.sin(a)) for a in angles]


# A 3 in one stroke, in the 280x280 pad's pixels: two arcs, the upper one ending where the lower starts.
THREE = [arc(140, 95, 50, -160, 90) + arc(140, 185, 50, -90, 160)]


def draw(page, strokes):
    """Draw with the mouse, stroke by stroke, and wait until the answer to the last stroke
    is shown (the page marks each answer's number on <body data-answered>)."""
    pad = page.locator("#pad").bounding_box()
    before = int(page.evaluate("document.body.dataset.answered || 0"))
    for stroke in strokes:
        page.mouse.move(pad["x"] + stroke[0][0], pad["y"] + stroke[0][1])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(pad["x"] + x, pad["y"] + y, steps=4)
        page.mouse.up()
    page.wait_for_function(f"document.body.dataset.answered == {before + len(strokes)}")


def test_a_drawn_three_is_read_by_every_model(browser, demo, tmp_path):
    """Each chart reads 3, with the top probability the server gives for the page's own ink
    (asked again here, from the ink the page sent); the NumPy MLP's strips have 128 and 64 cells."""
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(demo)
    page.wait_for_selector(".model")
    assert page.locator(".model h2").all_inner_texts() == NAMES
    draw(page, THREE)
    ink = page.evaluate("ink()")
    request = urllib.request.Request(demo + "api/predict", data=json.dumps({"ink": ink}).encode(), headers=JSON)
    answer = json.load(urllib.request.urlopen(request, timeout=60))
    expected = []
    for model in answer["models"]:
        p = model["probabilities"]
        expected.append(f"reads {np.argmax(p)} ({100 * max(p):.1f}%)")
    assert page.locator(".verdict").all_inner_texts() == expected
    assert all(text.startswith("reads 3 ") for text in expected)
    assert page.locator("#hidden1 span").count() == 128 and page.locator("#hidden2 span").count() == 64
    page.screenshot(path=os.environ.get("DEMO_SCREENSHOT", tmp_path / "demo.png"), full_page=True)
    page.close()


def test_clear_empties_the_charts(browser, demo):
    page = browser.new_page()
    page.goto(demo)
    page.wait_for_selector(".model")
    draw(page, THREE)
    page.click("#clear")
    assert page.locator(".verdict").all_inner_texts() == ["reads …"] * len(NAMES)
    assert page.locator(".bars span.top").count() == 0
    page.close()


@pytest.fixture(scope="module")
def demo_without_models(tmp_path_factory):
    yield from serving(tmp_path_factory, "--results-dir", tmp_path_factory.mktemp("no_runs"))


def test_without_models_the_page_says_how_to_train_one(browser, demo_without_models):
    page = browser.new_page()
    page.goto(demo_without_models)
    page.wait_for_selector("#notes li")
    assert page.inner_text("#status").startswith("No trained model found.")
    notes = page.locator("#notes li").all_inner_texts()
    assert any("run `python numpy_nn/train.py --metrics" in note for note in notes)
    page.close()


def test_a_log_axis_is_labelled_at_whole_powers_of_ten(browser, demo_without_models):
    """The page's axisLabels: from 4e-4 to 0.2, the powers between (not the ends' 1e-3.4 and
    1e-0.7); from 0.05 to 0.08, under a decade, the ends as plain numbers; over twelve
    decades, every third power (at most 5 labels on a 170-pixel plot); with one power
    between, the ends too, unless one crowds it (0.011 is too close to 1e-2 for a label)."""
    page = browser.new_page()
    page.goto(demo_without_models)

    def labels(low, high):
        return page.evaluate(f"axisLabels(Math.log10({low}), Math.log10({high}), true).map(l => l[1])")
    assert labels(4e-4, 0.2) == ["1e-1", "1e-2", "1e-3"]
    assert labels(0.05, 0.08) == ["0.08", "0.05"]
    assert labels(1e-12, 1) == ["1e0", "1e-3", "1e-6", "1e-9", "1e-12"]
    assert labels(4e-3, 6e-2) == ["0.06", "1e-2", "0.004"]
    assert labels(4e-3, 1.1e-2) == ["1e-2", "0.004"]
    page.close()


def test_a_linear_axis_has_three_to_five_round_ticks(browser, demo_without_models):
    """The page's axes were marked at their ends only (0.913, 0.0427): a linear axis gets 3 to 5
    round numbers, 1, 2, 2.5 or 5 times a power of ten apart, whole numbers for steps and epochs."""
    page = browser.new_page()
    page.goto(demo_without_models)

    def ticks(low, high, whole=False):
        return page.evaluate(f"axisLabels({low}, {high}, false, {str(whole).lower()}).map(l => l[1])")
    assert ticks(91.3, 98.2) == ["98", "96", "94", "92"]              # accuracy, in percent
    assert ticks(0, 100) == ["100", "75", "50", "25", "0"]            # dead units, in percent
    assert ticks(0.05, 2.4) == ["2.0", "1.5", "1.0", "0.5"]           # a loss
    assert ticks(1, 30, True) == ["30", "20", "10"]                   # epochs
    assert ticks(1, 4710, True) == ["4000", "3000", "2000", "1000"]   # steps
    page.close()


def a_log_label(text):
    """A whole power of ten (1e-3) or a plain number (0.063, 6.3e-7); not 1e-1.2."""
    return bool(re.fullmatch(r"1e-?\d+|\d*\.?\d+(e-\d+)?", text))


@pytest.fixture(scope="module")
def demo_to_train(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    yield from serving(tmp_path_factory, "--results-dir", folder / "none", "--train-dir", folder / "runs")


def blank(page, canvas):
    """Is the canvas still empty (every pixel transparent or white)?"""
    return page.evaluate(f"""(() => {{
        const c = document.querySelector("{canvas}"), d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        for (let i = 0; i < d.length; i += 4) if (d[i + 3] && (d[i] < 250 || d[i + 1] < 250 || d[i + 2] < 250)) return false;
        return true; }})()""")


def key(page, id):
    """A figure's key: [(text, (r, g, b) of the line drawn before it)]."""
    items = page.evaluate(f"""[...document.querySelectorAll('#{id} .item')].map(item =>
        [item.textContent, getComputedStyle(item.querySelector('.swatch')).borderTopColor])""")
    return [(text, rgb(color)) for text, color in items]


def rgb(css):
    """'rgb(221, 102, 0)' -> (221, 102, 0)."""
    return tuple(int(v) for v in re.fullmatch(r"rgba?\((\d+), (\d+), (\d+)(, [\d.]+)?\)", css).groups()[:3])


def colour_of(page, selector):
    return rgb(page.evaluate(f"getComputedStyle(document.querySelector('{selector}')).color"))


def drawn_in(page, canvas, colour):
    """How many of the canvas's pixels are drawn in this colour: at least half opaque (a line's
    edge is the colour, less opaque, on the canvas's transparent ground), each channel within 8."""
    return page.evaluate(f"""(() => {{
        const c = document.querySelector("{canvas}"), d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        const [r, g, b] = {list(colour)};
        let n = 0;
        for (let i = 0; i < d.length; i += 4)
            if (d[i + 3] >= 128 && Math.abs(d[i] - r) <= 8 && Math.abs(d[i + 1] - g) <= 8 && Math.abs(d[i + 2] - b) <= 8) n++;
        return n; }})()""")


def pixel(page, canvas, x, y):
    return tuple(page.evaluate(f"[...document.querySelector('{canvas}').getContext('2d').getImageData({x}, {y}, 1, 1).data]")[:3])


def training_state(url):
    return json.load(urllib.request.urlopen(url + "api/train", timeout=60))


GREY = (0x44, 0x44, 0x44)        # the page's LINE_GREY: loss and accuracy, which belong to no layer
LAYER_COLOURS = [(0x1b, 0x9e, 0x77), (0x75, 0x70, 0xb3), (0xa6, 0x76, 0x1d)]   # layer 1, 2, 3 on every chart
TITLES = {"#plot-loss": ("training step", "loss (cross-entropy)"), "#plot-acc": ("epoch", "accuracy (%)"),
          "#plot-grad": ("training step", "gradient RMS (log)"), "#plot-update": ("training step", "‖ΔW‖ / ‖W‖ (log)"),
          "#plot-dead": ("training step", "dead units (% of the layer)")}


def style(page, id):
    """A figure's key: [(text, (r, g, b), border style)] of each entry's line."""
    return page.evaluate(f"""[...document.querySelectorAll('#{id} .item')].map(item =>
        [item.textContent, getComputedStyle(item.querySelector('.swatch')).borderTopColor,
         getComputedStyle(item.querySelector('.swatch')).borderTopStyle])""")


def check_twin_keys(page):
    """The loss and accuracy keys tell the twins apart by line style (NumPy solid, PyTorch
    dashed) in grey, as the plots draw them, and no layer's colour appears on either plot: on
    this page a colour means a layer, and nothing else."""
    twins = [(text, rgb(colour), line) for text, colour, line in style(page, "key-loss")]
    assert twins == [("NumPy", GREY, "solid"), ("PyTorch", GREY, "dashed"), ("rate changed", (0, 0, 0), "dotted")]
    accuracy = [(text, rgb(colour), line) for text, colour, line in style(page, "key-acc")]
    assert accuracy == twins[:2] + [("thick: test set", GREY, "solid"), ("thin: training set", GREY, "solid"),
                                    twins[2]]
    for canvas in ("#plot-loss", "#plot-acc"):
        assert drawn_in(page, canvas, GREY) > 20, canvas
        assert [drawn_in(page, canvas, colour) for colour in LAYER_COLOURS] == [0, 0, 0], canvas


def check_layer_keys(page):
    """The MLP's layer keys: a colour per layer, the same in each key and drawn in the gradient
    and update plots; the dead units', the hidden layers only; the twins by line style; what
    the grey line and the dead units are."""
    layers = key(page, "key-grad")
    assert layers == [("layer 1", LAYER_COLOURS[0]), ("layer 2", LAYER_COLOURS[1]), ("layer 3", LAYER_COLOURS[2]),
                      ("NumPy", GREY), ("PyTorch", GREY)]
    assert [line for *_, line in style(page, "key-grad")][3:] == ["solid", "dashed"]
    assert key(page, "key-update") == layers + [("1e-3", rgb("rgb(187, 187, 187)"))]
    assert key(page, "key-dead") == layers[:2] + layers[3:]
    for canvas in ("#plot-grad", "#plot-update"):
        for name, colour in layers[:3]:
            assert drawn_in(page, canvas, colour) > 20, (canvas, name)
    update = page.inner_text("#update-note")
    assert "The grey line is 1e-3" in update and "moves the weights by about a thousandth of their size" in update
    dead = page.inner_text("#dead-note")
    assert f"output 0 on every one of {PROBE_IMAGES} fixed probe images (the first {PROBE_IMAGES} training images" in dead
    assert "gets no gradient back, so nothing revives it" in dead


def check_axes(page):
    """Every chart names both axes, with units, and marks each with 3 to 5 numbers (a log axis:
    its powers of ten); accuracy and dead units in percent, as the text gives them."""
    for canvas, (x, y) in TITLES.items():
        assert (page.get_attribute(canvas, "data-xtitle"), page.get_attribute(canvas, "data-ytitle")) == (x, y)
        ticks, xticks = page.get_attribute(canvas, "data-labels").split(), page.get_attribute(canvas, "data-xlabels").split()
        assert 1 <= len(xticks) <= 5 and all(text.isdigit() for text in xticks), (canvas, xticks)
        if "(log)" in y:
            assert ticks and all(map(a_log_label, ticks)), (canvas, ticks)
        else:
            assert 3 <= len(ticks) <= 5, (canvas, ticks)
        assert not blank_strip(page, canvas, "left") and not blank_strip(page, canvas, "bottom"), canvas   # drawn
    accuracy = [float(text) for text in page.get_attribute("#plot-acc", "data-labels").split()]
    assert all(10 <= value <= 100 for value in accuracy), accuracy       # percent, not 0.913
    assert page.get_attribute("#plot-dead", "data-labels").split() == ["100", "75", "50", "25", "0"]


def blank_strip(page, canvas, side):
    """Is the canvas's left 14 pixels (where the y axis's title goes) or bottom 12 (the x
    axis's) empty?"""
    box = "0, 0, 14, c.height" if side == "left" else "0, c.height - 12, c.width, 12"
    return page.evaluate(f"""(() => {{
        const c = document.querySelector("{canvas}"), d = c.getContext("2d").getImageData({box}).data;
        for (let i = 3; i < d.length; i += 4) if (d[i]) return false;
        return true; }})()""")


def check_weights_and_digits(page, url, framework):
    """An ended run's last snapshot as the page draws it: its key gives the true counts; a
    unit's largest weight is the red of "red positive" if positive, the blue of "blue
    negative" if not; the readings in red are the wrong ones."""
    run = [run for run in training_state(url)["runs"] if run["framework"] == framework][-1]
    shot, canvas = run["snapshot"], f"#weights-{framework}"
    page.wait_for_function(f"document.querySelector('{canvas}').dataset.step == {shot['step']}")
    assert len(shot["weights"]) == UNITS and shot["side"] == 28
    assert page.inner_text(f"{canvas}-key") == (f"{UNITS} of the 128 units of the first hidden layer: "
                                                f"each tile one unit's 784 weights, as the 28×28 image they weigh.")
    size = f"[document.querySelector('{canvas}').width, document.querySelector('{canvas}').height]"
    assert page.evaluate(size) == [8 * 29, 2 * 29]
    assert "red positive, blue negative" in page.inner_text("#weights-key")
    red, blue = colour_of(page, "#weights-key .positive"), colour_of(page, "#weights-key .negative")
    assert red == (255, 0, 0) and blue == (0, 0, 255)
    assert red not in LAYER_COLOURS and blue not in LAYER_COLOURS
    for u, unit in enumerate(shot["weights"]):
        i = int(np.argmax(np.abs(unit)))       # 127 or -127: each unit is scaled to its largest
        x, y = (u % 8) * 29 + i % 28, (u // 8) * 29 + i // 28
        assert pixel(page, canvas, x, y) == (red if unit[i] > 0 else blue), (u, unit[i])
    labels = training_state(url)["digits"]["labels"]
    wrong = [i for i, (digit, _) in enumerate(shot["predictions"]) if digit != labels[i]]
    index = 0 if framework == "numpy" else 1   # N above P when both ran
    marked = page.evaluate(f"[...document.querySelectorAll('#digits > div')].map(cell => "
                           f"cell.querySelectorAll('span')[{index}].classList.contains('wrong'))")
    assert len(marked) == DIGITS and [i for i, m in enumerate(marked) if m] == wrong
    assert "struck through where that reading is wrong" in page.inner_text("#digits-key")
    struck = "getComputedStyle(document.querySelector('{}')).textDecorationLine"
    assert page.evaluate(struck.format("#digits-key .wrong")) == "line-through"
    assert colour_of(page, "#digits-key .wrong") == colour_of(page, "#digits-key")   # no colour of its own: red is a weight's
    if wrong:
        assert page.evaluate(struck.format("#digits .wrong")) == "line-through"


def change_lr(page, lr):
    """Change lr from the page; returns the step it applies from, as the status says."""
    page.fill("#new-lr", str(lr))
    page.click("#change-lr")
    page.wait_for_function(f"document.querySelector('#train-status').textContent.startsWith('lr {lr} from step')")
    return int(re.search(r"from step (\d+)", page.inner_text("#train-status")).group(1))


def check_lr_shown(run, lr, step):
    """The rate shown after a change to lr from step, under the cosine schedule: its value at
    the run's step with lr as its peak, not lr itself, as the page's line under the box says."""
    assert run["lr_changes"] == [{"step": step, "lr": lr}]
    assert run["step"] >= step
    assert run["lr"] == pytest.approx(cosine_lr(lr, run["step"], run["total_steps"]), rel=1e-9)
    assert run["lr"] < lr


def test_a_run_started_on_the_page_learns_stops_and_reads(browser, demo_to_train, tmp_path):
    """The NumPy MLP on 2,000 images, started from the form: its curves, diagnostics and
    weights are drawn and redrawn as it learns, each figure with a key that is true of it;
    a change of rate under the cosine schedule shows the schedule's rate; Stop keeps its
    finished epochs; its network then reads a drawn 3 as the server says it does."""
    page = browser.new_page(viewport={"width": 1200, "height": 1600})
    page.goto(demo_to_train)
    page.select_option("select[name=framework]", "numpy")
    page.fill("input[name=limit]", "2000")
    page.fill("input[name=epochs]", "100")
    page.click("#start")
    page.wait_for_function("Number(document.body.dataset.trainStep) > 0")
    page.wait_for_function("document.querySelector('#weights-numpy').dataset.step > 0")
    first = int(page.get_attribute("#weights-numpy", "data-step"))
    page.wait_for_function(f"document.querySelector('#weights-numpy').dataset.step > {first}")  # redrawn
    assert "the lr shown afterwards is the schedule's value now, not the number typed" in page.inner_text("#lr-key")
    changed = change_lr(page, 0.01)
    page.wait_for_function("document.querySelector('#runs').textContent.includes('after epoch 2')", timeout=120_000)
    page.wait_for_function(f"document.body.dataset.trainStep >= {changed}")
    check_lr_shown(training_state(demo_to_train)["runs"][0], 0.01, changed)
    for canvas in ("#plot-loss", "#plot-acc", "#plot-grad", "#plot-update", "#plot-dead", "#weights-numpy"):
        assert not blank(page, canvas), canvas
    assert page.locator("#digits canvas").count() == 10
    check_axes(page)
    check_twin_keys(page)
    check_layer_keys(page)
    page.click("#stop")
    page.wait_for_selector(".model h2:text('NumPy MLP, page run 1')", timeout=120_000)
    assert "numpy-1 interrupted" in page.inner_text("#runs")
    check_weights_and_digits(page, demo_to_train, "numpy")
    draw(page, THREE)
    request = urllib.request.Request(demo_to_train + "api/predict", data=json.dumps({"ink": page.evaluate("ink()")}).encode(),
                                     headers=JSON)
    p = json.load(urllib.request.urlopen(request, timeout=60))["models"][0]["probabilities"]
    assert page.locator(".verdict").all_inner_texts() == [f"reads {np.argmax(p)} ({100 * max(p):.1f}%)"]
    page.screenshot(path=tmp_path / "train.png", full_page=True)
    # a new run, starting (the API gives it no snapshot yet): the last run's weights go, not
    # shown as if they were the new run's
    page.evaluate("drawWeights({framework: 'numpy', id: 'numpy-2', flags: [], snapshot: null})")
    assert page.is_hidden("#weights-numpy") and page.inner_text("#weights-numpy-key") == "numpy-2: no weights yet."
    page.close()
    again = browser.new_page()                  # a page opened after the run: its status says so
    again.goto(demo_to_train)
    again.wait_for_function("document.querySelector('#runs').textContent.includes('numpy-1')")
    assert again.inner_text("#train-summary") == "1 run so far, none training; the last, numpy-1, interrupted."
    assert "steps/s" not in again.inner_text("#runs")   # an ended run shows where it ended, not a speed
    again.close()


def post(url, path, body):
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers=JSON)
    return json.load(urllib.request.urlopen(request, timeout=60))


@pytest.fixture
def demo_of_its_own(tmp_path_factory):
    """A server with no trained networks, whose runs are this test's alone (numbered from 1)."""
    folder = tmp_path_factory.mktemp("own")
    yield from serving(tmp_path_factory, "--results-dir", folder / "none", "--train-dir", folder / "runs")


def test_the_status_follows_a_run_started_elsewhere(browser, demo_of_its_own):
    """A page open before a run starts (here from the API, as curl would), and still open when
    it ends: its status line follows, with how long the run has left at its pace so far (and
    the run's line also the trainer's own estimate from its first steps); it was computed once,
    when the page opened."""
    url = demo_of_its_own
    page = browser.new_page()
    page.goto(url)
    page.wait_for_function("document.body.dataset.training == 'no'")
    assert page.inner_text("#train-summary") == "No training yet."
    post(url, "api/train", {"framework": "numpy", "limit": 2000, "epochs": 1000})
    page.wait_for_function("document.querySelector('#train-summary').textContent.startsWith('Training numpy-1')")
    page.wait_for_function("/ left at its pace so far\\)\\.$/.test(document.querySelector('#train-summary').textContent)")
    assert re.fullmatch(r"Training numpy-1 \(about [\d.]+ (s|min|h) left at its pace so far\)\.",
                        page.inner_text("#train-summary"))
    estimate = training_state(url)["runs"][0]["estimate"]
    assert estimate["line"].startswith("pace: ") and f"about {estimate['about']}," in estimate["line"]
    assert f"; about {estimate['about']} in all (its estimate); about " in page.inner_text("#runs")
    post(url, "api/train/stop", {})
    page.wait_for_function("document.querySelector('#train-summary').textContent.endsWith('interrupted.')", timeout=60_000)
    assert page.inner_text("#train-summary") == "1 run so far, none training; the last, numpy-1, interrupted."
    page.close()


def test_a_network_that_joins_reads_the_drawing_at_once(browser, demo_of_its_own):
    """A digit drawn while a run trains: when the run's network joins, it reads the drawing on
    the pad at once, as the server reads it, without another stroke (it showed "reads …")."""
    url = demo_of_its_own
    page = browser.new_page()
    page.goto(url)
    draw(page, THREE)                          # no network yet: nothing reads it
    assert page.locator(".verdict").count() == 0
    page.select_option("select[name=framework]", "numpy")
    page.fill("input[name=limit]", "2000")
    page.fill("input[name=epochs]", "2")
    page.click("#start")
    page.wait_for_selector(".model h2:text('NumPy MLP, page run 1')", timeout=120_000)
    page.wait_for_function("document.querySelector('.verdict').textContent !== 'reads …'", timeout=60_000)
    p = post(url, "api/predict", {"ink": page.evaluate("ink()")})["models"][0]["probabilities"]
    assert page.locator(".verdict").all_inner_texts() == [f"reads {np.argmax(p)} ({100 * max(p):.1f}%)"]
    page.close()


@pytest.fixture(scope="module")
def demo_for_the_picture(tmp_path_factory):
    folder = tmp_path_factory.mktemp("picture")
    yield from serving(tmp_path_factory, "--results-dir", folder / "none", "--train-dir", folder / "runs")


@pytest.mark.skipif(not os.environ.get("TRAIN_SCREENSHOT"),
                    reason="takes docs/demo.md's picture of the Train part: TRAIN_SCREENSHOT=results/reference/train.png")
def test_the_readme_picture_of_both_twins_in_float64(browser, demo_for_the_picture):
    """The picture of the Train part in docs/demo.md, as its caption says: both twins from the
    form in float64 on 10,000 images for 40 epochs, the rate changed to 0.03 (ten times the
    default) mid-run, as the page's "Try this" suggests, both run to their end. In
    float64 the twins agree to 1e-9, so their curves lie on each other; each key is true of
    its figure; then both networks read a drawn 3.

    A change applies to the runs still training, at the furthest step among them (the other
    waits for it there), so it is sent once both twins train and the first is 40% of the
    way: the PyTorch twin starts a few seconds later (importing torch), and a run of fewer
    steps could end before it begins."""
    url = demo_for_the_picture
    page = browser.new_page(viewport={"width": 1150, "height": 1600})
    page.goto(url)
    page.select_option("select[name=framework]", "both")
    page.select_option("select[name=dtype]", "float64")
    page.fill("input[name=limit]", "10000")
    page.fill("input[name=epochs]", "40")
    page.click("#start")
    deadline = time.monotonic() + 300
    while True:                                 # both training, the first 40% of the way
        runs = training_state(url)["runs"]
        if len(runs) == 2 and all(run.get("step") for run in runs) and \
                max(run["step"] for run in runs) >= 0.4 * runs[0]["total_steps"]:
            break
        assert time.monotonic() < deadline, runs
        time.sleep(0.2)
    changed = change_lr(page, 0.03)
    page.wait_for_function("document.body.dataset.training == 'no'", timeout=600_000)
    for name in ("NumPy MLP, page run 1", "PyTorch MLP, page run 1"):
        page.wait_for_selector(f".model h2:text('{name}')", timeout=120_000)
    numpy_run, pytorch_run = training_state(url)["runs"]
    for run in (numpy_run, pytorch_run):
        assert run["status"] == "completed" and len(run["epochs"]) == 40, run["id"]
        assert run["lr_changes"] == [{"step": changed, "lr": 0.03}], run["id"]
        assert 0.3 * run["total_steps"] < changed < 0.9 * run["total_steps"]   # mid-run
    # As tests/test_equivalence.py: each epoch's losses to 1e-9 relative, test accuracy to the
    # sample. A batch's loss near the end is ~1e-3, a difference of sums near 0: to 1e-9 absolute
    # (measured: 1e-12), far below a pixel of the plot.
    for a, b in zip(numpy_run["epochs"], pytorch_run["epochs"], strict=True):
        assert (a["train_loss"], a["test_loss"]) == pytest.approx((b["train_loss"], b["test_loss"]), rel=1e-9, abs=0)
        assert round(a["test_acc"] * 10000) == round(b["test_acc"] * 10000), a["epoch"]
    np.testing.assert_allclose(numpy_run["diagnostics"]["loss"], pytorch_run["diagnostics"]["loss"], rtol=0, atol=1e-9)
    page.wait_for_function("document.querySelector('#runs').textContent.includes('completed')")
    check_twin_keys(page)
    check_layer_keys(page)
    for framework in ("numpy", "pytorch"):
        check_weights_and_digits(page, url, framework)
    draw(page, THREE)                          # both networks have joined the ones that read it
    numpy_reads, pytorch_reads = page.locator(".verdict").all_inner_texts()
    assert numpy_reads.startswith("reads 3 ") and numpy_reads == pytorch_reads   # twins: the same reading
    page.locator("#train").screenshot(path=os.environ["TRAIN_SCREENSHOT"])   # the Train part alone
    page.close()


def test_the_update_ratio_axis_stops_at_1e_6(browser, demo_of_its_own):
    """Under the cosine schedule the last steps' rate falls to 0, and their update ratios to
    1e-10 and less: the axis stopped there, and squashed the ratios that matter (a learner saw
    the jump at a rate change as a notch). It stops at 1e-6; its note says so."""
    page = browser.new_page()
    page.goto(demo_of_its_own)
    labels = page.evaluate("""() => {   // read at once: the page's next poll redraws the chart
        plot("plot-update", [{xs: [1, 2, 3, 4], ys: [2e-2, 1e-3, 3e-4, 1e-10], color: "#000", dash: []}],
             {x: "training step", y: "‖ΔW‖ / ‖W‖ (log)", log: true, guide: 1e-3, floor: -6});
        return document.querySelector("#plot-update").dataset.labels;
    }""")
    assert labels.split() == ["1e-2", "1e-3", "1e-4", "1e-5", "1e-6"]   # top first
    assert "The axis stops at 1e-6" in page.inner_text("#update-note")
    page.close()
