"""The quickstart's figures, tables and report: what ``jaxseg.quickstart.run_quickstart`` writes from the
numbers and arrays its stages produced.

``write_figures`` draws ``FIGURES`` into ``workdir/figures/`` (the image grids with
``jaxseg.figures.save_panel_grid``); ``write_report`` writes ``workdir/report.md`` (figures linked) and the
self-contained ``workdir/report.html`` (figures embedded) from the run's state; ``summary_text`` is the few
lines ``jaxseg quickstart`` prints. Nothing here trains, evaluates or prints.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxseg.data import colorize
from jaxseg.figures import save_panel_grid

MODEL_TITLES = {"clean": "clean", "pgd-at": "PGD-AT"}
FIGURES = {
    "robustness": "robustness_curve.png",
    "adversarial": "adversarial_examples.png",
    "generation": "pag_generation.png",
    "inpainting": "pag_inpainting.png",
}
DPI = 110  # pixels per inch of every figure

# One report block: (kind, title, content); see _report_sections.
Block = tuple[str, str, object]


# --- figures -----------------------------------------------------------------------------------------------

def write_figures(figures_dir: str | Path, results: dict, examples: dict, generated: dict, inpainted: dict,
                  palette: np.ndarray) -> None:
    """Draw the four ``FIGURES`` into ``figures_dir`` (created).

    ``results``: model name → its evaluation dict; ``examples``: model name → the arrays of its
    ``adversarial_examples.npz``; ``generated`` / ``inpainted``: the arrays of the PAG demos; ``palette``:
    (K, 3) uint8 class colours of the label maps.
    """
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(exist_ok=True)
    robustness_figure(results, figures_dir / FIGURES["robustness"])
    adversarial_figure(examples, palette, figures_dir / FIGURES["adversarial"])
    generation_figure(generated, palette, figures_dir / FIGURES["generation"])
    inpainting_figure(inpainted, palette, figures_dir / FIGURES["inpainting"])


def robustness_figure(results: dict, path: str | Path) -> Path:
    """aAcc and mIoU (%) against the SEA radius (/255) for every model in ``results`` (name → evaluate dict);
    8 x 3.2 in at ``DPI``."""
    figure = Figure(figsize=(8, 3.2))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    for axis, metric in zip(axes, ("aAcc", "mIoU")):
        for name, result in results.items():
            radii = [row["eps_255"] for row in result["robust"]]
            values = [100 * row[metric] for row in result["robust"]]
            axis.plot(radii, values, marker="o", label=MODEL_TITLES.get(name, name))
        axis.set_xlabel("SEA radius eps (Linf, x/255)")
        axis.set_ylabel(f"robust {metric} (%)")
        axis.set_title(f"{metric} under SEA")
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return Path(path)


def adversarial_figure(examples: dict, palette: np.ndarray, path: str | Path, count: int = 3) -> Path:
    """Rows: (model, image), the first ``count`` images per model; columns: image, amplified perturbation,
    clean prediction, attacked prediction, ground truth. ``examples``: model name → the arrays of
    ``adversarial_examples.npz`` (float images in [0, 1], int label maps coloured with ``palette``)."""
    rows = []
    for name, arrays in examples.items():
        eps = float(arrays["eps"])
        for index in range(min(count, len(arrays["images"]))):
            delta = arrays["adversarial"][index] - arrays["images"][index]
            rows.append((f"{MODEL_TITLES.get(name, name)} #{index}", [
                arrays["images"][index], np.clip(0.5 + delta / (2 * max(eps, 1e-12)), 0, 1),
                colorize(arrays["clean_prediction"][index], palette),
                colorize(arrays["adversarial_prediction"][index], palette),
                colorize(arrays["labels"][index], palette)]))
    eps_255 = 255 * float(next(iter(examples.values()))["eps"])
    return save_panel_grid(
        path, rows, title=f"SEA adversarial examples at eps = {eps_255:g}/255 (perturbation scaled to [0, 1])",
        column_titles=("image", "perturbation (amplified)", "clean prediction", "attacked prediction",
                       "ground truth"), cell_size=(1.7, 1.75), dpi=DPI)


def _image_rows(path, title: str, rows: list[tuple[str, np.ndarray]]) -> Path:
    """One labelled grid row per ``(label, images)``, ``images`` (N, H, W, 3); 1.6 in per panel."""
    return save_panel_grid(path, [(label, list(images)) for label, images in rows], title=title,
                           cell_size=(1.6, 1.6), label_width=0.8, dpi=DPI)


def generation_figure(arrays: dict, palette: np.ndarray, path: str | Path) -> Path:
    """Rows: target label map, the real image with that map, the seed, then each model's generation
    (``arrays``: the generation demo's ``targets``, ``real``, ``seeds``, ``generated_<model>``)."""
    models = [k.removeprefix("generated_") for k in arrays if k.startswith("generated_")]
    rows = [("target map", colorize(arrays["targets"], palette)), ("real image", arrays["real"]),
            ("seed", arrays["seeds"])]
    rows += [(MODEL_TITLES.get(name, name), arrays[f"generated_{name}"]) for name in models]
    return _image_rows(path, "Generation toward a target label map (class-Gaussian seed)", rows)


def inpainting_figure(arrays: dict, palette: np.ndarray, path: str | Path) -> Path:
    """Rows: true image, its label map, the corrupted input, then each model's inpainting (``arrays``: the
    inpainting demo's ``images``, ``labels``, ``corrupted``, ``inpainted_<model>``)."""
    models = [k.removeprefix("inpainted_") for k in arrays if k.startswith("inpainted_")]
    rows = [("true image", arrays["images"]), ("label map", colorize(arrays["labels"], palette)),
            ("corrupted", arrays["corrupted"])]
    rows += [(MODEL_TITLES.get(name, name), arrays[f"inpainted_{name}"]) for name in models]
    return _image_rows(path, "Inpainting of the square toward the label map (penalty mode)", rows)


# --- tables ------------------------------------------------------------------------------------------------

def _percent(value) -> str:
    """A fraction as a percentage with one decimal ("–" for None)."""
    return "–" if value is None else f"{100 * value:.1f}"


def _seconds(value) -> str:
    """Seconds as "N s", or "N.N min" from 120 s on ("–" for None)."""
    if value is None:
        return "–"
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def _load(machine: dict) -> str:
    """The machine's load averages at the start, or "unknown"."""
    load = machine.get("load_average_start")
    return "unknown" if load is None else ", ".join(f"{x:.2f}" for x in load)


def results_table(results: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings, %) of clean/robust aAcc, mIoU and mAcc per radius for every model."""
    names = list(results)
    columns = ("aAcc", "mIoU", "mAcc")
    header = ["SEA radius"] + [f"{MODEL_TITLES.get(n, n)} model {m} (%)" for n in names for m in columns]
    rows = [["clean images"] + [_percent(results[n]["clean"][m]) for n in names for m in columns]]
    for index, row in enumerate(results[names[0]]["robust"]):
        rows.append([f"{row['eps_255']:g}/255"]
                    + [_percent(results[n]["robust"][index][m]) for n in names for m in columns])
    return header, rows


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --- the report --------------------------------------------------------------------------------------------

def _introduction(budget: dict) -> list[Block]:
    """What the quickstart did, with the budget's sizes."""
    return [
        ("p", "", "This report was written by `jaxseg quickstart`. It trained two UPerNet + ConvNeXt-atto "
         f"segmentation models on the built-in synthetic_shapes data ({budget['image_size']}x{budget['image_size']} "
         f"px, {budget['num_train']} training images, 6 classes): a clean model and an adversarially trained one "
         f"(PGD-AT, Linf eps {budget['train_eps']:g}/255, 2 attack steps). It then attacked both with SEA, the "
         "segmentation ensemble attack (three APGD runs with different losses, worst case per image), and used "
         "the models' input gradients to generate and inpaint images (perceptually aligned gradients). Budget "
         f"'{budget['name']}': a CPU-sized run, so the models are small and weak; read the numbers as a "
         "comparison between the two models."),
    ]


def _training_section(training: dict) -> list[Block]:
    """The training table: recipe, steps, batch, time and final loss and pixel accuracy per model."""
    return [
        ("h", "Training", None),
        ("table", "", (["model", "recipe", "steps", "batch", "time", "final loss", "final batch pixel acc. (%)"],
                       [[MODEL_TITLES.get(n, n), s["recipe"] + (f" {s['train_eps_255']:g}/255" if s["train_eps_255"]
                                                               else ""),
                         str(s["steps"]), str(s["batch_size"]), _seconds(s["seconds"]),
                         "–" if s["final_loss"] is None else f"{s['final_loss']:.3f}",
                         _percent(s["final_pixel_accuracy"])] for n, s in training.items()])),
    ]


def _robustness_section(budget: dict, results: dict) -> list[Block]:
    """The SEA protocol, the clean/robust score table and the robustness and adversarial-example figures."""
    radii = ", ".join(f"{r:g}/255" for r in budget["radii"])
    return [
        ("h", "Robustness under SEA", None),
        ("p", "", f"Clean and robust pooled pixel accuracy (aAcc), mean IoU (mIoU) and mean class accuracy (mAcc) "
         f"on the first {budget['eval_examples']} validation images; SEA with {budget['sea_iterations']} iterations "
         f"per component at Linf radii {radii}, mask-ce-bal weighted by the training split's inverse class "
         "frequencies, worst-case mIoU by the SEA reference code's search. The 0/255 row attacks with an empty "
         "budget and must equal the clean row. JSON: eval/<model>/results.json (also jaxseg's stronger greedy "
         "worst-case mIoU and the per-image aAcc)."),
        ("table", "", results_table(results)),
        ("figure", "Robust aAcc and mIoU against the radius", FIGURES["robustness"]),
        ("figure", f"SEA adversarial examples at {budget['example_radius']:g}/255", FIGURES["adversarial"]),
    ]


def _pag_section(budget: dict, models: list[str], pag: dict) -> list[Block]:
    """The generation and inpainting demos: what they do, their scores per model in ``models``, their figures."""
    generation, inpainting = pag["generate"], pag["inpaint"]
    return [
        ("h", "Perceptually aligned gradients", None),
        ("p", "", "Generation: each model's gradients turn a seed (sampled from per-class colour statistics) into "
         "an image that the model segments as a target label map (L2 projected descent, "
         f"{budget['generate_iterations']} steps). Target-pixel accuracy under the generating model and under the "
         "other model (an image that only fools its own generator does not transfer). Inpainting: a hidden "
         f"square is filled toward the true label map ({budget['inpaint_iterations']} steps); PSNR in the square "
         f"against the true image (mean-colour fill: {inpainting['mean_fill_psnr_db']:.2f} dB)."),
        ("table", "", (["model", "generation: own model target acc. (%)", "generation: other model target acc. (%)",
                        "inpainting PSNR in the square (dB)", "inpainting: square pixels predicted as labelled (%)"],
                       [[MODEL_TITLES.get(n, n), _percent(generation["models"][n]["self_target_accuracy"]),
                         _percent(generation["models"][n].get("other_target_accuracy")),
                         f"{inpainting['models'][n]['region_psnr_db']:.2f}",
                         _percent(inpainting["models"][n]["region_label_accuracy"])] for n in models])),
        ("figure", "Generation", FIGURES["generation"]),
        ("figure", "Inpainting", FIGURES["inpainting"]),
    ]


def _wall_time_section(state: dict) -> list[Block]:
    """The machine and every stage's time, in the order the run recorded the stages, with the totals."""
    machine = state["machine"]
    return [
        ("h", "Wall time", None),
        ("p", "", f"Measured on {machine['cpu_count']} CPU core(s), JAX backend "
         f"{machine['backend']}, load average (1, 5, 15 min) {_load(machine)} at the start "
         "(a load above the core count means other processes shared the CPUs). "
         "Stages reused from an earlier invocation show the time they took then. Compilation (XLA) is a large "
         "share of every stage at this size."),
        ("table", "", (["stage", "time", "this invocation"],
                       [[stage, _seconds(times["seconds"]), times["status"]]
                        for stage, times in state["stages"].items()]
                       + [["total of the stages", _seconds(state["total_seconds"]), ""],
                          ["this invocation", _seconds(state["invocation_seconds"]), ""]])),
    ]


def _report_sections(state: dict) -> list[Block]:
    """The report as a list of (kind, title, content) blocks shared by the Markdown and HTML writers:
    kind "p" (paragraph text), "table" ((header, rows)), "figure" (file name in figures/), "h" (heading)."""
    budget = state["budget"]
    return (_introduction(budget) + _training_section(state["training"])
            + _robustness_section(budget, state["results"])
            + _pag_section(budget, list(state["training"]), state["pag"]) + _wall_time_section(state))


def write_report(state: dict, workdir: str | Path) -> tuple[Path, Path]:
    """``workdir/report.md`` (figures linked from ``figures/``) and ``workdir/report.html`` (figures embedded as
    base64 PNGs, so the file stands alone), from ``run_quickstart``'s state and the figures already written."""
    workdir = Path(workdir)
    markdown, body = ["# jaxseg quickstart report", ""], []
    for kind, title, content in _report_sections(state):
        if kind == "h":
            markdown += [f"## {title}", ""]
            body.append(f"<h2>{html.escape(title)}</h2>")
        elif kind == "p":
            markdown += [content, ""]
            body.append(f"<p>{html.escape(content).replace('`', '')}</p>")
        elif kind == "table":
            markdown += [_markdown_table(*content), ""]
            body.append(_html_table(*content))
        elif kind == "figure":
            markdown += [f"![{title}](figures/{content})", ""]
            encoded = base64.b64encode((workdir / "figures" / content).read_bytes()).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{encoded}">'
                        f"<figcaption>{html.escape(title)}</figcaption></figure>")
    md_path, html_path = workdir / "report.md", workdir / "report.html"
    md_path.write_text("\n".join(markdown), encoding="utf-8")
    style = ("body{font-family:sans-serif;max-width:960px;margin:2em auto;line-height:1.45;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}"
             "img{max-width:100%}figcaption{font-size:0.9em;color:#555}")
    html_path.write_text(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>jaxseg quickstart report</title>"
        f"<style>{style}</style></head><body><h1>jaxseg quickstart report</h1>\n" + "\n".join(body)
        + "\n</body></html>\n", encoding="utf-8")
    return md_path, html_path


def summary_text(state: dict) -> str:
    """``run_quickstart``'s result in a few lines: clean and SEA robust mIoU per model, times, report paths."""
    lines = []
    for name, results in state["results"].items():
        rows = ", ".join(f"{row['eps_255']:g}/255: {100 * row['mIoU']:.1f}" for row in results["robust"])
        lines.append(f"{name}: clean mIoU {100 * results['clean']['mIoU']:.1f}%; SEA robust mIoU (%) {rows}")
    lines.append(f"stages took {state['total_seconds']:.0f} s in total; this invocation "
                 f"{state['invocation_seconds']:.0f} s")
    lines.append(f"wrote {state['report'][0]} and {state['report'][1]}")
    return "\n".join(lines)
