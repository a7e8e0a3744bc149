"""File-to-file PAG runs behind ``jaxseg generate`` / ``inpaint`` / ``saliency``: read the PNG inputs and the
model, run the library function, write a figure grid (PNG), the result image and a JSON of numbers to ``out``.

Each run checks every argument it can before reading a file or building a model (``jaxseg.arguments``), reports
its stages to ``make_bar`` (``jaxseg.progress``) and returns the numbers it wrote, with a one-line ``summary``.
Parameter names are those of the command's options (``step_size`` is ``--step-size``), so messages name the
options. Nothing here prints. A training work directory as ``checkpoint`` needs ``jaxseg.train`` imported (the
command line does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxseg import arguments
from jaxseg.pag import io
from jaxseg.progress import MakeBar, null_bar


def _check_common(out, num_classes, eps=None, step_size=None, norm=None, steps=None) -> None:
    """The checks every PAG run shares: iteration count, radius and step size, ``norm='linf'`` needing ``eps``,
    the number of classes, the output directory."""
    arguments.check_at_least({"--steps": steps, "--num-classes": num_classes})
    arguments.check_positive({"--eps": eps, "--step-size": step_size}, scale=" on the [0, 1] image scale")
    if norm == "linf" and eps is None:
        raise ValueError("--norm linf needs --eps (the default radius is defined for l2 only)")
    arguments.check_output_dir(out)


def _seed_statistics(start: str, dataset: str | None, data_dir, fit_images: int, size: int, num_classes: int,
                     mean_colour):
    """(class Gaussians or None, mean colour) fitted on ``fit_images`` training images of ``dataset``."""
    from jaxseg import data
    from jaxseg.pag import generate

    images, labels = data.load_split_arrays(dataset, data.dataset_info(dataset).train_split, data_dir=data_dir,
                                            protocol="standard", image_size=size, num_examples=fit_images)
    gaussians = generate.fit_class_gaussians(images, labels, num_classes) if start == "class-gaussian" else None
    return gaussians, generate.dataset_mean(images) if mean_colour is None else mean_colour


def run_generate(*, target: str, out: str, start: str = "noise", mean_colour=None, dataset: str | None = None,
                 data_dir: str | None = None, fit_images: int = 256, norm: str = "l2", eps: float | None = None,
                 step_size: float | None = None, steps: int = 60, checkpoint=None, model: str | None = None,
                 num_classes: int | None = None, random_init: bool = False, seed: int = 0,
                 make_bar: MakeBar = null_bar) -> dict:
    """Generate an image that the model segments as the label map ``target`` (PNG) from a seed
    (``jaxseg.pag.generate``); writes ``generated.png``, the grid ``generate.png`` and ``generate.json``."""
    _check_common(out, num_classes, eps, step_size, norm, steps)
    from jaxseg.pag.generate import SEED_KINDS

    if start not in SEED_KINDS:
        raise ValueError(f"--start must be one of {', '.join(SEED_KINDS)}; got {start!r}")
    fit_dataset = start != "noise" and (start == "class-gaussian" or mean_colour is None)
    if fit_dataset and not dataset:
        raise ValueError(f"--start {start} needs --dataset NAME" + (" (or --mean-colour R G B)" if start == "mean" else ""))
    if fit_dataset:
        from jaxseg import data

        data.dataset_info(dataset)  # an unknown name fails here, before the model is built
        arguments.check_at_least({"--fit-images": fit_images})
    if mean_colour is not None and not all(0.0 <= c <= 1.0 for c in mean_colour):
        raise ValueError(f"--mean-colour must be three numbers in [0, 1]; got {mean_colour}")
    bar = make_bar("generate", 4, "stage")
    labels = io.read_label_png(target)
    logits_fn, variables, description = io.load_model(
        checkpoint=checkpoint, model=model, num_classes=num_classes, random_init=random_init,
        image_size=labels.shape[1:3], seed=seed)
    io.check_label_values(labels, description["num_classes"], target)
    bar.update()
    import jax

    from jaxseg.pag import generate

    gaussians = None
    if fit_dataset:
        gaussians, mean_colour = _seed_statistics(start, dataset, data_dir, fit_images, int(labels.shape[1]),
                                                  description["num_classes"], mean_colour)
    seeds = generate.make_seed(start, jax.random.key(seed), labels, gaussians=gaussians, mean_colour=mean_colour)
    bar.update()
    result = jax.device_get(generate.generate(logits_fn, labels, seeds, eps=eps, step_size=step_size,
                                              iterations=steps, norm=norm, variables=variables))
    bar.update()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    io.write_image_png(out / "generated.png", result.images[0])
    io.save_grid(out / "generate.png", [("seed", np.asarray(seeds[0])), ("target", labels[0]),
                                        ("generated", result.images[0]), ("prediction", result.prediction[0])],
                 description["num_classes"])
    numbers = {
        **description, "target": target, "start": start, "norm": norm, "eps": eps, "step_size": step_size,
        "steps": steps, "seed": seed, "target_accuracy": float(result.target_accuracy[0]),
        "loss": float(result.loss[0]), "initial_loss": float(result.loss_history[0, 0]),
    }
    io.write_json(out / "generate.json", numbers)
    bar.update()
    bar.close()
    return {**numbers, "summary": f"target accuracy {numbers['target_accuracy']:.3f}; wrote {out / 'generate.png'} "
                                  f"and {out / 'generate.json'}"}


def run_inpaint(*, image: str, mask: str, label: str, out: str, mode: str = "penalty", anchor_weight: float = 10.0,
                norm: str = "l2", eps: float | None = None, step_size: float | None = None, steps: int = 720,
                checkpoint=None, model: str | None = None, num_classes: int | None = None, random_init: bool = False,
                seed: int = 0, make_bar: MakeBar = null_bar) -> dict:
    """Fill the region ``mask`` (PNG, non-zero = fill) of ``image`` so that the prediction matches ``label``
    (``jaxseg.pag.inpaint``); writes ``inpainted.png``, the grid ``inpaint.png`` and ``inpaint.json``."""
    _check_common(out, num_classes, eps, step_size, norm, steps)
    arguments.check_positive({"--anchor-weight": anchor_weight}, allow_zero=True)
    bar = make_bar("inpaint", 3, "stage")
    pixels, region, labels = io.read_image_png(image), io.read_mask_png(mask), io.read_label_png(label)
    for name, shape in (("mask", region.shape[1:3]), ("label map", labels.shape[1:3])):
        if shape != pixels.shape[1:3]:
            raise ValueError(f"the {name} is {shape[0]}x{shape[1]} but the image is {pixels.shape[1]}x{pixels.shape[2]}")
    if not region.any():
        raise ValueError(f"{mask}: the mask selects no pixel (non-zero = fill)")
    logits_fn, variables, description = io.load_model(
        checkpoint=checkpoint, model=model, num_classes=num_classes, random_init=random_init,
        image_size=pixels.shape[1:3], seed=seed)
    io.check_label_values(labels, description["num_classes"], label)
    bar.update()
    import jax

    from jaxseg.pag import inpaint

    result = jax.device_get(inpaint.inpaint(logits_fn, pixels, region, labels, mode=mode, anchor_weight=anchor_weight,
                                            eps=eps, step_size=step_size, iterations=steps, norm=norm,
                                            variables=variables))
    mse, psnr = inpaint.region_error(result.images, pixels, region)
    corrupted_mse, corrupted_psnr = inpaint.region_error(result.corrupted, pixels, region)
    bar.update()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    io.write_image_png(out / "inpainted.png", result.images[0])
    io.save_grid(out / "inpaint.png", [("input", pixels[0]), ("mask", region[0]), ("corrupted", result.corrupted[0]),
                                       ("inpainted", result.images[0]), ("prediction", result.prediction[0])],
                 description["num_classes"])
    numbers = {
        **description, "image": image, "mask": mask, "label": label, "mode": mode, "anchor_weight": anchor_weight,
        "norm": norm, "eps": eps, "step_size": step_size, "steps": steps, "seed": seed,
        "mask_fraction": float(region.mean()), "label_accuracy": float(result.label_accuracy[0]),
        "loss": float(result.loss[0]), "region_mse": float(mse[0]), "region_psnr_db": float(psnr[0]),
        "corrupted_region_mse": float(corrupted_mse[0]), "corrupted_region_psnr_db": float(corrupted_psnr[0]),
        "max_visible_change": float(np.max(np.abs(result.images[0] - pixels[0])[~region[0]], initial=0.0)),
    }
    io.write_json(out / "inpaint.json", numbers)
    bar.update()
    bar.close()
    return {**numbers, "summary": f"region PSNR {numbers['region_psnr_db']:.2f} dB (mean fill "
                                  f"{numbers['corrupted_region_psnr_db']:.2f} dB); wrote {out / 'inpaint.png'}"}


def _check_saliency(class_index, label, samples, ig_steps, noise_scale, sigma, threshold) -> None:
    if class_index is None and label is None:
        raise ValueError("give --class C (a class to explain) or --label MAP.png (a label map to explain)")
    if class_index is not None and class_index < 0:
        raise ValueError(f"--class must be a class index >= 0; got {class_index}")
    arguments.check_at_least({"--samples": samples, "--ig-steps": ig_steps})
    arguments.check_positive({"--noise-scale": noise_scale})
    arguments.check_positive({"--sigma": sigma}, allow_zero=True)
    if not 0 < threshold < 1:
        raise ValueError(f"--threshold must lie in (0, 1); got {threshold}")


def _localisation_scores(maps, found, label, class_index) -> dict:
    """Box IoU, localisation and pointing-game hit against the object ``label == class_index``."""
    from jaxseg.pag import localize

    target = label == class_index
    true_box = localize.boxes_from_masks(target)
    return dict(object_box=true_box[0], box_iou=float(localize.box_iou(found.boxes, true_box)[0]),
                localized=bool(localize.localization_accuracy(found.boxes, true_box) == 1.0),
                pointing_hit=bool(localize.pointing_game(maps, target)[0]), object_present=bool(target.any()))


def run_saliency(*, image: str, out: str, class_index: int | None = None, label: str | None = None,
                 region: str | None = None, method: str = "gradient", objective: str = "logit", samples: int = 16,
                 noise_scale: float = 0.15, ig_steps: int = 32, sigma: float = 1.0, threshold: float = 0.2,
                 checkpoint=None, model: str | None = None, num_classes: int | None = None,
                 random_init: bool = False, seed: int = 0, make_bar: MakeBar = null_bar) -> dict:
    """Attribute the score of class ``class_index`` (or, without it, of the label map ``label``) to the pixels of
    ``image`` and localise it (``jaxseg.pag.saliency``, ``jaxseg.pag.localize``); with both, score the box
    against the object ``label == class_index``. Writes the grid ``saliency.png`` and ``saliency.json``."""
    _check_saliency(class_index, label, samples, ig_steps, noise_scale, sigma, threshold)
    _check_common(out, num_classes)
    bar = make_bar("saliency", 3, "stage")
    pixels = io.read_image_png(image)
    labels = io.read_label_png(label) if label else None
    pixel_region = io.read_mask_png(region) if region else None
    for name, extra in (("label map", labels), ("region", pixel_region)):
        if extra is not None and extra.shape[1:3] != pixels.shape[1:3]:
            raise ValueError(f"the {name} is {extra.shape[1]}x{extra.shape[2]} but the image is "
                             f"{pixels.shape[1]}x{pixels.shape[2]}")
    logits_fn, variables, description = io.load_model(
        checkpoint=checkpoint, model=model, num_classes=num_classes, random_init=random_init,
        image_size=pixels.shape[1:3], seed=seed)
    if class_index is not None and class_index >= description["num_classes"]:
        raise ValueError(f"--class {class_index} is not a class of the model, which has "
                         f"{description['num_classes']} (0 to {description['num_classes'] - 1})")
    if labels is not None:
        io.check_label_values(labels, description["num_classes"], label)
    bar.update()
    import jax

    from jaxseg.pag import localize, saliency

    explain_map = class_index is None
    attribution = saliency.attribute(
        logits_fn, pixels, method=method, objective=objective, class_index=class_index,
        labels=labels if explain_map else None, region=pixel_region, key=jax.random.key(seed), samples=samples,
        noise_scale=noise_scale, steps=ig_steps, variables=variables)
    maps = saliency.saliency_map(attribution.values)
    found = localize.localize(maps, sigma=sigma, threshold=threshold)
    bar.update()
    numbers = {
        **description, "image": image, "class": class_index, "label": label, "region": region, "method": method,
        "objective": objective, "seed": seed, "score": float(attribution.score[0]), "box": found.boxes[0],
        "box_format": "y0, x0, y1, x1 (exclusive ends)", "localized_fraction": float(found.masks[0].mean()),
    }
    if method == "integrated-gradients":
        numbers["baseline_score"] = float(attribution.baseline_score[0])
        numbers["attribution_sum"] = float(np.sum(attribution.values[0]))
    if labels is not None and not explain_map:
        numbers.update(_localisation_scores(maps, found, labels, class_index))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    io.save_grid(out / "saliency.png", [("image", pixels[0]), ("saliency", maps[0]), ("localised", found.masks[0]),
                                        ("prediction", np.asarray(attribution.prediction)[0])],
                 description["num_classes"])
    io.write_json(out / "saliency.json", numbers)
    bar.update()
    bar.close()
    return {**numbers, "summary": f"box {found.boxes[0].tolist()} (y0, x0, y1, x1); wrote {out / 'saliency.png'} and "
                                  f"{out / 'saliency.json'}"}
