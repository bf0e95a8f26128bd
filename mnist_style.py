"""The MNIST recipe, applied to a learner's drawing, so the networks read what they were
trained on.

LeCun, Cortes and Burges describe how MNIST was made (http://yann.lecun.com/exdb/mnist/):
NIST's black-and-white digits were scaled to fit a 20x20 pixel box, keeping their aspect
ratio; the anti-aliasing of that scaling left grey levels at the edges. Each was then put
in a 28x28 image with its centre of mass at the centre. mnist_style() does the same:

    1. crop     the bounding box of the ink
    2. scale    its longer side to 20 pixels, aspect kept; each new pixel is the mean of
                the ink it covers, so the grey levels come back as MNIST's did
    3. place    in 28x28, moved by whole pixels so its centre of mass is at the centre

Ink is a 2-D array in [0, 1], 1 for full ink and 0 for paper: MNIST's convention, and the
scale the networks were trained on (data_loader.load_mnist divides the bytes by 255).
NumPy only, and below the tools in the layers (beside data_loader.py): demo.py's server,
predict.py and report/robustness.py's drawn test digits all call mnist_style.
"""
import numpy as np

BOX = 20   # the digit's longer side after scaling, in pixels
SIDE = 28  # the image the networks read
# Where MNIST puts a digit's centre of mass, as (row, column) pixel indices: over the 10,000
# test images, every one lies within half a pixel of (14, 14) (means 13.99 and 14.01). So each
# digit was moved by whole pixels, which keeps it as sharp as the scaling left it.
CENTRE = 14


class NoInk(ValueError):
    """The drawing is blank: there is no digit to read, so no guess is made."""


def crop_to_ink(ink):
    """Step 1: the smallest rectangle that holds every pixel with ink. (H, W) -> (h, w)."""
    rows = np.flatnonzero((ink > 0).any(axis=1))
    cols = np.flatnonzero((ink > 0).any(axis=0))
    if rows.size == 0:
        raise NoInk("no ink: draw a digit first")
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def box_weights(n_in, n_out, scale):
    """(n_out, n_in): the share of output pixel o that input pixel i covers. Output pixel o
    spans [o, o + 1) * scale input pixels, pixel i spans [i, i + 1); each row sums to 1,
    except the last row of a side that ends before scale * n_out (that rest is paper)."""
    start = np.arange(n_out)[:, None] * scale                        # n_out,1
    i = np.arange(n_in)[None, :]                                     # 1,n_in
    overlap = np.minimum(start + scale, i + 1) - np.maximum(start, i)  # n_out,n_in  length in common
    return np.clip(overlap, 0, None) / scale


def fit_box(digit, box=BOX):
    """Step 2: scale (h, w) so the longer side is box pixels and the aspect is kept. Each
    new pixel is the mean of the old ones under it (a box filter, as PIL's Image.BOX), done
    as two matrix products: rows, then columns."""
    h, w = digit.shape
    longer = max(h, w)
    scale = longer / box                               # old pixels per new pixel, on both sides
    out_h, out_w = -(-h * box // longer), -(-w * box // longer)  # ceil in integers: no 20.0000001
    return box_weights(h, out_h, scale) @ digit @ box_weights(w, out_w, scale).T  # out_h,out_w


def centre_of_mass(image):
    """(row, column) of the ink's centre of mass, in pixel indices."""
    rows, cols = np.indices(image.shape)
    total = image.sum()
    return (rows * image).sum() / total, (cols * image).sum() / total


def place_by_mass(digit, side=SIDE, centre=CENTRE):
    """Step 3: digit (h, w), each at most 20, into a side x side image, moved by whole pixels
    so that its centre of mass lands on (centre, centre), rounded half up. A digit whose mass
    sits far to one side would then cross the edge: it stops at the edge instead, so no ink
    is lost."""
    h, w = digit.shape
    row, col = centre_of_mass(digit)
    top = int(np.clip(np.floor(centre - row + 0.5), 0, side - h))
    left = int(np.clip(np.floor(centre - col + 0.5), 0, side - w))
    image = np.zeros((side, side), np.float32)
    image[top:top + h, left:left + w] = digit
    return image


def mnist_style(ink):
    """A drawing (H, W), ink in [0, 1] -> the (28, 28) float32 image the networks read,
    made the way MNIST's images were. NoInk if nothing is drawn."""
    digit = crop_to_ink(np.asarray(ink, dtype=np.float64))   # h,w
    digit = fit_box(digit)                                    # <=20,<=20
    digit = np.clip(digit, 0, 1)                              # means of [0, 1] values, but for rounding
    if not digit.astype(np.float32).any():   # ink so faint (1e-300) that scaling leaves nothing
        raise NoInk("no ink: the drawing is too faint to read")
    return place_by_mass(digit)                               # 28,28


# ----------------------------------------------------------------------------- pictures (predict.py)

NOISE = 0.1  # ink fainter than this share of the strongest is taken for paper (JPEG ringing, grain)


def ink_from_grey(grey):
    """A picture of one digit on plain paper, (H, W) grey levels in [0, 1] (0 is black) ->
    ink in [0, 1], for mnist_style. The paper is what the border shows (its median): light
    paper means dark ink, so the levels are turned over. Then the paper's level becomes 0 and
    the strongest ink 1, and faint noise becomes paper, so that it cannot stretch the ink's
    bounding box to the whole picture."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    paper = float(np.median(border))
    ink = 1 - grey if paper > 0.5 else grey                  # H,W  light ink on dark paper as it is
    paper = min(paper, 1 - paper)                            # the paper's level, as ink
    strength = ink.max() - paper
    if strength < NOISE:                                     # nothing stands out from the paper
        return np.zeros_like(ink)
    ink = (ink - paper) / strength
    ink[ink < NOISE] = 0
    return np.clip(ink, 0, 1)
