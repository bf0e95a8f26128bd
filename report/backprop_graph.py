"""The computational graph of docs/backprop.md's worked example, drawn from its numbers.

    python check.py --explain                       # draws it to results/backprop_graph.png
    python check.py --explain --picture docs/backprop_graph.png   # the page's copy

Each node and each weight carries its forward value in black and, beneath it, the gradient
dL/d(it) in red. draw() takes the numbers checker/explain.py worked out (by hand, and checked
there against backward(), finite differences and autograd) and returns the text of every
label it drew, by the quantity it shows; save() writes those labels into the PNG's metadata
too, so a test can tell which numbers a committed picture shows without reading its pixels.
"""
import json

import matplotlib

matplotlib.use("Agg")  # draw into files only: no window needed
import matplotlib.pyplot as plt  # noqa: E402  (after use())

from harness.experiment import save_bytes  # noqa: E402

VALUE, GRADIENT = "black", "#c0392b"
COLUMNS = {"x": 0.0, "z1": 5.4, "h1": 8.4, "logits": 13.8, "L": 17.9}   # left to right: the forward pass
ROWS = (1.1, -1.1)                                                       # unit 0 above, unit 1 below
HALF = 1.0                                                               # a node's half width
METADATA_KEY = "Labels"           # the PNG text chunk holding the labels, as JSON
VERSION_KEY = "Drawn with"        # ... and the one naming the matplotlib that drew it


def num(v):
    """4 significant digits, as checker/explain.py prints them."""
    text = f"{v:.4g}"
    return "0" if text in ("0", "-0") else text


def draw(hand, params):
    """The graph, from hand (checker/explain.py's Example.hand: z1, h1, logits, p, L and every
    d<name>) and params (W1, b1, W2, b2). Returns (figure, {quantity: the text drawn for it}).
    Matplotlib's default style, whatever the user's matplotlibrc says: the same picture anywhere."""
    with plt.style.context("default"):
        return _draw(hand, params)


def _draw(hand, params):
    fig, ax = plt.subplots(figsize=(17, 5.6))
    ax.set_xlim(-1.1, 19.0)
    ax.set_ylim(-2.0, 2.0)
    ax.axis("off")
    labels = {}

    def label(key, x, y, text, color, **kw):
        labels[key] = text
        ax.text(x, y, text, color=color, ha="center", va="center", fontsize=9, **kw)

    def node(x, y, lines, box=True):
        """A node at (x, y): [(key, text, color)], one text per line, top to bottom."""
        if box:
            ax.add_patch(matplotlib.patches.FancyBboxPatch(
                (x - HALF, y - 0.16 * len(lines)), 2 * HALF, 0.32 * len(lines), boxstyle="round,pad=0.06",
                facecolor="#f4f4f4", edgecolor="#888888", zorder=1))
        top = y + 0.16 * (len(lines) - 1)
        for n, (key, text, color) in enumerate(lines):
            label(key, x, top - 0.32 * n, text, color, zorder=3)

    def edge(x0, y0, x1, y1, t, lines):
        """An arrow from (x0, y0) to (x1, y1), its labels at fraction t along it."""
        start, end = x0 + HALF + 0.08, x1 - HALF - 0.08
        ax.annotate("", xy=(end, y1), xytext=(start, y0),
                    arrowprops={"arrowstyle": "-|>", "color": "#999999", "lw": 1}, zorder=0)
        x, y = start + t * (end - start), y0 + t * (y1 - y0)
        for n, (key, text, color) in enumerate(lines):
            label(key, x, y + 0.13 * (len(lines) - 1) - 0.26 * n, text, color, zorder=3,
                  bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.3})

    X = hand["x"]
    for i, y in enumerate(ROWS):
        node(COLUMNS["x"], y, [(f"x[{i}]", f"x[{i}] = {num(X[i])}", VALUE)])
        node(COLUMNS["z1"], y, [(f"z1[{i}]", f"z1[{i}] = {num(hand['z1'][i])}", VALUE),
                                (f"b1[{i}]", f"b1[{i}] = {num(params['b1'][i])}", VALUE),
                                (f"dz1[{i}]", f"dz1[{i}] = {num(hand['dz1'][i])}", GRADIENT),
                                (f"db1[{i}]", f"db1[{i}] = {num(hand['db1'][i])}", GRADIENT)])
        node(COLUMNS["h1"], y, [(f"h1[{i}]", f"h1[{i}] = {num(hand['h1'][i])}", VALUE),
                                (f"dh1[{i}]", f"dh1[{i}] = {num(hand['dh1'][i])}", GRADIENT)])
        node(COLUMNS["logits"], y, [(f"logits[{i}]", f"logits[{i}] = {num(hand['logits'][i])}", VALUE),
                                    (f"b2[{i}]", f"b2[{i}] = {num(params['b2'][i])}", VALUE),
                                    (f"dlogits[{i}]", f"dlogits[{i}] = {num(hand['dlogits'][i])}", GRADIENT),
                                    (f"db2[{i}]", f"db2[{i}] = {num(hand['db2'][i])}", GRADIENT)])
        edge(COLUMNS["z1"], y, COLUMNS["h1"], y, 0.5, [(f"relu[{i}]", "relu", VALUE)])
        edge(COLUMNS["logits"], y, COLUMNS["L"], 0.0, 0.45, [(f"p[{i}]", f"p[{i}] = {num(hand['p'][i])}", VALUE)])
    node(COLUMNS["L"], 0.0, [("L", f"L = {num(hand['L'])}", VALUE), ("dL", "dL/dL = 1", GRADIENT)])
    for W, start, end in (("W1", "x", "z1"), ("W2", "h1", "logits")):
        for i, y0 in enumerate(ROWS):
            for j, y1 in enumerate(ROWS):
                t = 0.5 if i == j else 0.2              # crossing arrows meet in the middle: label them early
                edge(COLUMNS[start], y0, COLUMNS[end], y1, t,
                     [(f"{W}[{i},{j}]", f"{W}[{i},{j}] = {num(params[W][i][j])}", VALUE),
                      (f"d{W}[{i},{j}]", f"d{W}[{i},{j}] = {num(hand['d' + W][i][j])}", GRADIENT)])
    ax.set_title("The worked example of docs/backprop.md: the forward values in black, and beneath each "
                 "its gradient dL/d(it) in red\n(drawn by python check.py --explain; class c = "
                 f"{hand['c']}, L = -log p[c])", fontsize=10)
    fig.tight_layout()
    return fig, labels


def save(fig, labels, path):
    """Write the figure to path (atomically), its labels in the PNG's metadata, and close it."""
    metadata = {"Software": None, METADATA_KEY: json.dumps(labels, sort_keys=True),
                VERSION_KEY: f"matplotlib {matplotlib.__version__}"}
    try:
        with plt.style.context("default"):
            save_bytes(path, lambda f: fig.savefig(f, format="png", dpi=100, metadata=metadata))
    finally:
        plt.close(fig)


def saved_labels(path):
    """The labels save() wrote into the PNG at path."""
    from PIL import Image
    with Image.open(path) as image:
        return json.loads(image.text[METADATA_KEY])
