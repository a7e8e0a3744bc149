"""Preparing datasets into ArrayRecord files with TFDS, and opening their splits for random access."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pathlib
import re

import tensorflow_datasets as tfds

from jaxseg.data.builders import BUILDERS
from jaxseg.data.builders.synthetic_shapes import synthetic_config
from jaxseg.data.decode import require_paths
from jaxseg.data.info import base_name, dataset_info

DATA_DIR_ENV = "JAXSEG_DATA_DIR"
logger = logging.getLogger(__name__)
FILE_FORMAT = "array_record"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> str:
    """``data_dir`` if given, else ``$JAXSEG_DATA_DIR``, else ``~/tensorflow_datasets``."""
    if data_dir:
        return os.path.expanduser(os.fspath(data_dir))
    return os.path.expanduser(os.environ.get(DATA_DIR_ENV) or "~/tensorflow_datasets")


def resolve_name(name: str, **builder_options) -> str:
    """The name to read a dataset prepared with ``builder_options`` by (``synthetic_shapes/96px`` …).

    Only ``synthetic_shapes`` takes options: ``image_size``, ``num_train``, ``num_validation``,
    ``num_test``, ``seed``.
    """
    base = base_name(name)
    if not builder_options:
        return name
    if base != "synthetic_shapes":
        raise ValueError(f"{base} takes no builder options, got {sorted(builder_options)}")
    if "/" in name:
        raise ValueError(f"give either a config in the name ({name}) or builder options, not both")
    allowed = {"image_size", "num_train", "num_validation", "num_test", "seed"}
    unknown = set(builder_options) - allowed
    if unknown:
        raise ValueError(f"synthetic_shapes: unknown option(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    return f"{base}/{synthetic_config(**builder_options).name}"


def _make_builder(name: str, data_dir: str, **builder_options) -> tfds.core.DatasetBuilder:
    """The builder class of ``name`` with its config: a predefined one by name, else one from the options."""
    base = base_name(name)
    builder_class = BUILDERS[base]
    resolved = resolve_name(name, **builder_options)
    config = None
    if "/" in resolved:
        config = resolved.split("/", 1)[1]
        known = [c.name for c in builder_class.BUILDER_CONFIGS]
        if config not in known:
            if not builder_options:
                hint = " (other sizes: pass image_size=...)" if base == "synthetic_shapes" else ""
                raise ValueError(f"{base} has no config {config!r}; known: {known or 'none'}{hint}")
            config = synthetic_config(**builder_options)
    return builder_class(data_dir=data_dir, config=config, file_format=FILE_FORMAT)


def prepare(name: str, *, data_dir=None, manual_dir=None, **builder_options) -> pathlib.Path:
    """Writes dataset ``name`` as ArrayRecord files under ``data_dir`` and returns their directory.

    Real datasets read the extracted official archives from ``manual_dir`` (nothing is downloaded);
    ``synthetic_shapes`` needs none and takes ``builder_options`` (see ``resolve_name``). TFDS writes into
    a temporary ``incomplete.*`` directory and renames it when every split is complete, so a failed
    prepare leaves nothing that a later prepare or read would trust. Preparing an existing dataset is a
    no-op. Raises FileNotFoundError for a missing/incomplete manual directory (listing the expected
    paths), ValueError for unknown names or options and for undecodable files (naming the file).
    """
    info = dataset_info(name)
    data_dir = resolve_data_dir(data_dir)
    builder = _make_builder(name, data_dir, **builder_options)
    if info.needs_manual_dir:
        if manual_dir is None:
            raise ValueError(
                f"{info.name} is prepared from the official archives: pass manual_dir, a directory holding:\n  "
                + "\n  ".join(builder.EXPECTED_PATHS)
            )
        manual_dir = os.path.expanduser(os.fspath(manual_dir))
        require_paths(manual_dir, builder.EXPECTED_PATHS, info.name)
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    if not (pathlib.Path(os.fspath(builder.data_dir)) / "dataset_info.json").is_file():
        source = "generating it (built-in data)" if not info.needs_manual_dir else f"reading the archives in {manual_dir}"
        logger.warning("preparing %s in %s: %s; nothing is downloaded", resolve_name(name, **builder_options),
                       builder.data_dir, source)
    # TFDS prints "Downloading and preparing dataset <size>" to stdout even when it downloads nothing; the line
    # above says what happens instead.
    with contextlib.redirect_stdout(io.StringIO()):
        builder.download_and_prepare(download_config=download_config, file_format=FILE_FORMAT)
    return pathlib.Path(os.fspath(builder.data_dir))


def prepared_directory(name: str, data_dir=None) -> pathlib.Path:
    """Where ``prepare`` writes ``name``: ``DATA_DIR/NAME[/CONFIG]/VERSION`` (configs: synthetic_shapes only)."""
    base = base_name(name)
    builder_class = BUILDERS[base]
    parts = [resolve_data_dir(data_dir), base]
    if builder_class.BUILDER_CONFIGS:
        parts.append(name.split("/", 1)[1] if "/" in name else builder_class.BUILDER_CONFIGS[0].name)
    elif "/" in name:
        raise ValueError(f"{base} has no configs, got {name!r}")
    return pathlib.Path(*parts, str(builder_class.VERSION))


def default_image_size(name: str) -> int:
    """A dataset's evaluation size under the ``standard`` protocol: ``DatasetInfo.eval_image_size``, or for
    ``synthetic_shapes`` the image size of its config (``synthetic_shapes/32px`` → 32; no config: 64)."""
    info = dataset_info(name)
    if info.eval_image_size is not None:
        return info.eval_image_size
    configs = {config.name: config for config in BUILDERS[info.name].BUILDER_CONFIGS}
    config_name = name.split("/", 1)[1] if "/" in name else BUILDERS[info.name].BUILDER_CONFIGS[0].name
    if config_name in configs:
        return int(configs[config_name].image_size)
    size = re.match(r"(\d+)px", config_name)  # synthetic_config names start with the size: 40px, 16px-n12-4-2-seed0
    if size is None:
        raise ValueError(f"cannot tell the image size of {name!r}; pass it explicitly")
    return int(size.group(1))


def open_split(name: str, split: str, data_dir=None):
    """Random-access source of one prepared split: ``len(source)``, ``source[i]`` → example dict.

    An example is ``{"image": uint8 (H, W, 3), "label": uint8 (H, W), "id": bytes}``. The order is the
    one TFDS wrote (a fixed shuffle of the examples). The source is TFDS's ArrayRecord data source (what
    ``tfds.data_source`` returns), built from the prepared directory's own ``dataset_info.json`` and
    ``features.json``, so it depends neither on TFDS's name registry nor on TensorFlow. Built-in generated
    data in a predefined config (``synthetic_shapes``, ``synthetic_shapes/32px`` ...) is prepared on first
    use; other configs are prepared with their options first (``prepare(name, image_size=...)``). Raises FileNotFoundError when a real dataset is not prepared in ``data_dir`` and ValueError
    for an unknown split.
    """
    directory = prepared_directory(name, data_dir)
    predefined = [config.name for config in BUILDERS[base_name(name)].BUILDER_CONFIGS]
    if not (directory / "dataset_info.json").is_file() and directory.parent.name in predefined:
        prepare(name, data_dir=data_dir)  # built-in data is generated on first use
    if not (directory / "dataset_info.json").is_file():
        base = base_name(name)
        raise FileNotFoundError(
            f"dataset {name} is not prepared in {resolve_data_dir(data_dir)} (no {directory}); run "
            f"`jaxseg data prepare {base}`" + ("" if base == "synthetic_shapes" else " --manual-dir DIR")
        )
    builder = tfds.builder_from_directory(os.fspath(directory))
    if split not in builder.info.splits:
        raise ValueError(f"{name} has no split {split!r}; splits: {sorted(builder.info.splits)}")
    return builder.as_data_source(split=split)
