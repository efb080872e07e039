"""The flags that mean one thing in every sub-command, defined once: --model (a trained policy),
--base-model, --data (episodes read), --out (what the command writes), --dtype, --device.
Spellings of an earlier release still work, with a warning on stderr, until the next release."""

from __future__ import annotations

import argparse
import copy
import sys

DTYPES = ("auto", "fp32", "bf16", "fp16")
DTYPE_HELP = "backbone precision; auto: what the hardware picks (bf16 on CUDA and on CPUs with native bf16, else fp32)"
TRAINED_ON_HELP = "the Kosmos-2 directory the policy was trained on (default: the one recorded at training time)"
DEVICE_HELP = "torch device: auto (CUDA when available), cpu, cuda or cuda:N"


def add_model(parser, help: str = "trained policy directory (policy.json + safetensors)", **kwargs) -> None:
    parser.add_argument("--model", metavar="MODEL_DIR", help=help, **kwargs)


def add_base_model(parser, help: str = "local Kosmos-2 directory the policy is built on", **kwargs) -> None:
    parser.add_argument("--base-model", metavar="DIR", help=help, **kwargs)


def add_data(parser, help: str = "episode directory or episode .h5 file", repeatable: bool = True, **kwargs) -> None:
    if repeatable:
        kwargs["action"] = "append"
        help = f"{help} (repeatable)"
    parser.add_argument("--data", metavar="PATH", help=help, **kwargs)


def add_out(parser, help: str, **kwargs) -> None:
    parser.add_argument("--out", metavar="DIR", help=help, **kwargs)


def add_dtype(parser, default: str | None = "auto", help: str = DTYPE_HELP, **kwargs) -> None:
    parser.add_argument("--dtype", default=default, choices=kwargs.pop("choices", DTYPES), help=help, **kwargs)


def add_device(parser, help: str = DEVICE_HELP) -> None:
    parser.add_argument("--device", default="auto", help=help)


def warn_deprecated(command: str, old: str, new: str) -> None:
    print(f"mobile-vla {command}: {old} is deprecated, use {new}", file=sys.stderr)


class _DeprecatedFlag(argparse.Action):
    """Stores into the new flag's destination and says which flag to use instead."""

    def __init__(self, *args, command: str, new: str, **kwargs):
        self.command, self.new = command, new
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        warn_deprecated(self.command, option_string, self.new)
        if isinstance(getattr(namespace, self.dest, None), list) and not isinstance(values, list):
            values = [*getattr(namespace, self.dest), values]
        setattr(namespace, self.dest, values)


def add_deprecated_flag(parser, old: str, new: str, dest: str, command: str, **kwargs) -> None:
    """`old` keeps working as `new` (same destination), hidden from --help."""
    parser.add_argument(
        old, dest=dest, action=_DeprecatedFlag, command=command, new=new, help=argparse.SUPPRESS, **kwargs
    )


def add_moved_positional(
    parser, name: str, flag: str, command: str, nargs: str = "?", required: bool = True, **kwargs
) -> None:
    """An argument that used to be positional and is now `flag`: still accepted in its old place
    (hidden from --help) and moved to the flag by `resolve_moved_positionals` after parsing, which
    also enforces `required` (argparse cannot require a flag that a positional may stand in for)."""
    parser.add_argument(f"_moved_{name}", nargs=nargs, metavar=name.upper(), help=argparse.SUPPRESS, **kwargs)
    if required:
        flag_action = next(action for action in parser._actions if flag in action.option_strings)
        flag_action.shown_required = True
    moved = parser.get_default("_moved_positionals") or ()
    parser.set_defaults(_moved_positionals=(*moved, (name, flag, command, required)))


class UsageFormatter(argparse.HelpFormatter):
    """Shows a flag that `add_moved_positional` requires as required in the usage line."""

    def add_usage(self, usage, actions, groups, prefix=None):
        shown = []
        for action in actions:
            if getattr(action, "shown_required", False):
                action = copy.copy(action)
                action.required = True
            shown.append(action)
        super().add_usage(usage, shown, groups, prefix)


def resolve_moved_positionals(args) -> None:
    from mobile_vla_ros.errors import MobileVlaError

    for name, flag, command, required in getattr(args, "_moved_positionals", ()):
        dest = flag.lstrip("-").replace("-", "_")
        value = getattr(args, f"_moved_{name}")
        if value not in (None, []):
            if getattr(args, dest) not in (None, []):
                raise MobileVlaError(f"give {flag} once (here also as the positional {name.upper()})")
            warn_deprecated(command, f"the positional {name.upper()}", flag)
            setattr(args, dest, value)
        if required and getattr(args, dest) in (None, []):
            raise MobileVlaError(f"the following arguments are required: {flag}")
