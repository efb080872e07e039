"""A synthetic mirrored dataset: every left episode has exactly the same frames as a right one.

The two episodes of a pair differ in their instruction and their sideways speed, so the frames
alone cannot tell which way to go: a policy that reaches a high instruction separation on it must
be reading its instruction. Used by the tests and by the acceptance check of training:

    python -m mobile_vla_ros.training.synthetic OUT_DIR --pairs 24 --frames 18 --seed 0 [--legacy]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mobile_vla_ros.data.episode_writer import EpisodeWriter
from mobile_vla_ros.data.legacy_episode import write_legacy_episode
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS

SAMPLE_RATE_HZ = 10.0


# One scene for every episode, as in the lab's recordings (one room, one box): a grey floor and a
# red box, lit a little differently from episode to episode. With a new random colour pair per
# episode, 24 pairs do not teach a model without pretrained vision where the box is: a ridge on the
# raw pixels predicts held-out sideways speeds at 1.05x the image-blind baseline at best.
FLOOR, BOX = (110, 120, 115), (190, 60, 40)


def pair_frames(rng: np.random.Generator, frames: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A moving box on the floor, its size and where it is across the image: (T, 2)
    [linear_x, across] with across 0 at the left edge and 1 at the right (see `twin_actions`)."""
    light = rng.uniform(0.85, 1.15)
    start, velocity = rng.uniform(0.1, 0.9, 2), rng.uniform(-0.04, 0.04, 2)
    box = int(rng.integers(size // 8, size // 3))
    images = np.empty((frames, size, size, 3), np.uint8)
    images[:] = np.clip(np.array(FLOOR) * light, 0, 255)
    across = np.empty(frames)
    for t in range(frames):
        position = 1.0 - np.abs((start + velocity * t) % 2.0 - 1.0)  # bounces between the edges
        x, y = (position * (size - box)).astype(int)
        images[t, y : y + box, x : x + box] = np.clip(np.array(BOX) * light, 0, 255)
        across[t] = x / (size - box)
    return images, np.stack([np.full(frames, 0.1 + box / size), across], axis=1).astype(np.float32)


def twin_actions(reading: np.ndarray, side: str) -> np.ndarray:
    """(T, 3) actions of one twin, read off the frames by `pair_frames`.

    Forward speed follows the box's size; sideways speed (0.2 to 0.8, never zero) grows with the
    box's distance from the side the robot heads to. The box moves, so the speed changes along the
    episode with what the camera sees and the median action per instruction (an image-blind
    policy's best guess) is far from right. The rule is mirror-symmetric, as the world is: the
    flipped left episode is a valid right episode, so training's mirror augmentation agrees with it.
    """
    actions = np.zeros((len(reading), 3), np.float32)
    across = reading[:, 1] if side == "left" else 1.0 - reading[:, 1]
    actions[:, 0], actions[:, 1] = reading[:, 0], (1.0 if side == "left" else -1.0) * (0.2 + 0.6 * across)
    return actions


def camera_frames(width: int, height: int, count: int, noise: int = 0, seed: int = 0):
    """Camera-like frames (gradients, a moving box, optional sensor noise of +-`noise` grey
    levels), each different from the one before; yields (H, W, 3) uint8 RGB one at a time."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 200 // width, y * 200 // height, (x + y) * 100 // (width + height) + 50], -1).astype(np.int16)
    box_w, box_h = max(1, width // 6), max(1, height // 3)
    for index in range(count):
        image = base.copy()
        left = (index * max(1, width // 55)) % max(1, width - box_w)
        image[height // 3 : height // 3 + box_h, left : left + box_w] = (30, 160, 40)
        if noise:
            image += rng.integers(-noise, noise + 1, image.shape, dtype=np.int16)
        yield np.clip(image, 0, 255).astype(np.uint8)


# Scenes the training never showed, for the familiarity monitor: the same episodes (same seed, same
# actions) with the colours changed.
SHIFTS = {
    "none": lambda images: images,
    "swap-red-blue": lambda images: np.ascontiguousarray(images[..., ::-1]),
    "half-light": lambda images: (images // 2).astype(np.uint8),
}


def write_mirrored_dataset(
    out_dir, pairs: int, frames: int = 18, size: int = 64, seed: int = 0, legacy: bool = False, shift: str = "none"
) -> list[Path]:
    """`pairs` left/right episode pairs sharing their frames; returns the written paths. `shift`
    (SHIFTS) changes the colours of every frame and nothing else."""
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(pairs):
        images, reading = pair_frames(rng, frames, size)
        images = SHIFTS[shift](images)
        for side in ("left", "right"):
            actions = twin_actions(reading, side)
            if legacy:  # the lab's layout: BGR pixels, side only in the file name
                name = f"episode_20250101_{index:06d}_1box_hori_{side}_core_medium.h5"
                paths.append(write_legacy_episode(out_dir / name, images[..., ::-1], actions))
                continue
            writer = EpisodeWriter(out_dir, LAB_INSTRUCTIONS[side], SAMPLE_RATE_HZ)
            for t in range(frames):
                writer.append(images[t], actions[t], t / SAMPLE_RATE_HZ)
            paths.append(writer.save())
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--frames", type=int, default=18)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--legacy", action="store_true", help="write the lab's legacy layout")
    parser.add_argument(
        "--shift", choices=tuple(SHIFTS), default="none", help="colours changed, episodes otherwise the same"
    )
    args = parser.parse_args(argv)
    paths = write_mirrored_dataset(args.out_dir, args.pairs, args.frames, args.size, args.seed, args.legacy, args.shift)
    print(f"wrote {len(paths)} episodes to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
