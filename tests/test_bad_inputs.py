"""The bad-input contract: every mistake a user can type or point at ends in one readable message, never a traceback.

Through the CLI (``jaxseg.cli.main`` in-process): exit code 2 and one ``jaxseg COMMAND: error: ...`` line (or
argparse's usage error) naming the argument, file or directory and the problem. Through the API: a ``ValueError``
(``jaxseg.checkpoint.UnreadableFileError`` for files that cannot be read) or an ``OSError`` subclass for paths.
One case per line: arguments → expected message fragment (and exit code). Almost every case fails before a model
is built or compiled; the checkpoint cases share one set of files written once per module (random
``upernet_convnext_atto`` and ``convnext_atto`` variables, and a one-step training run directory).

Arguments are split on spaces; ``{name}`` is a path from the ``files`` fixture (``{out}`` a fresh directory per
case) and ``@NAME`` expands to the argument group ``GROUPS[NAME]``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import pickle
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxseg import attacks, checkpoint, cli, evaluate, models
from jaxseg.pag import generate as pag_generate
from jaxseg.pag import io as pag_io

SIZE = 32
HAS_TORCH = importlib.util.find_spec("torch") is not None
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="reading .pth files needs the torch extra")
needs_non_root = pytest.mark.skipif(IS_ROOT, reason="root may write into read-only (mode 0555) directories")

GROUPS = {
    # evaluate / attack: a good checkpoint and good arrays (cases change one thing)
    "CKPT": "--model {seg} --arrays {arrays} --out {out}",
    # evaluate / attack with random weights (cases must fail before the model is initialised)
    "RANDOM": "--model upernet_convnext_atto --random-init --arrays {arrays} --out {out}",
    # the arrays and output only (cases give --model)
    "DATA": "--arrays {arrays} --out {out}",
    # generate / inpaint / saliency with the good checkpoint, or random weights
    "PAG": "--checkpoint {seg} --out {out}",
    "PAGRANDOM": "--random-init --model upernet_convnext_atto --num-classes 3 --out {out}",
    "INPAINT": "--image {image} --mask {mask} --label {label}",
}


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    argv: str
    fragment: str
    code: int = 2
    marks: tuple = ()


def case(id_, argv, fragment, code=2, marks=()):
    return pytest.param(Case(id_, argv, fragment, code), id=id_, marks=marks)


CLI_CASES = [
    # ---- top level
    case("no-such-command", "frobnicate", "invalid choice: 'frobnicate'"),
    case("unknown-option", "models --colour", "unrecognised arguments: --colour"),
    # ---- evaluate / attack: arguments
    case("eps-text", "evaluate @CKPT --eps four", "--eps must be comma-separated numbers"),
    case("eps-empty", "evaluate @CKPT --eps=", "--eps must be comma-separated numbers"),
    case("eps-negative", "evaluate @CKPT --eps=-4/255", "--eps must be finite numbers >= 0"),
    case("eps-nan", "evaluate @CKPT --eps nan", "--eps must be"),
    case("eps-infinite", "evaluate @CKPT --eps 4/255,1e999", "--eps must be finite numbers >= 0"),
    case("attack-two-radii", "attack @CKPT --eps 4/255,8/255", "jaxseg attack takes one radius"),
    case("step-size-negative", "attack @CKPT --attack pgd --step-size -1", "step_size must be finite and > 0"),
    case("step-size-zero", "evaluate @CKPT --attack pgd --step-size 0", "step_size must be finite and > 0"),
    case("step-size-text", "evaluate @CKPT --attack pgd --step-size big", "step_size must be finite and > 0"),
    case("iterations-zero", "evaluate @CKPT --iterations 0", "--iterations must be >= 1; got 0"),
    case("batch-size-negative", "evaluate @CKPT --batch-size -3", "--batch-size must be >= 1; got -3"),
    case("batch-size-text", "evaluate @CKPT --batch-size two", "invalid int value: 'two'"),
    case("num-examples-zero", "attack @CKPT --num-examples 0", "--num-examples must be >= 1"),
    case("image-size-zero", "evaluate --model {seg} --dataset synthetic_shapes --image-size 0 --out {out}",
         "--image-size must be >= 1"),
    case("norm-unknown", "evaluate @CKPT --norm l3", "unknown threat model norm 'l3'"),
    case("compute-dtype-unknown", "evaluate @CKPT --compute-dtype float17",
         "--compute-dtype must be a floating dtype: float32, bfloat16 or float16; got 'float17'"),
    case("compute-dtype-integer", "attack @CKPT --compute-dtype int32", "--compute-dtype must be a floating dtype"),
    case("attack-unknown", "evaluate @CKPT --attack fgsm", "argument --attack: invalid choice: 'fgsm'"),
    case("protocol-unknown", "evaluate @CKPT --protocol fast", "argument --protocol: invalid choice: 'fast'"),
    case("data-missing", "evaluate --model {seg} --out {out}", "give one of --dataset NAME or --arrays FILE.npz (or --config NAME"),
    case("class-weights-unknown", "evaluate @RANDOM --class-weights uniform",
         "class weights must be one of ('dataset', 'image') or a .json file; got 'uniform'"),
    case("class-weights-missing-file", "evaluate @RANDOM --class-weights {tmp}/absent.json", "absent.json does not exist"),
    case("class-weights-bad-json", "evaluate @RANDOM --class-weights {bad_json}", "is not valid JSON"),
    case("class-weights-wrong-length", "evaluate @CKPT --class-weights {short_weights}",
         "must be a list of 3 numbers (one per class)"),
    # ---- evaluate / attack: the model
    case("model-unknown", "evaluate @DATA --model no_such_model", "neither a checkpoint directory nor a registered model"),
    case("model-without-weights", "evaluate @DATA --model upernet_convnext_atto", "has no weights"),
    case("model-missing-directory", "attack @DATA --model {tmp}/runs/absent", "checkpoint directory {tmp}/runs/absent does not exist"),
    case("model-is-a-file", "evaluate @DATA --model {arrays}", "is a file; give a checkpoint directory"),
    case("model-random-classifier", "evaluate @DATA --model convnext_atto --random-init", "an image classifier"),
    # ---- evaluate / attack: the --arrays file
    case("arrays-missing", "evaluate --model {seg} --arrays {tmp}/absent.npz --out {out}", "absent.npz does not exist"),
    case("arrays-directory", "evaluate --model {seg} --arrays {tmp} --out {out}", "is a directory, not a .npz file"),
    case("arrays-empty-file", "evaluate --model {seg} --arrays {empty_npz} --out {out}", "empty.npz: the file is empty"),
    case("arrays-random-bytes", "evaluate --model {seg} --arrays {random_npz} --out {out}", "random.npz: not a .npz archive"),
    case("arrays-truncated", "evaluate --model {seg} --arrays {truncated_npz} --out {out}", "truncated.npz: not a .npz archive"),
    case("arrays-no-labels", "evaluate --model {seg} --arrays {no_labels_npz} --out {out}",
         "must contain arrays 'images' and 'labels'; missing ['labels']"),
    case("arrays-nan", "evaluate --model {seg} --arrays {nan_npz} --out {out}", "nan.npz: image values must be finite"),
    case("arrays-uint8", "attack --model {seg} --arrays {uint8_npz} --out {out}", "divide uint8 images by 255"),
    case("arrays-0-255", "evaluate --model {seg} --arrays {range_npz} --out {out}", "image values must lie in [0, 1]"),
    case("arrays-grey-images", "evaluate --model {seg} --arrays {grey_npz} --out {out}", "images must have shape (B, H, W, 3)"),
    case("arrays-no-images", "evaluate --model {seg} --arrays {zero_npz} --out {out}", "at least one image"),
    case("arrays-labels-shape", "evaluate --model {seg} --arrays {labels_shape_npz} --out {out}",
         "labels must have shape (N, H, W) = (2, 32, 32) to match the images; got (2, 16, 16)"),
    case("arrays-float-labels", "evaluate --model {seg} --arrays {float_labels_npz} --out {out}",
         "labels must be integer class indices (255 = ignored); got dtype float32"),
    case("arrays-negative-labels", "evaluate --model {seg} --arrays {negative_labels_npz} --out {out}",
         "labels must be class indices >= 0 (255 = ignored); found [-1]"),
    case("arrays-all-ignored", "evaluate --model {seg} --arrays {ignored_npz} --out {out}", "every label is 255"),
    case("labels-above-num-classes", "evaluate @RANDOM --num-classes 2", "labels go up to 2, more than --num-classes 2"),
    case("labels-above-model-classes", "evaluate --model {seg} --arrays {many_classes_npz} --out {out}",
         "labels go up to 5 but the model {seg} predicts 3 classes"),
    case("num-classes-not-the-model's", "evaluate @CKPT --num-classes 5", "--num-classes 5 but the model {seg} has 3 classes"),
    case("dataset-unknown", "evaluate --model {seg} --dataset imagenet --out {out}", "unknown dataset 'imagenet'"),
    case("dataset-classes-not-the-model's", "evaluate --model {seg} --dataset synthetic_shapes --out {out}",
         "the model {seg} has 3 classes but dataset synthetic_shapes has 6"),
    # ---- output paths
    case("out-is-a-file", "evaluate @RANDOM --out {arrays}", "--out {arrays} is a file, not a directory"),
    case("out-under-a-file", "attack @RANDOM --out {arrays}/results", "cannot be created: {arrays} is a file"),
    case("out-read-only", "evaluate @RANDOM --out {read_only}/results", "{read_only} is not writable", marks=(needs_non_root,)),
    case("out-sysfs", "evaluate @RANDOM --out /sys/jaxseg-out", "cannot be written",
         marks=(pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux sysfs"),)),
    # ---- damaged or foreign checkpoints
    case("checkpoint-truncated", "evaluate @DATA --model {truncated}", "truncated/variables: the checkpoint is damaged"),
    case("checkpoint-garbled", "attack @DATA --model {garbled}", "the checkpoint is damaged"),
    case("checkpoint-manifest-garbled", "evaluate @DATA --model {bad_manifest}", "the checkpoint is damaged or incomplete"),
    case("checkpoint-tree-metadata-garbled", "evaluate @DATA --model {bad_tree_metadata}", "the checkpoint is damaged"),
    case("checkpoint-metadata-not-json", "evaluate @DATA --model {bad_json_metadata}", "metadata.json: not valid JSON"),
    case("checkpoint-metadata-binary", "evaluate @DATA --model {binary_metadata}", "metadata.json: not valid JSON"),
    case("checkpoint-metadata-list", "evaluate @DATA --model {list_metadata}", "must be a JSON object with 'model'"),
    case("checkpoint-metadata-no-classes", "evaluate @DATA --model {no_classes_metadata}", "metadata lacks 'num_classes'"),
    case("checkpoint-metadata-zero-classes", "evaluate @DATA --model {zero_classes_metadata}",
         "'num_classes' must be a positive integer; got 0"),
    case("checkpoint-metadata-other-model", "evaluate @DATA --model {other_model}",
         "the checkpoint's metadata names model 'upernet_convnext_femto'"),
    case("checkpoint-metadata-other-classes", "attack @DATA --model {other_classes}", "mismatched parameters"),
    case("checkpoint-metadata-unknown-model", "evaluate @DATA --model {unknown_model}", "names a model jaxseg cannot build"),
    case("checkpoint-metadata-bad-option", "evaluate @DATA --model {bad_option}", "does not take option(s) ['colour']"),
    case("checkpoint-without-metadata", "evaluate @DATA --model {no_metadata}", "metadata.json is missing"),
    case("checkpoint-without-variables", "evaluate @DATA --model {no_variables}", "the checkpoint is incomplete: variables/ is missing"),
    case("checkpoint-empty-directory", "evaluate @DATA --model {empty_dir}", "is not a complete jaxseg variables checkpoint"),
    case("checkpoint-classifier-evaluate", "evaluate @DATA --model {classifier}", "holds 'convnext_atto', an image classifier"),
    case("checkpoint-classifier-attack", "attack @DATA --model {classifier}", "holds 'convnext_atto', an image classifier"),
    case("run-without-checkpoint", "evaluate @DATA --model {run_without_steps}", "no complete checkpoint in"),
    case("run-state-damaged", "evaluate @DATA --model {run_damaged}", "state: the checkpoint is damaged"),
    # ---- generate / inpaint / saliency: files
    case("target-empty", "generate --target {empty_png} @PAGRANDOM", "empty.png: the file is empty; expected a label-map PNG"),
    case("target-not-an-image", "generate --target {text_png} @PAGRANDOM", "text.png: not a readable image"),
    case("target-truncated", "generate --target {truncated_png} @PAGRANDOM", "truncated.png: not a readable image"),
    case("target-rgb", "generate --target {image} @PAGRANDOM", "a label map must be a single-channel PNG"),
    case("target-missing", "generate --target {tmp}/absent.png @PAGRANDOM", "no such file: {tmp}/absent.png"),
    case("target-directory", "generate --target {tmp} @PAGRANDOM", "is a directory, not a label-map PNG"),
    case("image-empty", "inpaint --image {empty_png} --mask {mask} --label {label} @PAGRANDOM", "empty.png: the file is empty"),
    case("mask-not-an-image", "inpaint --image {image} --mask {text_png} --label {label} @PAGRANDOM", "text.png: not a readable image"),
    case("label-truncated", "inpaint --image {image} --mask {mask} --label {truncated_png} @PAGRANDOM", "truncated.png: not a readable image"),
    case("mask-size", "inpaint --image {image} --mask {small_mask} --label {label} @PAGRANDOM", "the mask is 16x16 but the image is 32x32"),
    case("mask-selects-nothing", "inpaint --image {image} --mask {blank_mask} --label {label} @PAGRANDOM", "the mask selects no pixel"),
    case("saliency-image-not-an-image", "saliency --image {text_png} --class 1 @PAGRANDOM", "text.png: not a readable image"),
    case("saliency-region-empty", "saliency --image {image} --class 1 --region {empty_png} @PAGRANDOM", "the file is empty"),
    case("saliency-label-size", "saliency --image {image} --label {small_mask} @PAGRANDOM", "the label map is 16x16 but the image is 32x32"),
    # ---- generate / inpaint / saliency: arguments
    case("saliency-nothing-to-explain", "saliency --image {image} @PAGRANDOM", "give --class C"),
    case("saliency-class-negative", "saliency --image {image} --class -1 @PAGRANDOM", "--class must be a class index >= 0"),
    case("saliency-class-not-the-model's", "saliency --image {image} --class 7 @PAG", "--class 7 is not a class of the model, which has 3"),
    case("saliency-threshold", "saliency --image {image} --class 1 --threshold 2 @PAGRANDOM", "--threshold must lie in (0, 1)"),
    case("saliency-samples", "saliency --image {image} --class 1 --samples 0 @PAGRANDOM", "--samples must be >= 1"),
    case("saliency-method-unknown", "saliency --image {image} --class 1 --method lime @PAGRANDOM", "invalid choice: 'lime'"),
    case("target-labels-not-the-model's", "generate --target {many_classes_png} @PAG",
         "many_classes.png: label values must be class indices in [0, 3)"),
    case("generate-steps-zero", "generate --target {label} --steps 0 @PAGRANDOM", "--steps must be >= 1; got 0"),
    case("generate-eps-negative", "generate --target {label} --eps -1 @PAGRANDOM", "--eps must be finite and > 0"),
    case("generate-linf-without-eps", "generate --target {label} --norm linf @PAGRANDOM", "--norm linf needs --eps"),
    case("generate-mean-without-data", "generate --target {label} --start mean @PAGRANDOM", "--start mean needs --dataset NAME"),
    case("generate-unknown-dataset", "generate --target {label} --start class-gaussian --dataset imagenet @PAGRANDOM",
         "unknown dataset 'imagenet'"),
    case("generate-mean-colour", "generate --target {label} --start mean --mean-colour 0 128 255 @PAGRANDOM",
         "--mean-colour must be three numbers in [0, 1]"),
    case("inpaint-anchor-negative", "inpaint @INPAINT --anchor-weight -1 @PAGRANDOM", "--anchor-weight must be finite and >= 0"),
    case("pag-no-model", "saliency --image {image} --class 1 --out {out}", "give either --checkpoint DIR or --random-init"),
    case("pag-random-without-classes", "saliency --image {image} --class 1 --random-init --model upernet_convnext_atto --out {out}",
         "--random-init needs --model NAME and --num-classes K"),
    case("pag-random-classifier", "saliency --image {image} --class 1 --random-init --model convnext_atto --num-classes 3 --out {out}",
         "an image classifier"),
    case("pag-classifier-checkpoint", "saliency --image {image} --class 1 --checkpoint {classifier} --out {out}",
         "holds 'convnext_atto', an image classifier"),
    case("pag-damaged-checkpoint", "inpaint @INPAINT --checkpoint {truncated} --out {out}", "the checkpoint is damaged"),
    case("pag-metadata-other-model", "generate --target {label} --checkpoint {other_model} --out {out}", "mismatched parameters"),
    case("pag-out-under-a-file", "saliency --image {image} --class 1 @PAGRANDOM --out {image}/results", "cannot be created"),
    # ---- convert
    case("convert-random-bytes", "convert {random_pth} --out {out}", "random.pth: could not read it as a PyTorch checkpoint",
         marks=(needs_torch,)),
    case("convert-text", "convert {text_pth} --out {out}", "text.pth: could not read it as a PyTorch checkpoint", marks=(needs_torch,)),
    case("convert-empty", "convert {empty_pth} --out {out}", "empty.pth: the file is empty"),
    case("convert-not-a-state-dict", "convert {list_pth} --out {out}", "expected a state dict", marks=(needs_torch,)),
    case("convert-code-pickle", "convert {code_pth} --out {out}", "loading it would need arbitrary code", marks=(needs_torch,)),
    case("convert-random-safetensors", "convert {random_safetensors} --out {out}", "could not read it as safetensors"),
    case("convert-unknown-keys", "convert {unknown_safetensors} --out {out}", "cannot tell which model family"),
    case("convert-unknown-family", "convert {unknown_safetensors} --family keras --out {out}", "unknown family 'keras'"),
    case("convert-missing", "convert {tmp}/absent.pth --out {out}", "absent.pth does not exist"),
    case("convert-directory", "convert {tmp} --out {out}", "is a directory; give the PyTorch checkpoint file"),
    case("convert-suffix", "convert {arrays} --out {out}", "unsupported checkpoint file arrays.npz"),
    case("convert-out-not-empty", "convert {random_safetensors} --out {tmp}", "must be a new or empty directory"),
    case("convert-out-under-a-file", "convert {random_safetensors} --out {arrays}/converted", "cannot be created: {arrays} is a file"),
    case("quickstart-workdir-under-a-file", "quickstart --workdir {arrays}/qs", "--workdir {arrays}/qs cannot be created"),
    # ---- data and config
    case("data-show-unknown", "data show imagenet", "unknown dataset 'imagenet'"),
    case("data-show-num-zero", "data show synthetic_shapes --num 0", "--num must be >= 1"),
    case("data-show-out-under-a-file", "data show synthetic_shapes --out {arrays}/grid.png", "cannot be created: {arrays} is a file"),
    case("data-stats-json-is-a-directory", "data stats synthetic_shapes --json {tmp}", "--json {tmp} is a directory"),
    case("data-prepare-unknown", "data prepare imagenet", "unknown dataset 'imagenet'"),
    case("config-unknown", "config no_such_config", "no config 'no_such_config'"),
]


# --------------------------------------------------------------------------------------------- files


def _abstract_variables(name: str, num_classes: int) -> dict:
    module = models.create_model(name, num_classes)
    return jax.eval_shape(lambda: models.init_variables(module, jax.random.key(0), (1, SIZE, SIZE, 3)))


def _random_variables(name: str, num_classes: int, seed: int = 0) -> dict:
    """Random variables of the registered model (shapes from the library's initialiser, no compilation)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda leaf: rng.normal(0, 0.02, leaf.shape).astype(leaf.dtype),
                                  _abstract_variables(name, num_classes))


