"""sensor_msgs <-> NumPy RGB conversion for the nodes.

cv_bridge is used when the ROS distribution provides it; otherwise (the pip wheels have no
cv_bridge) the package's own conversion in data.images does the work. Either way the result is
an RGB uint8 array or an ImageError that says what was wrong with the message.

`deserialize_camera_message` reads a camera message taken with `raw=True`: rclpy's own conversion
of a 1280x720 Image into Python costs about 20 ms (30 Hz of it is most of a core), the `rosbags`
CDR reader about 0.4 ms with the pixels as a NumPy array.
"""

from __future__ import annotations

import numpy as np
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CompressedImage, Image

from mobile_vla_ros.data.images import check_raw_layout, check_rgb, decode_compressed, decode_raw
from mobile_vla_ros.errors import ImageError

try:  # pragma: no cover - depends on the ROS installation
    from cv_bridge import CvBridge, CvBridgeError

    _BRIDGE = CvBridge()
except ImportError:  # the ROS 2 pip wheels ship no cv_bridge
    _BRIDGE = None


def image_msg_to_rgb(msg: Image) -> np.ndarray:
    """Decode any supported sensor_msgs/Image encoding into RGB; raises ImageError."""
    if _BRIDGE is not None and msg.encoding.lower() in ("rgb8", "bgr8", "mono8"):  # pragma: no cover
        # Validate sizes first: cv_bridge reads past short buffers.
        check_raw_layout(msg.encoding, msg.height, msg.width, msg.step, len(msg.data))
        try:
            return np.ascontiguousarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
        except CvBridgeError as error:
            raise ImageError(f"cv_bridge could not convert the image: {error}") from error
    return decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data)


# sensor_msgs/Image and CompressedImage are the same in every ROS 2 release
_TYPES = get_typestore(Stores.ROS2_HUMBLE)


def deserialize_camera_message(raw: bytes, compressed: bool):
    """Serialized (CDR) Image / CompressedImage -> a message object with the same fields; ImageError if malformed."""
    name = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    try:
        return _TYPES.deserialize_cdr(raw, name)
    except Exception as error:  # the CDR reader raises assorted types for truncated or foreign data
        raise ImageError(f"not a {name} message ({len(raw)} bytes): {error}") from error


def compressed_msg_to_rgb(msg: CompressedImage) -> np.ndarray:
    return decode_compressed(msg.data)


def rgb_to_image_msg(rgb: np.ndarray, stamp=None, frame_id: str = "") -> Image:
    """Build an rgb8 sensor_msgs/Image (no cv_bridge needed)."""
    check_rgb(rgb)
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg
