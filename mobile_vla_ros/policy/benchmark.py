"""Latency of the policy step versus a plain Kosmos-2 forward, measured in one run.

    bare_forward  one transformers Kosmos-2 forward of one frame with the prompt (the reference)
    naive_step    re-encoding the whole window every step (what the lab's runtime did)
    cached_step   the runner's incremental step: one new frame through the VLM + the head
"""
from __future__ import annotations

import platform
import resource
import tempfile
import time

import numpy as np
import torch

import mobile_vla_ros
from mobile_vla_ros.policy.backbone import FULL_RANDOM, load_base_model, resolve_device, resolve_dtype, torch_dtype
from mobile_vla_ros.policy.config import PolicyConfig
from mobile_vla_ros.policy.instructions import LAB_INSTRUCTIONS
from mobile_vla_ros.policy.model import VLAPolicy
from mobile_vla_ros.policy.runner import PolicyRunner


def _percentiles(samples_s: list[float]) -> dict:
    ms = np.asarray(samples_s) * 1000.0
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)), "n": int(ms.size)}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


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


def build_runner(
    base_model: str, device: str, dtype: str, tokenizer_dir: str | None = None, quantize: str = "none"
) -> PolicyRunner:
    """A runner on `base_model` (a directory, or full-random) with freshly initialised LoRA and head."""
    torch.manual_seed(0)
    if base_model == FULL_RANDOM and tokenizer_dir is None:
        from mobile_vla_ros.policy.tiny import save_tiny_tokenizer

        tokenizer_dir = tempfile.mkdtemp(prefix="mobile_vla_tokenizer_")
        save_tiny_tokenizer(tokenizer_dir)
    base = load_base_model(base_model, dtype=torch_dtype(dtype), tokenizer_dir=tokenizer_dir)
    policy = VLAPolicy(PolicyConfig(instructions=tuple(LAB_INSTRUCTIONS.values())), base)
    return PolicyRunner(policy, resolve_device(device), merge_lora=True, quantize=quantize)


def run_benchmark(
    base_model: str, device: str = "cpu", dtype: str = "auto", repeats: int = 5, warmup: int = 1,
    tokenizer_dir: str | None = None, quantize: str = "none", progress=print,
) -> dict:
    dtype, why = resolve_dtype(dtype, resolve_device(device), quantize)
    progress(f"dtype {dtype}: {why}")
    progress(f"building the policy on {base_model} ({dtype}, {device}, quantize={quantize}) ...")
    started = time.perf_counter()
    runner = build_runner(base_model, device, dtype, tokenizer_dir, quantize)
    load_s = time.perf_counter() - started
    config, policy = runner.config, runner.policy
    runner.set_instruction(LAB_INSTRUCTIONS["left"])
    size, window = config.image_size, config.window_size
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (window + warmup + repeats + 1, size, size, 3), dtype=np.uint8)

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
    runner.reset()
    for start in range(window):  # fill the cache as a running robot would have
        runner.step(frames[: start + 1])
    cached_s = _timed(lambda i: runner.step(frames[i + 1 : i + 1 + window]), repeats, warmup, runner.device)

    bare_p, naive_p, cached_p = _percentiles(bare_s), _percentiles(naive_s), _percentiles(cached_s)
    result = {
        "base_model": str(base_model),
        "device": str(runner.device),
        "dtype": dtype,
        "quantize": quantize,
        "window_size": window,
        "threads": torch.get_num_threads(),
        "load_s": load_s,
        "bare_forward_ms_p50": bare_p["p50"], "bare_forward_ms_p95": bare_p["p95"],
        "naive_step_ms_p50": naive_p["p50"], "naive_step_ms_p95": naive_p["p95"],
        "cached_step_ms_p50": cached_p["p50"], "cached_step_ms_p95": cached_p["p95"],
        "speedup_naive_over_cached": naive_p["p50"] / cached_p["p50"],
        "cached_over_bare": cached_p["p50"] / bare_p["p50"],
        "repeats": repeats,
        "peak_rss_mb": _peak_rss_mb(),
        "versions": {
            "mobile_vla_ros": mobile_vla_ros.__version__, "torch": torch.__version__,
            "transformers": __import__("transformers").__version__, "python": platform.python_version(),
        },
        "cpu": platform.processor() or platform.machine(),
    }
    if runner.device.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def format_table(result: dict) -> str:
    rows = [("bare Kosmos-2 forward (1 frame)", "bare_forward"), ("naive step (whole window)", "naive_step"),
            ("cached step (new frame only)", "cached_step")]
    lines = [f"{'':34s} {'p50 ms':>10s} {'p95 ms':>10s}"]
    lines += [f"{label:34s} {result[key + '_ms_p50']:10.1f} {result[key + '_ms_p95']:10.1f}" for label, key in rows]
    lines.append(f"naive / cached: {result['speedup_naive_over_cached']:.2f}x   cached / bare: {result['cached_over_bare']:.3f}")
    lines.append(f"peak RSS: {result['peak_rss_mb']:.0f} MB   device: {result['device']}   dtype: {result['dtype']}"
                 f"   quantize: {result['quantize']}")
    return "\n".join(lines)
