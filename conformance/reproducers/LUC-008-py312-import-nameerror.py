"""LUC-008: lucid-dl 2.10-2.16 declare Python >= 3.12 but import only on 3.14
(NameError: name '_TensorLike' is not defined). Passes trivially on Python >= 3.14.

Exits 0 when the bug is absent, 1 with one line when present.
Run: PYTHONPATH=<folder holding lucid/> python LUC-008-py312-import-nameerror.py
"""

import sys


def main() -> int:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    try:
        import lucid
        import lucid.models
        import lucid.nn as nn
    except NameError as exc:
        print(f"BUG: import lucid fails on Python {python}: NameError: {exc}")
        return 1
    with lucid.no_grad():
        out = nn.Linear(2, 3)(lucid.ones((1, 2)))
    print(f"OK: lucid imports on Python {python}; a Linear layer returns shape {out.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
