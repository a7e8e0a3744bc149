"""The ``jaxseg`` command: it declares the arguments, calls one library function per command and prints.

Each ``_add_<name>(subparsers)`` declares a subcommand; its handler passes the options to the library (whose
parameters carry the options' names, so that messages name the options) and prints the lines it returns. Errors
(``jaxseg.errors``): the user's are one line ``jaxseg COMMAND: error: ...``, exit code 2; a full disk exit 1; a
stopped run its own status; a bug its traceback. ``--debug`` or ``JAXSEG_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from jaxseg import __version__
from jaxseg.errors import DEBUG_ENVIRONMENT, Stopped, debug_from_environment, describe, exit_code

DATA_DIR_HELP = "TFDS data directory (default: $JAXSEG_DATA_DIR or ~/tensorflow_datasets)"


def _call(module: str, function: str, args: argparse.Namespace, *, bar: bool = False, log: bool = False):
    """``module.function(**options)``, with ``bar`` / ``log`` given tqdm's bars / lines (``jaxseg.progress``)."""
    from jaxseg import progress

    options = {k: v for k, v in vars(args).items() if k not in ("handler", "command", "debug", "data_command")}
    extra = {"make_bar": progress.console_bar} if bar else {}
    extra.update({"log": progress.console_log} if log else {})
    return getattr(importlib.import_module(module), function)(**options, **extra)


def _handler(module: str, function: str, *, bar: bool = False, log: bool = False, key: str | None = None):
    """A handler that prints what ``module.function`` returns: a line, lines, or the line under ``key``."""

    def handle(args: argparse.Namespace) -> int:
        result = _call(module, function, args, bar=bar, log=log)
        print(*([result[key]] if key else [result] if isinstance(result, str) else result), sep="\n")

    return handle


def _add_quickstart(subparsers) -> None:
    from jaxseg.quickstart import BUDGETS

    add = subparsers.add_parser(
        "quickstart", help="train, attack and explain on the built-in synthetic data (about 10 min on a 2-core CPU)",
        description="Prepare synthetic_shapes, train a clean and a PGD-AT UPerNet + ConvNeXt-atto, evaluate both "
        "with SEA at several radii, run the PAG generation and inpainting demos, and write report.md and a "
        "self-contained report.html to --workdir. Rerunning resumes: finished stages are reused. "
        "Example: jaxseg quickstart --workdir runs/quickstart").add_argument
    add("--workdir", required=True, help="output directory (runs, results, figures, report)")
    add("--data-dir", help="where synthetic_shapes is prepared (default: WORKDIR/data)")
    add("--budget", choices=sorted(BUDGETS), default="default",
        help="default: the ~10-minute CPU run; tiny: a smoke run of a few steps (tests)")
    add("--no-compilation-cache", dest="compilation_cache", action="store_false",
        help="do not keep XLA compilations in WORKDIR/.jax_cache (reruns then recompile)")
    subparsers.choices["quickstart"].set_defaults(handler=_handler("jaxseg.quickstart", "run_quickstart_command",
                                                                   bar=True, log=True))


