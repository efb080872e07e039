"""Image conversion shared by the camera window node, the recorder and training.

Everything returns RGB uint8 arrays of shape (H, W, 3); bad input raises ImageError with a
message that says what was wrong, so nodes can log it and drop the frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from mobile_vla_ros.errors import ImageError

# encoding -> (channels, conversion to RGB or None when already RGB)
_RAW_ENCODINGS = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "8uc1": (1, cv2.COLOR_GRAY2RGB),
    "8uc3": (3, cv2.COLOR_BGR2RGB),  # OpenCV convention: untagged 3-channel frames are BGR
    # YUV 4:2:2 packed: two bytes per pixel.
    "yuv422": (2, cv2.COLOR_YUV2RGB_UYVY),  # ROS "yuv422" is UYVY
    "uyvy": (2, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": (2, cv2.COLOR_YUV2RGB_YUY2),
    "yuyv": (2, cv2.COLOR_YUV2RGB_YUY2),
}

SUPPORTED_ENCODINGS = tuple(sorted(_RAW_ENCODINGS))


def check_raw_layout(encoding: str, height: int, width: int, step: int, size: int) -> tuple[int, int | None]:
    """Validate sensor_msgs/Image fields; returns (channels, OpenCV conversion to RGB or None)."""
    key = (encoding or "").strip().lower()
    if key not in _RAW_ENCODINGS:
        raise ImageError(f"unsupported encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    if height <= 0 or width <= 0:
        raise ImageError(f"empty image ({width}x{height})")
    channels, conversion = _RAW_ENCODINGS[key]
    if step < width * channels:
        raise ImageError(f"step {step} is smaller than width*channels = {width * channels} for {encoding}")
    if size < step * height:
        raise ImageError(f"data has {size} bytes, expected step*height = {step * height}")
    return channels, conversion


def decode_raw(encoding: str, height: int, width: int, step: int, data) -> np.ndarray:
    """Convert the fields of a sensor_msgs/Image into an RGB array (a copy, never a view)."""
    buffer = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    channels, conversion = check_raw_layout(encoding, height, width, step, buffer.size)
    rows = buffer[: step * height].reshape(height, step)[:, : width * channels]
    pixels = np.ascontiguousarray(rows.reshape(height, width, channels) if channels > 1 else rows)
    return pixels.copy() if conversion is None else cv2.cvtColor(pixels, conversion)


def decode_compressed(data) -> np.ndarray:
    """Decode a JPEG/PNG sensor_msgs/CompressedImage payload into RGB."""
    buffer = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    if buffer.size == 0:
        raise ImageError("compressed image has no data")
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(f"could not decode compressed image ({buffer.size} bytes)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def camera_message_to_rgb(msg) -> np.ndarray:
    """An Image or CompressedImage message object (rclpy's or the rosbags CDR reader's: the same
    fields) -> RGB; raises ImageError."""
    if hasattr(msg, "encoding"):
        return decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data)
    return decode_compressed(msg.data)


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an RGB image (for CompressedImage publishers and tests)."""
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(check_rgb(rgb), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ImageError("JPEG encoding failed")
    return encoded.tobytes()


def check_rgb(image: np.ndarray) -> np.ndarray:
    """Validate an RGB uint8 (H, W, 3) array and return it."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageError(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    return image


def rotate_180(image: np.ndarray) -> np.ndarray:
    """For cameras mounted upside down (the lab's CSI camera)."""
    return np.ascontiguousarray(image[::-1, ::-1])


def resize_for_model(rgb: np.ndarray, size: int) -> np.ndarray:
    """Squash the whole field of view to size x size.

    Squashing (rather than centre-cropping) keeps both sides of the scene, which is where a
    left/right instruction looks. Training and runtime both call this, so they see the same pixels.
    """
    check_rgb(rgb)
    if rgb.shape[:2] == (size, size):
        return rgb
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


# How the model's frames are made from a camera's, besides the rotation a user configures: decoded to
# RGB from any encoding, squashed by resize_for_model. Stored with every checkpoint (and the rotation
# with every episode) so a policy never drives on frames prepared differently from its training.
COLOR_ORDER = "rgb"
RESIZE_METHOD = "squash"


def camera_settings(rotate_180: bool | None) -> dict:
    """The camera settings record; rotate_180 None means unknown (the lab's legacy files)."""
    return {"rotate_180": rotate_180, "color_order": COLOR_ORDER, "resize": RESIZE_METHOD}


def camera_mismatch(trained: dict, rotate_180: bool) -> str | None:
    """How frames prepared here would differ from a policy's training frames, or None.

    Settings the checkpoint does not record (older checkpoints, legacy data) cannot disagree.
    """
    here = camera_settings(rotate_180)
    differences = [
        f"{key} {trained[key]!r} in training, {value!r} here"
        for key, value in here.items()
        if trained.get(key) is not None and trained[key] != value
    ]
    return "; ".join(differences) or None


def stack_window(frames: np.ndarray) -> np.ndarray:
    """(T, S, S, 3) -> (T*S, S, 3): the window as one tall image, oldest frame on top."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ImageError(f"expected a (T, S, S, 3) window, got shape {frames.shape}")
    return np.ascontiguousarray(frames.reshape(-1, frames.shape[2], 3))


def split_window(tall: np.ndarray, frame_size: int) -> np.ndarray:
    """Inverse of stack_window: (T*S, S, 3) -> (T, S, S, 3)."""
    check_rgb(tall)
    height, width, _ = tall.shape
    if width != frame_size or height % frame_size:
        raise ImageError(
            f"a window image must be {frame_size} wide and a multiple of {frame_size} high, got {width}x{height}"
        )
    return tall.reshape(height // frame_size, frame_size, frame_size, 3)
