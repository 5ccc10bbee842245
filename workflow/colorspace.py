"""RGB <-> YUV 4:2:0 (I420) conversion, full range.

Y = Kr*R + (1-Kr-Kb)*G + Kb*B
U = 128 + (B - Y) / (2*(1-Kb))
V = 128 + (R - Y) / (2*(1-Kr))

BT.601: Kr=0.299, Kb=0.114 (default; what JPEG/JFIF and most camera ISPs emit at SD).
BT.709: Kr=0.2126, Kb=0.0722.
Chroma is subsampled 2x2 by averaging each 2x2 block (the "centre" siting of
MPEG-1/JPEG). An I420 frame is the Y plane (H x W) followed by the U and V planes
(H/2 x W/2 each) in one buffer of H*W*3/2 bytes.
"""
import numpy as np

COEFFICIENTS = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


def rgb_to_yuv_matrix(matrix="bt601"):
    kr, kb = COEFFICIENTS[matrix]
    kg = 1.0 - kr - kb
    return np.array([
        [kr, kg, kb],
        [-kr / (2 * (1 - kb)), -kg / (2 * (1 - kb)), 0.5],
        [0.5, -kg / (2 * (1 - kr)), -kb / (2 * (1 - kr))],
    ], dtype=np.float64)


def rgb_to_i420(rgb, matrix="bt601"):
    """uint8 RGB (..., H, W, 3) with even H, W -> uint8 I420 buffers (..., H*W*3/2)."""
    rgb = np.asarray(rgb)
    *lead, h, w, c = rgb.shape
    if c != 3 or h % 2 or w % 2:
        raise ValueError(f"expected (..., H, W, 3) with even H and W, got {rgb.shape}")
    # one (pixels x 3) @ (3 x 3) product, and chroma as the sum of the four pixels of each 2x2 block:
    # several times faster than a stacked matmul and mean over a 6-D view (the loader converts every crop)
    yuv = (rgb.reshape(-1, 3) @ rgb_to_yuv_matrix(matrix).T).reshape(*lead, h, w, 3)
    y = yuv[..., 0]
    uv = (yuv[..., 0::2, 0::2, 1:] + yuv[..., 1::2, 0::2, 1:] + yuv[..., 0::2, 1::2, 1:] + yuv[..., 1::2, 1::2, 1:]) / 4
    uv += 128.0
    planes = [y.reshape(*lead, h * w),
              uv[..., 0].reshape(*lead, h * w // 4),
              uv[..., 1].reshape(*lead, h * w // 4)]
    return np.clip(np.rint(np.concatenate(planes, axis=-1)), 0, 255).astype(np.uint8)


def split_i420(frames, height, width):
    """I420 buffers (N, H*W*3/2) -> Y (N, 1, H, W) and stacked UV (N, 2, H/2, W/2) views."""
    frames = np.asarray(frames)
    n = frames.shape[0]
    hw = height * width
    y = frames[:, :hw].reshape(n, 1, height, width)
    uv = frames[:, hw:].reshape(n, 2, height // 2, width // 2)
    return y, uv


def i420_to_rgb(frames, height, width, matrix="bt601"):
    """Inverse conversion with nearest-neighbour chroma upsampling, for inspection and tests."""
    y, uv = split_i420(frames, height, width)
    uv_full = uv.repeat(2, axis=2).repeat(2, axis=3).astype(np.float64) - 128.0
    yuv = np.concatenate([y.astype(np.float64), uv_full], axis=1).transpose(0, 2, 3, 1)
    rgb = yuv @ np.linalg.inv(rgb_to_yuv_matrix(matrix)).T
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