def _largest_file(directory: Path) -> Path:
    return max((p for p in directory.rglob("*") if p.is_file() and p.parent.name == "d"), key=lambda p: p.stat().st_size)


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _write_metadata(directory: Path, text: str | bytes) -> None:
    path = directory / "metadata.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


def _save_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_inputs")
    f: dict[str, Path] = {"tmp": root}
    rng = np.random.default_rng(0)

    # --- a good checkpoint, a classifier, a training run, and damaged or foreign copies
    seg = checkpoint.save_variables(root / "seg", _random_variables("upernet_convnext_atto", 3),
                                    {"model": "upernet_convnext_atto", "num_classes": 3, "options": {}})
    f["seg"] = seg
    f["classifier"] = checkpoint.save_variables(root / "classifier", _random_variables("convnext_atto", 5),
                                                {"model": "convnext_atto", "num_classes": 5, "options": {}})
    f["truncated"] = _copy(seg, root / "truncated")
    largest = _largest_file(f["truncated"] / "variables")
    largest.write_bytes(largest.read_bytes()[:100])
    f["garbled"] = _copy(seg, root / "garbled")
    largest = _largest_file(f["garbled"] / "variables")
    data = bytearray(largest.read_bytes())
    data[len(data) // 4: len(data) // 4 + 512] = rng.bytes(512)
    largest.write_bytes(bytes(data))
    f["bad_manifest"] = _copy(seg, root / "bad_manifest")
    (f["bad_manifest"] / "variables" / "manifest.ocdbt").write_bytes(b"not a manifest")
    f["bad_tree_metadata"] = _copy(seg, root / "bad_tree_metadata")
    (f["bad_tree_metadata"] / "variables" / "_METADATA").write_text("{garbled")
    for name, text in (("bad_json_metadata", '{"model": "upernet_convnext_atto", '),
                       ("binary_metadata", b"\xff\xfe\x00garbage"),
                       ("list_metadata", '["upernet_convnext_atto", 3]'),
                       ("no_classes_metadata", '{"model": "upernet_convnext_atto"}'),
                       ("zero_classes_metadata", '{"model": "upernet_convnext_atto", "num_classes": 0}'),
                       ("other_model", '{"model": "upernet_convnext_femto", "num_classes": 3}'),
                       ("other_classes", '{"model": "upernet_convnext_atto", "num_classes": 7}'),
                       ("unknown_model", '{"model": "upernet_convnext_zeta", "num_classes": 3}'),
                       ("bad_option", '{"model": "upernet_convnext_atto", "num_classes": 3, "options": {"colour": 1}}')):
        f[name] = _copy(seg, root / name)
        _write_metadata(f[name], text)
    f["no_metadata"] = _copy(seg, root / "no_metadata")
    (f["no_metadata"] / "metadata.json").unlink()
    f["no_variables"] = _copy(seg, root / "no_variables")
    shutil.rmtree(f["no_variables"] / "variables")
    (root / "empty_dir").mkdir()
    f["empty_dir"] = root / "empty_dir"
    f["run"] = _training_run(root / "run", checkpoint.load_variables(seg)[0])
    f["run_damaged"] = _copy(f["run"], root / "run_damaged")
    for data_file in (f["run_damaged"] / "checkpoints" / "1" / "state").rglob("d/*"):
        data_file.write_bytes(data_file.read_bytes()[:100])
    (root / "run_without_steps" / "checkpoints").mkdir(parents=True)
    f["run_without_steps"] = root / "run_without_steps"

    # --- --arrays files
    images = rng.uniform(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    labels = np.zeros((2, SIZE, SIZE), np.int32)
    labels[:, 8:16] = 1
    labels[:, 20:] = 2
    f["arrays"] = _save_npz(root / "arrays.npz", images=images, labels=labels)
    (root / "empty.npz").write_bytes(b"")
    f["empty_npz"] = root / "empty.npz"
    (root / "random.npz").write_bytes(rng.bytes(4000))
    f["random_npz"] = root / "random.npz"
    (root / "truncated.npz").write_bytes(f["arrays"].read_bytes()[:3000])
    f["truncated_npz"] = root / "truncated.npz"
    nan = images.copy()
    nan[0, 1, 2, 0] = np.nan
    many = labels.copy()
    many[0, :4] = 5
    negative = labels.copy()
    negative[1, 0, 0] = -1
    for name, arrays in (("no_labels", dict(images=images)),
                         ("nan", dict(images=nan, labels=labels)),
                         ("uint8", dict(images=(images * 255).astype(np.uint8), labels=labels)),
                         ("range", dict(images=images * 255, labels=labels)),
                         ("grey", dict(images=images[..., 0], labels=labels)),
                         ("zero", dict(images=images[:0], labels=labels[:0])),
                         ("labels_shape", dict(images=images, labels=labels[:, :16, :16])),
                         ("float_labels", dict(images=images, labels=labels.astype(np.float32))),
                         ("negative_labels", dict(images=images, labels=negative)),
                         ("ignored", dict(images=images, labels=np.full_like(labels, 255))),
                         ("many_classes", dict(images=images, labels=many))):
        f[f"{name}_npz"] = _save_npz(root / f"{name}.npz", **arrays)
    (root / "bad.json").write_text("{")
    f["bad_json"] = root / "bad.json"
    (root / "short.json").write_text("[0.5, 0.5]")
    f["short_weights"] = root / "short.json"

    # --- images
    Image.fromarray((images[0] * 255).astype(np.uint8)).save(root / "image.png")
    f["image"] = root / "image.png"
    Image.fromarray(labels[0].astype(np.uint8)).save(root / "label.png")
    f["label"] = root / "label.png"
    Image.fromarray(many[0].astype(np.uint8)).save(root / "many_classes.png")
    f["many_classes_png"] = root / "many_classes.png"
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[10:18, 12:20] = 255
    Image.fromarray(mask).save(root / "mask.png")
    f["mask"] = root / "mask.png"
    Image.fromarray(mask[:16, :16]).save(root / "small_mask.png")
    f["small_mask"] = root / "small_mask.png"
    Image.fromarray(np.zeros_like(mask)).save(root / "blank_mask.png")
    f["blank_mask"] = root / "blank_mask.png"
    (root / "empty.png").write_bytes(b"")
    f["empty_png"] = root / "empty.png"
    (root / "text.png").write_text("this is not an image\n")
    f["text_png"] = root / "text.png"
    (root / "truncated.png").write_bytes(f["label"].read_bytes()[:60])
    f["truncated_png"] = root / "truncated.png"

    # --- PyTorch / safetensors files
    (root / "random.pth").write_bytes(np.random.default_rng(1).bytes(5000))
    f["random_pth"] = root / "random.pth"
    (root / "text.pth").write_text("hello world\n" * 10)
    f["text_pth"] = root / "text.pth"
    (root / "empty.pth").write_bytes(b"")
    f["empty_pth"] = root / "empty.pth"
    (root / "random.safetensors").write_bytes(np.random.default_rng(2).bytes(5000))
    f["random_safetensors"] = root / "random.safetensors"
    from safetensors.numpy import save_file

    save_file({"encoder.weight": np.zeros((4, 4), np.float32)}, str(root / "unknown.safetensors"))
    f["unknown_safetensors"] = root / "unknown.safetensors"
    if HAS_TORCH:
        import torch

        torch.save([1, 2, 3], root / "list.pth")
        f["list_pth"] = root / "list.pth"
        torch.save({"weight": torch.zeros(3), "payload": _RunsCode(root / "payload_ran")}, root / "code.pth")
        f["code_pth"] = root / "code.pth"

    # --- a read-only directory
    (root / "read_only").mkdir()
    (root / "read_only").chmod(0o555)
    f["read_only"] = root / "read_only"
    yield f
    (root / "read_only").chmod(0o755)
    assert not (root / "payload_ran").exists(), "unpickling ran code from a refused file"


class _RunsCode:
    """Unpickling this creates ``path`` (the refused-pickle case checks that it never happens)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _training_run(workdir: Path, variables: dict) -> Path:
    """A one-step training run directory (state with optimiser, config) saved by the training checkpointer."""
    from jaxseg.config import default_config
    from jaxseg.train.checkpoints import TrainingCheckpoints
    from jaxseg.train.state import create_optimizer, create_train_state

    config = default_config()
    config.model.name, config.model.num_classes = "upernet_convnext_atto", 3
    state = create_train_state(jax.tree_util.tree_map(jnp.asarray, variables), create_optimizer(config.train))
    manager = TrainingCheckpoints(workdir)
    manager.save(1, state, config=config, force=True)
    manager.wait()
    manager.close()
    return workdir


# --------------------------------------------------------------------------------------------- the CLI


def expand(argv: str, files: dict[str, Path], out: Path) -> list[str]:
    paths = {key: str(value) for key, value in files.items()} | {"out": str(out)}
    words = []
    for word in argv.split(" "):
        if word.startswith("@"):
            words += GROUPS[word[1:]].split(" ")
        elif word:
            words.append(word)
        else:
            continue
    return [word.format(**paths) for word in words]


def run_cli(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        return exit_.code


@pytest.mark.parametrize("line", CLI_CASES)
def test_cli_reports_bad_input(line: Case, files, tmp_path, capsys):
    argv = expand(line.argv, files, tmp_path / "out")
    code = run_cli(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out, err
    assert code == line.code, err
    fragment = line.fragment.format(**{key: str(value) for key, value in files.items()})
    assert fragment in err, err
    assert err.count(": error: ") == 1, err  # one message (argparse's usage line aside)
    assert not (tmp_path / "out").exists() or line.id.startswith("convert-out"), "a failed command wrote its output"


def test_debug_flag_and_environment_show_the_traceback(files, tmp_path, capsys, monkeypatch):
    argv = expand("evaluate @CKPT --eps four", files, tmp_path / "out")
    assert run_cli(argv) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert run_cli(["--debug", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "--eps must be comma-separated numbers" in err.splitlines()[-1]
    assert run_cli([*argv, "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("JAXSEG_DEBUG", "1")
    assert run_cli(argv) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("JAXSEG_DEBUG", "0")
    assert run_cli(argv) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_unexpected_errors_still_raise(monkeypatch):
    """A bug (not a bad input) is not dressed up as a message: its traceback is shown and the exit code is 1."""

    def broken():
        raise KeyError("a bug")

    monkeypatch.setattr(models, "list_models", broken)  # what `jaxseg models` calls
    with pytest.raises(KeyError):
        cli.main(["models"])
    assert cli.exit_code(KeyError("x")) is None and cli.exit_code(RuntimeError("x")) is None
    assert cli.exit_code(ValueError("x")) == 2 and cli.exit_code(PermissionError(13, "denied", "/x")) == 2
    assert cli.exit_code(OSError(28, "No space left on device")) == 1


def test_good_checkpoints_still_load(files):
    """The checks do not refuse good checkpoints: variables, and a training run's model variables only."""
    module, variables, metadata = checkpoint.load_model(files["seg"], segmentation=True)
    assert metadata["model"] == "upernet_convnext_atto" and set(variables) == {"params", "batch_stats"}
    run_variables, run_metadata = checkpoint.load_variables(files["run"])
    assert set(run_variables) == {"params", "batch_stats"} and run_metadata["step"] == 1
    jax.tree_util.tree_map(np.testing.assert_array_equal, run_variables, variables)
    classifier, _ = checkpoint.load_variables(files["classifier"])  # a classifier loads as variables (PIR-AT init)
    assert "params" in classifier


# --------------------------------------------------------------------------------------------- the API


def _tiny_logits(images):
    """A 3-class per-pixel 'model' (no compilation worth the name)."""
    return images * 4.0


IMAGES = np.full((1, 8, 8, 3), 0.5, np.float32)
LABELS = np.zeros((1, 8, 8), np.int32)
KEY = jax.random.PRNGKey(0)


def _pgd(**changes):
    arguments = dict(images=IMAGES, labels=LABELS, eps=4 / 255, iterations=1)
    arguments.update(changes)
    return attacks.pgd(_tiny_logits, arguments.pop("images"), arguments.pop("labels"), KEY, **arguments)


@functools.lru_cache(maxsize=1)
def _femto_variables():
    shapes = _abstract_variables("upernet_convnext_femto", 3)
    return {k: v for k, v in shapes.items() if k in ("params", "batch_stats")}


def _femto_target(f):
    return _femto_variables()


def api(id_, call, error, fragment, marks=()):
    return pytest.param(call, error, fragment, id=id_, marks=marks)


API_CASES = [
    # checkpoints
    api("load-variables-missing", lambda f: checkpoint.load_variables(f["tmp"] / "absent"), FileNotFoundError, "does not exist"),
    api("load-variables-file", lambda f: checkpoint.load_variables(f["arrays"]), NotADirectoryError, "is a file"),
    api("load-variables-truncated", lambda f: checkpoint.load_variables(f["truncated"]), checkpoint.UnreadableFileError,
        "the checkpoint is damaged"),
    api("load-variables-garbled", lambda f: checkpoint.load_variables(f["garbled"]), checkpoint.UnreadableFileError, "damaged"),
    api("load-variables-other-target", lambda f: checkpoint.load_variables(f["seg"], target=_femto_target(f)),
        checkpoint.ModelMismatchError, "was saved from a different model"),
    api("load-run-other-target", lambda f: checkpoint.load_variables(f["run"], target=_femto_target(f)),
        checkpoint.ModelMismatchError, "was saved from a different model"),
    api("read-metadata-not-json", lambda f: checkpoint.read_metadata(f["bad_json_metadata"]), checkpoint.UnreadableFileError,
        "not valid JSON"),
    api("load-model-other-model", lambda f: checkpoint.load_model(f["other_model"]), checkpoint.ModelMismatchError,
        "metadata names model 'upernet_convnext_femto'"),
    api("load-model-classifier", lambda f: checkpoint.load_model(f["classifier"], segmentation=True), ValueError,
        "an image classifier"),
    api("save-variables-no-model", lambda f: checkpoint.save_variables(f["tmp"] / "new", {}, {"num_classes": 3}), ValueError,
        "must include ['model']"),
    api("save-variables-exists", lambda f: checkpoint.save_variables(f["seg"], {}, {"model": "m", "num_classes": 3}),
        FileExistsError, "already exists"),
    api("open-model-classifier", lambda f: checkpoint.open_model(str(f["classifier"])), ValueError, "an image classifier"),
    api("open-model-damaged", lambda f: checkpoint.open_model(str(f["truncated"])), checkpoint.UnreadableFileError,
        "damaged"),
    api("open-model-random-classifier",
        lambda f: checkpoint.open_model("convnext_atto", random_init=True, num_classes=3), ValueError, "an image classifier"),
    api("pag-load-model-classifier", lambda f: pag_io.load_model(checkpoint=f["classifier"]), ValueError, "an image classifier"),
    api("pag-load-model-metadata", lambda f: pag_io.load_model(checkpoint=f["no_classes_metadata"]),
        checkpoint.UnreadableFileError, "lacks 'num_classes'"),
    # files
    api("read-image-empty", lambda f: pag_io.read_image_png(f["empty_png"]), checkpoint.UnreadableFileError, "the file is empty"),
    api("read-mask-not-an-image", lambda f: pag_io.read_mask_png(f["text_png"]), checkpoint.UnreadableFileError,
        "not a readable image"),
    api("read-label-rgb", lambda f: pag_io.read_label_png(f["image"]), ValueError, "single-channel PNG"),
    api("read-image-missing", lambda f: pag_io.read_image_png(f["tmp"] / "absent.png"), FileNotFoundError, "no such file"),
    api("label-values", lambda f: pag_io.check_label_values(np.full((1, 4, 4), 9), 3, "map.png"), ValueError,
        "map.png: label values must be class indices in [0, 3)"),
    api("load-state-dict-random", lambda f: _load_state_dict(f["random_pth"]), checkpoint.UnreadableFileError,
        "could not read it as a PyTorch checkpoint", (needs_torch,)),
    api("load-state-dict-empty", lambda f: _load_state_dict(f["empty_pth"]), checkpoint.UnreadableFileError,
        "the file is empty"),
    api("load-state-dict-directory", lambda f: _load_state_dict(f["tmp"]), IsADirectoryError, "is a directory"),
    api("load-state-dict-random-safetensors", lambda f: _load_state_dict(f["random_safetensors"]),
        checkpoint.UnreadableFileError, "truncated or corrupt"),
    api("load-arrays-nan", lambda f: evaluate.load_arrays(f["nan_npz"]), ValueError, "image values must be finite"),
    api("load-arrays-missing", lambda f: evaluate.load_arrays(f["tmp"] / "absent.npz"), FileNotFoundError, "does not exist"),
    # evaluation and attacks
    api("array-batches-shapes", lambda f: next(evaluate.array_batches(IMAGES, LABELS[:, :4], 1)), ValueError,
        "arrays must be images (N, H, W, 3) and labels (N, H, W)"),
    api("evaluate-unknown-attack", lambda f: evaluate.evaluate(_tiny_logits, [], attack="fgsm"), ValueError,
        "unknown attack 'fgsm'"),
    api("evaluate-negative-eps", lambda f: evaluate.evaluate(_tiny_logits, [], eps=[-1.0]), ValueError,
        "eps must be a non-empty list of finite radii >= 0"),
    api("evaluate-no-examples", lambda f: evaluate.evaluate(_tiny_logits, [], attack="pgd"), ValueError,
        "evaluate got no valid examples"),
    api("attack-images-shape", lambda f: _pgd(images=IMAGES[0]), ValueError, "images must be a float (B, H, W, C) array"),
    api("attack-images-uint8", lambda f: _pgd(images=(IMAGES * 255).astype(np.uint8)), ValueError, "float"),
    api("attack-images-nan", lambda f: _pgd(images=np.full_like(IMAGES, np.nan)), ValueError, "must be finite"),
    api("attack-images-range", lambda f: _pgd(images=IMAGES * 255), ValueError, "must lie in [0, 1]"),
    api("attack-labels-shape", lambda f: _pgd(labels=LABELS[:, :4]), ValueError, "labels must have shape (B, H, W) = (1, 8, 8)"),
    api("attack-labels-float", lambda f: _pgd(labels=LABELS.astype(np.float32)), ValueError, "labels must be integers"),
    api("attack-labels-range", lambda f: _pgd(labels=np.full_like(LABELS, 7)), ValueError, "labels must lie in [0, 3)"),
    api("attack-norm", lambda f: _pgd(norm="l3"), ValueError, "unknown threat model norm 'l3'"),
    api("attack-eps", lambda f: _pgd(eps=float("nan")), ValueError, "eps must be finite and >= 0"),
    api("attack-step-size", lambda f: _pgd(step_size=-1.0), ValueError, "step_size must be finite and > 0"),
    api("attack-iterations", lambda f: _pgd(iterations=0), ValueError, "iterations must be a positive integer"),
    api("attack-loss", lambda f: _pgd(loss="hinge"), ValueError, "unknown attack loss 'hinge'"),
    api("attack-compute-dtype", lambda f: _pgd(compute_dtype="int32"), ValueError, "compute_dtype must be a floating dtype"),
    api("attack-class-weights", lambda f: attacks.apgd(_tiny_logits, IMAGES, LABELS, KEY, eps=4 / 255, iterations=1,
                                                       loss="mask-ce-bal", class_weights=np.ones(5, np.float32)),
        ValueError, "class_weights must have 3 entries"),
    api("generate-iterations", lambda f: pag_generate.generate(_tiny_logits, LABELS, IMAGES, iterations=0), ValueError,
        "iterations must be a positive integer"),
    # models and data
    api("create-model-unknown", lambda f: models.create_model("resnet18", 3), ValueError, "unknown model 'resnet18'"),
    api("create-model-classes", lambda f: models.create_model("upernet_convnext_atto", 0), ValueError,
        "num_classes must be a positive integer"),
    api("dataset-info-unknown", lambda f: __import__("jaxseg.data", fromlist=["dataset_info"]).dataset_info("imagenet"),
        ValueError, "unknown dataset 'imagenet'"),
]


def _load_state_dict(path):
    from jaxseg.convert.common import load_state_dict

    return load_state_dict(path)


@pytest.mark.parametrize("call, error, fragment", API_CASES)
def test_api_reports_bad_input(call, error, fragment, files, capsys):
    with pytest.raises(error) as raised:
        call(files)
    assert fragment in str(raised.value)
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out, err


def test_the_contract_is_documented_case_by_case():
    """At least 60 cases, one line each, with unique names."""
    ids = [param.id for param in CLI_CASES + API_CASES]
    assert len(ids) >= 60 and len(ids) == len(set(ids))
