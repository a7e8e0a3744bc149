"""The ``jaxseg`` command. The only module that parses arguments and prints; it calls library functions.

Each subcommand has an ``_add_<name>(subparsers)`` function that declares its arguments and sets
``handler`` to the function that runs it.
"""

from __future__ import annotations

import argparse
import json
import sys

SUBCOMMANDS_PENDING = {
    "evaluate": "clean and robust evaluation with SEA, APGD, PGD, SegPGD, CosPGD, PAdam",
    "attack": "attack a batch of images and save the adversarial examples",
    "convert": "convert PyTorch weights to Flax variables",
    "generate": "generate images from label maps with a robust model's gradients",
    "inpaint": "inpaint a masked region with a robust model's gradients",
    "saliency": "gradient saliency maps and localisation",
    "quickstart": "train, attack and explain on the built-in synthetic data",
    "data": "prepare, show and describe datasets",
}


def _pending(name: str):
    def handler(args: argparse.Namespace) -> int:
        print(f"jaxseg {name}: not available in this version yet ({SUBCOMMANDS_PENDING[name]}).", file=sys.stderr)
        return 2

    return handler


def _add_models(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the registered model names")
    parser.set_defaults(handler=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from jaxseg.models import list_models

    for name in list_models():
        print(name)
    return 0


def _add_config(subparsers) -> None:
    parser = subparsers.add_parser("config", help="print a config (with overrides applied) as JSON")
    parser.add_argument("config", help="config name or path, optionally with :arg (e.g. synthetic:quick)")
    parser.add_argument("overrides", nargs="*", help="field.path=value overrides")
    parser.set_defaults(handler=_run_config)


def _run_config(args: argparse.Namespace) -> int:
    from jaxseg.config import load_config

    config = load_config(args.config, _strip_config_prefix(args.overrides))
    print(config.to_json_best_effort(indent=2, sort_keys=True))
    return 0


def _strip_config_prefix(overrides: list[str]) -> list[str]:
    return [o.removeprefix("--").removeprefix("config.") for o in overrides]


def _add_train(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a segmentation model (clean, PGD-AT, PIR-AT, SegPGD-AT) from a config",
        description="Train from a config; resumes from the latest checkpoint in --workdir. "
        "Example: jaxseg train synthetic:pgd-at --workdir runs/at --config.train.steps=300",
    )
    parser.add_argument("config", help="config name or path with optional :arg (e.g. synthetic:pgd-at)")
    parser.add_argument("--workdir", required=True, help="run directory (checkpoints, metrics, TensorBoard)")
    parser.add_argument("--coordinator", help="host:port of process 0 for a multi-process run")
    parser.add_argument("--num-processes", type=int, help="number of processes in a multi-process run")
    parser.add_argument("--process-id", type=int, help="this process's index in a multi-process run")
    parser.set_defaults(handler=_run_train, overrides=[])


def _run_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from jaxseg import parallel
    from jaxseg.config import load_config

    parallel.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    config = load_config(args.config, args.overrides)
    from jaxseg.train.loop import train

    import jax

    bar = tqdm(total=int(config.train.steps), desc="train", unit="step", disable=jax.process_index() != 0)

    def on_step(step: int, values: dict) -> None:
        bar.update(step - bar.n)
        shown = {k: f"{v:.3g}" for k, v in values.items() if k in ("loss", "pixel_accuracy", "images_per_second")
                 or k.endswith("mIoU")}
        bar.set_postfix(shown, refresh=True)

    summary = train(config, args.workdir, on_step=on_step)
    bar.close()
    if jax.process_index() == 0:
        print(json.dumps(summary, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxseg",
        description="Adversarially robust semantic segmentation in JAX/Flax.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_models(subparsers)
    _add_train(subparsers)
    _add_config(subparsers)
    for name, help_text in SUBCOMMANDS_PENDING.items():
        sub = subparsers.add_parser(name, help=help_text)
        sub.set_defaults(handler=_pending(name))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    # `--config.a.b=value` style overrides are collected for subcommands that take a config.
    overrides = [u for u in unknown if u.startswith("--config.")]
    rest = [u for u in unknown if not u.startswith("--config.")]
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    if overrides:
        if not hasattr(args, "overrides"):
            parser.error(f"jaxseg {args.command} takes no --config.* overrides")
        args.overrides = list(args.overrides or []) + _strip_config_prefix(overrides)
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError) as error:
        print(f"jaxseg {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
