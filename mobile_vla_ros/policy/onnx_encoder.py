"""The frame encoder as an ONNX graph, and ONNX Runtime in its place at run time.

What is exported: Kosmos-2 with the policy's LoRA merged into its weights and its action token,
from a frame's normalised pixels and the prompt's tokens to the action-token feature
(`FrameEncoder.forward`), at fp32, with the weights in an external file (the full-size graph is
over ONNX's 2 GB limit). The prompt is an input, not a constant: one graph serves every
instruction, so switching the instruction on the topic costs what it costs with PyTorch (a new
tokenisation in Python), and no graph per instruction has to be exported, stored and kept in step
with the instruction list. The action head stays in PyTorch: it is 0.5 % of a step
(docs/results.md), and it carries the feature whitening and the familiarity score, which must stay
the code that was checked in training.

An export is tied to the policy's adapter and base model (`onnx_export.json`): a graph made from
another training run is refused, as a mismatched checkpoint is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobile_vla_ros.errors import CheckpointError, SettingError
from mobile_vla_ros.json_files import read_json_object
from mobile_vla_ros.policy.backbone import PromptBatch
from mobile_vla_ros.policy.checkpoint import ADAPTER_FILE
from mobile_vla_ros.policy.model import VLAPolicy

LOG = logging.getLogger(__name__)

GRAPH_FILE = "frame_encoder.onnx"
EXPORT_FILE = "onnx_export.json"
INPUT_NAMES = ("pixel_values", "input_ids", "image_mask", "action_index")
# ORT's fp32 kernels sum in another order than PyTorch's: the export check allows this much
# difference, relative to the largest feature value (measured: ~3e-7 on the tiny model).
TOLERANCE = 1e-4
# Execution providers in order of preference; the first ones installed are used.
PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def policy_identity(model_dir: str | Path, base_fingerprint: str) -> str:
    """What the graph bakes in: the adapter (LoRA and action token) and the base model."""
    digest = hashlib.sha256((Path(model_dir) / ADAPTER_FILE).read_bytes())
    digest.update(base_fingerprint.encode())
    return digest.hexdigest()


class _EncoderGraph(nn.Module):
    """FrameEncoder.forward with the prompt as plain tensors (what an ONNX graph can take)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, pixel_values, input_ids, image_mask, action_index):
        prompts = PromptBatch(input_ids, image_mask, action_index, input_ids[:, :0], image_mask[:, :0])
        return self.encoder(pixel_values, prompts)


def _inputs(policy: VLAPolicy, frames: torch.Tensor, prompts: PromptBatch) -> tuple[torch.Tensor, ...]:
    return policy.pixel_values(frames), prompts.input_ids, prompts.image_mask, prompts.action_index


def export_frame_encoder(policy: VLAPolicy, out_dir: str | Path, frames: np.ndarray, identity: str = "") -> dict:
    """Export `policy`'s encoder (fp32, LoRA merged in place) to `out_dir` and check ONNX Runtime
    against PyTorch on `frames` (N, S, S, 3 uint8) under each of the policy's instructions."""
    from torch.export import Dim

    if policy.compute_dtype != torch.float32:
        raise SettingError("the ONNX export is made from fp32 weights (load the policy with dtype fp32)")
    encoder = policy.encoder
    if hasattr(encoder.kosmos, "merge_and_unload"):
        encoder.kosmos = encoder.kosmos.merge_and_unload()
    graph = _EncoderGraph(encoder).eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames_t = torch.from_numpy(np.ascontiguousarray(frames))
    sample = _inputs(policy, frames_t[:2], policy.encode_prompts([policy.config.instructions[0]]).repeat_frames(2))
    count, tokens = Dim("frames", min=1, max=256), Dim("tokens", min=2, max=2048)
    for chatty in ("onnx_ir", "onnxscript"):  # one INFO line per merged or unfolded constant
        logging.getLogger(chatty).setLevel(logging.WARNING)
    started = time.perf_counter()
    with torch.no_grad():
        torch.onnx.export(
            graph,
            sample,
            str(out_dir / GRAPH_FILE),
            input_names=list(INPUT_NAMES),
            output_names=["features"],
            dynamic_shapes=({0: count}, {0: count, 1: tokens}, {0: count, 1: tokens}, {0: count}),
            external_data=True,
            dynamo=True,
            verbose=False,
        )
    export_s = time.perf_counter() - started
    check = check_export(policy, graph, out_dir, frames_t)
    record = {
        "policy_identity": identity,
        "base_model": dict(policy.config.base_model),
        "image_size": policy.config.image_size,
        "hidden_size": int(policy.normalizer.feature_mean.numel()),
        "dtype": "fp32",
        "torch": torch.__version__,
        "export_s": export_s,
        "check": check,
    }
    (out_dir / EXPORT_FILE).write_text(json.dumps(record, indent=2) + "\n")
    if not check["passed"]:
        raise CheckpointError(
            f"ONNX Runtime's features differ from PyTorch's by {check['max_relative_difference']:.2e} of their "
            f"largest value (tolerance {TOLERANCE:g}); the export in {out_dir} is not usable"
        )
    return record


