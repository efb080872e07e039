"""`mobile-vla import-robovlms CKPT --out DIR [--base-model DIR]`: RoboVLMs' robot-pretrained Kosmos
(a PyTorch Lightning checkpoint) -> a Hugging Face Kosmos-2 folder for `--base-model`.

The checkpoint is read without running code (see policy/robovlms_import.py). Every tensor is
mapped onto Kosmos2ForConditionalGeneration, dropped by a listed rule, or stops the import.
`--list-keys` prints the checkpoint's keys grouped by prefix with the rule each group falls
under, without writing anything: run it first on a checkpoint you have not imported before.
"""

from __future__ import annotations

import argparse

from mobile_vla_ros.cli.options import add_base_model, add_deprecated_flag, add_out
from mobile_vla_ros.errors import MobileVlaError

DEFAULT_BASE = "models/kosmos-2-patch14-224"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "import-robovlms",
        help="turn RoboVLMs' Kosmos checkpoint (Lightning .pt) into a base model folder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", metavar="CKPT", help="e.g. kosmos_ph_oxe-pretrain.pt")
    add_out(parser, help="base model folder to write (must not exist)")
    add_base_model(
        parser,
        default=DEFAULT_BASE,
        help="the Hugging Face Kosmos-2 folder it was trained from: config, tokenizer and "
        f"processor are taken from it (default {DEFAULT_BASE})",
    )
    add_deprecated_flag(parser, "--base", "--base-model", "base_model", "import-robovlms")
    parser.add_argument(
        "--list-keys",
        action="store_true",
        help="print the checkpoint's key prefixes, counts and mapping rules; write nothing",
    )
    parser.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="PREFIX",
        help="also drop tensors under this key prefix (a non-backbone part the rules do not "
        "know; recorded in the import record). Repeatable",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from mobile_vla_ros.policy import robovlms_import as robovlms

    if args.list_keys:
        rules = robovlms.ROBOVLMS_KOSMOS_RULES + tuple(map(robovlms.drop_rule, args.drop))
        text, unmatched = robovlms.list_keys(robovlms.read_checkpoint(args.checkpoint), rules)
        print(text)
        return 2 if unmatched else 0
    if not args.out:
        raise MobileVlaError("--out is required (or --list-keys to only look)")
    result = robovlms.import_robovlms(args.checkpoint, args.out, args.base_model, tuple(args.drop))
    print(format_result(result))
    return 0


def format_result(result) -> str:
    from mobile_vla_ros.policy.backbone import fingerprint_base_model

    plan, source = result.plan, result.source
    values = sum(source.state_dict[key].numel() for key in plan.mapped.values())
    run = ", ".join(f"{key} {value}" for key, value in source.run.items())
    lines = [
        f"checkpoint  {source.path} ({source.path.stat().st_size / 1e9:.2f} GB, {source.kind}"
        + (f", {run}" if run else "")
        + ")",
        f"sha256      {result.sha256}",
        f"mapped      {len(plan.mapped)} tensors ({values / 1e6:.1f} M values) onto Kosmos2ForConditionalGeneration",
    ]
    for key, name in plan.tied.items():
        lines.append(f"tied        {key}: identical to {name}, which the config ties it to; not written")
    lines.append(f"dropped     {len(plan.dropped)} tensors")
    for rule, keys in result.dropped_by_rule().items():
        lines.append(f"  {rule.prefix} ({len(keys)}): {rule.reason}")
        lines.extend(f"    {key}" for key in keys)
    lines += [
        "unmapped    0",
        f"written     {result.out_dir}: {', '.join(result.weight_files)}, config.json (with the import record), "
        f"{', '.join(result.copied)}",
        f"fingerprint {fingerprint_base_model(result.out_dir)}  (use it with --base-model {result.out_dir})",
    ]
    return "\n".join(lines)
