"""LUC-005: the Inception-v4 B block's long branch starts with a 1x1 of 64; Fig. 5's is 192.
Where lucid ships lucid/models/registry.json (2.10+), the count it lists for inception_v4
must be the model's.

Exits 0 when the bug is absent, 1 with one line when present.
Run: PYTHONPATH=<folder holding lucid/> python LUC-005-v4-block-b-branch4-64.py
"""

import importlib
import json
import sys
import warnings
from pathlib import Path

import lucid

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


def listed_parameters(registry: dict, name: str) -> int | None:
    """The ``parameter_size`` the registry lists for ``name``, at any depth (task, family)."""
    for key, value in registry.items():
        if isinstance(value, dict):
            if key == name and "parameter_size" in value:
                return int(value["parameter_size"])
            found = listed_parameters(value, name)
            if found is not None:
                return found
    return None


def registry_disagrees() -> str | None:
    """Why the shipped registry's inception_v4 count is not the model's, or None."""
    path = Path(lucid.__file__).parent / "models" / "registry.json"
    if not path.is_file():  # 2.9.0 ships none (it writes one at runtime: LUC-007)
        return None
    before = path.read_bytes()
    listed = listed_parameters(json.loads(before), "inception_v4")
    if listed is None:
        return None
    try:
        model = model_module("inception").inception_v4()
    finally:
        if path.read_bytes() != before:  # building must not change the tree (LUC-007)
            path.write_bytes(before)
    count = sum(int(p.size) for p in model.parameters())
    if listed != count:
        return f"lucid/models/registry.json lists inception_v4 with {listed:,} parameters; it has {count:,}"
    return None


def main() -> int:
    state = model_module("inception")._InceptionModule_V4B(1024).state_dict()
    first, second = state["branch4.0.conv.weight"].shape, state["branch4.1.conv.weight"].shape
    if first[0] != 192 or second[1] != 192:
        print(
            f"BUG: B block branch4 is 1x1 {first[0]} -> 1x7 taking {second[1]} (Fig. 5: 1x1 192 -> 1x7 192)"
        )
        return 1
    stale = registry_disagrees()
    if stale is not None:
        print(f"BUG: B block branch4 fixed, but {stale}")
        return 1
    print(f"OK: B block branch4 starts 1x1 1024->192, then 1x7 {second[1]}->{second[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
