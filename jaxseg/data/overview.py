"""``jaxseg data prepare / show / stats`` as library calls: prepare a dataset, look at a prepared split (an
example grid), and describe it (class frequencies with the ``mask-ce-bal`` class weights that ``jaxseg evaluate``
uses). The command-level functions return the lines the command prints."""

from __future__ import annotations

from pathlib import Path

from jaxseg import arguments
from jaxseg.data.info import dataset_info
from jaxseg.data.loss_weights import dataset_class_weights
from jaxseg.data.stats import split_statistics
from jaxseg.data.storage import open_split, prepare, resolve_name
from jaxseg.data.visualize import save_example_grid


def prepare_split(name: str, *, manual_dir=None, image_size: int | None = None, data_dir=None) -> list[str]:
    """Prepare ``name`` (``jaxseg.data.prepare``; ``image_size`` for ``synthetic_shapes`` only); returns the line
    saying where."""
    options = {} if image_size is None else {"image_size": image_size}
    resolved = resolve_name(name, **options)  # an unknown name or option fails before anything is written
    return [f"prepared {resolved} in {prepare(name, data_dir=data_dir, manual_dir=manual_dir, **options)}"]


def show_examples(name: str, *, split: str | None = None, out: str | None = None, num: int = 8,
                  data_dir=None) -> list[str]:
    """Write the first ``num`` examples of ``split`` (default: the evaluation split) with their coloured label
    maps as one PNG grid at ``out`` (default ``NAME-SPLIT.png``); returns the line saying what was written."""
    info = dataset_info(name)
    split = split or info.eval_split
    arguments.check_at_least({"--num": num})
    out = out or f"{name.replace('/', '-')}-{split}.png"
    arguments.check_output_file(out, "--out")
    source = open_split(name, split, data_dir)
    examples = [source[i] for i in range(min(num, len(source)))]
    save_example_grid([e["image"] for e in examples], [e["label"] for e in examples], info.palette, out,
                      titles=[bytes(e["id"]).decode() for e in examples])
    return [f"wrote {len(examples)} examples of {name} {split} to {out}"]


def describe_split(name: str, *, split: str | None = None, num_examples: int = 0, json_path: str | None = None,
                   data_dir=None) -> dict:
    """Example count, sizes, pixel counts and frequencies per class of ``split`` (default: the training split;
    ``num_examples`` > 0 counts only the first ones) and the class weights ``jaxseg evaluate`` uses with their
    source. Also written to ``json_path`` when given."""
    import json

    info = dataset_info(name)
    split = split or info.train_split
    if num_examples < 0:
        raise ValueError(f"--num-examples must be >= 0 (0: all); got {num_examples}")
    if json_path:
        arguments.check_output_file(json_path, "--json")
    stats = split_statistics(name, split, data_dir=data_dir, num_examples=num_examples)
    weights = dataset_class_weights(name, data_dir)
    summary = {**stats.to_json_dict(),
               "class_weights": {c: float(w) for c, w in zip(info.class_names, weights.values)},
               "class_weights_source": weights.source}
    if json_path:
        Path(json_path).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def format_description(summary: dict) -> str:
    """``describe_split``'s result as the text ``jaxseg data stats`` prints: totals, then one row per class."""
    lines = [
        f"{summary['name']} {summary['split']}: {summary['num_examples']} examples, sizes "
        f"{tuple(summary['min_size'])} to {tuple(summary['max_size'])} (H, W)",
        f"ignored pixels: {summary['ignored_pixels']}, unknown label values: {summary['unknown_pixels']}",
        f"mask-ce-bal class weights (used by jaxseg evaluate): {summary['class_weights_source']}",
        f"{'class':<24} {'pixels':>14} {'frequency':>10} {'weight':>10}",
    ]
    for name in summary["pixel_counts"]:
        lines.append(f"{name:<24} {summary['pixel_counts'][name]:>14} {summary['frequencies'][name]:>10.4f} "
                     f"{summary['class_weights'][name]:>10.4g}")
    return "\n".join(lines)


def describe_split_text(name: str, *, split: str | None = None, num_examples: int = 0, json_path: str | None = None,
                        data_dir=None) -> list[str]:
    """``jaxseg data stats``: ``describe_split`` as the lines the command prints."""
    summary = describe_split(name, split=split, num_examples=num_examples, json_path=json_path, data_dir=data_dir)
    return [format_description(summary)] + ([f"wrote {json_path}"] if json_path else [])
