"""LUC-010: Module.load_state_dict checks no shapes or dtypes and aliases the arrays given.

Exits 0 when the bug is absent, 1 with one line when present.
Run: PYTHONPATH=<folder holding lucid/> python LUC-010-load-state-dict-unchecked.py
"""

import sys
import warnings

import lucid.nn as nn
import mlx.core as mx
import numpy as np


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def main() -> int:
    # Lucid warns that 'gpu' runs on MLX's CPU where MLX has no GPU backend: expected here.
    warnings.filterwarnings("ignore", category=UserWarning)
    problems = []

    conv = nn.Conv2d(2, 3, kernel_size=1)
    original = conv.state_dict()
    bad = {"weight": np.zeros((5, 5), np.float32), "bias": original["bias"] + 1.0}
    try:
        conv.load_state_dict(bad)
        problems.append("accepted a (5, 5) weight for a (3, 2, 1, 1) one")
    except Exception:
        if not same(conv.state_dict(), original):
            problems.append("a rejected state dict still changed the module")

    conv = nn.Conv2d(2, 3, kernel_size=1)
    conv.load_state_dict({k: v.astype(np.float64) for k, v in conv.state_dict().items()})
    if conv.state_dict()["weight"].dtype != np.float32:
        problems.append(f"loading float64 values made the float32 weight {conv.state_dict()['weight'].dtype}")

    conv = nn.Conv2d(2, 3, kernel_size=1)
    given = conv.state_dict()
    conv.load_state_dict(given)
    given["weight"][...] = 7.0
    if np.any(conv.state_dict()["weight"] == 7.0):
        problems.append("editing the loaded dict afterwards changed the module (aliased arrays)")

    # The same on the 'gpu' device, whose data are MLX arrays (MLX's CPU build runs it too).
    conv = nn.Conv2d(2, 3, kernel_size=1)
    conv.to("gpu")
    given = {k: mx.array(np.array(v)) for k, v in conv.state_dict().items()}
    conv.load_state_dict(given)
    given["weight"][0] = 7.0
    if np.any(np.array(conv.state_dict()["weight"]) == 7.0):
        problems.append("editing a loaded MLX array afterwards changed the 'gpu' module (aliased arrays)")

    if problems:
        print(f"BUG: load_state_dict {'; '.join(problems)}")
        return 1
    print("OK: load_state_dict rejects bad shapes atomically, keeps dtypes, copies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
