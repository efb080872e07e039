"""What one training step costs: its time, its floating-point operations and the memory it needs."""

from __future__ import annotations

import time

import lightning as L
import torch
from torch.utils.flop_counter import FlopCounterMode


class StepProfile(L.Callback):
    """Times every training batch (forward, backward and optimizer step) and counts the
    floating-point operations of the first one with torch's FlopCounterMode. The first batch is
    also the warm-up (allocations, kernel choice), so `timed_seconds` leaves it out."""

    def __init__(self):
        self.seconds: list[float] = []
        self.frames: list[int] = []  # frames through Kosmos-2 per batch (0 with cached features)
        self.windows: list[int] = []
        self.first_batch_flops: int | None = None
        self.lora_trains = False
        self.tracked_batches = 0
        self.tokens_per_frame = 0  # Kosmos-2 positions per frame: vision patches + the prompt's tokens
        self._counter: FlopCounterMode | None = None
        self._started = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_index) -> None:
        if self.first_batch_flops is None and self._counter is None:
            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_index) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - self._started)
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.first_batch_flops, self._counter = self._counter.get_total_flops(), None
        self.frames.append(len(batch["frames"]) if "frames" in batch else 0)
        self.windows.append(len(batch["windows"]))

    def on_train_end(self, trainer, pl_module) -> None:
        policy = pl_module.policy
        vision = policy.encoder.kosmos.config.vision_config
        prompt = policy.encode_prompts([policy.config.instructions[0]])
        self.tokens_per_frame = (vision.image_size // vision.patch_size) ** 2 + 1 + prompt.input_ids.shape[1]
        self.lora_trains, self.tracked_batches = pl_module.backbone_trains, pl_module.tracked_batches

    @property
    def timed_seconds(self) -> list[float]:
        return self.seconds[1:]
