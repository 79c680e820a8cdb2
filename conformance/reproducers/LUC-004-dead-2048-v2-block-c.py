"""LUC-004: the Inception-ResNet C block holds cfg entries it never reads (v2's 2048 beside
the working 2144), one "fix" away from a broken residual add.

Exits 0 when the bug is absent, 1 with one line when present.
Run: PYTHONPATH=<folder holding lucid/> python LUC-004-dead-2048-v2-block-c.py
"""

import ast
import importlib
import inspect
import sys
import textwrap
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


def dead_cfg_entries(cls) -> list[str]:
    """``cfg[i] = value`` entries of the class's ``cfg = [...]`` lists that no ``cfg[i]`` reads."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    lists = [
        node.value.elts
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.List)
        and any(isinstance(t, ast.Name) and t.id == "cfg" for t in node.targets)
    ]
    read = {
        node.slice.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id == "cfg"
        and isinstance(node.slice, ast.Constant)
    }
    return [
        f"cfg[{i}] = {ast.unparse(value)}" for elts in lists for i, value in enumerate(elts) if i not in read
    ]


def main() -> int:
    cls = model_module("inception_res")._InceptionResModule_C
    dead = dead_cfg_entries(cls)
    if dead:
        print(f"BUG: _InceptionResModule_C never reads {', '.join(dead)}")
        return 1
    width = cls(2144, version="v2").state_dict()["conv_linear.weight"].shape[0]
    if width != 2144:
        print(f"BUG: the v2 C block's linear conv maps to {width}, the residual add needs 2144")
        return 1
    print("OK: every cfg entry of the C block is read; the v2 linear conv maps to 2144")
    return 0


if __name__ == "__main__":
    sys.exit(main())
