"""Official CIFAR-10-C / CIFAR-100-C parameters per severity 1..5 (32x32 images).

Read from Hendrycks & Dietterich's generator (hendrycks/robustness,
``ImageNet-C/create_c/make_cifar_c.py``, Apache-2.0); the comment above each entry says what
its numbers mean. Entry ``k`` of a tuple is severity ``k + 1``.
"""
from __future__ import annotations

PARAMS: dict[str, tuple] = {
    # std of additive N(0, c) on [0, 1]
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    # photon count: poisson(x * c) / c
    "shot_noise": (500, 250, 100, 75, 50),
    # salt-and-pepper amount (per value, salt:pepper 1:1)
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    # (disk radius, alias-blur sigma)
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    # (gaussian sigma, max pixel shuffle delta, iterations)
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    # (radius, sigma); angle ~ U(-45, 45) degrees
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    # stop of np.arange(1, stop, 0.01): the official zoom factors (1.00..1.06, ..., 1.00..1.25)
    "zoom_blur": (1.06, 1.11, 1.16, 1.21, 1.26),
    # (loc, scale, zoom, threshold, motion-blur radius, motion-blur sigma, blend)
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    # (image weight, frost weight)
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    # (strength, wibble decay of the plasma fractal)
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    # added to V in HSV
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    # scale around the per-image, per-channel mean
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    # (alpha, sigma, affine jitter) = 32 x the official fractions
    "elastic_transform": (
        (32 * 0, 32 * 0, 32 * 0.08),
        (32 * 0.05, 32 * 0.2, 32 * 0.07),
        (32 * 0.08, 32 * 0.06, 32 * 0.06),
        (32 * 0.1, 32 * 0.04, 32 * 0.05),
        (32 * 0.1, 32 * 0.03, 32 * 0.03),
    ),
    # BOX resize down to int(32 * c), BOX back up
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    # PIL JPEG quality
    "jpeg_compression": (80, 65, 58, 50, 40),
    # x + x * N(0, c)
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    # gaussian sigma
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1),
    # (loc, scale, sigma, threshold, intensity, mode: 0 water, 1 mud)
    "spatter": (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
    # (scale, shift) of S in HSV
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
}
