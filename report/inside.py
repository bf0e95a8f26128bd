"""What a trained network does and holds: its confusion matrix over the test set, the test
images it gets wrong most confidently, and its first-layer weights drawn as images."""
import textwrap

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import PowerNorm

from numpy_nn.utils import softmax

CLASS_NAMES = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion-mnist": ["T-shirt", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Boot"],
}
MISTAKES_GRID = (4, 6)   # rows, columns: the 24 most confidently wrong test images
UNITS_GRID = (8, 8)      # rows, columns: the first 64 hidden units of the first layer
IMAGE_SIDE = 28          # MNIST and Fashion-MNIST images are 28x28 = 784 pixels


def confusion_matrix(y_true, y_pred, n_classes=10):
    """counts[t, p] = how many samples of true class t were predicted as class p."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (y_true, y_pred), 1)  # one count per sample, at (true, predicted)
    return counts


def most_confident_mistakes(probs, y_true, k):
    """Indices of the k wrong predictions made with the highest probability, most confident first."""
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    confidence = probs[wrong, predicted[wrong]]
    order = np.argsort(-confidence, kind="stable")  # equal confidence: test-set order
    return wrong[order[:k]]


def plot_confusion(counts, run, class_names):
    """The confusion matrix with every count written in its cell."""
    fig, ax = plt.subplots(figsize=(7.5, 6.8), layout="constrained")
    # square-root colours: the few mistakes per cell stay visible beside a ~1000-strong diagonal
    norm = PowerNorm(gamma=0.5, vmin=0, vmax=counts.max())
    image = ax.imshow(counts, cmap="Blues", norm=norm)
    for true, predicted in np.ndindex(counts.shape):
        dark = norm(counts[true, predicted]) > 0.6
        ax.text(predicted, true, str(counts[true, predicted]), ha="center", va="center",
                fontsize=8, color="white" if dark else "black")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45 if len(class_names[0]) > 1 else 0)
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="predicted class", ylabel="true class")
    accuracy = np.trace(counts) / counts.sum()
    ax.set_title(f"{run.label}: confusion matrix, {run.record['config']['dataset']} test set\n"
                 f"{accuracy:.2%} of {counts.sum():,} correct (the diagonal); "
                 f"every other cell is a mistake",
                 fontsize="medium")
    fig.colorbar(image, ax=ax, label="test images (square-root colour scale)", shrink=0.8)
    return fig


def plot_mistakes(images, y_true, probs, picks, run, class_names):
    """A grid of the picked test images, each titled with its prediction, confidence and truth."""
    rows, cols = MISTAKES_GRID
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.9 * rows + 0.5), layout="constrained")
    for ax in axes.flat:
        ax.axis("off")  # cells beyond the last mistake stay empty
    for ax, i in zip(axes.flat, picks):
        predicted = probs[i].argmax()
        ax.imshow(images[i].reshape(IMAGE_SIDE, IMAGE_SIDE), cmap="gray_r")
        ax.set_title(f"pred {class_names[predicted]} ({probs[i, predicted]:.0%})\n"
                     f"true {class_names[y_true[i]]}", fontsize=9)
    n_wrong = int((probs.argmax(axis=1) != y_true).sum())
    fig.suptitle(f"{run.label}: the {len(picks)} most confident of its {n_wrong:,} mistakes "
                 f"on the {run.record['config']['dataset']} test set")
    return fig


def tile(images, rows, cols, gap=2):
    """Lay (N, h, w) images out in a rows x cols mosaic; the gaps are NaN (drawn grey)."""
    _, h, w = images.shape
    mosaic = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        mosaic[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = image
    return mosaic


WEIGHTS_CAPTION = (
    "Each square is one hidden unit's 784 input weights, laid out where their pixels sit in the "
    "image (unit 1 top left, row by row). Red: ink there drives the unit up; blue: ink there drives "
    "it down; white: ignored. Each square has its own colour scale, symmetric about zero. The units "
    "look for strokes, edges and blobs in particular places: pieces of shapes rather than whole "
    "digits or garments, which the layers above combine. The speckled borders are pixels that are blank in every "
    "training image: they never get a gradient, so they keep their random starting weights.")


def plot_first_layer(W1, run):
    """The first hidden units' input weights (W1 columns) as 28x28 images."""
    rows, cols = UNITS_GRID
    units = W1[:, :rows * cols].T.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)    # U,28,28
    largest = np.abs(units).max(axis=(1, 2), keepdims=True)              # U,1,1
    scaled = units / np.where(largest > 0, largest, 1)                   # each unit in [-1, 1]
    rows = -(-len(units) // cols)  # fewer rows when the layer has fewer units
    fig, ax = plt.subplots(figsize=(8, 8 * rows / cols + 1.6), layout="constrained")
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.6")  # NaN gaps in grey
    ax.imshow(tile(scaled, rows, cols), cmap=cmap, vmin=-1, vmax=1)
    ax.axis("off")
    ax.set_title(f"{run.label}: first-layer weights of the first {len(units)} of "
                 f"{W1.shape[1]} hidden units")
    fig.supxlabel(textwrap.fill(WEIGHTS_CAPTION, 110), fontsize=8)
    return fig


def inside_figures(run, logits, x_test, y_test, first_layer=None):
    """Confusion matrix, most confident mistakes and (given W1) first-layer weights of one run,
    from the test-set logits of its checked weights."""
    class_names = CLASS_NAMES[run.record["config"]["dataset"]]
    probs = softmax(logits)                                              # N,10
    counts = confusion_matrix(y_test, probs.argmax(axis=1), len(class_names))
    picks = most_confident_mistakes(probs, y_test, MISTAKES_GRID[0] * MISTAKES_GRID[1])
    figures = {"confusion": plot_confusion(counts, run, class_names),
               "mistakes": plot_mistakes(x_test, y_test, probs, picks, run, class_names)}
    if first_layer is not None:  # NumPy runs: the PyTorch twin learns nearly the same weights
        figures["weights"] = plot_first_layer(first_layer, run)
    return figures
