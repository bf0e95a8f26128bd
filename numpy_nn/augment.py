"""Data augmentation, from scratch: every training image gets a fresh random small affine
warp (rotation, scale, shear, shift) at every epoch, and optionally thicker or thinner
strokes. The network never sees the same picture twice, so it must learn the digit, not
MNIST's writers: their slant, their size, their pen.

An affine map moves a point p (x right, y down, measured from the image's centre) to
A p + t. To fill the output image we go the other way, "inverse mapping": for each output
pixel p' we ask where it came from, p = A^-1 (p' - t), and read the input there. That
point usually falls between pixels, so its value is interpolated bilinearly from the four
pixels around it. (Mapping forward would leave holes where no input pixel lands.)

pytorch_nn/augment.py is the twin: the same draws, warped by torch's affine_grid and
grid_sample; tests/test_augment.py proves the two equal in float64.

NumPy only.
"""
import numpy as np

SIDE = 28                   # the images are 28x28
CENTRE = (SIDE - 1) / 2     # 13.5: the centre of the image, in pixel indices


def affine(rotate, scale, shear, shift_x, shift_y):
    """The forward maps, as B,2,3 matrices [A | t]: scale, then shear, then rotate (angles in
    degrees, positive counter-clockwise as seen; each argument an array of B)."""
    a, s = np.radians(rotate), np.tan(np.radians(shear))
    cos, sin = np.cos(a), np.sin(a)
    scale = np.asarray(scale)
    # A = rotation @ shearing * scale, its four entries written out for the whole batch at once.
    # y points down the image, so a counter-clockwise turn is [[cos, sin], [-sin, cos]]; the
    # shearing is [[1, s], [0, 1]] (x += tan(shear) * y)
    forward = np.empty((len(a), 2, 3))
    forward[:, 0, 0] = cos * scale
    forward[:, 0, 1] = (cos * s + sin) * scale
    forward[:, 1, 0] = -sin * scale
    forward[:, 1, 1] = (cos - sin * s) * scale
    forward[:, 0, 2], forward[:, 1, 2] = shift_x, shift_y    # t
    return forward


def inverse(forward):
    """B,2,3 forward maps [A | t] -> their inverses [A^-1 | -A^-1 t]: where each output pixel
    comes from. A 2x2 inverse is [[d, -b], [-c, a]] / (ad - bc)."""
    a, b, c, d = forward[:, 0, 0], forward[:, 0, 1], forward[:, 1, 0], forward[:, 1, 1]
    det = a * d - b * c
    sources = np.empty_like(forward)
    sources[:, 0, 0], sources[:, 0, 1] = d / det, -b / det
    sources[:, 1, 0], sources[:, 1, 1] = -c / det, a / det
    sources[:, :, 2:] = -sources[:, :, :2] @ forward[:, :, 2:]
    return sources


# every output pixel's (x, y) from the centre, and a 1 for the shift: 3,784, in each float type
_y, _x = np.mgrid[:SIDE, :SIDE].reshape(2, -1) - CENTRE
GRID = np.stack([_x, _y, np.ones(SIDE * SIDE)])
GRIDS = {dtype: GRID.astype(dtype) for dtype in (np.dtype(np.float32), np.dtype(np.float64))}


def warp(images, sources):
    """Inverse-mapped affine warp with bilinear interpolation, the whole batch at once.
    images: B,784 (or B,28,28); sources: B,2,3, each mapping an output pixel's (x, y) from the
    centre to the input point it reads. Outside the image is paper: 0. Returns B,784."""
    B, dtype = len(images), images.dtype
    grid = GRIDS.get(dtype)
    points = sources.astype(dtype) @ (GRID.astype(dtype) if grid is None else grid)  # B,2,784
    points += CENTRE                                      # the column u and row v read
    # the image gets one pixel of paper before it and two after (P = 31 a side): a point left of
    # column 0 reads columns -1 and 0; one at or past column 28 is clipped to it, and reads 28
    # and 29 with weights 1 and 0
    np.clip(points, -1, SIDE, out=points)
    corner = np.floor(points)                             # the pixel above-left of the point
    fraction = np.subtract(points, corner, out=points)    # how far past it, in [0, 1)
    u, v = fraction[:, 0], fraction[:, 1]                 # B,784 each
    P = SIDE + 3
    padded = np.zeros((B, P, P), dtype)
    padded[:, 1:SIDE + 1, 1:SIDE + 1] = images.reshape(B, SIDE, SIDE)
    # that pixel's index in the flattened batch: image b, row v0 + 1, column u0 + 1
    index = (corner[:, 1] * P + corner[:, 0]).astype(np.intp) + (np.arange(B)[:, None] * P + 1) * P + 1
    flat = padded.reshape(-1)
    # the four pixels around the point: the corner, and the ones right, below, below right
    # (a slice of flat moves every index by the same step)
    a, b, c, d = (np.take(flat[step:], index) for step in (0, 1, P, P + 1))
    above = a + u * (b - a)                               # along the row above the point
    below = c + u * (d - c)                               # and along the row below it
    return above + v * (below - above)                    # then between the two rows


def dilate(images):
    """The max over each pixel's 3x3 neighbourhood (outside the image counts for nothing).
    B,28,28 -> B,28,28. A 3x3 max is separable: over three rows, then over three columns."""
    p = np.pad(images, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)  # B,30,30
    rows = np.maximum(np.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])         # B,28,30
    return np.maximum(np.maximum(rows[:, :, :-2], rows[:, :, 1:-1]), rows[:, :, 2:])


def thicken(images, amount):
    """Thicker (amount > 0) or thinner (< 0) strokes: each image blended, by |amount|, with
    its dilation (every pixel takes its darkest neighbour's ink) or its erosion (the min:
    the dilation of the negative, negated). images: B,784; amount: B in [-1, 1]. Returns B,784."""
    x = images.reshape(-1, SIDE, SIDE)
    grow = amount > 0
    stroke = np.empty_like(x)
    stroke[grow] = dilate(x[grow])
    stroke[~grow] = -dilate(-x[~grow])
    weight = np.abs(amount).astype(x.dtype)[:, None, None]
    return (x * (1 - weight) + stroke * weight).reshape(len(x), -1)


class Augment:
    """The trainer's augmentation: called on each batch (B,784), it returns the batch warped,
    each image by its own fresh random transform. Both trainers draw the transforms from the
    same generator with the same seed, so with the same --seed they see the same images.
    With --augment off it returns the batch as it is."""

    def __init__(self, args):
        self.ranges = args.augment                        # None, or harness/flags.py DEFAULT_RANGES's keys
        self.rng = np.random.default_rng(args.seed + 2)  # its own stream: batches and dropout draw elsewhere

    def draw(self, n):
        """n random transforms: their inverse maps (n,2,3) and stroke changes (n)."""
        r, uniform = self.ranges, lambda limit: self.rng.uniform(-limit, limit, n)
        forward = affine(uniform(r["rotate"]), 1 + uniform(r["scale"]), uniform(r["shear"]),
                         uniform(r["shift"]), uniform(r["shift"]))
        return inverse(forward), uniform(r["thickness"])

    def __call__(self, images):
        if not self.ranges:
            return images
        sources, amount = self.draw(len(images))
        if self.ranges["thickness"]:
            images = thicken(images, amount)
        return warp(images, sources)
