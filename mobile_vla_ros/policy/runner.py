"""Incremental inference: the VLM runs only on frames it has not encoded yet.

The runner keeps the action-token feature of every frame of the current window, keyed by a hash
of the frame's pixels, so a window that slid by one frame costs one Kosmos-2 forward instead of
eight (RoboVLMs' evaluation wrapper does the same). Features depend on the prompt, so an
instruction switch empties the cache: the next window then uses only its newest frame (padded,
exactly like an episode start) and grows back to full length as new frames arrive — no burst of
eight forwards at the moment the operator changes the instruction.

A step encodes at most `max_new_frames` frames (default 1). When the model is slower than the
window rate, several frames are new at once; encoding them all makes that step slower still, so
the next window has even more new frames (the 16 s p95 of the drive bench). Instead the newest
frame is encoded and each skipped frame takes the feature of the frame before it, as if the
camera had repeated a frame: the window keeps its length and time span, the step its cost.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mobile_vla_ros.errors import ImageError, NonFiniteOutputError, SettingError
from mobile_vla_ros.policy.backbone import resolve_device, resolve_dtype, torch_dtype
from mobile_vla_ros.policy.checkpoint import load_policy
from mobile_vla_ros.policy.instructions import normalize_instruction
from mobile_vla_ros.policy.model import VLAPolicy
from mobile_vla_ros.policy.quantize import is_int8_checkpoint, load_int8_policy, quantize_int8_


def frame_key(frame: np.ndarray) -> bytes:
    return hashlib.blake2b(frame.tobytes(), digest_size=16).digest()


QUANTIZATIONS = ("none", "int8")
BACKENDS = ("pytorch", "onnxruntime")  # what runs Kosmos-2; the head is PyTorch in both


@dataclass(frozen=True)
class StepTiming:
    """Where the time of one `step` went (seconds)."""

    preprocess_s: float  # window check, frame hashing, cache lookup
    backbone_s: float  # Kosmos-2 on the new frames, pixel normalisation included
    head_s: float  # action head + denormalisation
    frames_encoded: int
    frames_held: int  # skipped frames that took the previous frame's feature


class PolicyRunner:
    def __init__(
        self,
        policy: VLAPolicy,
        device: torch.device | str = "cpu",
        merge_lora: bool = True,
        quantize: str = "none",
        max_new_frames: int = 1,
    ):
        device = resolve_device(str(device))
        if quantize not in QUANTIZATIONS:
            raise SettingError(f"unknown quantization {quantize!r}; choose one of {', '.join(QUANTIZATIONS)}")
        if not max_new_frames >= 1:
            raise SettingError(f"max_new_frames must be >= 1, got {max_new_frames}")
        if merge_lora or quantize != "none":
            policy.encoder.kosmos = policy.encoder.kosmos.merge_and_unload()
        if quantize == "int8":
            if device.type != "cpu" or policy.compute_dtype != torch.float32:
                raise SettingError("int8 quantization runs on the CPU from fp32 weights (use dtype fp32, device cpu)")
            policy.encoder.kosmos = quantize_int8_(policy.encoder.kosmos)
        self.policy = policy.to(device).eval()
        self.max_new_frames = int(max_new_frames)
        self.last_timing: StepTiming | None = None
        self.last_familiarity: float | None = None  # the newest frame's (policy.normalizer.familiarity)
        self.config = policy.config
        self.device = policy.device
        self._features: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self._instruction: str | None = None
        self._prompt = None
        self._instruction_vector = None

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        base_model_dir: str | Path,
        device: str = "auto",
        dtype: str = "fp32",
        merge_lora: bool = True,
        quantize: str = "none",
        max_new_frames: int = 1,
        backend: str = "pytorch",
        onnx_dir: str | Path | None = None,
    ) -> PolicyRunner:
        """`dtype` may be "auto" (see backbone.resolve_dtype). With quantize "int8", a checkpoint
        made by `mobile-vla quantize` loads its stored int8 backbone (no fp32 copy); any other
        checkpoint is converted layer by layer after loading in fp32. With backend "onnxruntime"
        the export in `onnx_dir` (default MODEL_DIR/onnx, `mobile-vla export-onnx`) encodes the
        frames; the policy loads in fp32 first, with every check, and its Kosmos-2 is then released."""
        if backend not in BACKENDS:
            raise SettingError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        device = resolve_device(device)
        if backend == "onnxruntime":
            from mobile_vla_ros.policy.onnx_encoder import check_onnx_settings, use_onnx_encoder

            onnx_dir = check_onnx_settings(model_dir, onnx_dir, dtype, quantize)
            policy = load_policy(model_dir, base_model_dir)
            return cls(use_onnx_encoder(policy, onnx_dir), "cpu", merge_lora=False, max_new_frames=max_new_frames)
        dtype, _ = resolve_dtype(dtype, device, quantize)
        if quantize == "int8" and is_int8_checkpoint(model_dir):
            if device.type != "cpu" or dtype != "fp32":
                raise SettingError("int8 quantization runs on the CPU from fp32 weights (use dtype fp32, device cpu)")
            return cls(
                load_int8_policy(model_dir, base_model_dir), device, merge_lora=False, max_new_frames=max_new_frames
            )
        policy = load_policy(model_dir, base_model_dir, dtype=torch_dtype(dtype))
        return cls(policy, device, merge_lora, quantize, max_new_frames)

    @property
    def instruction(self) -> str | None:
        return self._instruction

    def set_instruction(self, instruction: str) -> None:
        """Takes effect from the next step; drops the features computed under the old prompt.
        The instruction in force again is a no-op: its cached features stay valid."""
        if normalize_instruction(instruction) == self._instruction:
            return
        prompt = self.policy.encode_prompts([instruction])  # validates; raises InstructionError
        with torch.inference_mode():
            self._instruction_vector = self.policy.instruction_vector(prompt)
        self._prompt, self._instruction = prompt, normalize_instruction(instruction)
        self._features.clear()

    def reset(self) -> None:
        self._features.clear()

    def _check_window(self, window: np.ndarray) -> np.ndarray:
        size, limit = self.config.image_size, self.config.window_size
        if not isinstance(window, np.ndarray) or window.dtype != np.uint8:
            raise ImageError(f"a window must be a uint8 numpy array, got {getattr(window, 'dtype', type(window))}")
        if window.ndim == 3:
            window = window[None]
        if window.ndim != 4 or window.shape[1:] != (size, size, 3) or not 1 <= window.shape[0]:
            raise ImageError(f"a window must have shape (T, {size}, {size}, 3), got {window.shape}")
        return window[-limit:]

    def _finish(self, normalized: torch.Tensor) -> np.ndarray:
        actions = self.policy.normalizer.unnormalize_actions(normalized[0]).cpu().numpy().astype(np.float32)
        if not np.isfinite(actions).all():
            raise NonFiniteOutputError(f"the policy produced non-finite actions for {self._instruction!r}")
        return actions

    def _require_instruction(self) -> None:
        if self._prompt is None:
            raise RuntimeError("set_instruction() must be called before step()")

    @torch.inference_mode()
    def step(self, window: np.ndarray) -> np.ndarray:
        """(T, S, S, 3) uint8 RGB window, newest last -> (chunk, action_dim) float32 actions."""
        self._require_instruction()
        started = time.perf_counter()
        window = self._check_window(window)
        keys = [frame_key(frame) for frame in window]
        newest_cached = max((i for i, key in enumerate(keys) if key in self._features), default=None)
        if newest_cached is None:
            first_new, start = len(keys) - 1, len(keys) - 1  # cold: the newest frame only
        else:
            first_new = newest_cached + 1
            start = newest_cached
            while start > 0 and keys[start - 1] in self._features:
                start -= 1
        first_encoded = max(first_new, len(keys) - self.max_new_frames)
        for index in range(first_new, first_encoded):  # the model fell behind: hold the previous feature
            self._features[keys[index]] = self._features[keys[index - 1]]
        preprocessed = time.perf_counter()
        if first_encoded < len(keys):
            frames = torch.from_numpy(np.ascontiguousarray(window[first_encoded:])).to(self.device)
            prompts = self._prompt.repeat_frames(len(frames))
            for key, feature in zip(keys[first_encoded:], self.policy.frame_features(frames, prompts)):
                self._features[key] = feature
            if self.device.type == "cuda":  # kernels run asynchronously: charge them to the backbone
                torch.cuda.synchronize(self.device)
        encoded = time.perf_counter()
        features = torch.stack([self._features[key] for key in keys[start:]])[None]
        in_window = set(keys[start:])
        for stale in [key for key in self._features if key not in in_window]:
            del self._features[stale]
        actions = self._finish(self.policy.predict(features, self._instruction_vector))
        self.last_familiarity = float(self.policy.normalizer.familiarity(features[0, -1]))
        self.last_timing = StepTiming(
            preprocessed - started,
            encoded - preprocessed,
            time.perf_counter() - encoded,
            len(keys) - first_encoded,
            first_encoded - first_new,
        )
        return actions

    @torch.inference_mode()
    def step_full_window(self, window: np.ndarray) -> np.ndarray:
        """Reference path: encode every frame of the window again (what the lab's runtime did)."""
        self._require_instruction()
        window = self._check_window(window)
        frames = torch.from_numpy(np.ascontiguousarray(window)).to(self.device)
        features = self.policy.frame_features(frames, self._prompt.repeat_frames(len(frames)))
        return self._finish(self.policy.predict(features[None], self._instruction_vector))
