"""LUC-016: no Tensor, Parameter or Module can be pickled: every tensor's dtype (a
lucid.types.Numeric) holds an mlx.core.Dtype, which pickle refuses.

Exits 0 when the bug is absent, 1 with one line when present.
Run: PYTHONPATH=<folder holding lucid/> python LUC-016-tensor-not-picklable.py
"""

import pickle
import sys

import lucid
import lucid.nn as nn
import numpy as np


def _round_trip(obj: object) -> tuple[object, str]:
    try:
        return pickle.loads(pickle.dumps(obj)), ""
    except Exception as error:  # noqa: BLE001 (what pickle raises is the finding)
        return None, f"{type(error).__name__}: {error}"


def main() -> int:
    problems = []

    t = lucid.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    copy, error = _round_trip(t)
    if error:
        problems.append(f"pickle.dumps(Tensor) raises {error}")
    elif not (np.array_equal(copy.data, t.data) and copy.dtype is t.dtype):
        problems.append(f"an unpickled Tensor reads {copy.data.dtype} / {copy.dtype}, not {t.dtype}")

    model = nn.Sequential(nn.Conv2d(2, 3, kernel_size=3), nn.BatchNorm2d(3), nn.ReLU())
    model.eval()
    x = lucid.Tensor(np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32))
    copy, error = _round_trip(model)
    if error:
        problems.append(f"pickle.dumps(Module) raises {error}")
    else:
        with lucid.no_grad():
            same = np.array_equal(model(x).data, copy(x).data)
        if not same:
            problems.append("an unpickled Sequential(Conv2d, BatchNorm2d, ReLU) computes other values")

    if problems:
        print(f"BUG: {'; '.join(problems)}")
        return 1
    print("OK: Tensors and Modules pickle and unpickle to the same values and dtypes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
