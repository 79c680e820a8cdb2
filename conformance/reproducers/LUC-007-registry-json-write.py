"""LUC-007: building a registered model writes lucid/models/registry.json inside the
installed package (fails on read-only installs, races between processes).

Exits 0 when the bug is absent, 1 with one line when present. The script restores every
file it saw change, so the tree it ran against is left as it was.
Run: PYTHONPATH=<folder holding lucid/> python LUC-007-registry-json-write.py
"""

import os
import sys
from pathlib import Path

# The patched registry updates only on this maintainers' switch: measure the default.
os.environ.pop("LUCID_UPDATE_MODEL_REGISTRY", None)

import lucid  # noqa: E402
import lucid.nn as nn  # noqa: E402


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def main() -> int:
    package = Path(lucid.__file__).parent
    before = snapshot(package)

    @lucid.register_model
    def registry_probe(num_classes: int = 10) -> nn.Module:
        return nn.Linear(4, num_classes)

    error = None
    try:
        registry_probe()
    except Exception as exc:  # 2.9.0 fails after writing for a factory outside lucid.models
        error = exc
    after = snapshot(package)
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    for path in changed:  # put the tree back
        if path in before:
            path.write_bytes(before[path])
        else:
            path.unlink()
    if changed:
        names = ", ".join(str(p.relative_to(package.parent)) for p in changed)
        raised = f", then raised {type(error).__name__}: {error}" if error else ""
        print(f"BUG: building a registered model wrote {names} inside the installed package{raised}")
        return 1
    if error is not None:
        raise error
    print("OK: building a registered model leaves the installed package unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
