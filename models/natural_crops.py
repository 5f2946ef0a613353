"""224x224 crops of natural photos shipped inside packages, for ImageNet-size models.

**These are not ImageNet images** and carry no labels: they are the colour and
grey photos bundled with scikit-image (``skimage.data``) and scikit-learn
(``load_sample_images``), a few dozen megapixels in all.  They give realistic
activation statistics for calibration and an honest test of how far a
quantized network drifts from its float self (top-1 agreement, top-5 overlap,
output SQNR); they say nothing about accuracy.

The photos are split **by photo** into two disjoint sets, so that no held-out
crop comes from a picture seen during calibration (the two stereo motorcycle
views count as one photo and are both held out):

* calibration: ``CALIB_PHOTOS`` (building, flower, coffee cup, cameraman,
  coins, brick / grass / gravel textures, moon, a microscopy slide);
* held out: ``TEST_PHOTOS`` (astronaut, cat, rocket, motorcycle left/right,
  retina, Hubble deep field).

A crop is a random square whose side is 35-100 % of the photo's shorter side,
at a random position, mirrored with probability 1/2, resized to 224x224 with
Pillow's bilinear filter.  Grey photos are repeated on the three channels.
Crops of one photo are drawn from their own seeded generator, so the first k
crops of a photo do not depend on how many are asked for; crops of the same
photo may overlap.

Arrays are ``uint8`` ``N x 3 x 224 x 224`` RGB, raw pixels 0..255 (the
project's models take raw pixels as float32 and normalise inside the graph),
read-only and cached.  Needs scikit-image (``pip install scikit-image``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["CALIB_PHOTOS", "TEST_PHOTOS", "SIZE", "photo", "crops", "calibration", "held_out"]

SIZE = 224
CALIB_PHOTOS = (
    "sklearn:china", "sklearn:flower", "skimage:coffee", "skimage:camera", "skimage:coins",
    "skimage:brick", "skimage:grass", "skimage:gravel", "skimage:moon",
    "skimage:immunohistochemistry",
)  # fmt: skip
TEST_PHOTOS = (
    "skimage:astronaut", "skimage:chelsea", "skimage:rocket", "skimage:motorcycle_left",
    "skimage:motorcycle_right", "skimage:retina", "skimage:hubble_deep_field",
)  # fmt: skip
_MIN_SIDE, _MAX_SIDE = 0.35, 1.0


def _load(name: str) -> np.ndarray:
    source, key = name.split(":")
    if source == "sklearn":
        from sklearn.datasets import load_sample_images

        images = load_sample_images()
        by_name = {f.rsplit("/", 1)[-1].split(".")[0]: im for f, im in zip(images.filenames, images.images)}
        return by_name[key]
    try:
        import skimage.data
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("natural crops need scikit-image: pip install scikit-image") from e
    if key.startswith("motorcycle_"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return left if key.endswith("left") else right
    return getattr(skimage.data, key)()


@lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """One photo as ``H x W x 3`` uint8 RGB (grey ones repeated on 3 channels), read-only."""
    img = np.asarray(_load(name))
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = np.ascontiguousarray(img[:, :, :3], dtype=np.uint8)
    if min(img.shape[:2]) * _MIN_SIDE < 64:
        raise ValueError(f"photo {name!r} is too small ({img.shape[0]}x{img.shape[1]})")
    img.setflags(write=False)
    return img


def _crops_of(name: str, count: int, seed: int) -> np.ndarray:
    from PIL import Image

    img = photo(name)
    h, w = img.shape[:2]
    # seeded by photo (its position in the combined list), not by the number of crops asked for
    rng = np.random.default_rng([seed, (CALIB_PHOTOS + TEST_PHOTOS).index(name)])
    out = np.empty((count, 3, SIZE, SIZE), np.uint8)
    for k in range(count):
        side = int(rng.uniform(_MIN_SIDE, _MAX_SIDE) * min(h, w))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        flip = bool(rng.integers(0, 2))
        patch = Image.fromarray(img[top : top + side, left : left + side])
        patch = np.asarray(patch.resize((SIZE, SIZE), Image.BILINEAR))
        out[k] = (patch[:, ::-1] if flip else patch).transpose(2, 0, 1)
    return out


@lru_cache(maxsize=8)
def crops(photos: tuple[str, ...], n: int, seed: int = 0) -> np.ndarray:
    """``n`` crops spread evenly over ``photos`` (the first ``n % len(photos)`` get one more)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    per = [n // len(photos) + (i < n % len(photos)) for i in range(len(photos))]
    out = np.concatenate([_crops_of(p, c, seed) for p, c in zip(photos, per) if c])
    out.setflags(write=False)
    return out


def calibration(n: int = 256, seed: int = 0) -> np.ndarray:
    """``n`` calibration crops from ``CALIB_PHOTOS`` (uint8 N x 3 x 224 x 224)."""
    return crops(CALIB_PHOTOS, n, seed)


def held_out(n: int = 512, seed: int = 0) -> np.ndarray:
    """``n`` test crops from ``TEST_PHOTOS``, photos never used for calibration."""
    return crops(TEST_PHOTOS, n, seed)
