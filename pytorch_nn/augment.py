"""The twin of numpy_nn/augment.py: the same random transforms, drawn from the same NumPy
generator with the same seed, applied by PyTorch. What numpy_nn/augment.py writes by hand,
torch does in two calls:

    F.affine_grid   each 2x3 matrix -> the point every output pixel reads (inverse mapping)
    F.grid_sample   reads the image at those points, bilinearly; zeros outside

torchvision's transforms.v2.RandomAffine wraps the same two calls and draws the parameters
itself. Given a batch tensor it draws once and warps every image the same way, and its draws
are not the NumPy trainer's, so the twins would see different images: here each image gets
its own transform, and both trainers get the same ones (tests/test_augment.py).
"""
import torch
import torch.nn.functional as F

from numpy_nn.augment import SIDE, Augment


def thicken(x, amount):
    """numpy_nn/augment.py's thicken: x B,1,28,28, amount B in [-1, 1]. A 3x3 max-pool with
    stride 1 is a dilation; max-pool pads with -inf, so outside the image counts for nothing."""
    dilated = F.max_pool2d(x, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
    stroke = torch.where(amount[:, None, None, None] > 0, dilated, eroded)
    weight = amount.abs()[:, None, None, None]
    return x * (1 - weight) + stroke * weight


class TorchAugment(Augment):
    """Called on each batch (B,784 on the training device): the batch, each image warped by
    its own transform; with --augment off, the batch as it is."""

    def __call__(self, images):
        if not self.ranges:
            return images
        sources, amount = self.draw(len(images))              # NumPy: the NumPy trainer's draws
        x = images.reshape(-1, 1, SIDE, SIDE)
        if self.ranges["thickness"]:
            x = thicken(x, torch.as_tensor(amount, dtype=x.dtype, device=x.device))
        # affine_grid measures from the centre too, but in units where the image spans [-1, 1]:
        # a pixel is 2 / SIDE wide (align_corners=False), so shifts in pixels become shifts / 14
        theta = torch.as_tensor(sources, dtype=x.dtype, device=x.device)  # B,2,3
        theta = torch.cat([theta[:, :, :2], theta[:, :, 2:] / (SIDE / 2)], dim=2)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # B,28,28,2  where each pixel reads
        warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return warped.reshape(images.shape)
