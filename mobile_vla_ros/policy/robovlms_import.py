"""Import RoboVLMs' robot-pretrained Kosmos (a PyTorch Lightning checkpoint such as
`kosmos_ph_oxe-pretrain.pt`) as a Hugging Face Kosmos-2 folder that `--base-model` accepts.

Mapping. ROBOVLMS_KOSMOS_RULES is a table of key-prefix rules (the longest matching prefix
wins). It was derived from RoboVLMs' module naming, not from the published file: the Lightning
module holds the policy as `model`, RoboVLMs' BaseRoboVLM holds the transformers
Kosmos2ForConditionalGeneration as `backbone`, its policy head as `act_head` and its learned
action embedding as `action_token`. Check it against a real file with `--list-keys`. A key no
rule matches, a backbone key that is not a Kosmos-2 tensor, a wrong shape or a missing tensor
stops the import; nothing is guessed.

Memory. Tensors are read through the memory map and written shard by shard (SHARD_BYTES), so
the process holds about one shard of weights besides the mapped file.

The restricted reading of the file is policy/robovlms_checkpoint.py (docs/robovlms-import.md).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mobile_vla_ros.errors import RobovlmsImportError
from mobile_vla_ros.policy.backbone import check_base_model_dir
from mobile_vla_ros.policy.robovlms_checkpoint import SourceCheckpoint, read_checkpoint, sha256_file

MAPPING_NAME = "robovlms-kosmos/1"
IMPORT_RECORD_KEY = "imported_from"  # in the written config.json, so the base fingerprint covers it
REPORT_FILE = "robovlms_import.json"
SHARD_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Rule:
    """Checkpoint keys starting with `prefix` (a whole key when it does not end with '.') become
    `target` + the rest of the key, or are dropped when `target` is None."""

    prefix: str
    target: str | None
    reason: str

    def matches(self, key: str) -> bool:
        return key.startswith(self.prefix) if self.prefix.endswith(".") else key == self.prefix

    def to_dict(self) -> dict:
        return {"prefix": self.prefix, "target": self.target, "reason": self.reason}


ROBOVLMS_KOSMOS_RULES = (
    Rule("model.backbone.", "", "the transformers Kosmos2ForConditionalGeneration (BaseRoboVLM.backbone)"),
    Rule("model.act_head.", None, "RoboVLMs' 7-DOF arm + gripper policy head; this package trains its own 2-DOF head"),
    Rule("model.action_token", None, "RoboVLMs' learned action-token embedding; the policy learns its own"),
    # Buffers without learned values, rebuilt at load. Current transformers do not save them, but
    # a state_dict taken from an older or patched Kosmos-2 class may hold them.
    Rule("model.backbone.vision_model.model.embeddings.position_ids", None, "position index buffer, rebuilt at load"),
    Rule(
        "model.backbone.text_model.model.embed_positions.weights", None, "sinusoidal position table, recomputed at load"
    ),
)


def drop_rule(prefix: str) -> Rule:
    """A user's `--drop PREFIX`, for a non-backbone part this table does not know yet."""
    return Rule(prefix, None, "dropped on request (--drop)")


def match_rule(key: str, rules: tuple[Rule, ...]) -> Rule | None:
    matching = [rule for rule in rules if rule.matches(key)]
    return max(matching, key=lambda rule: len(rule.prefix)) if matching else None


# --- mapping ---------------------------------------------------------------------------------
@dataclass
class TargetLayout:
    """What `save_pretrained` writes for the base config: names and shapes, and the tied names
    (shared with another tensor, so not written)."""

    shapes: dict[str, torch.Size]
    tied: dict[str, str]  # tied name -> the name it shares its tensor with


