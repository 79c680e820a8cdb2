"""LUC-011: Tensor.dtype is stored at construction and not updated when `.data` is assigned,
as load_state_dict does; the stale dtype then types scalar operands and promotes float32.

Exits 0 when the bug is absent, 1 with one line when present.
Run: PYTHONPATH=<folder holding lucid/> python LUC-011-tensor-dtype-stale.py
"""

import sys

import lucid
import lucid.nn as nn
import numpy as np


def main() -> int:
    problems = []

    t = lucid.zeros((2,))  # float64
    t.data = np.zeros(2, dtype=np.float32)
    scaled = (t * 0.5).data.dtype
    if str(t.dtype) != "float32" or scaled != np.float32:
        problems.append(f"a float64 tensor given float32 `.data` reads dtype {t.dtype}, t * 0.5 is {scaled}")

    bn = nn.BatchNorm2d(2)
    bn.load_state_dict({k: np.asarray(v, dtype=np.float32) for k, v in bn.state_dict().items()})
    hint, loaded = bn.running_mean.dtype, bn.running_mean.data.dtype
    x = lucid.Tensor(np.ones((2, 2, 1, 1), dtype=np.float32))
    bn.train()
    bn(x)
    stepped = bn.running_mean.data.dtype
    bn.eval()
    with lucid.no_grad():
        out = bn(x).data.dtype
    if str(hint) != str(loaded) or stepped != loaded:
        problems.append(
            f"BatchNorm2d after load_state_dict: running_mean.dtype {hint} for {loaded} data; "
            f"one train step made it {stepped}, eval output of float32 input {out}"
        )

    if problems:
        print(f"BUG: {'; '.join(problems)}")
        return 1
    print("OK: Tensor.dtype follows assigned data; a loaded BatchNorm keeps its dtype through a train step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
