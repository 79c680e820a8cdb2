"""LUC-002: the heads use Dropout(p=0.8); Lucid's p drops, the paper keeps 0.8 (p=0.2).

Exits 0 when the bug is absent, 1 with one line when present.
Run: PYTHONPATH=<folder holding lucid/> python LUC-002-head-dropout-p08.py
"""

import importlib
import math
import sys
import warnings

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


def builders() -> dict:
    """The three models through their classes (the factories write registry.json)."""
    v4, res = model_module("inception"), model_module("inception_res")
    if hasattr(v4, "InceptionConfig"):  # lucid-dl >= 2.10: config dataclasses
        return {
            "inception_v4": lambda: v4.Inception(
                v4.InceptionConfig(variant="v4", num_classes=10, use_aux=False)
            ),
            "inception_resnet_v1": lambda: res.InceptionResNet(
                res.InceptionResNetConfig(variant="v1", num_classes=10)
            ),
            "inception_resnet_v2": lambda: res.InceptionResNet(
                res.InceptionResNetConfig(variant="v2", num_classes=10)
            ),
        }
    return {
        "inception_v4": lambda: v4.Inception_V4(10, None),
        "inception_resnet_v1": lambda: res.InceptionResNet_V1(10),
        "inception_resnet_v2": lambda: res.InceptionResNet_V2(10),
    }


def main() -> int:
    drops = {name: build().dropout.p for name, build in builders().items()}
    wrong = {name: p for name, p in drops.items() if not math.isclose(p, 0.2)}
    if wrong:
        print(f"BUG: head dropout drops {wrong} (the paper keeps 0.8: p=0.2)")
        return 1
    print(f"OK: every head has p=0.2 (keep 0.8): {sorted(drops)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
