"""Forward time of the corrected Lucid models over upstream lucid-dl's, side by side.

For each model: the same input (CPU, batch 1, 299x299 by default) and the same weights
(every tensor whose shape upstream shares; for inception_v4 the B blocks' long-branch
tensors differ in shape and keep each side's own), timed in alternation (port, upstream,
port, upstream, ...) so that machine noise hits both alike; the ratio of medians is
printed. Two upstream baselines:
- ``upstream f32``: upstream cast to float32, the same arithmetic precision as the port;
- ``upstream fresh``: upstream as built, whose float64 BatchNorm buffers turn every
  activation after the first BatchNorm into float64.
A ratio below 1 means the port is faster. The corrected Inception-v4 does more work than
upstream's (Fig. 5's 192-channel B branch, the stem's 7x1/1x7 branch), so the script also
prints the multiply-accumulate counts of both, measured from the conv layers' shapes.

Usage: python bench/bench_models.py [--model NAME] [--size 299] [--repeats 5]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections import defaultdict

import lucid
import numpy as np
from tabulate import tabulate

import lucid_inception
from lucid_inception.frameworks import LucidAdapter, capture_outputs
from lucid_inception.upstream import build_upstream

UPSTREAM = {name: functools.partial(build_upstream, name) for name in lucid_inception.MODEL_NAMES}


# Alternating medians on a shared 2-core machine still wander by a few percent.
PER_MAC_NOISE = 1.05


def share_weights(port, upstream) -> None:
    """Give upstream the port's values wherever the shapes agree, in upstream's dtypes."""
    mine = LucidAdapter.state(port)
    theirs = LucidAdapter.state(upstream)
    merged = {k: mine[k] if mine[k].shape == v.shape else v for k, v in theirs.items()}
    LucidAdapter.load_state(upstream, merged, cast=True)


def forward_seconds(model, x: np.ndarray) -> float:
    tensor = lucid.Tensor(x)
    start = time.perf_counter()
    with lucid.no_grad():
        model(tensor)
    return time.perf_counter() - start


def conv_macs(model, x: np.ndarray) -> int:
    """Multiply-accumulates of every conv and linear layer for input ``x``, per call: a
    layer that runs twice costs twice (upstream's stem ``branch2_left``), one that never
    runs costs nothing (upstream's ``branch2_right``)."""
    outputs: dict[str, list[tuple[int, ...]]] = defaultdict(list)
    with lucid.no_grad(), capture_outputs(model, lambda m, out: outputs[m].append(out.shape)):
        model(lucid.Tensor(x))
    tensors = LucidAdapter.tensors(model)
    total = 0
    for key, weight in tensors.items():
        if not key.endswith("weight") or weight.ndim not in (2, 4):
            continue
        per_output = int(np.prod(weight.shape[1:]))
        for out in outputs.get(key.removesuffix(".weight"), []):
            total += int(np.prod(out)) * per_output
    return total


def bench(name: str, size: int, repeats: int) -> list[list[object]]:
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    port = lucid_inception.build(name).eval()
    fresh = UPSTREAM[name]().eval()
    share_weights(port, fresh)
    f32 = UPSTREAM[name]().eval()
    share_weights(port, f32)
    LucidAdapter.cast(f32, "float32")

    times: dict[str, list[float]] = {"port": [], "f32": [], "fresh": []}
    for model in (port, f32, fresh):  # warm-up
        forward_seconds(model, x)
    for _ in range(repeats):
        for label, model in (("port", port), ("f32", f32), ("fresh", fresh)):
            times[label].append(forward_seconds(model, x))
            print(f"  {name} {label}: {times[label][-1]:.3f} s", file=sys.stderr)
    median = {k: statistics.median(v) for k, v in times.items()}
    macs_ratio = conv_macs(port, x) / conv_macs(f32, x)
    vs_f32, vs_fresh = median["port"] / median["f32"], median["port"] / median["fresh"]
    per_mac = vs_f32 / macs_ratio
    ok = vs_fresh <= 1.0 and per_mac <= PER_MAC_NOISE
    return [
        [
            name,
            f"{median['port']:.3f}",
            f"{median['f32']:.3f}",
            f"{median['fresh']:.3f}",
            f"{vs_fresh:.2f}",
            f"{vs_f32:.2f}",
            f"{macs_ratio:.3f}",
            f"{per_mac:.2f}",
            "PASS" if ok else "FAIL",
        ]
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", action="append", choices=lucid_inception.MODEL_NAMES)
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.size < 75:  # before any model is built
        parser.error(f"--size: the smallest input every model accepts is 75, got {args.size}")
    if args.repeats < 1:
        parser.error(f"--repeats: expected at least 1, got {args.repeats}")
    rows = []
    for name in args.model or lucid_inception.MODEL_NAMES:
        rows += bench(name, args.size, args.repeats)
    headers = [
        "model",
        "port s",
        "upstream f32 s",
        "upstream fresh s",
        "port / fresh",
        "port / f32",
        "MACs port / upstream",
        "per-MAC port / f32",
        "verdict",
    ]
    print(f"CPU forward, batch 1, {args.size}x{args.size}, median of {args.repeats}, no_grad")
    print(tabulate(rows, headers=headers, disable_numparse=True))
    print(
        "verdict: PASS when the port is no slower than a freshly built upstream model and, per\n"
        f"multiply-accumulate, within {PER_MAC_NOISE:.2f}x of upstream cast to float32 (the corrected\n"
        "inception_v4 computes more than upstream's: Fig. 5's 192-channel branch, Fig. 3's 7x1/1x7 branch)"
    )
    return 0 if all(row[-1] == "PASS" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
