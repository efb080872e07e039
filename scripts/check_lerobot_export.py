"""Open a `mobile-vla export` with lerobot's own LeRobotDataset and compare every item with the H5 episodes.

    python scripts/check_lerobot_export.py DATASET_DIR EPISODE_DIR

lerobot cannot be installed into this package's venv (lerobot 0.4.x requires torch < 2.11, >= 0.5
Python >= 3.12), so install it beside it, without its dependencies, and put it on PYTHONPATH:

    .venv/bin/pip install --target /tmp/lerobot_env "datasets>=4,<5" "huggingface-hub>=0.34.2,<0.36" \\
        draccus==0.10.0 jsonlines termcolor einops deepdiff
    .venv/bin/pip install --target /tmp/lerobot_env --no-deps lerobot==0.4.4
    PYTHONPATH=/tmp/lerobot_env HF_HUB_OFFLINE=1 .venv/bin/python scripts/check_lerobot_export.py DATASET EPISODES

Two parts of lerobot are replaced, because the package index has no CPU build of torchvision or
torchcodec for torch 2.13: torchvision (imported by lerobot at module level, unused when reading)
by an empty module, and lerobot's frame decoder by a PyAV one that applies lerobot's rule (the
frame whose timestamp is within tolerance_s of the query, else an error). Everything else - the
metadata, tasks, parquet tables, episode index, timestamp queries, delta_timestamps windows and
padding - is lerobot's code.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

import av
import numpy as np
import torch

if importlib.util.find_spec("torchvision") is None:
    torchvision = types.ModuleType("torchvision")
    torchvision.transforms = types.ModuleType("torchvision.transforms")
    torchvision.transforms.v2 = types.ModuleType("torchvision.transforms.v2")
    torchvision.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)  # `datasets` looks it up
    sys.modules.update(
        {
            "torchvision": torchvision,
            "torchvision.transforms": torchvision.transforms,
            "torchvision.transforms.v2": torchvision.transforms.v2,
        }
    )

import lerobot.datasets.lerobot_dataset as lerobot_dataset  # noqa: E402

from mobile_vla_ros.data.episode import list_episodes, read_episode  # noqa: E402
from mobile_vla_ros.data.lerobot_export import CAMERA_KEY  # noqa: E402


def decode_video_frames(video_path, timestamps, tolerance_s, backend=None):
    with av.open(str(video_path)) as container:
        decoded = [(float(f.pts * f.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    stamps = np.array([stamp for stamp, _ in decoded])
    frames = []
    for query in timestamps:
        nearest = int(np.argmin(np.abs(stamps - query)))
        if abs(stamps[nearest] - query) >= tolerance_s:
            raise AssertionError(f"no frame at {query} s in {video_path} (nearest {stamps[nearest]} s)")
        frames.append(torch.from_numpy(decoded[nearest][1]).permute(2, 0, 1).float() / 255)
    return torch.stack(frames)


def main(root: str, episodes_dir: str) -> None:
    lerobot_dataset.decode_video_frames = decode_video_frames
    dataset = lerobot_dataset.LeRobotDataset("lab/mobile_vla", root=root)
    meta = dataset.meta
    print(f"lerobot {meta.info['codebase_version']}: {dataset.num_episodes} episodes, {dataset.num_frames} frames")
    print(f"fps {dataset.fps}, features {list(dataset.features)}, tasks {list(meta.tasks.index)}")
    item, worst = 0, 0.0
    for episode_index, path in enumerate(list_episodes(episodes_dir)):
        episode = read_episode(path)
        for frame_index in range(episode.num_frames):
            sample = dataset[item]
            assert (sample["episode_index"].item(), sample["frame_index"].item()) == (episode_index, frame_index)
            assert sample["task"] == episode.instruction, (sample["task"], episode.instruction)
            np.testing.assert_array_equal(sample["action"].numpy(), episode.actions[frame_index])
            image = sample[CAMERA_KEY].permute(1, 2, 0).numpy() * 255
            worst = max(worst, float(np.abs(image - episode.images[frame_index]).mean()))
            item += 1
    print(f"{item} items: episode/frame indices, tasks and actions equal the episodes'")
    print(f"frames: worst mean absolute difference {worst:.2f} grey levels (AV1, crf 30)")
    windows = lerobot_dataset.LeRobotDataset(
        "lab/mobile_vla", root=root, delta_timestamps={CAMERA_KEY: [-0.2, -0.1, 0.0], "action": [0.0, 0.1, 0.2]}
    )
    window = windows[1]
    print(
        f"delta_timestamps window at item 1: frames {tuple(window[CAMERA_KEY].shape)}, "
        f"padded {window[CAMERA_KEY + '_is_pad'].tolist()}, actions {tuple(window['action'].shape)}"
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])
