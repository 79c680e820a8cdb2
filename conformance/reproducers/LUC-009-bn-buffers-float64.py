"""LUC-009: a fresh BatchNorm's running statistics are float64, so its eval-mode output
is float64 for float32 input.

Exits 0 when the bug is absent, 1 with one line when present.
Run: PYTHONPATH=<folder holding lucid/> python LUC-009-bn-buffers-float64.py
"""

import sys

import lucid
import lucid.nn as nn
import numpy as np


def main() -> int:
    bn = nn.BatchNorm2d(4)
    dtypes = {key: str(value.dtype) for key, value in bn.state_dict().items()}
    bn.eval()
    with lucid.no_grad():
        out = bn(lucid.Tensor(np.ones((1, 4, 2, 2), dtype=np.float32))).data.dtype
    if set(dtypes.values()) != {"float32"} or out != np.float32:
        print(f"BUG: fresh BatchNorm2d holds {dtypes}; eval output of float32 input is {out}")
        return 1
    print("OK: fresh BatchNorm2d is float32 throughout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
