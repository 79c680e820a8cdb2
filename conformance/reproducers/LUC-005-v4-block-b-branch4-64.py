"""LUC-005: the Inception-v4 B block's long branch starts with a 1x1 of 64; Fig. 5's is 192.

Exits 0 when the bug is absent, 1 with one line when present.
Run: PYTHONPATH=<folder holding lucid/> python LUC-005-v4-block-b-branch4-64.py
"""

import importlib
import sys
import warnings

warnings.filterwarnings("ignore")  # upstream init casts float64 garbage to float32


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
    state = model_module("inception")._InceptionModule_V4B(1024).state_dict()
    first, second = state["branch4.0.conv.weight"].shape, state["branch4.1.conv.weight"].shape
    if first[0] != 192 or second[1] != 192:
        print(
            f"BUG: B block branch4 is 1x1 {first[0]} -> 1x7 taking {second[1]} (Fig. 5: 1x1 192 -> 1x7 192)"
        )
        return 1
    print(f"OK: B block branch4 starts 1x1 1024->192, then 1x7 {second[1]}->{second[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
