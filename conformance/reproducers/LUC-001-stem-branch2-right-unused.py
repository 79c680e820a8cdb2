"""LUC-001: the Inception-v4 stem (also Inception-ResNet-v2's) never calls branch2_right.

Exits 0 when the bug is absent, 1 with one line when present.
Run: PYTHONPATH=<folder holding lucid/> python LUC-001-stem-branch2-right-unused.py
"""

import importlib
import sys
import warnings

import lucid
import numpy as np

# upstream init casts uninitialised float64 memory to float32; only those warnings are hidden
warnings.filterwarnings(
    "ignore", message="(overflow|invalid value) encountered in cast", category=RuntimeWarning
)


def model_module(name: str):
    """lucid-dl >= 2.10 keeps the vision models in lucid.models.vision, <= 2.9 in imgclf."""
    for package in ("lucid.models.vision", "lucid.models.imgclf"):
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name not in (package, f"{package}.{name}"):
                raise
    raise ModuleNotFoundError(f"lucid.models has no {name} module")


def main() -> int:
    stem = model_module("inception")._InceptionStem_V4(3)
    stem.eval()
    x = lucid.Tensor(np.random.default_rng(0).standard_normal((1, 3, 75, 75)).astype(np.float32))
    state = stem.state_dict()
    right = [k for k in state if k.startswith("branch2_right.")]
    with lucid.no_grad():
        before = stem(x).data.copy()
        # Zero conv and BatchNorm of branch2_right: in eval mode the branch then outputs 0.
        stem.load_state_dict({k: np.zeros_like(v) if k in right else v for k, v in state.items()})
        after = stem(x).data
    if np.array_equal(before, after):
        params = sum(state[k].size for k in right if not k.endswith(("running_mean", "running_var")))
        print(f"BUG: zeroing branch2_right ({params:,} parameters) leaves the stem's output unchanged")
        return 1
    print("OK: the stem's output depends on branch2_right")
    return 0


if __name__ == "__main__":
    sys.exit(main())
