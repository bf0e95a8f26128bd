"""What a trained network does and holds: its confusion matrix over the test set, the test
images it gets wrong most confidently, an MLP's first-layer weights drawn as images, and a
CNN's first-layer filters and the feature maps its conv layers make of one test digit.

The CNN pictures are computed with numpy_nn's own layers from the run's weights (a PyTorch
run's converted to numpy_nn's layout first), so both frameworks' runs are drawn alike."""
import textwrap

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import PowerNorm

from numpy_nn.cnn import IMAGE_SHAPE
from numpy_nn.layers import conv2d_forward, maxpool2d_forward
from numpy_nn.utils import relu, softmax
from report.run import picture_name, plural

CLASS_NAMES = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion-mnist": ["T-shirt", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Boot"],
}
MISTAKES_GRID = (4, 6)   # rows, columns: the 24 most confidently wrong test images
UNITS_GRID = (8, 8)      # rows, columns: the first 64 hidden units of the first layer
FILTERS_GRID = (4, 8)    # rows, columns: the CNN's 32 first-layer filters
FEATURE_IMAGE = 0        # the test image whose feature maps are drawn: the first
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
    fig.suptitle(f"{run.label}: the {len(picks)} most confident of its {plural(n_wrong, 'mistake')} "
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


def own_scale(images):
    """(N, h, w) images, each divided by its own largest |value|: a signed one then lies in
    [-1, 1], a non-negative one in [0, 1]; an all-zero one stays zero."""
    largest = np.abs(images).max(axis=(1, 2), keepdims=True)             # N,1,1
    return images / np.where(largest > 0, largest, 1)


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
    scaled = own_scale(units)                                            # each unit in [-1, 1]
    rows = -(-len(units) // cols)  # fewer rows when the layer has fewer units
    fig, ax = plt.subplots(figsize=(8, 8 * rows / cols + 1.6), layout="constrained")
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.6")  # NaN gaps in grey
    ax.imshow(tile(scaled, rows, cols), cmap=cmap, vmin=-1, vmax=1)
    ax.axis("off")
    ax.set_title(f"{run.label}: first-layer weights of the first {len(units)} of "
                 f"{W1.shape[1]} hidden units")
    fig.supxlabel(textwrap.fill(WEIGHTS_CAPTION, 110), fontsize=8)
    return fig


# ----------------------------------------------------------------------------- a CNN

FILTERS_CAPTION = (
    "Each square is one filter of the first conv layer: the 3x3 weights it multiplies every 3x3 "
    "patch of the image with, sliding over all of it (filter 1 top left, row by row). Red: ink there "
    "drives the filter's output up; blue: ink there drives it down. Each filter has its own colour "
    "scale, symmetric about zero. A filter red on one side and blue on the other is an edge detector: "
    "it fires where ink begins or ends in that direction; a red line between blue is a detector of "
    "strokes at that angle. Untrained filters are random noise: training turns them into these.")


def plot_filters(W1, run):
    """The first conv layer's filters, W1 (O, 1, kh, kw), as kh x kw images."""
    filters = own_scale(W1[:, 0])                                        # O,kh,kw  each in [-1, 1]
    rows, cols = FILTERS_GRID
    fig, ax = plt.subplots(figsize=(8, 5.4), layout="constrained")
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.6")      # NaN gaps in grey
    image = ax.imshow(tile(filters, -(-len(filters) // cols), cols, gap=1), cmap=cmap, vmin=-1, vmax=1)
    ax.axis("off")
    ax.set_title(f"{run.label}: the {len(filters)} {W1.shape[2]}x{W1.shape[3]} filters of its first "
                 f"conv layer")
    fig.colorbar(image, ax=ax, shrink=0.6, label="weight / the filter's largest |weight|")
    fig.supxlabel(textwrap.fill(FILTERS_CAPTION, 110), fontsize=8)
    return fig


def feature_maps(params, image):
    """What the CNN's conv layers make of one image (784 pixels), from its numpy_nn-layout
    params: the maps after conv1 + ReLU (32, 26, 26) and after conv2 + ReLU (64, 11, 11).
    conv2 reads conv1's maps max-pooled to 13x13, as in CNN.forward."""
    x = image.reshape(1, *IMAGE_SHAPE).astype(params["W1"].dtype)       # 1,1,28,28
    z1, _ = conv2d_forward(x, params["W1"], params["b1"])                # 1,32,26,26
    maps1 = relu(z1)
    pooled, _ = maxpool2d_forward(maps1)                                 # 1,32,13,13
    z2, _ = conv2d_forward(pooled, params["W2"], params["b2"])           # 1,64,11,11
    return maps1[0], relu(z2)[0]


FEATURE_MAPS_CAPTION = (
    "What the network sees. Left: the digit, 28x28 pixels. Middle: the first conv layer's maps, one "
    "per filter (see {filters}), after ReLU: a map is bright where its filter's pattern, an edge "
    "or a stroke at some angle, lies under the sliding 3x3 window, and dark (zero) elsewhere; a few do "
    "the opposite, bright on the blank paper and dark on the ink. Right: the second conv layer's maps after "
    "ReLU. Each combines all of the first layer's maps (max-pooled to half size), so it answers for an "
    "8x8-pixel patch of the digit and can respond to larger pieces: curves, corners, the ends of strokes. "
    "The layers above read these maps, not the pixels. Each map has its own colour scale, from 0 (dark) "
    "to its own largest value (bright); an all-dark map found nothing in this digit.")


def plot_feature_maps(maps, image, index, class_name, run):
    """One test image and its feature maps (feature_maps: conv1's, conv2's), each map on
    its own scale, laid out 4 rows of 8 and 8 rows of 8."""
    fig, axes = plt.subplot_mosaic([["input", "conv1", "conv2"]], width_ratios=[1, 2, 1],
                                   figsize=(14, 5.6), layout="constrained")
    axes["input"].imshow(image.reshape(IMAGE_SHAPE[1:]), cmap="gray_r")
    which = "the first test image (index 0)" if index == 0 else f"the test image of index {index}"
    axes["input"].set_title(f"{which},\nlabelled {class_name}", fontsize=10)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")   # NaN gaps in white
    for layer, layer_maps, rows, gap in (("conv1", maps[0], 4, 2), ("conv2", maps[1], 8, 1)):
        cols = -(-len(layer_maps) // rows)
        axes[layer].imshow(tile(own_scale(layer_maps), rows, cols, gap), cmap=cmap, vmin=0, vmax=1)
        side = f"{layer_maps.shape[1]}x{layer_maps.shape[2]}"
        axes[layer].set_title(f"after {layer} + ReLU: {len(layer_maps)} maps of {side}", fontsize=10)
    for ax in axes.values():
        ax.axis("off")
    fig.suptitle(f"{run.label}: what its conv layers make of one test digit")
    fig.supxlabel(textwrap.fill(FEATURE_MAPS_CAPTION.format(filters=picture_name("filters", run)), 140), fontsize=8)
    return fig


def inside_figures(run, logits, x_test, y_test, params=None):
    """The pictures of one run, from the test-set logits of its checked weights and (given)
    its params in numpy_nn's layout: confusion matrix and most confident mistakes; a CNN's
    filters and feature maps; a NumPy MLP's first-layer weights."""
    class_names = CLASS_NAMES[run.record["config"]["dataset"]]
    probs = softmax(logits)                                              # N,10
    counts = confusion_matrix(y_test, probs.argmax(axis=1), len(class_names))
    picks = most_confident_mistakes(probs, y_test, MISTAKES_GRID[0] * MISTAKES_GRID[1])
    figures = {"confusion": plot_confusion(counts, run, class_names),
               "mistakes": plot_mistakes(x_test, y_test, probs, picks, run, class_names)}
    if params is None:
        return figures
    if run.model == "cnn":
        i = FEATURE_IMAGE
        figures["filters"] = plot_filters(params["W1"], run)
        figures["feature_maps"] = plot_feature_maps(feature_maps(params, x_test[i]), x_test[i], i,
                                                    class_names[y_test[i]], run)
    elif run.framework == "numpy":  # the PyTorch twin learns nearly the same weights
        figures["weights"] = plot_first_layer(params["W1"], run)
    return figures
