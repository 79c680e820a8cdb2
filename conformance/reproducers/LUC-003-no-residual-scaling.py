"""LUC-003: Inception-ResNet blocks add their residual unscaled; Fig. 20 computes
relu(x + scale * conv_linear(concat)), and the models should take that scale.

Exits 0 when the bug is absent, 1 with one line when present.
Run: PYTHONPATH=<folder holding lucid/> python LUC-003-no-residual-scaling.py
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

WIDTHS = {"v1": (256, 896, 1792), "v2": (384, 1152, 2144)}  # block inputs, Fig. 15 / Fig. 18
DEFAULT = 0.2  # the port's default, and the patch's


def model_module(name: str):
    """lucid-dl >= 2.10 keeps the vision models in lucid.models.vision, <= 2.9 in imgclf."""
    for package in ("lucid.models.vision", "lucid.models.imgclf"):
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name not in (package, f"{package}.{name}"):
                raise
    raise ModuleNotFoundError(f"lucid.models has no {name} module")


def scaled_correctly(block, width: int, scale: float) -> bool:
    """block(x) == relu(x + scale * conv_linear(concat(branches(x)))), eval mode, 3x3 input."""
    block.eval()
    x = lucid.Tensor(np.random.default_rng(width).standard_normal((1, width, 3, 3)).astype(np.float32))
    with lucid.no_grad():
        got = block(x).data
        branches = [m for name, m in block._modules.items() if name.startswith("branch")]
        mixed = block.conv_linear(lucid.concatenate([b(x) for b in branches], axis=1)).data
    return np.allclose(got, np.maximum(x.data + scale * mixed, 0.0), rtol=1e-4, atol=1e-5)


def build(res, variant: str, scale):
    if hasattr(res, "InceptionResNetConfig"):  # lucid-dl >= 2.10
        return res.InceptionResNet(res.InceptionResNetConfig(variant=variant, num_classes=10, scale=scale))
    return getattr(res, f"InceptionResNet_V{variant[1]}")(10, scale=scale)


def main() -> int:
    res = model_module("inception_res")
    for variant, widths in WIDTHS.items():
        for kind, width in zip("ABC", widths, strict=True):
            block = getattr(res, f"_InceptionResModule_{kind}")(width, version=variant)
            if not scaled_correctly(block, width, DEFAULT):
                print(
                    f"BUG: {variant} block {kind} does not compute relu(x + {DEFAULT} * conv_linear(concat))"
                )
                return 1
    triple = (0.1, 0.2, 0.3)
    for variant, widths in WIDTHS.items():
        try:
            model = build(res, variant, triple)
        except TypeError as exc:
            print(f"BUG: the {variant} model takes no residual scale ({exc})")
            return 1
        for kind, width, scale in zip("ABC", widths, triple, strict=True):
            first = next(m for m in model.conv._modules.values() if type(m).__name__.endswith(f"_{kind}"))
            if not scaled_correctly(first, width, scale):
                print(f"BUG: {variant} with scale={triple} does not scale its {kind} blocks by {scale}")
                return 1
    print(f"OK: every block computes relu(x + scale * residual); default {DEFAULT}, per-block triples work")
    return 0


if __name__ == "__main__":
    sys.exit(main())
