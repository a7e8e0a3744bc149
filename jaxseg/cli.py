"""The ``jaxseg`` command. The only module that parses arguments and prints; it calls library functions.

Each subcommand has an ``_add_<name>(subparsers)`` function that declares its arguments and sets
``handler`` to the function that runs it.

Errors: a bad argument or input (``ValueError``, including ``jaxseg.checkpoint.UnreadableFileError`` for files
that cannot be read, and the ``OSError``s of missing, blocked or unwritable paths) is printed as one line
``jaxseg COMMAND: error: ...`` with exit code 2; other ``OSError``s (a full disk, an I/O error) as one line with
exit code 1. Anything else is a bug and shows its traceback (exit code 1). ``jaxseg --debug COMMAND`` or
``JAXSEG_DEBUG=1`` also prints the traceback of the reported errors. Commands check their arguments and output
paths before they build or compile a model.
"""

from __future__ import annotations

import argparse
import json
import sys

from jaxseg import __version__


def _add_quickstart(subparsers) -> None:
    from jaxseg.quickstart import BUDGETS

    parser = subparsers.add_parser(
        "quickstart", help="train, attack and explain on the built-in synthetic data (about 10 min on a 2-core CPU)",
        description="Prepare synthetic_shapes, train a clean and a PGD-AT UPerNet + ConvNeXt-atto, evaluate both "
        "with SEA at several radii, run the PAG generation and inpainting demos, and write report.md and a "
        "self-contained report.html to --workdir. Rerunning resumes: finished stages are reused. "
        "Example: jaxseg quickstart --workdir runs/quickstart",
    )
    parser.add_argument("--workdir", required=True, help="output directory (runs, results, figures, report)")
    parser.add_argument("--data-dir", help="where synthetic_shapes is prepared (default: WORKDIR/data)")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="default",
                        help="default: the ~10-minute CPU run; tiny: a smoke run of a few steps (tests)")
    parser.add_argument("--no-compilation-cache", action="store_true",
                        help="do not keep XLA compilations in WORKDIR/.jax_cache (reruns then recompile)")
    parser.set_defaults(handler=_run_quickstart)


