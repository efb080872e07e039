"""Latency of the policy step versus a plain Kosmos-2 forward, measured in one run.

bare_forward  one transformers Kosmos-2 forward of one frame with the prompt (the reference)
naive_step    re-encoding the whole window every step (what the lab's runtime did)
cached_step   the runner's incremental step: one new frame through the VLM + the head
"""

from __future__ import annotations

import multiprocessing
import platform
import resource
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

import mobile_vla_ros
from mobile_vla_ros.errors import SettingError
from mobile_vla_ros.policy.backbone import (
    FULL_RANDOM,
    load_base_model,
    resolve_device,
    resolve_dtype,
    torch_dtype,
)
from mobile_vla_ros.policy.checkpoint import save_policy
from mobile_vla_ros.policy.config import PolicyConfig
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS
from mobile_vla_ros.policy.model import VLAPolicy
from mobile_vla_ros.policy.quantize import (
    INT8_BACKBONE_FILE,
    int8_linear_type,
    load_int8_policy,
    quantize_int8_,
    save_int8_backbone,
)
from mobile_vla_ros.policy.runner import BACKENDS, PolicyRunner
from mobile_vla_ros.policy.tiny import save_tiny_tokenizer


def _percentiles(samples_s: list[float]) -> dict:
    ms = np.asarray(samples_s) * 1000.0
    return {q: float(np.percentile(ms, int(q[1:]))) for q in ("p50", "p95", "p99")} | {"n": int(ms.size)}


def peak_rss_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux reports KiB


def save_full_random_base(directory: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """The full-size Kosmos-2 with random weights (and the tiny tokenizer) saved like a downloaded
    base model, for the commands that need a directory: a policy is tied to its base's files."""
    directory = Path(directory)
    save_tiny_tokenizer(directory)
    base = load_base_model(FULL_RANDOM, dtype=dtype, tokenizer_dir=directory)
    base.model.save_pretrained(directory)
    return directory


def _timed(fn, repeats: int, warmup: int, device: torch.device) -> list[float]:
    samples = []
    for index in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(index)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index >= warmup:
            samples.append(time.perf_counter() - start)
    return samples


def _build_policy(base_model: str, dtype: str, tokenizer_dir: str | None) -> VLAPolicy:
    """A policy on `base_model` with freshly initialised LoRA and head; the same weights for every
    dtype (seeded, built in fp32 and cast), so settings can be compared action by action."""
    torch.manual_seed(0)
    base = load_base_model(base_model, dtype=torch_dtype(dtype), tokenizer_dir=tokenizer_dir)
    return VLAPolicy(PolicyConfig(instructions=tuple(LAB_INSTRUCTIONS.values())), base)


def _bench_frames(config, count: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, config.image_size, config.image_size, 3), dtype=np.uint8)


def _cached_sequence(runner: PolicyRunner, frames: np.ndarray, steps: int, on_step=None) -> np.ndarray:
    """What a running robot does: fill the window frame by frame, then slide it by one frame per
    step. Returns every step's actions; `on_step(index, seconds)` sees the sliding steps."""
    window = runner.config.window_size
    runner.set_instruction(LAB_INSTRUCTIONS["left"])
    runner.reset()
    actions = [runner.step(frames[: start + 1]) for start in range(window)]
    for index in range(steps):
        started = time.perf_counter()
        actions.append(runner.step(frames[index + 1 : index + 1 + window]))
        if on_step is not None:
            on_step(index, time.perf_counter() - started)
    return np.stack(actions)


def _fp32_reference(
    base_model: str, tokenizer_dir: str | None, device: str, steps: int, warmup: int, scratch: str, make_int8: bool
) -> None:
    """Child process: the fp32 actions and step times of the bench sequence (a same-run baseline on a
    shared machine), and for int8 the stored int8 checkpoint (so the measured process only ever
    holds the int8 model, as a robot would)."""
    policy = _build_policy(base_model, "fp32", tokenizer_dir)
    if make_int8:
        save_policy(policy, scratch)
    runner = PolicyRunner(policy, resolve_device(device))
    frames = _bench_frames(runner.config, runner.config.window_size + steps + 1)
    seconds = []
    np.save(
        Path(scratch) / "fp32_actions.npy",
        _cached_sequence(runner, frames, steps, lambda i, s: i >= warmup and seconds.append(s)),
    )
    np.save(Path(scratch) / "fp32_step_s.npy", np.asarray(seconds))
    if make_int8:
        save_int8_backbone(
            quantize_int8_(runner.policy.encoder.kosmos),
            Path(scratch) / INT8_BACKBONE_FILE,
            policy.config.base_model["fingerprint"],
        )


