"""`mobile-vla import-bag`: a rosbag2 written here with `rosbags` (MCAP and sqlite3) becomes an
episode sampled and checked like a live recording, which inspect and train accept."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from mobile_vla_ros.cli.main import main
from mobile_vla_ros.data.episode import list_episodes, read_episode
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS

TYPES = get_typestore(Stores.ROS2_HUMBLE)
T0 = 1_700_000_000.0
CAMERA_HZ, COMMAND_HZ = 30.0, 20.0


def _time(seconds: float):
    Time = TYPES.types["builtin_interfaces/msg/Time"]
    return Time(sec=int(seconds), nanosec=int(round((seconds % 1) * 1e9)))


def _header(seconds: float):
    return TYPES.types["std_msgs/msg/Header"](stamp=_time(seconds), frame_id="camera")


def frame(index: int, shape=(24, 32)) -> np.ndarray:
    """Frame i carries i in its top-left pixel (to check which one was sampled)."""
    image = np.full((*shape, 3), 40, np.uint8)
    image[:, (index * 3) % shape[1]] = 200
    image[0, 0] = (index % 256, 0, 0)
    return image


def write_bag(path, storage: StoragePlugin, seconds=3.0, compressed=False, gap=None, shape=(24, 32)):
    """Camera at 30 Hz (optionally silent during `gap` = (start, stop) s), cmd_vel at 20 Hz: standing
    still for the first 0.5 s, then (0.3, 0.2). Log time = capture time + 5 ms."""
    Image, Compressed = TYPES.types["sensor_msgs/msg/Image"], TYPES.types["sensor_msgs/msg/CompressedImage"]
    Twist, Vector3 = TYPES.types["geometry_msgs/msg/Twist"], TYPES.types["geometry_msgs/msg/Vector3"]
    with Writer(path, version=9, storage_plugin=storage) as writer:
        camera_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
        camera = writer.add_connection("/camera/image_raw", camera_type, typestore=TYPES)
        cmd_vel = writer.add_connection("/cmd_vel", "geometry_msgs/msg/Twist", typestore=TYPES)
        writer.add_connection("/other", "std_msgs/msg/String", typestore=TYPES)
        events = [(i / CAMERA_HZ, "camera", i) for i in range(int(seconds * CAMERA_HZ))]
        events += [(i / COMMAND_HZ + 0.002, "cmd", i) for i in range(int(seconds * COMMAND_HZ))]
        for t, kind, index in sorted(events):
            if kind == "camera":
                if gap and gap[0] <= t < gap[1]:
                    continue
                pixels = frame(index, shape)
                if compressed:
                    png = cv2.imencode(".png", pixels[..., ::-1])[1]  # lossless, to check which frame was sampled
                    message = Compressed(header=_header(T0 + t), format="png", data=png.reshape(-1))
                else:
                    message = Image(
                        header=_header(T0 + t),
                        height=shape[0],
                        width=shape[1],
                        encoding="rgb8",
                        is_bigendian=0,
                        step=shape[1] * 3,
                        data=pixels.reshape(-1),
                    )
                writer.write(camera, int((T0 + t + 0.005) * 1e9), TYPES.serialize_cdr(message, camera_type))
            else:
                speed = (0.3, 0.2) if t >= 0.5 else (0.0, 0.0)
                message = Twist(linear=Vector3(x=speed[0], y=speed[1], z=0.0), angular=Vector3(x=0.0, y=0.0, z=0.0))
                writer.write(cmd_vel, int((T0 + t) * 1e9), TYPES.serialize_cdr(message, "geometry_msgs/msg/Twist"))
    return path


def import_args(bag, out, instruction="left", topic="/camera/image_raw"):
    return [
        "import-bag",
        str(bag),
        "--image-topic",
        topic,
        "--cmd-vel-topic",
        "/cmd_vel",
        "--instruction",
        instruction,
        "--out",
        str(out),
    ]


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_a_bag_becomes_an_episode_sampled_like_a_live_recording(tmp_path, storage, capsys):
    bag = write_bag(tmp_path / "bag", storage)
    assert main(import_args(bag, tmp_path / "episodes")) == 0
    [path] = list_episodes(tmp_path / "episodes")
    episode = read_episode(path)
    assert episode.instruction == LAB_INSTRUCTIONS["left"] and episode.sample_rate_hz == 10.0
    assert 29 <= episode.num_frames <= 30  # 3 s at 10 Hz
    assert np.allclose(np.diff(episode.timestamps), 0.1, atol=0.034)  # one fresh frame per 0.1 s
    sampled = episode.images[:, 0, 0, 0]
    for stamp, index in zip(episode.timestamps, sampled):  # each stored image is the frame of its stamp
        assert abs((stamp - T0) * CAMERA_HZ - index) < 1e-3
    moving = np.abs(episode.actions[:, :2]).sum(axis=1) > 0
    np.testing.assert_allclose(episode.actions[moving], [[0.3, 0.2, 0.0]] * moving.sum(), atol=1e-6)
    # the command in force at each frame's capture stamp: moving from the 0.5 s command on
    assert moving.tolist() == [stamp - T0 >= 0.502 for stamp in episode.timestamps]
    assert not episode.flags["camera_lag"].any() and episode.stored_verdicts == []
    assert episode.attrs["recorder"] == "mobile_vla_ros import-bag"
    assert "quality: ok" in capsys.readouterr().out


def test_camera_gaps_are_flagged_and_inspect_and_train_accept_the_result(tmp_path, train_one_step, capsys):
    out = tmp_path / "episodes"
    assert main(import_args(write_bag(tmp_path / "a", StoragePlugin.MCAP, gap=(1.5, 1.8)), out)) == 0
    assert main(import_args(write_bag(tmp_path / "b", StoragePlugin.SQLITE3, compressed=True), out, "right")) == 0
    paths = list_episodes(out)
    lagged = read_episode(paths[0], frame_indices=[])
    assert 2 <= lagged.flags["camera_lag"].sum() <= 3
    assert [v.code for v in lagged.stored_verdicts] == ["camera_lag"]
    decoded = read_episode(paths[1])  # PNG frames, decoded losslessly: the frame of each stamp
    np.testing.assert_array_equal(decoded.images[:, 0, 0, 0], np.round((decoded.timestamps - T0) * CAMERA_HZ))

    capsys.readouterr()
    assert main(["inspect", "--data", str(out)]) == 0
    listing = capsys.readouterr().out
    assert "2 episode files, 2 readable" in listing and "trim camera_lag" in listing

    model = tmp_path / "model"
    summary = train_one_step(out, model)
    assert summary["episodes"]["skipped"] == 0 and summary["windows"]["left_out_by"]["camera_lag"] >= 2


def test_wrong_topics_are_refused_with_what_the_bag_has(tmp_path, capsys):
    bag = write_bag(tmp_path / "bag", StoragePlugin.MCAP, seconds=0.5)
    assert main(import_args(bag, tmp_path / "out", topic="/camera/missing")) == 1
    text = capsys.readouterr().out
    assert "no topic /camera/missing" in text and "/camera/image_raw (sensor_msgs/msg/Image)" in text
    assert main(import_args(bag, tmp_path / "out", topic="/other")) == 1
    assert "carries std_msgs/msg/String" in capsys.readouterr().out
    assert not (tmp_path / "out").exists() or list_episodes(tmp_path / "out") == []
