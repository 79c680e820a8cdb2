"""Hold a built model against the paper spec (``conformance.spec``), item by item.

Two sources of evidence, through ``lucid_inception.frameworks`` only:
- introspection: the module tree, each conv's kernel, stride, padding, channels, bias
  and BatchNorm, each pool's geometry and padding rule, the dropout probability, the fc;
- one traced forward (eval mode, 1 x 3 x 107 x 107 by default, in the model's dtype):
  which modules run, in what order, with what shapes; each concat's channel layout, read
  from the arrays; each residual block's formula and scale, fitted from its input, output
  and linear branch.

Items are per block type and checked on every repeat. Item ids are stable:
``<model>/<block>/<item>``; an op's item is ``<branch>-<ordinal>-<kind>[-<out>]``
(``inception_v4/block_b/branch4-first-conv-192``). Each item passes or fails with what
was expected, what was found and where. A check that cannot see its evidence (a branch
that never ran) says so and leaves the failure to the item that owns it (``-runs``), so
one fault fails one item.

The parts: ``results`` (items, reports and item ids), ``binding`` (spec to module paths),
``op_checks`` (one op), ``blocks`` (one block), ``model`` (model-level items and
``check_model``) and ``cli`` (``python -m conformance check``).
"""

from conformance.checker.cli import add_check_command, render
from conformance.checker.model import DEFAULT_SEED, DEFAULT_SIZE, check_model
from conformance.checker.results import ItemResult, ModelReport, expected_item_ids, op_item

__all__ = [
    "DEFAULT_SEED",
    "DEFAULT_SIZE",
    "ItemResult",
    "ModelReport",
    "add_check_command",
    "check_model",
    "expected_item_ids",
    "op_item",
    "render",
]
