"""Patch generators for upstream's Inception-v4 / Inception-ResNet model code (the README's
table of upstream bugs, 1-5).

2.9.0 keeps the models in ``lucid/models/imgclf/``, 2.16.0 in ``lucid/models/vision/`` with
config dataclasses; the files are found by the classes they define, and the 2.16.0 layout
is recognised by its config class. Upstream's attribute names are kept, so checkpoint keys
do not change (except where a width changes shape, LUC-005).

The edits of different findings are at least four lines apart in every file, so each
patch applies alone to pristine upstream and all apply together (``patch --fuzz=0``).
"""

from __future__ import annotations

from pathlib import Path

from ._edits import Edits, locate

__all__ = [
    "dead_2048_block_c",
    "head_dropout",
    "residual_scaling",
    "stem_branch2_right",
    "v4_block_b_branch4",
]

_STEM = "class _InceptionStem_V4("
_RES_C = "class _InceptionResModule_C("
_SCALE_TYPE = "float | tuple[float, float, float]"


def _inception(root: Path) -> str:
    return locate(root, _STEM)


def _inception_res(root: Path) -> str:
    return locate(root, _RES_C)


def _has_configs(edits: Edits, path: str, config_class: str) -> bool:
    """2.10+ builds the models from a config dataclass."""
    return f"\nclass {config_class}:" in edits.text(path)


def stem_branch2_right(root: Path) -> dict[str, str]:
    """Stem (Fig. 3): concatenate branch2_left and branch2_right, not branch2_left twice."""
    edits = Edits(root)
    edits.replace(
        _inception(root),
        "lucid.concatenate([self.branch2_left(x), self.branch2_left(x)], axis=1)",
        "lucid.concatenate([self.branch2_left(x), self.branch2_right(x)], axis=1)",
        within=_STEM,
    )
    return edits.changes()


def head_dropout(root: Path) -> dict[str, str]:
    """Head of all three models: Lucid's ``p`` is the drop probability; the paper keeps 0.8."""
    edits = Edits(root)
    v4, res = _inception(root), _inception_res(root)
    if _has_configs(edits, v4, "InceptionConfig"):
        edits.replace(
            v4,
            "0.8 if self.config.dropout_prob is None",
            "0.2 if self.config.dropout_prob is None",
            within="    def _build_v4(",
        )
    else:
        edits.replace(
            v4,
            "self.dropout = nn.Dropout(p=0.8)",
            "self.dropout = nn.Dropout(p=0.2)  # drop 0.2 = keep 0.8 (Fig. 9)",
            within="class Inception_V4(",
        )
    if _has_configs(edits, res, "InceptionResNetConfig"):
        edits.replace(
            res,
            "    dropout_prob: float = 0.8\n",
            "    dropout_prob: float = 0.2  # drop 0.2 = keep 0.8 (Fig. 15)\n",
            within="class InceptionResNetConfig:",
        )
    else:
        for model in ("InceptionResNet_V1", "InceptionResNet_V2"):
            edits.replace(
                res,
                "self.dropout = nn.Dropout(p=0.8)",
                "self.dropout = nn.Dropout(p=0.2)  # drop 0.2 = keep 0.8 (Fig. 15)",
                within=f"class {model}(",
            )
    return edits.changes()


_RESIDUAL_SCALES = f"""def _residual_scales(
    scale: {_SCALE_TYPE},
) -> tuple[float, float, float]:
    # Section 3.3 scales each residual by a factor of about 0.1-0.3 before the add: one
    # factor for every block, or one per block type (A, B, C).
    if isinstance(scale, (tuple, list)) and len(scale) == 3:
        scales = tuple(scale)
    elif isinstance(scale, (int, float)):
        scales = (scale, scale, scale)
    else:
        raise TypeError(
            f"scale must be a float or an (A, B, C) triple of floats, got {{scale!r}}."
        )
    for s in scales:
        if isinstance(s, bool) or not isinstance(s, (int, float)):
            raise TypeError(f"Each residual scale must be a float, got {{scale!r}}.")
        if not 0.0 < s <= 1.0:
            raise ValueError(f"Each residual scale must be in (0, 1], got {{scale!r}}.")
    return tuple(float(s) for s in scales)


"""

# Block input widths that upstream passes to the residual blocks, per variant.
_WIDTHS = {"v1": (256, 896, 1792), "v2": (384, 1152, 2144)}


def _scale_block(edits: Edits, path: str, block: str) -> None:
    header = f"class _InceptionResModule_{block}("
    edits.replace(
        path,
        '    def __init__(self, in_channels: int, version: Literal["v1", "v2"]) -> None:\n',
        "    def __init__(\n"
        '        self, in_channels: int, version: Literal["v1", "v2"], scale: float = 0.2\n'
        "    ) -> None:\n",
        within=header,
    )
    edits.insert_after(path, "        self.relu = nn.ReLU()\n", "        self.scale = scale\n", within=header)
    edits.replace(
        path,
        "        out = out + residual\n",
        "        out = residual + self.scale * out  # Fig. 20: scale, then add\n",
        within=header,
    )


def _scale_appends(edits: Edits, path: str, within: str, variant: str) -> None:
    for block, width in zip("ABC", _WIDTHS[variant], strict=True):
        call = f'_InceptionResModule_{block}({width}, version="{variant}"'
        edits.replace(path, call + ")", f"{call}, scale=scale_{block.lower()})", within=within)


