"""`mobile-vla make-tiny-model --out DIR`: a small random Kosmos-2 for tests and the demo."""

from __future__ import annotations

from mobile_vla_ros.cli.options import add_moved_positional, add_out


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "make-tiny-model", help="write a tiny Kosmos-2 (random weights, local tokenizer) with save_pretrained"
    )
    add_out(parser, help="directory to write (created)")
    add_moved_positional(parser, "out_dir", "--out", "make-tiny-model")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--width", type=int, default=64, help="hidden width of the text and vision towers")
    parser.add_argument("--layers", type=int, default=2, help="layers of each tower")
    parser.add_argument("--image-size", type=int, default=224, help="input image size in pixels")
    parser.set_defaults(func=run)


def run(args) -> int:
    from mobile_vla_ros.policy.backbone import fingerprint_base_model
    from mobile_vla_ros.policy.tiny import make_tiny_model

    out = make_tiny_model(args.out, seed=args.seed, image_size=args.image_size, width=args.width, layers=args.layers)
    print(f"tiny Kosmos-2 written to {out} (fingerprint {fingerprint_base_model(out)})")
    return 0
