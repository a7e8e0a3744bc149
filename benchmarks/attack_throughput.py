"""APGD throughput: jaxseg (one compiled program) against an idiomatic eager PyTorch loop, same architecture.

For UPerNet + ConvNeXt (``upernet_convnext_t`` at 512x512, batch 2; ``upernet_convnext_atto``, the CPU default,
at 64x64) it times APGD-CE (Linf, eps 8/255, no early stop) in JAX and in PyTorch (timm ConvNeXt with
``features_only=True`` plus the UPerNet head below) at the same precision on the same kind of device (PyTorch on
CUDA when JAX runs on a GPU), and reports image-iterations/s, their ratio, the FLOP/s achieved (XLA cost
analysis of one forward+backward step) against the machine's measured 2048³ matmul rate, and XLA's memory
analysis of the compiled attack (bytes per image, so the largest batch that fits a given memory can be
estimated).

Usage: python benchmarks/attack_throughput.py [--models upernet_convnext_atto,upernet_convnext_t]
       [--iterations 3] [--repeats 2] [--precision float32|tf32|bfloat16] [--skip-torch] [--memory] [--json out.json]
Precision: ``float32`` (default) turns TF32 off in both (JAX ``highest`` matmul precision, PyTorch
``allow_tf32=False``); ``tf32`` allows it in both (GPUs only: on CPU it equals float32); ``bfloat16`` computes
the model in bfloat16 in both (JAX ``compute_dtype``, PyTorch ``autocast``) with float32 losses and projections.
Weights are random: throughput does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import timm
import torch
import torch.nn as tnn
import torch.nn.functional as F

from jaxseg import attacks, models
from jaxseg.attacks import losses

SETTINGS = {  # model: (timm backbone, image size, batch, decoder channels)
    "upernet_convnext_atto": ("convnext_atto", 64, 8, 128),
    "upernet_convnext_t": ("convnext_tiny", 512, 2, 512),
}
NUM_CLASSES = 21
EPS = 8 / 255


PRECISIONS = ("float32", "tf32", "bfloat16")


def set_precision(precision: str) -> None:
    """Same matmul/convolution precision in JAX and PyTorch (see the module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    tf32 = precision == "tf32"
    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "highest")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def torch_device() -> torch.device:
    """CUDA when JAX runs on a GPU (and PyTorch sees one), else the CPU."""
    return torch.device("cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(device: torch.device, repeats: int = 5) -> dict:
    """Measured 2048³ matmul rate in GFLOP/s for JAX and PyTorch (float32 at the benchmark's precision setting)."""
    n = 2048
    a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.float32)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    jax_seconds = _median_seconds(lambda: matmul(a, a).block_until_ready(), repeats)
    t = torch.randn(n, n, device=device)

    def torch_matmul():
        t @ t
        _synchronize(device)

    torch_matmul()
    torch_seconds = _median_seconds(torch_matmul, repeats)
    flops = 2 * n**3
    return {"jax_gflops": flops / jax_seconds / 1e9, "torch_gflops": flops / torch_seconds / 1e9}


# ---------------------------------------------------------------- PyTorch side: UPerNet head + eager APGD


class ConvBNReLU(tnn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__(tnn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), tnn.BatchNorm2d(cout),
                         tnn.ReLU(inplace=True))


class TorchUPerNet(tnn.Module):
    """timm ConvNeXt (features_only) → per-stage LayerNorm → UPerNet (PPM 1,2,3,6 + FPN) → bilinear upsampling."""

    def __init__(self, backbone: str, num_classes: int, channels: int):
        super().__init__()
        self.backbone = timm.create_model(backbone, features_only=True, pretrained=False)
        dims = self.backbone.feature_info.channels()
        self.norms = tnn.ModuleList(timm.layers.LayerNorm2d(d, eps=1e-6) for d in dims)
        self.ppm = tnn.ModuleList(tnn.Sequential(tnn.AdaptiveAvgPool2d(s), ConvBNReLU(dims[-1], channels, 1))
                                  for s in (1, 2, 3, 6))
        self.bottleneck = ConvBNReLU(dims[-1] + 4 * channels, channels, 3)
        self.laterals = tnn.ModuleList(ConvBNReLU(d, channels, 1) for d in dims[:-1])
        self.fpn_convs = tnn.ModuleList(ConvBNReLU(channels, channels, 3) for _ in dims[:-1])
        self.fpn_bottleneck = ConvBNReLU(4 * channels, channels, 3)
        self.classifier = tnn.Conv2d(channels, num_classes, 1)

    def forward(self, images):
        features = [norm(f) for norm, f in zip(self.norms, self.backbone(images))]
        last = features[-1]
        up = lambda x, ref: F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)  # noqa: E731
        top = self.bottleneck(torch.cat([last] + [up(p(last), last) for p in self.ppm], 1))
        laterals = [conv(f) for conv, f in zip(self.laterals, features[:-1])] + [top]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + up(laterals[i], laterals[i - 1])
        outputs = [conv(x) for conv, x in zip(self.fpn_convs, laterals[:-1])] + [laterals[-1]]
        fused = self.fpn_bottleneck(torch.cat([up(o, outputs[0]) for o in outputs], 1))
        return up(self.classifier(fused), images)


