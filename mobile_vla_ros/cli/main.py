"""The `mobile-vla` command. Each sub-command lives in its own module with
`register(subparsers)` (adds its parser and sets `func`)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mobile_vla_ros.cli.options import UsageFormatter, resolve_moved_positionals

# Sub-command modules, in the order `mobile-vla --help` lists them: the workflow (look at and
# convert recordings, train, evaluate, prepare a policy for the robot), then tools and benches.
COMMANDS = (
    "inspect",
    "import_bag",
    "export",
    "train",
    "eval",
    "quantize",
    "export_onnx",
    "demo",
    "make_tiny_model",
    "import_robovlms",
    "bench",
    "bench_drive",
    "bench_record",
    "bench_train",
    "bench_train_memory",
)


class _ShowDefaults(UsageFormatter):
    """Adds "(default: X)" to every option whose help does not already name its default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.required or not action.option_strings:
            return text
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)".strip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mobile-vla", description="Record, train, evaluate and benchmark the mobile_vla_ros policy."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"mobile_vla_ros.cli.{name}").register(subparsers)
    for subparser in subparsers.choices.values():
        subparser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
        subparser.formatter_class = type("HelpFormatter", (_ShowDefaults, subparser.formatter_class), {})
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="[%(levelname)s] %(name)s: %(message)s"
    )
    try:
        resolve_moved_positionals(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # one readable line for the errors we raise on purpose
        from mobile_vla_ros.errors import MobileVlaError

        if isinstance(error, MobileVlaError):
            print(f"mobile-vla {args.command}: error: {error}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