def _run_reference(base_model, tokenizer_dir, device, steps, warmup, scratch, make_int8) -> float:
    """Runs `_fp32_reference` in a fresh process (its errors re-raised here as they were raised
    there); returns that process's peak RSS (MB)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(_fp32_reference, base_model, tokenizer_dir, device, steps, warmup, scratch, make_int8).result()
    return peak_rss_mb(resource.RUSAGE_CHILDREN)


def _current_rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def _onnx_export_child(base_model: str, tokenizer_dir: str | None, scratch: str) -> dict:
    """Child process: the bench's seeded fp32 policy exported to SCRATCH/onnx and checked against
    PyTorch; returns the export's record and the process's peak RSS (MB)."""
    from mobile_vla_ros.policy.onnx_encoder import export_frame_encoder

    policy = _build_policy(base_model, "fp32", tokenizer_dir)
    record = export_frame_encoder(policy, Path(scratch) / "onnx", _bench_frames(policy.config, 2))
    return {**record, "peak_rss_mb": peak_rss_mb()}


def _onnx_timing_child(base_model: str, tokenizer_dir: str | None, steps: int, warmup: int, scratch: str) -> dict:
    """Child process: the bench sequence with ONNX Runtime encoding the frames, loaded as
    inference_node loads it (the PyTorch policy first, its Kosmos-2 then released)."""
    import gc

    from mobile_vla_ros.policy.onnx_encoder import use_onnx_encoder

    policy = use_onnx_encoder(_build_policy(base_model, "fp32", tokenizer_dir), Path(scratch) / "onnx")
    gc.collect()
    runner = PolicyRunner(policy, "cpu", merge_lora=False)
    rss_after_load = _current_rss_mb()
    frames = _bench_frames(runner.config, runner.config.window_size + steps + 1)
    seconds: list[float] = []
    actions = _cached_sequence(runner, frames, steps, lambda i, s: i >= warmup and seconds.append(s))
    return {
        "step_s": seconds,
        "actions": actions,
        "providers": policy.encoder.providers,
        "rss_after_load_mb": rss_after_load,
        "peak_rss_mb": peak_rss_mb(),
    }


def _onnx_figures(base_model, tokenizer_dir, steps, warmup, scratch, torch_actions, progress) -> dict:
    """ONNX Runtime's cached step on the same windows as PyTorch's, each part in its own process
    (so each one's memory is its own)."""
    context = multiprocessing.get_context("spawn")
    progress("exporting the same policy to ONNX in a separate process ...")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        export = pool.submit(_onnx_export_child, base_model, tokenizer_dir, scratch).result()
    progress("timing the incremental step with ONNX Runtime in a separate process ...")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        timed = pool.submit(_onnx_timing_child, base_model, tokenizer_dir, steps, warmup, scratch).result()
    figures = _percentiles(timed["step_s"])
    difference = np.abs(timed["actions"] - torch_actions)
    return {
        "onnxruntime_cached_step_ms_p50": figures["p50"],
        "onnxruntime_cached_step_ms_p95": figures["p95"],
        "onnxruntime_providers": timed["providers"],
        "onnxruntime_rss_after_load_mb": timed["rss_after_load_mb"],
        "onnxruntime_peak_rss_mb": timed["peak_rss_mb"],
        "onnxruntime_export_peak_rss_mb": export["peak_rss_mb"],
        "onnxruntime_export_s": export["export_s"],
        "onnxruntime_export_check": export["check"],
        "onnxruntime_action_diff_max": float(difference.max()),
    }


def build_runner(
    base_model: str, device: str, dtype: str, tokenizer_dir: str | None = None, quantize: str = "none"
) -> PolicyRunner:
    """A runner on `base_model` (a directory, or full-random) with freshly initialised LoRA and head."""
    return PolicyRunner(_build_policy(base_model, dtype, tokenizer_dir), resolve_device(device), quantize=quantize)


def _stage_percentiles(timings) -> dict:
    result = {}
    for stage in ("preprocess", "backbone", "head"):
        figures = _percentiles([getattr(timing, stage + "_s") for timing in timings])
        result.update({f"stage_{stage}_ms_{q}": figures[q] for q in ("p50", "p95", "p99")})
    return result


def run_benchmark(
    base_model: str,
    device: str = "cpu",
    dtype: str = "auto",
    repeats: int = 5,
    warmup: int = 1,
    tokenizer_dir: str | None = None,
    quantize: str = "none",
    backend: str = "pytorch",
    progress=print,
) -> dict:
    """`backend` onnxruntime: ONNX Runtime's cached step is measured too, beside PyTorch's."""
    if backend not in BACKENDS:
        raise SettingError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    dtype, why = resolve_dtype(dtype, resolve_device(device), quantize)
    progress(f"dtype {dtype}: {why}")
    if base_model == FULL_RANDOM and tokenizer_dir is None:
        tokenizer_dir = tempfile.mkdtemp(prefix="mobile_vla_tokenizer_")
        save_tiny_tokenizer(tokenizer_dir)
    steps = warmup + repeats
    scratch = tempfile.mkdtemp(prefix="mobile_vla_bench_")
    reference_peak_mb = None
    if dtype != "fp32" or quantize != "none":
        progress(f"fp32 reference{' and int8 checkpoint' if quantize == 'int8' else ''} in a separate process ...")
        reference_peak_mb = _run_reference(
            base_model, tokenizer_dir, device, steps, warmup, scratch, quantize == "int8"
        )
    progress(f"building the policy on {base_model} ({dtype}, {device}, quantize={quantize}) ...")
    started = time.perf_counter()
    if quantize == "int8":  # from the stored int8 checkpoint: no fp32 copy in this process
        base_dir = None if base_model == FULL_RANDOM else base_model
        runner = PolicyRunner(
            load_int8_policy(scratch, base_dir, tokenizer_dir), resolve_device(device), merge_lora=False
        )
    else:
        runner = build_runner(base_model, device, dtype, tokenizer_dir)
    load_s, load_peak_mb = time.perf_counter() - started, peak_rss_mb()
    config, policy = runner.config, runner.policy
    runner.set_instruction(LAB_INSTRUCTIONS["left"])
    window = config.window_size
    frames = _bench_frames(config, window + steps + 1)

    # Reference: the plain transformers forward of one frame, as a user of the model would call it.
    prompt = policy.prompts.encode([runner.instruction]).to(runner.device)
    pixel_values = policy.pixel_values(torch.from_numpy(frames[:1]).to(runner.device))
    kosmos = policy.encoder.kosmos

    def bare(_):
        with torch.inference_mode():
            kosmos(pixel_values=pixel_values, input_ids=prompt.input_ids, image_embeds_position_mask=prompt.image_mask)

    progress("timing the bare Kosmos-2 forward ...")
    bare_s = _timed(bare, repeats, warmup, runner.device)
    progress("timing the full-window recompute ...")
    naive_s = _timed(lambda i: runner.step_full_window(frames[i : i + window]), repeats, warmup, runner.device)
    progress("timing the incremental step ...")
    cached_s, timings = [], []

    def record(index, seconds):
        if index >= warmup:
            cached_s.append(seconds)
            timings.append(runner.last_timing)

    actions = _cached_sequence(runner, frames, steps, record)

    bare_p, naive_p, cached_p = _percentiles(bare_s), _percentiles(naive_s), _percentiles(cached_s)
    result = {
        "base_model": str(base_model),
        "device": str(runner.device),
        "dtype": dtype,
        "dtype_reason": why,
        "quantize": quantize,
        "window_size": window,
        "threads": torch.get_num_threads(),
        "load_s": load_s,
        "bare_forward_ms_p50": bare_p["p50"],
        "bare_forward_ms_p95": bare_p["p95"],
        "naive_step_ms_p50": naive_p["p50"],
        "naive_step_ms_p95": naive_p["p95"],
        "cached_step_ms_p50": cached_p["p50"],
        "cached_step_ms_p95": cached_p["p95"],
        "cached_step_ms_p99": cached_p["p99"],
        **_stage_percentiles(timings),
        "speedup_naive_over_cached": naive_p["p50"] / cached_p["p50"],
        "cached_over_bare": cached_p["p50"] / bare_p["p50"],
        "repeats": repeats,
        "load_peak_rss_mb": load_peak_mb,
        "peak_rss_mb": peak_rss_mb(),
        "reference_process_peak_rss_mb": reference_peak_mb,
        "versions": {
            "mobile_vla_ros": mobile_vla_ros.__version__,
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "python": platform.python_version(),
        },
        "cpu": platform.processor() or platform.machine(),
    }
    reference = Path(scratch) / "fp32_actions.npy"
    if reference.is_file():  # the accuracy cost of this setting, on the same windows
        difference = np.abs(actions - np.load(reference))
        result["action_diff_vs_fp32_max"] = float(difference.max())
        result["action_diff_vs_fp32_mean"] = float(difference.mean())
        result["action_diff_steps"] = int(len(actions))
        fp32_p = _percentiles(np.load(Path(scratch) / "fp32_step_s.npy"))
        result["fp32_cached_step_ms_p50"], result["fp32_cached_step_ms_p95"] = fp32_p["p50"], fp32_p["p95"]
        result["cached_step_over_fp32"] = cached_p["p50"] / fp32_p["p50"]
    if quantize == "none":  # the flop counter does not see the quantised kernels
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            runner.step(frames[steps + 1 : steps + 1 + window])
        result["gflop_per_cached_step"] = counter.get_total_flops() / 1e9
    if backend == "onnxruntime":
        result.update(_onnx_figures(base_model, tokenizer_dir, steps, warmup, scratch, actions, progress))
    result["weights_mb"] = sum(_tensor_bytes(kosmos)) / 2**20
    if runner.device.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    shutil.rmtree(scratch, ignore_errors=True)
    return result


def _tensor_bytes(module: torch.nn.Module):
    """Bytes of every parameter and buffer, int8 packed weights included (shared storage once)."""
    seen = set()
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            yield tensor.numel() * tensor.element_size()
    for child in module.modules():
        if isinstance(child, int8_linear_type()):
            weight, bias = child._weight_bias()
            yield weight.numel() + (0 if bias is None else bias.numel() * bias.element_size())


def format_table(result: dict) -> str:
    rows = [
        ("bare Kosmos-2 forward (1 frame)", "bare_forward"),
        ("naive step (whole window)", "naive_step"),
        ("cached step (new frame only)", "cached_step"),
    ]
    lines = [f"{'':34s} {'p50 ms':>10s} {'p95 ms':>10s}"]
    lines += [f"{label:34s} {result[key + '_ms_p50']:10.1f} {result[key + '_ms_p95']:10.1f}" for label, key in rows]
    lines.append(
        f"naive / cached: {result['speedup_naive_over_cached']:.2f}x   cached / bare: {result['cached_over_bare']:.3f}"
    )
    lines.append(
        "cached step by stage, p50 ms: "
        + ", ".join(f"{stage} {result[f'stage_{stage}_ms_p50']:.1f}" for stage in ("preprocess", "backbone", "head"))
    )
    lines.append(
        f"peak RSS: {result['peak_rss_mb']:.0f} MB (after loading {result['load_peak_rss_mb']:.0f} MB)   "
        f"device: {result['device']}   dtype: {result['dtype']}   quantize: {result['quantize']}"
    )
    if "action_diff_vs_fp32_max" in result:
        lines.append(
            f"actions vs fp32 on the same {result['action_diff_steps']} windows: max |diff| "
            f"{result['action_diff_vs_fp32_max']:.4f}, mean {result['action_diff_vs_fp32_mean']:.4f}"
        )
        lines.append(
            f"cached step vs fp32 in this run: {result['cached_step_ms_p50']:.1f} / "
            f"{result['fp32_cached_step_ms_p50']:.1f} ms = {result['cached_step_over_fp32']:.2f}x"
        )
    if "onnxruntime_cached_step_ms_p50" in result:
        lines.append(
            f"ONNX Runtime ({', '.join(result['onnxruntime_providers'])}): cached step p50 "
            f"{result['onnxruntime_cached_step_ms_p50']:.1f} ms, p95 {result['onnxruntime_cached_step_ms_p95']:.1f} "
            f"(PyTorch {result['dtype']}: {result['cached_step_ms_p50']:.1f} ms); RSS after loading "
            f"{result['onnxruntime_rss_after_load_mb']:.0f} MB, peak {result['onnxruntime_peak_rss_mb']:.0f} MB "
            f"(export {result['onnxruntime_export_peak_rss_mb']:.0f} MB); actions vs PyTorch {result['dtype']}: "
            f"max |diff| {result['onnxruntime_action_diff_max']:.4f}"
        )
    return "\n".join(lines)