def _add_convert(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert PyTorch weights (.safetensors, or .pt/.pth read with weights_only) to Flax variables")
    add = parser.add_argument
    add("src", help="PyTorch checkpoint file")
    add("--out", required=True, help="new directory for the Orbax variables + metadata.json")
    add("--family", help="source layout (detected from the keys by default)")
    add("--model", help="registered model name (inferred from the keys and shapes by default)")
    add("--num-classes", type=int, help="expected number of classes (checked against the weights)")
    add("--normalize", action=argparse.BooleanOptionalAction, default=None,
        help="ImageNet mean/std normalisation inside the model (default: from the checkpoint and family)")
    parser.set_defaults(handler=_handler("jaxseg.convert", "convert_to_directory"))


def _add_models(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the registered model names")
    parser.set_defaults(handler=_handler("jaxseg.models", "list_models"))


def _add_evaluation(subparsers, name: str, function: str, help: str, description: str, radii_help: str):
    """``evaluate`` or ``attack`` (``jaxseg.evaluation_run.<function>``): the model, the data, the threat model."""
    from jaxseg.evaluate import ATTACKS

    parser = subparsers.add_parser(name, help=help, description=description)
    add = parser.add_argument
    add("--model", required=True, help="checkpoint directory, or a registered model name with --random-init")
    add("--random-init", action="store_true", help="use untrained weights (smoke runs)")
    add("--num-classes", type=int, help="classes of a --random-init model (default: from the data)")
    add("--config", help="config (e.g. pirat_voc) whose evaluate and data sections give the defaults below")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--dataset", help="dataset name (jaxseg.data), e.g. synthetic_shapes, voc, ade20k")
    data.add_argument("--arrays", help=".npz file with images (N, H, W, 3) float in [0, 1] and labels (N, H, W)")
    add("--split", help="dataset split (default: validation)")
    add("--data-dir", help="dataset directory (default: JAXSEG_DATA_DIR)")
    add("--protocol", choices=("sea", "standard"), help="evaluation protocol (default: SEA's for --attack sea on VOC/ADE20K)")
    add("--image-size", type=int,
        help="evaluation image size in pixels (default: the protocol's, e.g. 473 for SEA on VOC, else the dataset's)")
    add("--class-weights", default="dataset", help="mask-ce-bal class weights: dataset (SEA's published table for "
        "VOC/ADE20K, else the training split's inverse pixel frequencies), image (each image's own), or a JSON file")
    add("--attack", choices=ATTACKS, help="attack (default: sea)")
    add("--eps", help=radii_help)
    add("--norm", help="threat model: linf or l2 (default: linf)")
    add("--iterations", type=int, help="iterations per attack run (default: the attack's own)")
    add("--step-size", type=str, help="PGD-family step size, e.g. 0.01 or 2/255 (default: the attack paper's, eps/4 "
        "for PGD, 0.01 for SegPGD and CosPGD)")
    add("--batch-size", type=int, help="images per compiled batch (default 8)")
    add("--num-examples", type=int, help="evaluate only the first N examples")
    add("--seed", type=int, default=0, help="attack and worst-case search seed")
    add("--compute-dtype", help="model compute dtype, e.g. bfloat16 (losses stay float32)")
    add("--out", required=True, help="output directory")
    parser.set_defaults(handler=_handler("jaxseg.evaluation_run", function, bar=function == "run_evaluation"), overrides=[])
    return add


def _add_evaluate(subparsers) -> None:
    add = _add_evaluation(
        subparsers, "evaluate", "run_evaluation", "clean and robust evaluation with SEA, APGD, PGD, SegPGD, CosPGD, "
        "PAdam", "Clean and robust aAcc/mIoU per radius and per component attack; writes results.json and results.md "
        "to --out. Example: jaxseg evaluate --model runs/at --dataset synthetic_shapes --attack sea --eps "
        "4/255,8/255 --out eval/", "comma-separated radii on the [0, 1] scale (default 4/255)")
    add("--attacked-only", action="store_true", help="score the attacked images alone (as the SEA reference code "
        "does) instead of, per image, the worse of the clean and the attacked prediction")


def _add_attack(subparsers) -> None:
    _add_evaluation(subparsers, "attack", "run_attack", "attack images and save the adversarial examples",
                    "Attack the first --num-examples images (default: one batch) at one radius and save "
                    "adversarial.npz (images, labels, adversarial, clean_prediction, adversarial_prediction) to "
                    "--out; for an ensemble the per-image lowest-accuracy component is saved.",
                    "radius on the [0, 1] scale (default 4/255)")


def _add_config(subparsers) -> None:
    parser = subparsers.add_parser("config", help="print a config (with overrides applied) as JSON")
    parser.add_argument("config", help="config name or path, optionally with :arg (e.g. synthetic:quick)")
    parser.add_argument("overrides", nargs="*", help="field.path=value overrides")
    parser.set_defaults(handler=_handler("jaxseg.config", "config_json"))


def _add_train(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a segmentation model (clean, PGD-AT, PIR-AT, SegPGD-AT) from a config",
        description="Train from a config; resumes from the latest checkpoint in --workdir. Everything (config, "
        "data, checkpoint compatibility) is checked before anything is written there. On SIGTERM the run saves "
        "and exits with status 143; running the same command again resumes it. "
        "Example: jaxseg train synthetic:pgd-at --workdir runs/at --config.train.steps=300")
    add = parser.add_argument
    add("config", help="config name or path with optional :arg (e.g. synthetic:pgd-at)")
    add("--workdir", required=True, help="run directory (checkpoints, metrics, TensorBoard)")
    add("--coordinator", help="host:port of process 0 for a multi-process run")
    add("--num-processes", type=int, help="number of processes in a multi-process run")
    add("--process-id", type=int, help="this process's index in a multi-process run")
    parser.set_defaults(handler=_run_train, overrides=[])


def _run_train(args: argparse.Namespace) -> int:
    """Exit 0 trained, 143 pre-empted and saved (``jaxseg.train.session``), 2 bad input, 1 unwritable or full disk."""
    summary, code, show = _call("jaxseg.train.session", "run_training", args, bar=True)
    if "message" in summary:
        print(f"jaxseg train: {summary['message']}", file=sys.stderr)
    if show:
        print(json.dumps(summary, indent=2))
    return code


def _add_data(subparsers) -> None:
    actions = subparsers.add_parser("data", help="prepare, show and describe datasets").add_subparsers(
        dest="data_command", metavar="ACTION", required=True)
    prepare = actions.add_parser("prepare", help="write a dataset as ArrayRecord files with TFDS")
    prepare.add_argument("--manual-dir", help="directory holding the extracted official archives (not synthetic)")
    prepare.add_argument("--image-size", type=int, help="synthetic_shapes only: image side in pixels")
    show = actions.add_parser("show", help="write a PNG grid of images with their coloured label maps")
    show.add_argument("--split", help="split to show (default: the dataset's evaluation split)")
    show.add_argument("--out", help="PNG path (default: NAME-SPLIT.png)")
    show.add_argument("--num", type=int, default=8, help="number of examples (default 8)")
    stats = actions.add_parser("stats", help="print example counts, class frequencies and the mask-ce-bal class weights")
    stats.add_argument("--split", help="split to describe (default: the dataset's training split)")
    stats.add_argument("--num-examples", type=int, default=0, help="count only the first N examples (0: all)")
    stats.add_argument("--json", dest="json_path", metavar="FILE", help="also write the statistics to this JSON file")
    for action, function in ((prepare, "prepare_split"), (show, "show_examples"), (stats, "describe_split_text")):
        action.add_argument("name", help="voc2012_seg, ade20k, cityscapes, synthetic_shapes[/CONFIG]")
        action.add_argument("--data-dir", help=DATA_DIR_HELP)
        action.set_defaults(handler=_handler("jaxseg.data.overview", function))


def _add_pag(subparsers, name: str, help: str, description: str, descent: tuple[int, str, str] | None = None):
    """A PAG command (``jaxseg.pag.runs.run_<name>``) with the model-source arguments all of them take and, with
    ``descent`` (default steps, radius and step size), the descent's norm, radius, step size and iterations."""
    parser = subparsers.add_parser(name, help=help, description=description)
    add = parser.add_argument
    add("--checkpoint", help="variables checkpoint or training workdir (jaxseg.checkpoint.load_variables)")
    add("--model", help="registered model name (with --random-init, for smoke runs)")
    add("--num-classes", type=int, help="number of classes K (with --model)")
    add("--random-init", action="store_true", help="use random weights instead of a checkpoint")
    add("--out", required=True, help="output directory for the PNG grid and the JSON of numbers")
    add("--seed", type=int, default=0, help="PRNG seed")
    if descent is not None:
        add("--norm", choices=("l2", "linf"), default="l2")
        add("--eps", type=float, help=f"radius on the [0, 1] scale (default, L2: {descent[1]})")
        add("--step-size", type=float, help=f"step size (default {descent[2]})")
        add("--steps", type=int, default=descent[0], help="iterations")
    parser.set_defaults(handler=_handler("jaxseg.pag.runs", f"run_{name}", bar=True, key="summary"))
    return add


def _add_generate(subparsers) -> None:
    add = _add_pag(subparsers, "generate", "generate images from label maps with a robust model's gradients",
                   "Optimise an image so the model segments it as a target label map (targeted L2/Linf descent from "
                   "a seed). Example: jaxseg generate --checkpoint runs/at --target map.png --start class-gaussian "
                   "--dataset synthetic_shapes --out out/generate", (60, "40 rescaled from 224 px", "eps / 40"))
    add("--target", required=True, help="label-map PNG of class indices (255 = free pixel)")
    add("--start", choices=("noise", "mean", "class-gaussian"), default="noise",
        help="seed image: uniform noise, the dataset mean colour, or per-class Gaussians")
    add("--mean-colour", type=float, nargs=3, metavar=("R", "G", "B"),
        help="mean colour in [0, 1] for --start mean (default: from --dataset)")
    add("--dataset", help="training data for --start mean / class-gaussian (e.g. synthetic_shapes)")
    add("--data-dir", help=DATA_DIR_HELP)
    add("--fit-images", type=int, default=256, help="training images to fit the seed statistics on")


def _add_inpaint(subparsers) -> None:
    add = _add_pag(subparsers, "inpaint", "inpaint a masked region with a robust model's gradients",
                   "Fill the masked region of an image so the model's prediction matches a label map. Example: "
                   "jaxseg inpaint --checkpoint runs/at --image x.png --mask m.png --label y.png --out out/inpaint",
                   (720, "21.6 rescaled from 224 px", "eps / 216"))
    add("--image", required=True, help="RGB image PNG (the true image; the region is hidden first)")
    add("--mask", required=True, help="mask PNG of the region to fill (non-zero = fill)")
    add("--label", required=True, help="label-map PNG of class indices the prediction should match")
    add("--mode", choices=("penalty", "hard"), default="penalty",
        help="penalty: anchor visible pixels with λ·MSE; hard: visible pixels never change")
    add("--anchor-weight", type=float, default=10.0, help="λ of the penalty mode")


def _add_saliency(subparsers) -> None:
    add = _add_pag(subparsers, "saliency", "gradient saliency maps and localisation",
                   "Attribute a class's (or label map's) score to the input pixels and localise it. Example: jaxseg "
                   "saliency --checkpoint runs/at --image x.png --class 2 --label y.png --out out/saliency")
    add("--image", required=True, help="RGB image PNG")
    add("--class", dest="class_index", type=int, help="class whose score is attributed")
    add("--label", help="label-map PNG: with --class, the object (label == class) to score localisation against; "
        "alone, the map whose per-pixel score is attributed")
    add("--region", help="mask PNG of the pixels whose score counts (default: all)")
    add("--method", choices=("gradient", "gradient-input", "smoothgrad", "integrated-gradients"), default="gradient")
    add("--objective", choices=("logit", "ce"), default="logit",
        help="logit: sum of the class logit; ce: sum of the cross-entropy")
    add("--samples", type=int, default=16, help="SmoothGrad draws")
    add("--noise-scale", type=float, default=0.15, help="SmoothGrad noise σ ([0, 1] scale)")
    add("--ig-steps", type=int, default=32, help="integrated-gradients intervals")
    add("--sigma", type=float, default=1.0, help="localisation blur σ in pixels")
    add("--threshold", type=float, default=0.2, help="localisation threshold (fraction of max)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxseg", description="Adversarially robust semantic segmentation in "
                                     "JAX/Flax. Bad arguments and unreadable files are reported in one line (exit 2).")
    add = parser.add_argument
    add("--debug", action="store_true", help=f"also print the traceback of reported errors (or {DEBUG_ENVIRONMENT}=1)")
    add("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_command in (_add_models, _add_generate, _add_inpaint, _add_saliency, _add_convert, _add_evaluate,
                        _add_attack, _add_data, _add_train, _add_config, _add_quickstart):
        add_command(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    # `--config.a.b=value` overrides (and `--debug` after the command) are collected here.
    overrides = [u.removeprefix("--config.") for u in unknown if u.startswith("--config.")]
    rest = [u for u in unknown if not u.startswith("--config.") and u != "--debug"]
    args.debug = args.debug or "--debug" in unknown
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    if overrides and not hasattr(args, "overrides"):
        parser.error(f"jaxseg {args.command} takes no --config.* overrides")
    if hasattr(args, "overrides"):
        args.overrides = [o.removeprefix("--").removeprefix("config.") for o in args.overrides] + overrides
    import jaxseg.train  # noqa: F401, E402  (registers training work directories with jaxseg.checkpoint)
    try:
        return int(args.handler(args) or 0)
    except (ValueError, OSError, Stopped) as error:
        code = exit_code(error)
        if code is None:
            raise
        if args.debug or debug_from_environment():
            import traceback

            traceback.print_exc()
        kind = "" if isinstance(error, Stopped) else "error: "
        print(f"jaxseg {args.command}: {kind}{describe(error)}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
