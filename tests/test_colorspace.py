import numpy as np
import pytest

from workflow.colorspace import i420_to_rgb, rgb_to_i420, split_i420


def solid(rgb, size=4):
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (1, size, size, 3)).copy()


@pytest.mark.parametrize("color, expected", [
    ((255, 255, 255), (255, 128, 128)),
    ((0, 0, 0), (0, 128, 128)),
    ((255, 0, 0), (76, 85, 255)),     # BT.601 full range (JFIF) red
    ((0, 0, 255), (29, 255, 107)),
])
def test_bt601_full_range_values(color, expected):
    frame = rgb_to_i420(solid(color))
    y, uv = split_i420(frame, 4, 4)
    assert (int(y[0, 0, 0, 0]), int(uv[0, 0, 0, 0]), int(uv[0, 1, 0, 0])) == expected


def test_bt709_differs_from_bt601():
    red = solid((255, 0, 0))
    y601 = split_i420(rgb_to_i420(red, "bt601"), 4, 4)[0][0, 0, 0, 0]
    y709 = split_i420(rgb_to_i420(red, "bt709"), 4, 4)[0][0, 0, 0, 0]
    assert (y601, y709) == (76, 54)


def test_i420_layout_and_chroma_subsampling():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (3, 8, 6, 3), dtype=np.uint8)
    frames = rgb_to_i420(rgb)
    assert frames.shape == (3, 8 * 6 * 3 // 2) and frames.dtype == np.uint8
    y, uv = split_i420(frames, 8, 6)
    assert y.shape == (3, 1, 8, 6) and uv.shape == (3, 2, 4, 3)


def test_round_trip_is_close_on_smooth_images():
    ramp = np.linspace(0, 255, 16)
    gx, gy = np.meshgrid(ramp, ramp)
    rgb = np.stack([gx, gy, np.full((16, 16), 100.0)], -1)[None].round().astype(np.uint8)
    back = i420_to_rgb(rgb_to_i420(rgb), 16, 16)
    assert np.abs(back.astype(int) - rgb.astype(int)).max() <= 24  # chroma subsampling error only


def test_odd_sizes_are_rejected():
    with pytest.raises(ValueError, match="even"):
        rgb_to_i420(np.zeros((1, 5, 4, 3), np.uint8))