def target_layout(base_dir: Path) -> TargetLayout:
    """Built on the meta device from the base config: shapes without allocating weights."""
    from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration

    config = Kosmos2Config.from_pretrained(str(base_dir), local_files_only=True)
    with torch.device("meta"):
        model = Kosmos2ForConditionalGeneration(config)
    shapes, tied, owner = {}, {}, {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in owner:
            tied[name] = owner[id(tensor)]
        else:
            owner[id(tensor)] = name
            shapes[name] = tensor.shape
    return TargetLayout(shapes, tied)


@dataclass
class ImportPlan:
    mapped: dict[str, str] = field(default_factory=dict)  # target name -> checkpoint key
    tied: dict[str, str] = field(default_factory=dict)  # checkpoint key -> the written tensor it is tied to
    dropped: list[tuple[str, Rule]] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # keys no rule covers
    foreign: list[str] = field(default_factory=list)  # backbone keys that are no Kosmos-2 tensor
    wrong_shape: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # Kosmos-2 tensors the checkpoint lacks

    def problems(self) -> list[str]:
        def listed(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")

        problems = []
        if self.unmatched:
            problems.append(
                f"{len(self.unmatched)} tensors match no mapping rule ({listed(self.unmatched)}); check them with "
                "--list-keys and, if they are not part of the Kosmos-2 backbone, drop them with --drop PREFIX"
            )
        if self.foreign:
            hint = (
                " (unmerged LoRA adapters: merge them into the weights first)"
                if any("lora_" in key for key in self.foreign)
                else ""
            )
            problems.append(
                f"{len(self.foreign)} backbone tensors are not Kosmos-2 tensors{hint}: {listed(self.foreign)}"
            )
        if self.wrong_shape:
            problems.append(
                f"shapes differ from the base config: {listed(self.wrong_shape)}; is --base the same "
                "Kosmos-2 size (and vocabulary) the checkpoint was trained from?"
            )
        if self.missing:
            problems.append(
                f"{len(self.missing)} Kosmos-2 tensors are missing from the checkpoint: {listed(self.missing)}"
            )
        return problems


def plan_import(state: dict[str, torch.Tensor], layout: TargetLayout, rules: tuple[Rule, ...]) -> ImportPlan:
    """Account for every tensor: mapped, tied duplicate, dropped by a rule, or a problem."""
    plan = ImportPlan()
    for key, tensor in state.items():
        rule = match_rule(key, rules)
        if rule is None:
            plan.unmatched.append(key)
        elif rule.target is None:
            plan.dropped.append((key, rule))
        else:
            name = rule.target + key[len(rule.prefix) :]
            if name in layout.tied:
                plan.tied[key] = layout.tied[name]
            elif name not in layout.shapes:
                plan.foreign.append(key)
            elif tensor.shape != layout.shapes[name]:
                plan.wrong_shape.append(f"{key} {tuple(tensor.shape)} != {name} {tuple(layout.shapes[name])}")
            else:
                plan.mapped[name] = key
    plan.missing = sorted(set(layout.shapes) - set(plan.mapped))
    return plan


def check_tied(plan: ImportPlan, state: dict[str, torch.Tensor]) -> None:
    """A tied tensor is dropped only when it equals the one it is tied to (transformers re-ties
    them at load, so a different value would be silently lost)."""
    for key, name in plan.tied.items():
        partner = plan.mapped.get(name)
        if partner is not None and not torch.equal(state[key], state[partner]):
            raise RobovlmsImportError(
                f"{key} differs from {partner}, but the base config ties them ({name}); the checkpoint "
                "was trained with untied weights and cannot be expressed with this config"
            )


# --- writing ---------------------------------------------------------------------------------
def _shards(names: list[str], state: dict[str, torch.Tensor], mapped: dict[str, str]) -> list[list[str]]:
    shards, size = [[]], 0
    for name in names:
        nbytes = state[mapped[name]].nbytes
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def write_weights(out_dir: Path, state: dict[str, torch.Tensor], mapped: dict[str, str]) -> list[str]:
    """Write the mapped tensors as (sharded) safetensors with the transformers index file."""
    from safetensors.torch import save_file
    from tqdm import tqdm

    shards = _shards(sorted(mapped), state, mapped)
    files = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    weight_map = {}
    for filename, names in tqdm(list(zip(files, shards)), desc="writing", unit="shard", leave=False):
        tensors = {}
        for name in names:
            tensor = state[mapped[name]]
            # A view into a larger storage (a fused buffer) gets its own bytes; the rest stay mapped.
            owns_storage = tensor.is_contiguous() and tensor.untyped_storage().nbytes() == tensor.nbytes
            tensors[name] = tensor if owns_storage else tensor.contiguous().clone()
            weight_map[name] = filename
        save_file(tensors, str(out_dir / filename), metadata={"format": "pt"})
        del tensors
    if len(files) > 1:
        total = sum(state[key].nbytes for key in mapped.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return files


def _is_weights_file(path: Path) -> bool:
    return path.name.endswith(
        (
            ".safetensors",
            ".safetensors.index.json",
            ".bin",
            ".bin.index.json",
            ".pt",
            ".pth",
            ".ckpt",
            ".h5",
            ".msgpack",
        )
    )


def copy_tokenizer_and_processor(base_dir: Path, out_dir: Path) -> list[str]:
    """Every file of the base folder except its weights and config.json."""
    copied = []
    for path in sorted(base_dir.iterdir()):
        if path.is_file() and path.name != "config.json" and not _is_weights_file(path):
            shutil.copy2(path, out_dir / path.name)
            copied.append(path.name)
    return copied


# --- the import ------------------------------------------------------------------------------
@dataclass
class ImportResult:
    out_dir: Path
    source: SourceCheckpoint
    sha256: str
    plan: ImportPlan
    weight_files: list[str]
    copied: list[str]

    def dropped_by_rule(self) -> dict[Rule, list[str]]:
        groups: dict[Rule, list[str]] = {}
        for key, rule in self.plan.dropped:
            groups.setdefault(rule, []).append(key)
        return groups


def import_record(source: SourceCheckpoint, sha256: str, rules: tuple[Rule, ...], plan: ImportPlan) -> dict:
    """The provenance written into config.json (so the base model's fingerprint covers it)."""
    return {
        "format": f"RoboVLMs {source.kind}",
        "checkpoint": source.path.name,
        "sha256": sha256,
        "bytes": source.path.stat().st_size,
        "mapping": MAPPING_NAME,
        "rules": [rule.to_dict() for rule in rules],
        "tensors": {"mapped": len(plan.mapped), "tied": len(plan.tied), "dropped": len(plan.dropped)},
        "run": {
            key: value if isinstance(value, (int, float, str)) else str(value) for key, value in source.run.items()
        },
    }


def import_robovlms(
    checkpoint: str | Path, out_dir: str | Path, base_dir: str | Path, extra_drops: tuple[str, ...] = ()
) -> ImportResult:
    """Checkpoint -> Hugging Face Kosmos-2 folder. Writes into a sibling temporary folder and
    renames it at the end, so a failed import leaves nothing behind."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise RobovlmsImportError(f"{out_dir} already exists; choose a new output directory")
    base_dir = check_base_model_dir(base_dir)
    rules = ROBOVLMS_KOSMOS_RULES + tuple(drop_rule(prefix) for prefix in extra_drops)
    source = read_checkpoint(checkpoint)
    layout = target_layout(base_dir)
    plan = plan_import(source.state_dict, layout, rules)
    problems = plan.problems()
    if problems:
        raise RobovlmsImportError(f"cannot import {source.path}: " + "; ".join(problems))
    check_tied(plan, source.state_dict)
    sha256 = sha256_file(source.path)

    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        files = write_weights(partial, source.state_dict, plan.mapped)
        copied = copy_tokenizer_and_processor(base_dir, partial)
        config = json.loads((base_dir / "config.json").read_text())
        config[IMPORT_RECORD_KEY] = import_record(source, sha256, rules, plan)
        dtypes = {source.state_dict[key].dtype for key in plan.mapped.values()}
        if len(dtypes) == 1:
            config["dtype"] = str(dtypes.pop()).removeprefix("torch.")
        (partial / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        report = {
            **config[IMPORT_RECORD_KEY],
            "mapped": {name: key for name, key in sorted(plan.mapped.items())},
            "tied": plan.tied,
            "dropped": [
                {"key": key, "shape": list(source.state_dict[key].shape), "reason": rule.reason}
                for key, rule in plan.dropped
            ],
            "base": str(base_dir.resolve()),
        }
        (partial / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        partial.rename(out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return ImportResult(out_dir, source, sha256, plan, files, copied)


def imported_from(config) -> dict:
    """The import provenance a policy records in policy.json (empty for a plain HF folder)."""
    record = getattr(config, IMPORT_RECORD_KEY, None)
    if not isinstance(record, dict):
        return {}
    return {IMPORT_RECORD_KEY: {key: record.get(key) for key in ("checkpoint", "sha256", "mapping")}}


# --- inspection ------------------------------------------------------------------------------
def key_group(key: str) -> str:
    """A key without its tensor name, layer indices folded:
    `model.backbone.text_model.model.layers.3.ffn.fc1.weight` -> `model.backbone.text_model.model.layers.*`."""
    names = key.split(".")
    if len(names) <= 2:
        return key
    parts = []
    for part in names[:-1]:
        if part.isdigit():
            parts.append("*")
            break
        parts.append(part)
    return ".".join(parts)


def list_keys(source: SourceCheckpoint, rules: tuple[Rule, ...]) -> tuple[str, int]:
    """Keys grouped by prefix, with counts and the rule each group falls under; returns the text
    and the number of tensors no rule matches."""
    groups: Counter = Counter()
    values: Counter = Counter()
    for key, tensor in source.state_dict.items():
        rule = match_rule(key, rules)
        if rule is None:
            decision = "UNMATCHED: no rule; the import stops here"
        elif rule.target is None:
            decision = f"dropped: {rule.reason}"
        else:
            decision = f"-> {rule.target}{key_group(key)[len(rule.prefix) :]}"
        group = (key_group(key), decision)
        groups[group] += 1
        values[group] += tensor.numel()
    run = ", ".join(f"{key} {value}" for key, value in source.run.items())
    lines = [
        f"{source.path}: {source.kind}" + (f" ({run})" if run else ""),
        f"top-level entries: {', '.join(source.entries)}",
        f"state_dict: {len(source.state_dict)} tensors, {sum(values.values()) / 1e6:.1f} M values",
        f"{'PREFIX':<64} {'TENSORS':>7} {'VALUES':>12}  RULE",
    ]
    for group in sorted(groups):
        lines.append(f"{group[0]:<64} {groups[group]:>7} {values[group]:>12,}  {group[1]}")
    unmatched = sum(count for (_, decision), count in groups.items() if decision.startswith("UNMATCHED"))
    lines.append(f"{unmatched} tensors match no rule")
    return "\n".join(lines), unmatched
