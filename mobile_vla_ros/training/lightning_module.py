"""Lightning wrappers: the policy as a LightningModule, the window clips as a LightningDataModule."""

from __future__ import annotations

import dataclasses
import math
import random
import time

import lightning as L
import numpy as np
import torch
import torch.utils.checkpoint

from mobile_vla_ros.data.clips import EpochShuffleSampler, WindowDataset, collate_clips
from mobile_vla_ros.data.windows import TrainingEpisode
from mobile_vla_ros.errors import BaseModelMismatchError, CheckpointError
from mobile_vla_ros.policy.backbone import PromptBatch
from mobile_vla_ros.policy.model import VLAPolicy
from mobile_vla_ros.training.config import TrainConfig


def select_rows(prompts: PromptBatch, rows: torch.Tensor) -> PromptBatch:
    """The prompt of each row's clip: (clips, ...) -> (rows, ...)."""
    return PromptBatch(**{f.name: getattr(prompts, f.name)[rows] for f in dataclasses.fields(prompts)})


class PolicyModule(L.LightningModule):
    """Huber loss on normalised action chunks (steps past an episode's end masked); only LoRA, the
    action token and the head train.

    Checkpoints hold the trainable weights only (the frozen Kosmos-2 is the base model directory,
    identified by its fingerprint), so a resume checkpoint of the full-size model stays small.
    """

    def __init__(
        self,
        policy: VLAPolicy,
        learning_rate: float,
        weight_decay: float,
        huber_delta: float,
        backbone_learning_rate: float | None = None,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        self.policy = policy
        self.gradient_checkpointing = gradient_checkpointing
        self.learning_rate, self.weight_decay, self.huber_delta = learning_rate, weight_decay, huber_delta
        self.backbone_learning_rate = learning_rate if backbone_learning_rate is None else backbone_learning_rate
        self.strict_loading = False  # the frozen base model is not in the checkpoint
        if self.backbone_learning_rate == 0:  # a fixed feature extractor: no backward pass through Kosmos-2
            for parameter in policy.encoder.parameters():
                parameter.requires_grad_(False)
        self.backbone_trains = any(parameter.requires_grad for parameter in policy.encoder.parameters())
        self.tracked_batches = 0  # batches whose features moved the feature whitening (bench-train reports it)

    def trainable_names(self) -> list[str]:
        return [name for name, parameter in self.named_parameters() if parameter.requires_grad]

    def saved_names(self) -> set[str]:
        """What a resume checkpoint holds: the trainable weights and the normaliser's statistics."""
        return set(self.trainable_names()) | {
            f"policy.normalizer.{name}" for name, _ in self.policy.normalizer.named_buffers()
        }

    def predict_batch(self, batch: dict) -> torch.Tensor:
        """Normalised chunks (windows, chunk, A): each frame encoded once, windows gathered."""
        policy = self.policy
        prompts = policy.encode_prompts(batch["instructions"])
        if "features" in batch:  # the encoder is fixed: its features were computed once before training
            features = batch["features"].to(policy.device)
        else:
            features = self.frame_features(batch["frames"], select_rows(prompts, batch["frame_clip"]))
        if self.training and self.backbone_trains:  # the whitening follows the moving features
            policy.normalizer.track_feature_statistics(features)
            self.tracked_batches += 1
        instruction = policy.instruction_vector(prompts)[batch["window_clip"]]
        return policy.predict(features[batch["windows"]], instruction)

    def frame_features(self, frames: torch.Tensor, prompts: PromptBatch) -> torch.Tensor:
        """The policy's frame features; with gradient checkpointing one frame at a time, each
        frame's Kosmos-2 activations dropped after the forward pass and recomputed in the backward
        pass (training memory then holds one frame's activations instead of the whole batch's,
        for one more forward pass). Per frame, not per layer: transformers checkpoints only layers
        in training mode, and the frozen Kosmos-2 stays in eval mode (FrameEncoder.train)."""
        if not (self.gradient_checkpointing and self.backbone_trains and torch.is_grad_enabled()):
            return self.policy.frame_features(frames, prompts)
        rows = torch.arange(len(frames))
        return torch.cat(
            [
                torch.utils.checkpoint.checkpoint(
                    self.policy.frame_features,
                    frames[row : row + 1],
                    select_rows(prompts, rows[row : row + 1]),
                    use_reentrant=False,
                )
                for row in range(len(frames))
            ]
        )

    def loss(self, batch: dict) -> torch.Tensor:
        predicted = self.predict_batch(batch).float()
        target = self.policy.normalizer.normalize_actions(batch["targets"])
        per_step = torch.nn.functional.huber_loss(predicted, target, delta=self.huber_delta, reduction="none").mean(-1)
        mask = batch["target_mask"].to(per_step.dtype)  # steps past the episode end have no target
        return (per_step * mask).sum() / mask.sum().clamp_min(1.0)

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["windows"]))
        return loss

    def validation_step(self, batch: dict, batch_index: int) -> None:
        self.log("val_loss", self.loss(batch), prog_bar=True, batch_size=len(batch["windows"]), sync_dist=True)

    def configure_optimizers(self):
        head = [parameter for parameter in self.policy.head.parameters() if parameter.requires_grad]
        backbone = [parameter for parameter in self.policy.encoder.parameters() if parameter.requires_grad]
        groups = [{"params": head, "lr": self.learning_rate}]
        if backbone:
            groups.append({"params": backbone, "lr": self.backbone_learning_rate})
        return torch.optim.AdamW(groups, weight_decay=self.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = self.saved_names()
        checkpoint["state_dict"] = {key: value for key, value in checkpoint["state_dict"].items() if key in keep}
        checkpoint["base_model"] = dict(self.policy.config.base_model)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("base_model", {})
        current = self.policy.config.base_model
        if saved.get("fingerprint") != current.get("fingerprint"):
            raise BaseModelMismatchError(
                f"the training run was started on base model {saved.get('name')!r} ({saved.get('fingerprint')}), "
                f"but the base model given is {current.get('name')!r} ({current.get('fingerprint')})"
            )
        expected, found = self.saved_names(), set(checkpoint["state_dict"])
        if expected != found:
            raise CheckpointError(
                "the training checkpoint does not fit this policy configuration "
                f"(missing {sorted(expected - found)[:3]}, unexpected {sorted(found - expected)[:3]})"
            )


class ClipDataModule(L.LightningDataModule):
    def __init__(self, train: list[TrainingEpisode], val: list[TrainingEpisode], config: TrainConfig):
        super().__init__()
        policy, data = config.policy, config.data
        self.train_set = WindowDataset(
            train, policy.window_size, policy.chunk_size, data.clip_length, data.correction_weight
        )
        self.val_set = WindowDataset(val, policy.window_size, policy.chunk_size, data.clip_length) if val else None
        self.batch_size, self.num_workers, self.seed = (
            config.trainer.batch_size,
            config.trainer.num_workers,
            config.trainer.seed,
        )

    def _loader(self, dataset: WindowDataset, sampler=None) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=collate_clips,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self):
        sampler = EpochShuffleSampler(len(self.train_set), self.seed)
        if self.trainer is not None:  # resuming in the middle of an epoch: skip the batches it already trained on
            batches = math.ceil(len(self.train_set) / self.batch_size)
            done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed % batches
            sampler.skip_once(done * self.batch_size)
        return self._loader(self.train_set, sampler)

    def val_dataloader(self):
        return self._loader(self.val_set) if self.val_set is not None else []