def torch_apgd(model, x, y, eps: float, iterations: int, bfloat16: bool = False) -> torch.Tensor:
    """APGD-CE, Linf, as AutoAttack's eager loop (per-image step sizes, momentum, checkpoints), on ``x``'s device;
    ``bfloat16`` runs the model under autocast (the loss and the updates stay float32)."""
    batch, device = x.shape[0], x.device

    def loss_and_grad(point):
        point = point.clone().requires_grad_()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bfloat16):
            logits = model(point)
        per_image = F.cross_entropy(logits.float(), y, reduction="none").view(batch, -1).mean(1)
        grad, = torch.autograd.grad(per_image.sum(), point)
        return per_image.detach(), grad

    def project(point):
        return torch.min(torch.max(point, x - eps), x + eps).clamp(0, 1)

    x_adv = (x + eps * (2 * torch.rand_like(x) - 1)).clamp(0, 1)
    loss, grad = loss_and_grad(x_adv)
    step = torch.full((batch, 1, 1, 1), 2 * eps, device=device)
    best_loss, x_best, grad_best, x_old = loss.clone(), x_adv.clone(), grad.clone(), x_adv.clone()
    checkpoints = set(attacks.apgd_checkpoints(iterations))
    increases, previous = torch.zeros(batch, device=device), torch.zeros(batch, device=device)
    best_last, reduced_last = best_loss.clone(), torch.ones(batch, dtype=torch.bool, device=device)
    window = max(int(0.22 * iterations), 1)
    for i in range(iterations):
        with torch.no_grad():
            a = 0.75 if i > 0 else 1.0
            z = project(x_adv + step * grad.sign())
            x_new = project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_old))
            x_old, x_adv = x_adv, x_new
        loss, grad = loss_and_grad(x_adv)
        with torch.no_grad():
            improved = loss > best_loss
            x_best[improved], grad_best[improved], best_loss[improved] = x_adv[improved], grad[improved], loss[improved]
            increases += (loss > previous).float()
            previous = loss
            if i + 1 in checkpoints:
                halve = (increases <= 0.75 * window) | (~reduced_last & (best_last >= best_loss))
                step[halve] /= 2
                x_adv[halve], grad[halve] = x_best[halve], grad_best[halve]
                reduced_last, best_last, increases = halve, best_loss.clone(), torch.zeros(batch, device=device)
                window = max(window - max(int(0.03 * iterations), 1), max(int(0.06 * iterations), 1))
    return x_best


# ---------------------------------------------------------------- measurements


def _jax_setup(name: str, size: int, batch: int):
    model = models.create_model(name, NUM_CLASSES)
    variables = models.init_variables(model, jax.random.PRNGKey(0), (1, size, size, 3))
    variables = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, (batch, size, size)).astype(np.int32)
    return attacks.logits_function(model), variables, images, labels  # NumPy: each side uploads its own copy


