"""How robust a trained network is: its accuracy on MNIST's test digits written otherwise
than MNIST's writers wrote them. A network that learned the digit, not the writers' habits,
keeps most of its test accuracy here; one that learned their habits loses it.

Both sets are the 10,000 test images, each changed by its own random draw (the same on
every call: SEED), in float64:

    perturbed  rotated (up to 20 degrees either way), scaled (0.8 to 1.2), its strokes made
               thicker or thinner, and moved off-centre (up to 4 pixels each axis, but no
               further than keeps the ink inside the 28x28 frame): read as they are
    drawn      the same images as the demo page would send them (its 8-bit opacity, its
               3 decimals), then made MNIST-style as its server does (mnist_style.py):
               cropped to the ink, scaled to 20 pixels, centred by mass. That undoes most
               of the move and the size; the rotation and the pen stay.

compare.py reports the accuracy on each beside the test accuracy. NumPy only.
"""
import numpy as np

from mnist_style import NoInk, mnist_style
from numpy_nn.augment import CENTRE, SIDE, affine, inverse, thicken, warp

SEED = 24  # the draws' own seed, fixed: every run is measured on the same images
# Each drawn uniformly in +- the limit. "thickness" blends towards a 3x3 dilation (+) or
# erosion (-), numpy_nn.augment.thicken. Not 1: a full erosion keeps a median 14% of a digit's
# ink, and of 6 of the 10,000 nothing at all; at 0.7 every digit keeps at least 30%.
RANGES = {"rotate": 20.0,      # degrees
          "scale": 0.2,        # 1 +- this
          "thickness": 0.7,
          "shift": 4.0}        # pixels, each axis
NO_CHANGE = dict.fromkeys(RANGES, 0.0)  # the test images as they are (tests/test_robustness.py)
CANVAS = 280        # demo/page.html's drawing pad, in pixels a side
NO_DIGIT = -1       # the label of a drawn image with no ink left: no class matches it, so it counts wrong


def ink_extent(images, A):
    """Where the ink of each image (B,784) lies once mapped by A (B,2,2, about the centre):
    the smallest and largest x, and y, of its inked pixels. Four arrays of B."""
    y, x = np.mgrid[:SIDE, :SIDE].reshape(2, -1) - CENTRE       # 784 each
    mapped = A @ np.stack([x, y])                               # B,2,784
    ink = (images > 0)[:, None, :]                              # B,1,784
    return (*np.where(ink, mapped, np.inf).min(axis=2).T,      # x_min, y_min
            *np.where(ink, mapped, -np.inf).max(axis=2).T)      # x_max, y_max


def draw(n, ranges=RANGES, seed=SEED):
    """n random changes, each number uniform in +- its range: {"rotate": n, "scale": n,
    "thickness": n, "shift": n,2 (x, y)}. The same seed gives the same draws."""
    rng = np.random.default_rng(seed)

    def uniform(limit, size=n):
        return rng.uniform(-limit, limit, size)
    return {"rotate": uniform(ranges["rotate"]), "scale": 1 + uniform(ranges["scale"]),
            "thickness": uniform(ranges["thickness"]), "shift": uniform(ranges["shift"], (n, 2))}


def perturb(images, change):
    """Each image (N,784, float64) thickened or thinned, then rotated and scaled about its
    centre and shifted, by its own change (draw). The shift is cut short where it would take
    ink out of the frame."""
    images = thicken(images, change["thickness"])
    zero = np.zeros(len(images))
    A = affine(change["rotate"], change["scale"], zero, zero, zero)[:, :, :2]   # N,2,2
    x_min, y_min, x_max, y_max = ink_extent(images, A)
    low = -CENTRE - np.stack([x_min, y_min], axis=1)    # N,2  the shifts that keep the ink in
    high = CENTRE - np.stack([x_max, y_max], axis=1)    # N,2
    # a digit too big for the frame at its angle (low > high) is centred instead
    shift = np.where(low <= high, np.clip(change["shift"], low, high), (low + high) / 2)
    forward = affine(change["rotate"], change["scale"], zero, shift[:, 0], shift[:, 1])
    return warp(images, inverse(forward))


def perturbed(images, ranges=RANGES, seed=SEED):
    """Set A: the images (N,784) each changed by its own random draw, in float64."""
    images = np.asarray(images, np.float64)
    return perturb(images, draw(len(images), ranges, seed))


def on_canvas(image):
    """A 28x28 image drawn on the page's 280x280 pad: each pixel a 10x10 square of ink."""
    k = CANVAS // SIDE
    return np.broadcast_to(image[:, None, :, None], (SIDE, k, SIDE, k)).reshape(CANVAS, CANVAS)


def drawn(images, labels):
    """The images (N,784) as the demo page sends them, made MNIST-style as its server does:
    (N,784 float32, N labels), the label NO_DIGIT where no ink is left. mnist_style reads the
    28x28 image itself, not on_canvas(image): it crops to the ink and averages it down to 20
    pixels, so the 10x10 squares give the same image (to float32's last bit,
    tests/test_robustness.py) at a tenth of the cost."""
    alpha = np.round(images * 255)                   # the canvas keeps 8-bit opacity
    sent = np.round(alpha / 0.255) / 1000            # page.html's ink(): opacity to 3 decimals
    out = np.zeros(images.shape, np.float32)
    labels = labels.copy()
    for i, image in enumerate(sent):
        try:
            out[i] = mnist_style(image.reshape(SIDE, SIDE)).reshape(-1)
        except NoInk:
            labels[i] = NO_DIGIT
    return out, labels


def robustness_sets(x_test, y_test, ranges=RANGES, seed=SEED):
    """{"perturbed": (images, labels), "drawn": (images, labels)} from the test set."""
    moved = perturbed(x_test, ranges, seed)
    return {"perturbed": (moved, y_test), "drawn": drawn(moved, y_test)}