def _run_quickstart(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from tqdm import tqdm

    import jax

    from jaxseg import quickstart

    _check_output_dir(args.workdir, "--workdir")
    workdir = Path(args.workdir).expanduser().resolve()
    if not args.no_compilation_cache and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        # A rerun after an interruption then skips the minutes of compilation it already paid for.
        jax.config.update("jax_compilation_cache_dir", str(workdir / ".jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

    def make_bar(description: str, total: int, unit: str):
        return tqdm(total=total, desc=description, unit=unit)

    try:
        state = quickstart.run_quickstart(workdir, budget=args.budget, data_dir=args.data_dir, make_bar=make_bar,
                                          log=tqdm.write)
    except quickstart.TrainingInterrupted as error:
        print(f"jaxseg quickstart: {error}", file=sys.stderr)
        return 1
    for name, results in state["results"].items():
        rows = ", ".join(f"{row['eps_255']:g}/255: {100 * row['mIoU']:.1f}" for row in results["robust"])
        print(f"{name}: clean mIoU {100 * results['clean']['mIoU']:.1f}%; SEA robust mIoU (%) {rows}")
    print(f"stages took {state['total_seconds']:.0f} s in total; this invocation {state['invocation_seconds']:.0f} s")
    print(f"wrote {state['report'][0]} and {state['report'][1]}")
    return 0


def _add_convert(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert PyTorch weights (.safetensors, or .pt/.pth read with weights_only) to Flax variables"
    )
    parser.add_argument("src", help="PyTorch checkpoint file")
    parser.add_argument("--out", required=True, help="new directory for the Orbax variables + metadata.json")
    parser.add_argument("--family", help="source layout (detected from the keys by default)")
    parser.add_argument("--model", help="registered model name (inferred from the keys and shapes by default)")
    parser.add_argument("--num-classes", type=int, help="expected number of classes (checked against the weights)")
    parser.add_argument(
        "--normalize", action=argparse.BooleanOptionalAction, default=None,
        help="ImageNet mean/std normalisation inside the model (default: from the checkpoint and family)",
    )
    parser.set_defaults(handler=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from jaxseg.checkpoint import save_variables
    from jaxseg.convert import convert_checkpoint
    from jaxseg.models import count_parameters

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} must be a new or empty directory")
    _check_output_dir(args.out)
    variables, metadata = convert_checkpoint(
        args.src, family=args.family, model=args.model, num_classes=args.num_classes, normalize=args.normalize
    )
    directory = save_variables(args.out, variables, metadata)
    print(
        f"converted {args.src} ({metadata['family']}) to {metadata['model']} with {metadata['num_classes']} classes, "
        f"{count_parameters(variables['params']):,} parameters, options {metadata['options']}: {directory}"
    )
    return 0


def _add_models(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the registered model names")
    parser.set_defaults(handler=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from jaxseg.models import list_models

    for name in list_models():
        print(name)
    return 0


def _add_model_and_data_arguments(parser) -> None:
    """Arguments shared by ``evaluate`` and ``attack``: the model, the data, the threat model."""
    from jaxseg.evaluate import ATTACKS

    parser.add_argument("--model", required=True, help="checkpoint directory, or a registered model name with --random-init")
    parser.add_argument("--random-init", action="store_true", help="use untrained weights (smoke runs)")
    parser.add_argument("--num-classes", type=int, help="classes of a --random-init model (default: from the data)")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--dataset", help="dataset name (jaxseg.data), e.g. synthetic_shapes, voc, ade20k")
    data.add_argument("--arrays", help=".npz file with images (N, H, W, 3) float in [0, 1] and labels (N, H, W)")
    parser.add_argument("--split", default="validation", help="dataset split (default: validation)")
    parser.add_argument("--data-dir", default="", help="dataset directory (default: JAXSEG_DATA_DIR)")
    parser.add_argument("--protocol", choices=("sea", "standard"),
                        help="evaluation protocol (default: the SEA paper's for --attack sea on VOC/ADE20K, else standard)")
    parser.add_argument("--image-size", type=int,
                        help="evaluation image size in pixels (default: the protocol's, e.g. 473 for SEA on VOC, else "
                        "the dataset's)")
    parser.add_argument("--class-weights", default="dataset",
                        help="mask-ce-bal class weights: dataset (SEA's published table for VOC/ADE20K, else the "
                        "training split's inverse pixel frequencies), image (each image's own), or a JSON file")
    parser.add_argument("--attack", default="sea", choices=ATTACKS, help="attack (default: sea)")
    parser.add_argument("--norm", default="linf", help="threat model: linf or l2")
    parser.add_argument("--iterations", type=int, help="iterations per attack run (default: the attack's own)")
    parser.add_argument("--step-size", type=str, help="PGD-family step size, e.g. 0.01 or 2/255 (default: the attack paper's, eps/4 for "
                        "PGD, 0.01 for SegPGD and CosPGD)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per compiled batch (default 8)")
    parser.add_argument("--num-examples", type=int, help="evaluate only the first N examples")
    parser.add_argument("--seed", type=int, default=0, help="attack and worst-case search seed")
    parser.add_argument("--compute-dtype", help="model compute dtype, e.g. bfloat16 (losses stay float32)")
    parser.add_argument("--out", required=True, help="output directory")


def _add_evaluate(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="clean and robust evaluation with SEA, APGD, PGD, SegPGD, CosPGD, PAdam",
        description="Clean and robust aAcc/mIoU per radius and per component attack; writes results.json and "
        "results.md to --out. Example: jaxseg evaluate --model runs/at --dataset synthetic_shapes "
        "--attack sea --eps 4/255,8/255 --out eval/",
    )
    _add_model_and_data_arguments(parser)
    parser.add_argument("--eps", default="4/255", help="comma-separated radii on the [0, 1] scale (default 4/255)")
    parser.add_argument("--attacked-only", action="store_true",
                        help="score the attacked images alone (as the SEA reference code does) instead of, per image, "
                        "the worse of the clean and the attacked prediction")
    parser.set_defaults(handler=_run_evaluate)


def _add_attack(subparsers) -> None:
    parser = subparsers.add_parser(
        "attack", help="attack images and save the adversarial examples",
        description="Attack the first --num-examples images (default: one batch) at one radius and save "
        "adversarial.npz (images, labels, adversarial, clean_prediction, adversarial_prediction) to --out; for "
        "an ensemble the per-image lowest-accuracy component is saved.",
    )
    _add_model_and_data_arguments(parser)
    parser.add_argument("--eps", default="4/255", help="radius on the [0, 1] scale (default 4/255)")
    parser.set_defaults(handler=_run_attack)


def _parse_radii(text: str, option: str = "--eps") -> list[float]:
    import math

    from jaxseg.config import parse_value

    radii = [parse_value(part) for part in text.split(",") if part.strip()]
    if not radii or not all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in radii):
        raise ValueError(f"{option} must be comma-separated numbers such as 4/255,8/255; got {text!r}")
    if not all(math.isfinite(r) and r >= 0 for r in radii):
        raise ValueError(f"{option} must be finite numbers >= 0 on the [0, 1] image scale, such as 4/255; got {text!r}")
    return [float(r) for r in radii]


def _check_output_dir(path: str, option: str = "--out") -> None:
    """Fail now, before any work, if directory ``path`` cannot be created or written (a file in the way, a
    read-only or foreign directory). Creates nothing."""
    _check_writable(path, option, directory=True)


def _check_output_file(path: str, option: str) -> None:
    """Fail now if the file ``path`` cannot be written (its directory is blocked or read-only, or it is a directory)."""
    _check_writable(path, option, directory=False)


def _check_writable(path: str, option: str, *, directory: bool) -> None:
    import os
    import tempfile
    from pathlib import Path

    target = Path(path).expanduser().absolute()
    if target.exists():
        if directory and not target.is_dir():
            raise NotADirectoryError(f"{option} {path} is a file, not a directory")
        if not directory and target.is_dir():
            raise IsADirectoryError(f"{option} {path} is a directory, not a file")
    ancestor = target if directory and target.exists() else target.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(f"{option} {path} cannot be created: {ancestor} is a file, not a directory")
    try:  # a real probe: permissions, read-only file systems, ACLs
        os.rmdir(tempfile.mkdtemp(prefix=".jaxseg-write-test-", dir=ancestor))
    except OSError as error:
        raise PermissionError(f"{option} {path} cannot be written: {ancestor} is not writable "
                              f"({error.strerror or error})") from error


def _parse_compute_dtype(value: str | None):
    """``--compute-dtype`` → a floating NumPy dtype (None stays None); ``ValueError`` naming the choices."""
    if value is None:
        return None
    import jax.numpy as jnp

    try:
        dtype = jnp.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"--compute-dtype must be a floating dtype: float32, bfloat16 or float16; got {value!r}")
    return dtype


def _check_attack_arguments(args: argparse.Namespace) -> tuple[list[float], float | None]:
    """Every ``evaluate`` / ``attack`` argument that can be checked without data or model; returns the radii and
    the step size."""
    import math

    from jaxseg.attacks import threat
    from jaxseg.config import parse_value

    radii = _parse_radii(args.eps)
    step_size = None
    if args.step_size is not None:
        step_size = parse_value(args.step_size.strip())
        if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not math.isfinite(step_size) \
                or step_size <= 0:
            raise ValueError(f"--step-size {args.step_size!r}: step_size must be finite and > 0, one number on the "
                             "[0, 1] image scale such as 2/255")
        step_size = float(step_size)
    threat.check_norm(args.norm)
    for option, value in (("--batch-size", args.batch_size), ("--iterations", args.iterations),
                          ("--num-examples", args.num_examples), ("--num-classes", args.num_classes),
                          ("--image-size", args.image_size)):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be >= 1; got {value}")
    _parse_compute_dtype(args.compute_dtype)
    _check_output_dir(args.out)
    return radii, step_size


def _attack_setup(args: argparse.Namespace):
    """(model, variables, batches, total examples, class weights, data description) for ``evaluate`` / ``attack``.

    The data is read and checked before the model is built; the model's number of classes must then cover the
    labels (``--arrays``) or equal the dataset's."""
    from jaxseg import data, evaluate

    if args.arrays:
        images, labels = evaluate.load_arrays(args.arrays)
        needed = int(labels[labels != 255].max()) + 1
        if args.num_classes is not None and args.num_classes < needed:
            raise ValueError(f"{args.arrays}: labels go up to {needed - 1}, more than --num-classes {args.num_classes} "
                             "allows")
        num_classes = args.num_classes or needed
        image_size = images.shape[1]
        weights = None
        if args.random_init:  # the model will have num_classes classes: a bad weights file fails before it is built
            weights = data.resolve_class_weights(args.class_weights, num_classes, labels=labels)
        description = {"arrays": args.arrays, "image_size": image_size}
    else:
        num_classes = args.num_classes or data.dataset_info(args.dataset).num_classes
        protocol, image_size = data.default_eval_view(args.dataset, args.attack, args.protocol, args.image_size)
        description = {"dataset": args.dataset, "split": args.split, "protocol": protocol, "image_size": image_size}
    model, variables, model_classes = evaluate.load_model(args.model, num_classes=num_classes,
                                                          random_init=args.random_init, image_size=image_size,
                                                          seed=args.seed)
    if args.arrays:
        if model_classes < needed:
            raise ValueError(f"{args.arrays}: labels go up to {needed - 1} but the model {args.model} predicts "
                             f"{model_classes} classes (0 to {model_classes - 1}; 255 = ignored)")
        if args.num_classes is not None and args.num_classes != model_classes:
            raise ValueError(f"--num-classes {args.num_classes} but the model {args.model} has {model_classes} classes")
        if weights is None or model_classes != num_classes:
            weights = data.resolve_class_weights(args.class_weights, model_classes, labels=labels)
        batches = evaluate.array_batches(images, labels, args.batch_size, args.num_examples)
        total = min(args.num_examples or len(images), len(images))
    else:
        if model_classes != num_classes:
            raise ValueError(f"the model {args.model} has {model_classes} classes but dataset {args.dataset} has "
                             f"{num_classes}" + (" (--num-classes)" if args.num_classes else ""))
        weights = data.resolve_class_weights(args.class_weights, num_classes, dataset=args.dataset,
                                             data_dir=args.data_dir or None)
        batches = data.eval_batches(args.dataset, args.split, data_dir=args.data_dir or None,
                                    batch_size=args.batch_size, protocol=protocol, image_size=image_size,
                                    num_examples=args.num_examples)
        total = args.num_examples
    return model, variables, batches, total, weights, description


def _run_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from jaxseg import attacks, evaluate

    radii, step_size = _check_attack_arguments(args)
    model, variables, batches, total, weights, description = _attack_setup(args)
    with tqdm(total=total, desc=f"evaluate {args.attack}", unit="img") as bar:
        results = evaluate.evaluate(
            attacks.logits_function(model), batches, variables=variables, attack=args.attack, eps=radii,
            norm=args.norm, iterations=args.iterations, step_size=step_size, seed=args.seed, class_weights=weights,
            compute_dtype=args.compute_dtype, data_description=description,
            clean_in_worst_case=not args.attacked_only, progress=bar.update,
        )
    results["model"] = args.model
    json_path, markdown_path = evaluate.write_results(results, args.out)
    print(evaluate.results_markdown(results))
    print(f"wrote {json_path} and {markdown_path}")
    return 0


def _run_attack(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from jaxseg import attacks, evaluate, metrics

    radius, step_size = _check_attack_arguments(args)
    if len(radius) != 1:
        raise ValueError(f"jaxseg attack takes one radius; got {args.eps!r} (use jaxseg evaluate for several)")
    model, variables, batches, _, weights, _ = _attack_setup(args)
    logits_fn = attacks.logits_function(model)
    iterations = args.iterations or evaluate.DEFAULT_ITERATIONS[args.attack]
    parts = {k: [] for k in ("images", "labels", "adversarial", "clean_prediction", "adversarial_prediction")}
    for index, batch in enumerate(batches):
        valid = np.asarray(batch.get("valid", np.ones(len(batch["image"]), bool)))
        images, labels = np.asarray(batch["image"], np.float32), np.asarray(batch["label"], np.int32)
        adversarial, statistics = evaluate.run_attack(
            args.attack, logits_fn, images, labels, jax.random.fold_in(jax.random.PRNGKey(args.seed), index),
            eps=radius[0], norm=args.norm, iterations=iterations, variables=variables, step_size=step_size,
            class_weights=weights.values, compute_dtype=args.compute_dtype,
        )
        adversarial, _ = evaluate.worst_adversarial(adversarial, statistics)
        for name, value in (("images", images), ("labels", labels), ("adversarial", adversarial),
                            ("clean_prediction", evaluate.predict(logits_fn, images, variables=variables)),
                            ("adversarial_prediction", evaluate.predict(logits_fn, adversarial, variables=variables))):
            parts[name].append(np.asarray(value)[valid])
        if args.num_examples is None:
            break
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    num_classes = int(statistics.intersection.shape[-1])
    scores = {}
    for name in ("clean", "adversarial"):
        stats = metrics.per_image_statistics(arrays[f"{name}_prediction"], arrays["labels"], num_classes)
        scores[name] = {k: round(float(v), 4) for k, v in metrics.scores_from_statistics(stats).items()}
    from pathlib import Path

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "adversarial.npz", **arrays)
    print(json.dumps({"attack": args.attack, "eps": radius[0], "num_examples": len(arrays["images"]), **scores}, indent=2))
    print(f"wrote {out / 'adversarial.npz'}")
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
        description="Train from a config; resumes from the latest checkpoint in --workdir. Everything (config, "
        "data, checkpoint compatibility) is checked before anything is written there. On SIGTERM the run saves "
        "and exits with status 143; running the same command again resumes it. "
        "Example: jaxseg train synthetic:pgd-at --workdir runs/at --config.train.steps=300",
    )
    parser.add_argument("config", help="config name or path with optional :arg (e.g. synthetic:pgd-at)")
    parser.add_argument("--workdir", required=True, help="run directory (checkpoints, metrics, TensorBoard)")
    parser.add_argument("--coordinator", help="host:port of process 0 for a multi-process run")
    parser.add_argument("--num-processes", type=int, help="number of processes in a multi-process run")
    parser.add_argument("--process-id", type=int, help="this process's index in a multi-process run")
    parser.set_defaults(handler=_run_train, overrides=[])


def _run_train(args: argparse.Namespace) -> int:
    """Exit codes: 0 trained, 143 (128 + SIGTERM) stopped by a pre-emption after saving (resumes when run
    again), 1 the work directory cannot be written, 2 a bad config, data or checkpoint (nothing written)."""
    import signal

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

    try:
        summary = train(config, args.workdir, on_step=on_step)
    except OSError as error:  # an unwritable work directory, a full disk (FileNotFoundError: main reports it)
        if isinstance(error, FileNotFoundError):
            raise
        bar.close()
        print(f"jaxseg train: error: {error}", file=sys.stderr)
        return 1
    bar.close()
    code = 0
    if summary["status"] == "preempted":
        code = 128 + int(signal.SIGTERM)  # 143: what a process killed by SIGTERM reports; schedulers requeue it
        if summary["checkpoint_step"] is None:
            summary["message"] = (f"stopped by SIGTERM before the first step; nothing to save; starting again "
                                  f"begins at step 0 (exit code {code})")
        else:
            summary["message"] = (
                f"stopped by SIGTERM at step {summary['step']} of {config.train.steps}; saved the checkpoint of "
                f"step {summary['checkpoint_step']} in {args.workdir}; the run will resume from it when started "
                f"again with the same command (exit code {code}, so that schedulers requeue it)"
            )
        print(f"jaxseg train: {summary['message']}", file=sys.stderr)
    if jax.process_index() == 0:
        print(json.dumps(summary, indent=2))
    return code


def _add_data(subparsers) -> None:
    parser = subparsers.add_parser("data", help="prepare, show and describe datasets")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    data_dir_help = "TFDS data directory (default: $JAXSEG_DATA_DIR or ~/tensorflow_datasets)"
    names = "voc2012_seg, ade20k, cityscapes, synthetic_shapes[/CONFIG]"

    prepare = actions.add_parser("prepare", help="write a dataset as ArrayRecord files with TFDS")
    prepare.add_argument("name", help=names)
    prepare.add_argument("--manual-dir", help="directory holding the extracted official archives (not synthetic)")
    prepare.add_argument("--data-dir", help=data_dir_help)
    prepare.add_argument("--image-size", type=int, help="synthetic_shapes only: image side in pixels")
    prepare.set_defaults(handler=_run_data_prepare)

    show = actions.add_parser("show", help="write a PNG grid of images with their coloured label maps")
    show.add_argument("name", help=names)
    show.add_argument("--split", help="split to show (default: the dataset's evaluation split)")
    show.add_argument("--out", help="PNG path (default: NAME-SPLIT.png)")
    show.add_argument("--num", type=int, default=8, help="number of examples (default 8)")
    show.add_argument("--data-dir", help=data_dir_help)
    show.set_defaults(handler=_run_data_show)

    stats = actions.add_parser("stats", help="print example counts, class frequencies and the mask-ce-bal class weights")
    stats.add_argument("name", help=names)
    stats.add_argument("--split", help="split to describe (default: the dataset's training split)")
    stats.add_argument("--num-examples", type=int, default=0, help="count only the first N examples (0: all)")
    stats.add_argument("--json", help="also write the statistics to this JSON file")
    stats.add_argument("--data-dir", help=data_dir_help)
    stats.set_defaults(handler=_run_data_stats)


def _run_data_prepare(args: argparse.Namespace) -> int:
    from jaxseg.data import prepare, resolve_name

    options = {} if args.image_size is None else {"image_size": args.image_size}
    name = resolve_name(args.name, **options)
    path = prepare(args.name, data_dir=args.data_dir, manual_dir=args.manual_dir, **options)
    print(f"prepared {name} in {path}")
    return 0


def _run_data_show(args: argparse.Namespace) -> int:
    from jaxseg.data import dataset_info, open_split, save_example_grid

    info = dataset_info(args.name)
    split = args.split or info.eval_split
    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    out = args.out or f"{args.name.replace('/', '-')}-{split}.png"
    _check_output_file(out, "--out")
    source = open_split(args.name, split, args.data_dir)
    examples = [source[i] for i in range(min(args.num, len(source)))]
    images, labels = [e["image"] for e in examples], [e["label"] for e in examples]
    save_example_grid(images, labels, info.palette, out, titles=[bytes(e["id"]).decode() for e in examples])
    print(f"wrote {len(examples)} examples of {args.name} {split} to {out}")
    return 0


def _run_data_stats(args: argparse.Namespace) -> int:
    import json

    from jaxseg.data import dataset_class_weights, dataset_info, split_statistics

    info = dataset_info(args.name)
    split = args.split or info.train_split
    if args.num_examples < 0:
        raise ValueError(f"--num-examples must be >= 0 (0: all); got {args.num_examples}")
    if args.json:
        _check_output_file(args.json, "--json")
    stats = split_statistics(args.name, split, data_dir=args.data_dir, num_examples=args.num_examples)
    weights = dataset_class_weights(args.name, args.data_dir)
    summary = stats.to_json_dict()
    summary["class_weights"] = {name: float(w) for name, w in zip(info.class_names, weights.values)}
    summary["class_weights_source"] = weights.source
    print(f"{args.name} {split}: {stats.num_examples} examples, sizes {stats.min_size} to {stats.max_size} (H, W)")
    print(f"ignored pixels: {stats.ignored_pixels}, unknown label values: {stats.unknown_pixels}")
    print(f"mask-ce-bal class weights (used by jaxseg evaluate): {weights.source}")
    print(f"{'class':<24} {'pixels':>14} {'frequency':>10} {'weight':>10}")
    for class_name in info.class_names:
        pixels, frequency = summary["pixel_counts"][class_name], summary["frequencies"][class_name]
        print(f"{class_name:<24} {pixels:>14} {frequency:>10.4f} {summary['class_weights'][class_name]:>10.4g}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
        print(f"wrote {args.json}")
    return 0


def _check_pag_arguments(args: argparse.Namespace, iterations: tuple[str, int] | None = None) -> None:
    """The ``generate`` / ``inpaint`` / ``saliency`` arguments that can be checked before any file or model is
    read: iteration counts, radius and step size, ``--norm linf`` needing ``--eps``, the output directory."""
    import math

    if iterations is not None and iterations[1] < 1:
        raise ValueError(f"{iterations[0]} must be >= 1; got {iterations[1]}")
    for option in ("eps", "step_size"):
        value = getattr(args, option, None)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"--{option.replace('_', '-')} must be finite and > 0 on the [0, 1] image scale; got {value}")
    if getattr(args, "norm", None) == "linf" and args.eps is None:
        raise ValueError("--norm linf needs --eps (the default radius is defined for l2 only)")
    if args.num_classes is not None and args.num_classes < 1:
        raise ValueError(f"--num-classes must be >= 1; got {args.num_classes}")
    _check_output_dir(args.out)


def _add_generate(subparsers) -> None:
    from jaxseg.pag.io import MODEL_ARGUMENTS

    parser = subparsers.add_parser(
        "generate", help="generate images from label maps with a robust model's gradients",
        description="Optimise an image so the model segments it as a target label map (targeted L2/Linf descent "
        "from a seed). Example: jaxseg generate --checkpoint runs/at --target map.png --start class-gaussian "
        "--dataset synthetic_shapes --out out/generate",
    )
    parser.add_argument("--target", required=True, help="label-map PNG of class indices (255 = free pixel)")
    parser.add_argument("--start", choices=("noise", "mean", "class-gaussian"), default="noise",
                        help="seed image: uniform noise, the dataset mean colour, or per-class Gaussians")
    parser.add_argument("--mean-colour", type=float, nargs=3, metavar=("R", "G", "B"),
                        help="mean colour in [0, 1] for --start mean (default: from --dataset)")
    parser.add_argument("--dataset", help="training data for --start mean / class-gaussian (e.g. synthetic_shapes)")
    parser.add_argument("--data-dir", help="dataset directory (default JAXSEG_DATA_DIR or ~/tensorflow_datasets)")
    parser.add_argument("--fit-images", type=int, default=256, help="training images to fit the seed statistics on")
    parser.add_argument("--norm", choices=("l2", "linf"), default="l2")
    parser.add_argument("--eps", type=float, help="radius on the [0, 1] scale (default, L2: 40 rescaled from 224 px)")
    parser.add_argument("--step-size", type=float, help="step size (default eps / 40)")
    parser.add_argument("--steps", type=int, default=60, help="iterations")
    for flags, options in MODEL_ARGUMENTS:
        parser.add_argument(*flags, **options)
    parser.set_defaults(handler=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from jaxseg.pag import io

    _check_pag_arguments(args, ("--steps", args.steps))
    gaussians, mean_colour = None, args.mean_colour
    fit_dataset = args.start != "noise" and (args.start == "class-gaussian" or mean_colour is None)
    if fit_dataset and not args.dataset:
        raise ValueError(f"--start {args.start} needs --dataset NAME" + (" (or --mean-colour R G B)" if args.start == "mean" else ""))
    if fit_dataset:
        from jaxseg import data

        data.dataset_info(args.dataset)  # an unknown name fails here, before the model is built
    if fit_dataset and args.fit_images < 1:
        raise ValueError(f"--fit-images must be >= 1; got {args.fit_images}")
    if mean_colour is not None and not all(0.0 <= c <= 1.0 for c in mean_colour):
        raise ValueError(f"--mean-colour must be three numbers in [0, 1]; got {mean_colour}")
    bar = tqdm(total=4, desc="generate", unit="stage")
    target = io.read_label_png(args.target)
    logits_fn, variables, description = io.load_model(
        checkpoint=args.checkpoint, model=args.model, num_classes=args.num_classes, random_init=args.random_init,
        image_size=target.shape[1:3], seed=args.seed)
    io.check_label_values(target, description["num_classes"], args.target)
    bar.update()
    import jax
    import numpy as np

    from jaxseg.pag import generate

    if fit_dataset:
        from jaxseg import data

        images, labels = data.load_split_arrays(args.dataset, data.dataset_info(args.dataset).train_split,
                                                data_dir=args.data_dir, protocol="standard",
                                                image_size=int(target.shape[1]), num_examples=args.fit_images)
        mean_colour = generate.dataset_mean(images)
        if args.start == "class-gaussian":
            gaussians = generate.fit_class_gaussians(images, labels, description["num_classes"])
    key = jax.random.key(args.seed)
    seeds = generate.make_seed(args.start, key, target, gaussians=gaussians, mean_colour=mean_colour)
    bar.update()
    result = generate.generate(logits_fn, target, seeds, eps=args.eps, step_size=args.step_size, iterations=args.steps,
                               norm=args.norm, variables=variables)
    result = jax.device_get(result)
    bar.update()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    io.write_image_png(out / "generated.png", result.images[0])
    io.save_grid(out / "generate.png", [("seed", np.asarray(seeds[0])), ("target", target[0]),
                                        ("generated", result.images[0]), ("prediction", result.prediction[0])],
                 description["num_classes"])
    io.write_json(out / "generate.json", {
        **description, "target": args.target, "start": args.start, "norm": args.norm, "eps": args.eps,
        "step_size": args.step_size, "steps": args.steps, "seed": args.seed,
        "target_accuracy": float(result.target_accuracy[0]), "loss": float(result.loss[0]),
        "initial_loss": float(result.loss_history[0, 0]),
    })
    bar.update()
    bar.close()
    print(f"target accuracy {float(result.target_accuracy[0]):.3f}; wrote {out / 'generate.png'} and {out / 'generate.json'}")
    return 0


def _add_inpaint(subparsers) -> None:
    from jaxseg.pag.io import MODEL_ARGUMENTS

    parser = subparsers.add_parser(
        "inpaint", help="inpaint a masked region with a robust model's gradients",
        description="Fill the masked region of an image so the model's prediction matches a label map. "
        "Example: jaxseg inpaint --checkpoint runs/at --image x.png --mask m.png --label y.png --out out/inpaint",
    )
    parser.add_argument("--image", required=True, help="RGB image PNG (the true image; the region is hidden first)")
    parser.add_argument("--mask", required=True, help="mask PNG of the region to fill (non-zero = fill)")
    parser.add_argument("--label", required=True, help="label-map PNG of class indices the prediction should match")
    parser.add_argument("--mode", choices=("penalty", "hard"), default="penalty",
                        help="penalty: anchor visible pixels with λ·MSE; hard: visible pixels never change")
    parser.add_argument("--anchor-weight", type=float, default=10.0, help="λ of the penalty mode")
    parser.add_argument("--norm", choices=("l2", "linf"), default="l2")
    parser.add_argument("--eps", type=float, help="radius on the [0, 1] scale (default, L2: 21.6 rescaled from 224 px)")
    parser.add_argument("--step-size", type=float, help="step size (default eps / 216)")
    parser.add_argument("--steps", type=int, default=720, help="iterations")
    for flags, options in MODEL_ARGUMENTS:
        parser.add_argument(*flags, **options)
    parser.set_defaults(handler=_run_inpaint)


def _run_inpaint(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from jaxseg.pag import io

    import math

    _check_pag_arguments(args, ("--steps", args.steps))
    if not (math.isfinite(args.anchor_weight) and args.anchor_weight >= 0):
        raise ValueError(f"--anchor-weight must be finite and >= 0; got {args.anchor_weight}")
    bar = tqdm(total=3, desc="inpaint", unit="stage")
    image, mask, label = io.read_image_png(args.image), io.read_mask_png(args.mask), io.read_label_png(args.label)
    for name, shape in (("mask", mask.shape[1:3]), ("label map", label.shape[1:3])):
        if shape != image.shape[1:3]:
            raise ValueError(f"the {name} is {shape[0]}x{shape[1]} but the image is {image.shape[1]}x{image.shape[2]}")
    if not mask.any():
        raise ValueError(f"{args.mask}: the mask selects no pixel (non-zero = fill)")
    logits_fn, variables, description = io.load_model(
        checkpoint=args.checkpoint, model=args.model, num_classes=args.num_classes, random_init=args.random_init,
        image_size=image.shape[1:3], seed=args.seed)
    io.check_label_values(label, description["num_classes"], args.label)
    bar.update()
    import jax
    import numpy as np

    from jaxseg.pag import inpaint

    result = jax.device_get(inpaint.inpaint(logits_fn, image, mask, label, mode=args.mode,
                                            anchor_weight=args.anchor_weight, eps=args.eps, step_size=args.step_size,
                                            iterations=args.steps, norm=args.norm, variables=variables))
    mse, psnr = inpaint.region_error(result.images, image, mask)
    corrupted_mse, corrupted_psnr = inpaint.region_error(result.corrupted, image, mask)
    bar.update()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    io.write_image_png(out / "inpainted.png", result.images[0])
    io.save_grid(out / "inpaint.png", [("input", image[0]), ("mask", mask[0]), ("corrupted", result.corrupted[0]),
                                       ("inpainted", result.images[0]), ("prediction", result.prediction[0])],
                 description["num_classes"])
    visible_change = float(np.max(np.abs(result.images[0] - image[0])[~mask[0]], initial=0.0))
    io.write_json(out / "inpaint.json", {
        **description, "image": args.image, "mask": args.mask, "label": args.label, "mode": args.mode,
        "anchor_weight": args.anchor_weight, "norm": args.norm, "eps": args.eps, "step_size": args.step_size,
        "steps": args.steps, "seed": args.seed, "mask_fraction": float(mask.mean()),
        "label_accuracy": float(result.label_accuracy[0]), "loss": float(result.loss[0]),
        "region_mse": float(mse[0]), "region_psnr_db": float(psnr[0]), "corrupted_region_mse": float(corrupted_mse[0]),
        "corrupted_region_psnr_db": float(corrupted_psnr[0]), "max_visible_change": visible_change,
    })
    bar.update()
    bar.close()
    print(f"region PSNR {float(psnr[0]):.2f} dB (mean fill {float(corrupted_psnr[0]):.2f} dB); wrote {out / 'inpaint.png'}")
    return 0


def _add_saliency(subparsers) -> None:
    from jaxseg.pag.io import MODEL_ARGUMENTS

    parser = subparsers.add_parser(
        "saliency", help="gradient saliency maps and localisation",
        description="Attribute a class's (or label map's) score to the input pixels and localise it. "
        "Example: jaxseg saliency --checkpoint runs/at --image x.png --class 2 --label y.png --out out/saliency",
    )
    parser.add_argument("--image", required=True, help="RGB image PNG")
    parser.add_argument("--class", dest="class_index", type=int, help="class whose score is attributed")
    parser.add_argument("--label", help="label-map PNG: with --class, the object (label == class) to score "
                        "localisation against; alone, the map whose per-pixel score is attributed")
    parser.add_argument("--region", help="mask PNG of the pixels whose score counts (default: all)")
    parser.add_argument("--method", choices=("gradient", "gradient-input", "smoothgrad", "integrated-gradients"),
                        default="gradient")
    parser.add_argument("--objective", choices=("logit", "ce"), default="logit",
                        help="logit: sum of the class logit; ce: sum of the cross-entropy")
    parser.add_argument("--samples", type=int, default=16, help="SmoothGrad draws")
    parser.add_argument("--noise-scale", type=float, default=0.15, help="SmoothGrad noise σ ([0, 1] scale)")
    parser.add_argument("--ig-steps", type=int, default=32, help="integrated-gradients intervals")
    parser.add_argument("--sigma", type=float, default=1.0, help="localisation blur σ in pixels")
    parser.add_argument("--threshold", type=float, default=0.2, help="localisation threshold (fraction of max)")
    for flags, options in MODEL_ARGUMENTS:
        parser.add_argument(*flags, **options)
    parser.set_defaults(handler=_run_saliency)


def _run_saliency(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from jaxseg.pag import io

    import math

    if args.class_index is None and args.label is None:
        raise ValueError("give --class C (a class to explain) or --label MAP.png (a label map to explain)")
    _check_pag_arguments(args)
    if args.class_index is not None and args.class_index < 0:
        raise ValueError(f"--class must be a class index >= 0; got {args.class_index}")
    for option, value, low in (("--samples", args.samples, 1), ("--ig-steps", args.ig_steps, 1)):
        if value < low:
            raise ValueError(f"{option} must be >= {low}; got {value}")
    if not (math.isfinite(args.noise_scale) and args.noise_scale > 0):
        raise ValueError(f"--noise-scale must be finite and > 0; got {args.noise_scale}")
    if not (math.isfinite(args.sigma) and args.sigma >= 0):
        raise ValueError(f"--sigma must be finite and >= 0; got {args.sigma}")
    if not 0 < args.threshold < 1:
        raise ValueError(f"--threshold must lie in (0, 1); got {args.threshold}")
    bar = tqdm(total=3, desc="saliency", unit="stage")
    image = io.read_image_png(args.image)
    label = io.read_label_png(args.label) if args.label else None
    region = io.read_mask_png(args.region) if args.region else None
    for name, extra in (("label map", label), ("region", region)):
        if extra is not None and extra.shape[1:3] != image.shape[1:3]:
            raise ValueError(f"the {name} is {extra.shape[1]}x{extra.shape[2]} but the image is "
                             f"{image.shape[1]}x{image.shape[2]}")
    logits_fn, variables, description = io.load_model(
        checkpoint=args.checkpoint, model=args.model, num_classes=args.num_classes, random_init=args.random_init,
        image_size=image.shape[1:3], seed=args.seed)
    if args.class_index is not None and args.class_index >= description["num_classes"]:
        raise ValueError(f"--class {args.class_index} is not a class of the model, which has "
                         f"{description['num_classes']} (0 to {description['num_classes'] - 1})")
    if label is not None:
        io.check_label_values(label, description["num_classes"], args.label)
    bar.update()
    import jax
    import numpy as np

    from jaxseg.pag import localize, saliency

    explain_map = args.class_index is None
    attribution = saliency.attribute(
        logits_fn, image, method=args.method, objective=args.objective, class_index=args.class_index,
        labels=label if explain_map else None, region=region, key=jax.random.key(args.seed), samples=args.samples,
        noise_scale=args.noise_scale, steps=args.ig_steps, variables=variables)
    prediction = np.asarray(attribution.prediction)
    maps = saliency.saliency_map(attribution.values)
    found = localize.localize(maps, sigma=args.sigma, threshold=args.threshold)
    bar.update()
    numbers = {
        **description, "image": args.image, "class": args.class_index, "label": args.label, "region": args.region,
        "method": args.method, "objective": args.objective, "seed": args.seed, "score": float(attribution.score[0]),
        "box": found.boxes[0], "box_format": "y0, x0, y1, x1 (exclusive ends)",
        "localized_fraction": float(found.masks[0].mean()),
    }
    if args.method == "integrated-gradients":
        numbers["baseline_score"] = float(attribution.baseline_score[0])
        numbers["attribution_sum"] = float(np.sum(attribution.values[0]))
    if label is not None and not explain_map:
        target = label == args.class_index
        true_box = localize.boxes_from_masks(target)
        numbers.update(object_box=true_box[0], box_iou=float(localize.box_iou(found.boxes, true_box)[0]),
                       localized=bool(localize.localization_accuracy(found.boxes, true_box) == 1.0),
                       pointing_hit=bool(localize.pointing_game(maps, target)[0]), object_present=bool(target.any()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    io.save_grid(out / "saliency.png", [("image", image[0]), ("saliency", maps[0]), ("localised", found.masks[0]),
                                        ("prediction", prediction[0])], description["num_classes"])
    io.write_json(out / "saliency.json", numbers)
    bar.update()
    bar.close()
    print(f"box {found.boxes[0].tolist()} (y0, x0, y1, x1); wrote {out / 'saliency.png'} and {out / 'saliency.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxseg",
        description="Adversarially robust semantic segmentation in JAX/Flax. Bad arguments and unreadable files "
        "are reported in one line with exit code 2.",
    )
    parser.add_argument("--debug", action="store_true",
                        help=f"also print the traceback of reported errors (or set {DEBUG_ENVIRONMENT}=1)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_models(subparsers)
    _add_generate(subparsers)
    _add_inpaint(subparsers)
    _add_saliency(subparsers)
    _add_convert(subparsers)
    _add_evaluate(subparsers)
    _add_attack(subparsers)
    _add_data(subparsers)
    _add_train(subparsers)
    _add_config(subparsers)
    _add_quickstart(subparsers)
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
    if "--debug" in rest:  # accepted after the command too: jaxseg evaluate ... --debug
        args.debug = True
        rest = [u for u in rest if u != "--debug"]
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    if overrides:
        if not hasattr(args, "overrides"):
            parser.error(f"jaxseg {args.command} takes no --config.* overrides")
        args.overrides = list(args.overrides or []) + _strip_config_prefix(overrides)
    try:
        return int(args.handler(args) or 0)
    except (ValueError, OSError) as error:
        code = exit_code(error)
        if code is None:
            raise
        if args.debug or _debug_from_environment():
            import traceback

            traceback.print_exc()
        print(f"jaxseg {args.command}: error: {_describe(error)}", file=sys.stderr)
        return code


DEBUG_ENVIRONMENT = "JAXSEG_DEBUG"
# OSErrors that mean a path the user gave is missing, blocked, read-only or of the wrong kind.
_USER_ERRNOS = ("ENOENT", "EEXIST", "EACCES", "EPERM", "EROFS", "ENOTDIR", "EISDIR", "ENAMETOOLONG", "ELOOP",
                "ENOTEMPTY")


def exit_code(error: BaseException) -> int | None:
    """The exit code ``main`` reports ``error`` with: 2 for a bad argument or input (``ValueError``, including
    ``jaxseg.checkpoint.UnreadableFileError``; a missing, blocked, read-only or wrong-kind path), 1 for other
    ``OSError``s (a full disk, an I/O error), None for anything else (a bug: its traceback is shown)."""
    import errno

    if isinstance(error, ValueError):
        return 2
    if isinstance(error, (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
                          NotADirectoryError)):
        return 2
    if isinstance(error, OSError):
        user = {getattr(errno, name) for name in _USER_ERRNOS if hasattr(errno, name)}
        return 2 if error.errno in user else 1
    return None


def _describe(error: BaseException) -> str:
    """One readable line (or block) for ``error``: an OSError as 'PATH: reason', else its message."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        target = f" -> {error.filename2}" if error.filename2 is not None else ""
        return f"{error.filename}{target}: {error.strerror}"
    return str(error) or type(error).__name__


def _debug_from_environment() -> bool:
    import os

    return os.environ.get(DEBUG_ENVIRONMENT, "").strip().lower() not in ("", "0", "false", "no")


if __name__ == "__main__":
    sys.exit(main())