def check_export(policy: VLAPolicy, graph: nn.Module, out_dir: Path, frames: torch.Tensor) -> dict:
    """The largest difference between ONNX Runtime's and PyTorch's features on `frames`, for one
    frame and for all of them at once, under every instruction of the policy."""
    session = _session(out_dir, ["CPUExecutionProvider"])
    worst, compared = 0.0, 0
    for instruction in policy.config.instructions:
        for batch in (frames[:1], frames):
            inputs = _inputs(policy, batch, policy.encode_prompts([instruction]).repeat_frames(len(batch)))
            with torch.no_grad():
                expected = graph(*inputs).numpy()
            found = session.run(None, dict(zip(INPUT_NAMES, (tensor.numpy() for tensor in inputs))))[0]
            worst = max(worst, float(np.abs(found - expected).max() / np.abs(expected).max()))
            compared += len(batch)
    return {"max_relative_difference": worst, "tolerance": TOLERANCE, "frames": compared, "passed": worst <= TOLERANCE}


def _session(out_dir: Path, providers: list[str]):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT warns about every node it leaves on the CPU
    return onnxruntime.InferenceSession(str(out_dir / GRAPH_FILE), options, providers=providers)


def available_providers() -> list[str]:
    """PROVIDERS that this onnxruntime has, in PROVIDERS' order."""
    try:
        import onnxruntime
    except ImportError as error:
        raise SettingError(
            "backend onnxruntime needs the onnxruntime package (pip install -r requirements-onnx.txt; "
            "onnxruntime-gpu on a GPU or Jetson)"
        ) from error
    installed = set(onnxruntime.get_available_providers())
    return [provider for provider in PROVIDERS if provider in installed]


def read_export(onnx_dir: str | Path, identity: str | None = None) -> dict:
    """The export's record, refused when it is missing, unchecked, or made from another policy."""
    onnx_dir = Path(onnx_dir)
    if not (onnx_dir / GRAPH_FILE).is_file():
        raise CheckpointError(f"no ONNX export in {onnx_dir}: run `mobile-vla export-onnx MODEL_DIR --out {onnx_dir}`")
    if not (onnx_dir / EXPORT_FILE).is_file():
        raise CheckpointError(f"{onnx_dir} has a graph but no {EXPORT_FILE}: export it again")
    record = read_json_object(onnx_dir / EXPORT_FILE, CheckpointError, "export it again")
    if not record.get("check", {}).get("passed"):
        raise CheckpointError(f"the ONNX export in {onnx_dir} did not pass its check against PyTorch")
    if identity is not None and record.get("policy_identity") != identity:
        raise CheckpointError(
            f"the ONNX export in {onnx_dir} was made from another policy or base model; export this one again"
        )
    return record


def check_onnx_settings(model_dir: str | Path, onnx_dir: str | Path | None, dtype: str, quantize: str) -> Path:
    """The export directory for `model_dir` (default MODEL_DIR/onnx), checked before anything
    loads: it exists, passed its check and was made from this policy; the graph is fp32, so
    dtype must be auto or fp32 and nothing else quantised."""
    from mobile_vla_ros.policy.config import PolicyConfig

    if dtype not in ("auto", "fp32") or quantize != "none":
        raise SettingError(
            f"backend onnxruntime runs the exported fp32 graph: use dtype auto or fp32 and quantize none "
            f"(got dtype {dtype}, quantize {quantize})"
        )
    available_providers()
    onnx_dir = Path(onnx_dir or Path(model_dir) / "onnx")
    fingerprint = PolicyConfig.load(model_dir).base_model.get("fingerprint", "")
    read_export(onnx_dir, policy_identity(model_dir, fingerprint))
    return onnx_dir


class OnnxFrameEncoder(nn.Module):
    """FrameEncoder's place in the policy, run by ONNX Runtime. Keeps the token embeddings (the
    head's instruction vector reads them) and nothing else of Kosmos-2."""

    def __init__(self, onnx_dir: str | Path, token_embeddings: nn.Module, providers: list[str] | None = None):
        super().__init__()
        self.providers = providers or available_providers()
        self.session = _session(Path(onnx_dir), self.providers)
        self.token_embeddings = token_embeddings

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token_embeddings(ids)

    def forward(self, pixel_values: torch.Tensor, prompts: PromptBatch) -> torch.Tensor:
        inputs = (pixel_values, prompts.input_ids, prompts.image_mask, prompts.action_index)
        arrays = (np.ascontiguousarray(tensor.detach().cpu().numpy()) for tensor in inputs)
        features = self.session.run(None, dict(zip(INPUT_NAMES, arrays)))[0]
        return torch.from_numpy(features).to(pixel_values.device)


def use_onnx_encoder(policy: VLAPolicy, onnx_dir: str | Path, providers: list[str] | None = None) -> VLAPolicy:
    """Put ONNX Runtime in place of the policy's Kosmos-2 (whose weights are then released)."""
    policy.encoder = OnnxFrameEncoder(onnx_dir, policy.encoder.token_embeddings, providers)
    LOG.info("frame encoder: ONNX Runtime %s from %s", policy.encoder.providers, onnx_dir)
    return policy