class FinalCheckpoint(L.Callback):
    """Saves the resume checkpoint after the last optimizer step, wherever a step or time budget
    stops the run (inside the batch, the state Lightning resumes exactly from)."""

    def __init__(self, path):
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_index) -> None:
        timer = next((c for c in trainer.callbacks if type(c).__name__ == "Timer"), None)
        out_of_time = timer is not None and timer.time_remaining() is not None and timer.time_remaining() <= 0
        if trainer.global_step >= trainer.max_steps > 0 or out_of_time or trainer.should_stop:
            trainer.save_checkpoint(self.path, weights_only=False)


class RunState(L.Callback):
    """Saves the random number generators with every checkpoint (dropout draws from them), so a
    resumed run continues exactly as an uninterrupted one; also measures training throughput."""

    def __init__(self):
        self._pending_rng: dict | None = None
        self.windows = 0
        self.train_seconds = 0.0
        self._batch_started = 0.0

    def state_dict(self) -> dict:
        numpy_state = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [numpy_state[0], numpy_state[1], *numpy_state[2:]],
            "python": random.getstate(),
        }

    def load_state_dict(self, state: dict) -> None:
        self._pending_rng = state  # applied when training starts, after everything else is built

    def on_train_start(self, trainer, pl_module) -> None:
        state, self._pending_rng = self._pending_rng, None
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        kind, keys, *rest = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_index) -> None:
        self._batch_started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_index) -> None:
        self.train_seconds += time.perf_counter() - self._batch_started
        self.windows += len(batch["windows"])

    @property
    def windows_per_second(self) -> float | None:
        return self.windows / self.train_seconds if self.train_seconds else None
