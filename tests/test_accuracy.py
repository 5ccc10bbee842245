"""workflow/accuracy.py: per-image outcomes and the 95 % intervals of accuracies."""
import numpy as np
import pytest

from workflow.accuracy import (labels_digest, pack_classes, paired_interval, per_image_classes, seed_interval,
                               wilson_interval)


def diff_pp(a, b):
    return 100 * (a - b)


def test_per_image_classes_round_trip_compactly():
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 1000, 1000), rng.integers(0, 1000, 1000)
    evaluation = {"test_images": 1000, "labels": pack_classes(labels), "predictions": pack_classes(predictions)}
    assert len(evaluation["predictions"]) == 2668  # 2 bytes an image, base64
    got_labels, got_predictions = per_image_classes(evaluation)
    assert np.array_equal(got_labels, labels) and np.array_equal(got_predictions, predictions)
    assert per_image_classes({"test_images": 1000, "top1": 0.5}) is None  # not recorded
    with pytest.raises(ValueError, match="999 per-image classes recorded for 1000 images"):
        per_image_classes({**evaluation, "labels": pack_classes(labels[:999])})
    with pytest.raises(ValueError, match="class indices"):
        pack_classes([-1])
    assert labels_digest([1, 2, 3]) == labels_digest(np.array([1, 2, 3], dtype=np.int16))
    assert labels_digest([1, 2, 3]) != labels_digest([1, 3, 2])


def test_wilson_interval_of_one_accuracy():
    low, high = wilson_interval(430, 1000)
    assert low == pytest.approx(0.3996, abs=1e-4) and high == pytest.approx(0.4609, abs=1e-4)
    assert 100 * (high - low) / 2 == pytest.approx(3.06, abs=0.01)  # about ±3 pp on 1000 images
    low, high = wilson_interval(0, 50)
    assert low == 0.0 and 0 < high < 0.1  # never below 0, unlike a normal approximation


def test_paired_interval_is_narrower_than_independent_samples():
    rng = np.random.default_rng(1)
    a = rng.random(1000) < 0.43
    b = a.copy()
    flipped = rng.random(1000) < 0.04  # the two models disagree on 4 % of the images
    b[flipped] = ~b[flipped]
    low, high = paired_interval(diff_pp, a, b)
    assert low < diff_pp(a.mean(), b.mean()) < high
    assert high - low < 3.0  # two independent 1000-image samples: about 8.6 pp wide
    assert paired_interval(diff_pp, a, b) == (low, high)  # deterministic


def test_no_disagreement_is_not_certainty():
    """256 images on which int8 and fp32 agree everywhere cannot exclude a 1 pp difference."""
    a = np.random.default_rng(2).random(256) < 0.5
    low, high = paired_interval(diff_pp, a, a)
    assert -1.5 < low < -0.5 and 0.5 < high < 1.5
    low, high = paired_interval(diff_pp, np.tile(a, 40), np.tile(a, 40))  # 10240 images: much narrower
    assert -0.05 < low < 0 < high < 0.05
    with pytest.raises(ValueError, match="same images"):
        paired_interval(diff_pp, a, a[:10])


def test_seed_interval_adds_seed_spread_to_the_test_set_interval():
    mean, std, low, high = seed_interval([42.0, 43.0, 44.0], [(39.0, 45.0), (40.0, 46.0), (41.0, 47.0)])
    assert mean == 43.0 and std == pytest.approx(1.0)
    seed_half = 4.303 * 1.0 / 3 ** 0.5  # Student t, 2 degrees of freedom
    assert high - mean == pytest.approx((seed_half ** 2 + 3.0 ** 2) ** 0.5, rel=1e-3)
    assert seed_interval([42.0], [(39.0, 45.0)]) == (42.0, None, 39.0, 45.0)