def _step_flops(logits_fn, variables, images, labels) -> float:
    """XLA's FLOP count of one attack step: forward + backward w.r.t. the images."""

    def objective(x):
        return losses.image_loss("ce", logits_fn(variables, x), labels).sum()

    cost = jax.jit(jax.grad(objective)).lower(images).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def attack_memory(name: str, size: int, batches=(1, 2)) -> dict:
    """XLA memory analysis of the compiled APGD program at two batch sizes → fixed and per-image bytes."""
    found = {}
    for batch in batches:
        logits_fn, variables, images, labels = _jax_setup(name, size, batch)
        program = jax.jit(lambda v, x, y, k: attacks.apgd(logits_fn, x, y, k, eps=EPS, iterations=4, variables=v))
        analysis = program.lower(variables, images, labels, jax.random.PRNGKey(0)).compile().memory_analysis()
        found[batch] = (analysis.temp_size_in_bytes + analysis.argument_size_in_bytes
                        + analysis.output_size_in_bytes - analysis.alias_size_in_bytes)
    (b1, m1), (b2, m2) = sorted(found.items())
    per_image = (m2 - m1) / (b2 - b1)
    fixed = m1 - per_image * b1
    return {"size": size, "bytes_by_batch": found, "per_image_mib": per_image / 2**20, "fixed_mib": fixed / 2**20,
            "max_batch_24GiB": int((24 * 2**30 * 0.9 - fixed) // per_image),
            "max_batch_80GB": int((80e9 * 0.9 - fixed) // per_image)}


def benchmark(name: str, iterations: int, repeats: int, skip_torch: bool, precision: str = "float32",
              device: torch.device = torch.device("cpu")) -> dict:
    backbone, size, batch, channels = SETTINGS[name]
    logits_fn, variables, images, labels = _jax_setup(name, size, batch)
    key = jax.random.PRNGKey(0)
    bfloat16 = precision == "bfloat16"
    jax_images, jax_labels = jax.device_put((images, labels))

    def run_jax():
        result = attacks.apgd(logits_fn, jax_images, jax_labels, key, eps=EPS, iterations=iterations,
                              early_stop=False, variables=variables, compute_dtype=jnp.bfloat16 if bfloat16 else None)
        result.adversarial.block_until_ready()

    start = time.perf_counter()
    run_jax()
    compile_seconds = time.perf_counter() - start
    jax_seconds = _median_seconds(run_jax, repeats)
    steps = iterations + 1  # the start point's gradient plus one per iteration, in both implementations
    flops = _step_flops(logits_fn, variables, images, labels) * steps
    row = {"model": name, "size": size, "batch": batch, "iterations": iterations, "precision": precision,
           "jax_seconds": jax_seconds, "jax_first_call_seconds": compile_seconds,
           "jax_image_iterations_per_s": batch * iterations / jax_seconds,
           "jax_gflops_achieved": flops / jax_seconds / 1e9}
    if not skip_torch:
        torch.manual_seed(0)
        net = TorchUPerNet(backbone, NUM_CLASSES, channels).eval().to(device)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
        y = torch.from_numpy(labels).long().to(device)

        def run_torch(count: int) -> None:
            torch_apgd(net, x, y, EPS, count, bfloat16)
            _synchronize(device)

        run_torch(1)  # warm-up
        torch_seconds = _median_seconds(lambda: run_torch(iterations), repeats)
        row.update(torch_seconds=torch_seconds, torch_image_iterations_per_s=batch * iterations / torch_seconds,
                   speedup_vs_torch=torch_seconds / jax_seconds,
                   torch_parameters_m=sum(p.numel() for p in net.parameters()) / 1e6)
    row["jax_parameters_m"] = models.count_parameters(variables["params"]) / 1e6
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="upernet_convnext_atto,upernet_convnext_t")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="float32", choices=PRECISIONS)
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--memory", action="store_true", help="also run XLA memory analysis of the attack program")
    parser.add_argument("--json", help="write all results to this JSON file")
    args = parser.parse_args()
    set_precision(args.precision)
    device = torch_device()
    report = {"devices": str(jax.devices()), "torch_device": str(device), "torch_threads": torch.get_num_threads(),
              "precision": args.precision, "peak": matmul_peak(device)}
    print(json.dumps(report["peak"]), flush=True)
    report["runs"] = []
    for name in args.models.split(","):
        row = benchmark(name, args.iterations, args.repeats, args.skip_torch, args.precision, device)
        row["jax_fraction_of_matmul_peak"] = row["jax_gflops_achieved"] / report["peak"]["jax_gflops"]
        print(json.dumps(row), flush=True)
        report["runs"].append(row)
    if args.memory:
        report["memory"] = {name: attack_memory(name, SETTINGS[name][1]) for name in args.models.split(",")}
        report["memory"]["upernet_convnext_atto_96px"] = attack_memory("upernet_convnext_atto", 96)
        print(json.dumps(report["memory"], default=str), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)


if __name__ == "__main__":
    main()
