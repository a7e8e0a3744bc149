"""APGD throughput: jaxseg (one compiled program) against an idiomatic eager PyTorch loop, same architecture.

For UPerNet + ConvNeXt (``upernet_convnext_t`` at 512x512, batch 2; ``upernet_convnext_atto``, the CPU default,
at 64x64) it times APGD-CE (Linf, eps 8/255, no early stop) in JAX and in PyTorch (timm ConvNeXt with
``features_only=True`` plus the UPerNet head below), both float32 on the same threads, and reports
image-iterations/s, their ratio, the FLOP/s achieved (XLA cost analysis of one forward+backward step) against
the machine's measured 2048³ matmul rate, and XLA's memory analysis of the compiled attack (bytes per image,
so the largest batch that fits a given memory can be estimated).

Usage: python benchmarks/attack_throughput.py [--models upernet_convnext_atto,upernet_convnext_t]
       [--iterations 3] [--repeats 2] [--skip-torch] [--json out.json]
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


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(repeats: int = 5) -> dict:
    """Measured float32 2048³ matmul rate in GFLOP/s for JAX and PyTorch."""
    n = 2048
    a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.float32)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    jax_seconds = _median_seconds(lambda: matmul(a, a).block_until_ready(), repeats)
    t = torch.randn(n, n)
    t @ t
    torch_seconds = _median_seconds(lambda: t @ t, repeats)
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


def torch_apgd(model, x, y, eps: float, iterations: int) -> torch.Tensor:
    """APGD-CE, Linf, as AutoAttack's eager loop (per-image step sizes, momentum, checkpoints)."""
    batch = x.shape[0]

    def loss_and_grad(point):
        point = point.clone().requires_grad_()
        per_image = F.cross_entropy(model(point), y, reduction="none").view(batch, -1).mean(1)
        grad, = torch.autograd.grad(per_image.sum(), point)
        return per_image.detach(), grad

    def project(point):
        return torch.min(torch.max(point, x - eps), x + eps).clamp(0, 1)

    x_adv = (x + eps * (2 * torch.rand_like(x) - 1)).clamp(0, 1)
    loss, grad = loss_and_grad(x_adv)
    step = torch.full((batch, 1, 1, 1), 2 * eps)
    best_loss, x_best, grad_best, x_old = loss.clone(), x_adv.clone(), grad.clone(), x_adv.clone()
    checkpoints = set(attacks.apgd_checkpoints(iterations))
    increases, previous = torch.zeros(batch), torch.zeros(batch)
    best_last, reduced_last = best_loss.clone(), torch.ones(batch, dtype=torch.bool)
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
                reduced_last, best_last, increases = halve, best_loss.clone(), torch.zeros(batch)
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
    return attacks.logits_function(model), variables, images, labels


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


def benchmark(name: str, iterations: int, repeats: int, skip_torch: bool) -> dict:
    backbone, size, batch, channels = SETTINGS[name]
    logits_fn, variables, images, labels = _jax_setup(name, size, batch)
    key = jax.random.PRNGKey(0)

    def run_jax():
        result = attacks.apgd(logits_fn, images, labels, key, eps=EPS, iterations=iterations, early_stop=False,
                              variables=variables)
        result.adversarial.block_until_ready()

    start = time.perf_counter()
    run_jax()
    compile_seconds = time.perf_counter() - start
    jax_seconds = _median_seconds(run_jax, repeats)
    steps = iterations + 1  # the start point's gradient plus one per iteration, in both implementations
    flops = _step_flops(logits_fn, variables, images, labels) * steps
    row = {"model": name, "size": size, "batch": batch, "iterations": iterations,
           "jax_seconds": jax_seconds, "jax_first_call_seconds": compile_seconds,
           "jax_image_iterations_per_s": batch * iterations / jax_seconds,
           "jax_gflops_achieved": flops / jax_seconds / 1e9}
    if not skip_torch:
        torch.manual_seed(0)
        net = TorchUPerNet(backbone, NUM_CLASSES, channels).eval()
        x, y = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels).long()
        torch_apgd(net, x, y, EPS, 1)  # warm-up
        torch_seconds = _median_seconds(lambda: torch_apgd(net, x, y, EPS, iterations), repeats)
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
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--memory", action="store_true", help="also run XLA memory analysis of the attack program")
    parser.add_argument("--json", help="write all results to this JSON file")
    args = parser.parse_args()
    report = {"devices": str(jax.devices()), "torch_threads": torch.get_num_threads(), "peak": matmul_peak()}
    print(json.dumps(report["peak"]), flush=True)
    report["runs"] = []
    for name in args.models.split(","):
        row = benchmark(name, args.iterations, args.repeats, args.skip_torch)
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
