"""LUC-014: FLOP counts (`lucid.count_flops`, `Tensor.flops`, `lucid.models.summarize`) are
wrong: `Tensor.flops` counts a tensor again for every consumer that pushed it before it was
visited and an op with several outputs (qr) once per output, and on 2.9.0 a convolution
counts none of its multiply-adds.

Exits 0 when the bug is absent, 1 with one line when present.
Run: PYTHONPATH=<folder holding lucid/> python LUC-014-flops-miscounted.py
"""

import sys

import lucid
import lucid.nn as nn
import numpy as np


def main() -> int:
    problems = []

    # Elementwise ops count one flop per element (3 here), whatever the version.
    a = lucid.Tensor(np.ones(3), requires_grad=True)
    with lucid.count_flops():
        x = a * 2.0
        square = (x * x).flops  # two multiplies: 6
        h = a * 3.0
        residual = (h + h * 2.0).flops  # h, 2h, their sum: 9
    if square != 6 or residual != 9:
        problems.append(f"x * x counts {square} flops (expected 6), h + 2h {residual} (expected 9)")

    # q and r are two outputs of one qr op (both carry it as `_op`): q + r is that op once
    # plus the add.
    m = lucid.Tensor(np.eye(4) * 4.0 + np.arange(16.0).reshape(4, 4) / 16.0, requires_grad=True)
    with lucid.count_flops():
        q, r = lucid.linalg.qr(m)
        both = q + r
    expected = q._op.flops + both._op.flops
    if both.flops != expected:
        problems.append(f"q + r of one qr counts {both.flops} flops, expected {expected} (qr once, the add)")

    # A convolution does C_in / groups * prod(kernel) multiply-adds per output element, read
    # here from the output it returns; a Conv2d adds one more per element for its bias
    # (2.16.0's count). Padding, stride, dilation and groups all change the output size.
    layers = [
        ((32, 64, 3), dict(padding=1), (35, 35)),
        ((32, 48, (1, 7)), dict(stride=2, padding=(0, 3), dilation=1), (17, 17)),
        ((16, 32, 3), dict(padding=2, dilation=2, groups=4, bias=False), (9, 11)),
    ]
    for args, kwargs, size in layers:
        conv = nn.Conv2d(*args, **kwargs)
        with lucid.count_flops(), lucid.no_grad():
            out = conv(lucid.Tensor(np.zeros((2, args[0], *size), dtype=np.float32)))
        per_output = int(np.prod(conv.weight.shape[1:])) + (1 if kwargs.get("bias", True) else 0)
        expected = out.size * per_output
        if out.flops != expected:
            problems.append(f"Conv2d{args} {kwargs} counts {out.flops} flops, expected {expected}")

    if problems:
        print(f"BUG: {'; '.join(problems)}")
        return 1
    print("OK: each operation counted once; a convolution counts its multiply-adds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