def residual_scaling(root: Path) -> dict[str, str]:
    """Residual blocks compute ``ReLU(x + scale * conv_linear(concat))`` (Fig. 20); models
    and factories take ``scale`` (a float or an (A, B, C) triple, default 0.2)."""
    edits = Edits(root)
    path = _inception_res(root)
    configs = _has_configs(edits, path, "InceptionResNetConfig")
    edits.insert_before(path, "class _InceptionResStem(nn.Module):", _RESIDUAL_SCALES)
    for block in "ABC":
        _scale_block(edits, path, block)

    if configs:
        edits.insert_after(
            path,
            '                "InceptionResNet dropout_prob must be in the range [0.0, 1.0)."\n'
            "            )\n",
            "        _residual_scales(self.scale)\n"
            "\n"
            "    # Residual scaling of the A, B and C blocks (Section 3.3, Fig. 20): one factor\n"
            "    # or an (A, B, C) triple. Declared last: positional construction is unchanged.\n"
            f"    scale: {_SCALE_TYPE} = 0.2\n",
            within="class InceptionResNetConfig:",
        )
    for variant in ("v1", "v2"):
        if configs:
            within = f"    def _build_{variant}("
            edits.insert_after(
                path,
                "        in_channels = self.config.in_channels\n",
                "        scale_a, scale_b, scale_c = _residual_scales(self.config.scale)\n",
                within=within,
            )
        else:
            within = f"class InceptionResNet_V{variant[1]}("
            edits.replace(
                path,
                "    def __init__(self, num_classes: int = 1000) -> None:\n"
                "        super().__init__(num_classes)\n"
                "        in_channels = 3\n",
                "    def __init__(\n"
                f"        self, num_classes: int = 1000, scale: {_SCALE_TYPE} = 0.2\n"
                "    ) -> None:\n"
                "        super().__init__(num_classes)\n"
                "        in_channels = 3\n"
                "        scale_a, scale_b, scale_c = _residual_scales(scale)\n",
                within=within,
            )
        _scale_appends(edits, path, within, variant)

        factory = f"def inception_resnet_{variant}("
        edits.replace(
            path,
            f"{factory}num_classes: int = 1000, **kwargs) -> InceptionResNet:\n",
            f"{factory}\n"
            f"    num_classes: int = 1000, scale: {_SCALE_TYPE} = 0.2, **kwargs\n"
            ") -> InceptionResNet:\n",
        )
        if configs:
            edits.replace(
                path,
                f'    config = InceptionResNetConfig(variant="{variant}", '
                "num_classes=num_classes, **kwargs)\n",
                "    config = InceptionResNetConfig(\n"
                f'        variant="{variant}", num_classes=num_classes, scale=scale, **kwargs\n'
                "    )\n",
                within=factory,
            )
        else:
            edits.replace(
                path,
                f"    return InceptionResNet_V{variant[1]}(num_classes, **kwargs)\n",
                f"    return InceptionResNet_V{variant[1]}(num_classes, scale=scale, **kwargs)\n",
                within=factory,
            )
    return edits.changes()


def dead_2048_block_c(root: Path) -> dict[str, str]:
    """C block: drop the unread third ``cfg`` entries (v2's 2048 contradicts the 2144 the
    residual add needs); the linear conv maps back to ``in_channels``."""
    edits = Edits(root)
    path = _inception_res(root)
    for old, new in (("[192, 192, 1792]", "[192, 192]"), ("[224, 256, 2048]", "[224, 256]")):
        edits.replace(
            path,
            f"cfg = {old}\n",
            f"cfg = {new}  # the linear 1x1 maps back to in_channels\n",
            within=_RES_C,
        )
    return edits.changes()


_MODEL_REGISTRY = "lucid/models/registry.json"
_V4_PARAMETERS_UPSTREAM = 40_586_984  # with the 64-channel 1x1
_V4_PARAMETERS_FIXED = 42_711_400  # Fig. 5's 192 (the port's count, conformance.spec)


def v4_block_b_branch4(root: Path) -> dict[str, str]:
    """Inception-v4 B block (Fig. 5): the long branch starts with a 1x1 to 192, not 64."""
    edits = Edits(root)
    edits.replace(
        _inception(root),
        "            nn.ConvBNReLU2d(in_channels, 64, kernel_size=1),\n"
        "            nn.ConvBNReLU2d(64, 192, kernel_size=(1, 7), padding=(0, 3)),\n",
        "            nn.ConvBNReLU2d(in_channels, 192, kernel_size=1),  # Fig. 5: 1x1 192\n"
        "            nn.ConvBNReLU2d(192, 192, kernel_size=(1, 7), padding=(0, 3)),\n",
        within="class _InceptionModule_V4B(",
    )
    # 2.10+ ship lucid/models/registry.json, which lists each model's parameter count: the
    # fixed Inception-v4 has the paper's count (Fig. 3-9, conformance.spec), not the 64-channel branch's.
    if (root / _MODEL_REGISTRY).is_file():
        edits.replace(
            _MODEL_REGISTRY,
            f'"parameter_size": {_V4_PARAMETERS_UPSTREAM},',
            f'"parameter_size": {_V4_PARAMETERS_FIXED},',
        )
    return edits.changes()
