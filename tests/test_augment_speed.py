"""numpy_nn/augment.py made cheaper without changing a bit: its draws and its warp against a
frozen copy of the code they replaced (commit 95f97d1), compared with np.array_equal, in
float32 and float64, over several seeds. Reference runs were trained with that code, so the
faster one must give exactly the same images: no tolerance here.
"""
from types import SimpleNamespace

import numpy as np
import pytest

from numpy_nn import augment
from numpy_nn.augment import CENTRE, GRID, SIDE, Augment, DEFAULT_RANGES, thicken


# ------------------------------------------------------- the frozen copy (as of commit 95f97d1)
def frozen_affine(rotate, scale, shear, shift_x, shift_y):
    a, s = np.radians(rotate), np.tan(np.radians(shear))
    cos, sin = np.cos(a), np.sin(a)
    rotation = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2)
    shearing = np.zeros_like(rotation)
    shearing[:, 0, 0] = shearing[:, 1, 1] = 1
    shearing[:, 0, 1] = s
    A = rotation @ shearing * np.asarray(scale)[:, None, None]
    t = np.stack([shift_x, shift_y], -1)[:, :, None]
    return np.concatenate([A, t], axis=2)


def frozen_inverse(forward):
    (a, b), (c, d) = forward[:, 0, :2].T, forward[:, 1, :2].T
    A_inv = np.stack([np.stack([d, -b], -1), np.stack([-c, a], -1)], -2) / (a * d - b * c)[:, None, None]
    return np.concatenate([A_inv, -A_inv @ forward[:, :, 2:]], axis=2)


def frozen_warp(images, sources):
    B, dtype = len(images), images.dtype
    points = sources.astype(dtype) @ GRID.astype(dtype) + CENTRE
    np.clip(points, -1, SIDE, out=points)
    corner = np.floor(points)
    fraction = points - corner
    u, v = fraction[:, 0], fraction[:, 1]
    P = SIDE + 3
    padded = np.zeros((B, P, P), dtype)
    padded[:, 1:SIDE + 1, 1:SIDE + 1] = images.reshape(B, SIDE, SIDE)
    index = (corner[:, 1] * P + corner[:, 0]).astype(np.intp) + (np.arange(B)[:, None] * P + 1) * P + 1
    flat = padded.reshape(-1)
    a, b, c, d = (np.take(flat[step:], index) for step in (0, 1, P, P + 1))
    above = a + u * (b - a)
    below = c + u * (d - c)
    return above + v * (below - above)


def frozen_draw(rng, ranges, n):
    uniform = lambda limit: rng.uniform(-limit, limit, n)  # noqa: E731
    forward = frozen_affine(uniform(ranges["rotate"]), 1 + uniform(ranges["scale"]), uniform(ranges["shear"]),
                            uniform(ranges["shift"]), uniform(ranges["shift"]))
    return frozen_inverse(forward), uniform(ranges["thickness"])


def frozen_augment(rng, ranges, images):
    sources, amount = frozen_draw(rng, ranges, len(images))
    if ranges["thickness"]:
        images = thicken(images, amount)
    return frozen_warp(images, sources)


# ------------------------------------------------------------------------------------ the tests
# ranges: the defaults; wider ones, so that points fall off the image on every side; thickness on
RANGES = [DEFAULT_RANGES,
          {"rotate": 180.0, "scale": 0.5, "shear": 40.0, "shift": 10.0, "thickness": 0.0},
          dict(DEFAULT_RANGES, thickness=0.5)]


def images(n, seed, dtype):
    """Random ink, with some pixels exactly 0 and 1 as in MNIST."""
    x = np.random.default_rng(seed).random((n, SIDE * SIDE))
    return np.clip(1.5 * x - 0.25, 0, 1).astype(dtype)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_draw_equals_the_frozen_draw(seed):
    for ranges in RANGES:
        ours = Augment(SimpleNamespace(augment=ranges, seed=seed))
        theirs = np.random.default_rng(seed + 2)             # Augment's own stream
        for n in (128, 97, 1):                               # a full batch, the last one, one image
            sources, amount = ours.draw(n)
            frozen_sources, frozen_amount = frozen_draw(theirs, ranges, n)
            assert np.array_equal(sources, frozen_sources) and sources.dtype == np.float64
            assert np.array_equal(amount, frozen_amount)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_warp_equals_the_frozen_warp(dtype, seed):
    rng = np.random.default_rng(100 + seed)
    for ranges in RANGES:
        for n in (128, 97, 1):
            x = images(n, seed, dtype)
            sources, _ = frozen_draw(rng, ranges, n)
            ours, theirs = augment.warp(x, sources), frozen_warp(x, sources)
            assert ours.dtype == theirs.dtype == dtype
            assert np.array_equal(ours, theirs)
            assert np.array_equal(augment.warp(x.reshape(n, SIDE, SIDE), sources), theirs)  # B,28,28 too


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 5])
def test_augment_batches_equal_the_frozen_ones(dtype, seed):
    """Augment as the trainer calls it, batch after batch from one stream."""
    for ranges in RANGES:
        ours = Augment(SimpleNamespace(augment=ranges, seed=seed))
        theirs = np.random.default_rng(seed + 2)
        for k, n in enumerate((128, 128, 128, 50)):
            x = images(n, 10 * seed + k, dtype)
            assert np.array_equal(ours(x), frozen_augment(theirs, ranges, x))
