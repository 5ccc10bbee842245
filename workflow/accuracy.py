"""Top-1 accuracy as what it is, a proportion measured on a finite test set: per-image outcomes and
95 % intervals.

* :func:`pack_classes` / :func:`per_image_classes`: every test image's predicted class and label in an
  evaluation result (``predictions``, ``labels``), compactly (2 bytes an image, base64); per-image
  correctness is ``predictions == labels``, and the on-device accuracy check compares a board's
  predictions with the same ``predictions``. :func:`labels_digest` tells whether two evaluations ran
  on the same images in the same order, i.e. whether their outcomes pair up.
* :func:`wilson_interval`: one accuracy, k correct of n images (Wilson score interval, by scipy).
* :func:`paired_interval`: a function of two accuracies measured on the same images (their difference,
  ratio, ...), by a paired bootstrap over the images. Pairing matters: two models that agree on most
  images have a much narrower interval for their difference than two independent samples would give
  (bench/intervals.py: 2.8 pp instead of 8.6 pp on 1000 images).
* :func:`seed_interval`: the mean over training seeds, with seed-to-seed variation (Student t) and the
  test-set interval combined.
"""
import base64
import hashlib
import math

import numpy as np

LEVEL = 0.95
N_RESAMPLES = 9999
BOOTSTRAP_SEED = 0  # the same outcomes always give the same interval


CLASS_DTYPE = "<u2"  # class indices up to 65535 (ImageNet has 1000)


def pack_classes(classes):
    """Per-image class indices (predictions or labels, in split order) as base64 of little-endian uint16."""
    classes = np.asarray(classes)
    if classes.size and (classes.min() < 0 or classes.max() > np.iinfo(CLASS_DTYPE).max):
        raise ValueError(f"class indices must be in 0..{np.iinfo(CLASS_DTYPE).max}")
    return base64.b64encode(classes.astype(CLASS_DTYPE).tobytes()).decode("ascii")


def unpack_classes(text, count):
    classes = np.frombuffer(base64.b64decode(text), dtype=CLASS_DTYPE)
    if len(classes) != count:
        raise ValueError(f"{len(classes)} per-image classes recorded for {count} images")
    return classes.astype(np.int64)


def per_image_classes(evaluation):
    """(labels, predictions) of an evaluation result as int arrays in split order, or None when the result
    records none (a failed or older evaluation)."""
    if not isinstance(evaluation.get("predictions"), str) or not isinstance(evaluation.get("labels"), str):
        return None
    count = int(evaluation["test_images"])
    return unpack_classes(evaluation["labels"], count), unpack_classes(evaluation["predictions"], count)


def labels_digest(labels):
    """sha256 of the label sequence: equal for two evaluations on the same images in the same order (both
    color formats pack the same subset of the same source), so their per-image outcomes pair up."""
    return hashlib.sha256(np.asarray(labels, dtype="<i8").tobytes()).hexdigest()


def wilson_interval(correct, n, level=LEVEL):
    """(low, high) of the accuracy ``correct / n`` (0-1)."""
    from scipy.stats import binomtest

    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def paired_interval(statistic, a, b, level=LEVEL):
    """(low, high) of ``statistic(accuracy_a, accuracy_b)`` for per-image outcomes ``a`` and ``b`` of two
    models on the same images: a paired bootstrap over the images. Only the counts of the four outcome
    pairs (both right, only a, only b, neither) matter, so each resample draws their shares, from
    Dirichlet(counts + 1/2): the Bayesian bootstrap with Jeffreys' prior. With hundreds of
    disagreements this is the ordinary percentile bootstrap (bench/intervals.py compares it with
    scipy.stats.bootstrap over the images); with none, it does not read "no disagreement in 256
    images" as certainty, as resampling the images would. The cost does not grow with the number
    of images. ``statistic`` takes arrays."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"paired outcomes need the same images ({len(a)} vs {len(b)})")
    counts = np.array([(a & b).sum(), (a & ~b).sum(), (~a & b).sum(), (~a & ~b).sum()])
    shares = np.random.default_rng(BOOTSTRAP_SEED).dirichlet(counts + 0.5, size=N_RESAMPLES)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = statistic(shares[:, 0] + shares[:, 1], shares[:, 0] + shares[:, 2])
    low, high = np.percentile(values, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(low), float(high)


def seed_interval(values, intervals=None, level=LEVEL):
    """(mean, std, low, high) over per-seed values. The half-width adds, in quadrature, the Student t
    half-width of the mean over seeds and the mean half-width of the seeds' own test-set ``intervals``
    (the seeds share the test images, so their sampling error does not average out)."""
    from scipy.stats import t

    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        low, high = intervals[0] if intervals else (mean, mean)
        return mean, None, low, high
    std = float(values.std(ddof=1))
    seed_half = float(t.ppf((1 + level) / 2, len(values) - 1)) * std / math.sqrt(len(values))
    test_half = float(np.mean([(high - low) / 2 for low, high in intervals])) if intervals else 0.0
    half = math.hypot(seed_half, test_half)
    return mean, std, mean - half, mean + half
