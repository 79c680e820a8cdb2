"""parity at its edges, on tiny Lucid/torch twins (a conv, a BatchNorm, a pool, a linear
head): models left exactly as found when compare casts, strict transfers into tied or
overlapping destinations, errors in a backward, outputs of another dtype, non-finite or
non-float outputs."""

from __future__ import annotations

import copy

import lucid
import lucid.nn as lnn
import numpy as np
import pytest
import torch

import parity.comparison
from lucid_inception.frameworks import LucidAdapter, TorchAdapter, adapter_for
from parity import TOLERANCES, StateMismatchError, compare, save_checkpoint, transfer
from parity.tolerances import K_MAX

X = np.random.default_rng(0).standard_normal((2, 3, 8, 8))


class LucidNet(lnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = lnn.Conv2d(3, 4, 3, padding=1)
        self.bn = lnn.BatchNorm2d(4)
        self.relu = lnn.ReLU()
        self.pool = lnn.AdaptiveAvgPool2d(1)
        self.fc = lnn.Linear(4, 5)

    def forward(self, x):
        y = self.relu(self.bn(self.conv(x)))
        return self.fc(self.pool(y).reshape(x.shape[0], -1))


class TorchNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.relu = torch.nn.ReLU()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x):
        y = self.relu(self.bn(self.conv(x)))
        return self.fc(self.pool(y).reshape(x.shape[0], -1))


def twins(dtype: str = "float32") -> tuple[LucidNet, TorchNet]:
    a, b = LucidNet(), TorchNet()
    LucidAdapter.cast(a, dtype)
    b.to(getattr(torch, dtype))
    transfer(a, b)
    return a, b


def torch_pair(dtype: str) -> tuple[TorchNet, TorchNet]:
    a, b = TorchNet().to(getattr(torch, dtype)), TorchNet().to(getattr(torch, dtype))
    b.load_state_dict(a.state_dict())
    return a, b


def _with_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    model(torch.from_numpy(X).to(model.fc.weight.dtype)).sum().backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


# ------------------------------------------------------------- left exactly as found


@pytest.mark.parametrize(
    ("home", "compared", "backward"),
    [("float64", "float32", False), ("float32", "float64", False), ("float32", "float64", True)],
)
def test_a_cast_leaves_gradients_as_found(home: str, compared: str, backward: bool) -> None:
    """torch's ``Module.to`` casts every ``.grad`` as well: a float64 model compared in
    float32 kept float32-rounded gradients, a float32 one float64 gradients."""
    a, b = torch_pair(home)
    grads = _with_grads(a), _with_grads(b)
    report = compare(a, b, X, dtype=compared, backward=backward)
    assert report.ok, report.worst(3)
    for model, before in zip((a, b), grads, strict=True):
        for key, param in model.named_parameters():
            assert param.dtype == getattr(torch, home) and param.grad.dtype == before[key].dtype, key
            assert torch.equal(param.grad, before[key]), key


def test_lucid_gradients_come_back_in_their_own_dtype() -> None:
    """A fresh lucid-dl 2.9.0 model's float64 BatchNorm buffers (LUC-009) leave float64
    gradients on its float32 parameters; a compare that casts the model (here to float64
    and back) must hand them back as they were, not cast to the parameters' dtype."""
    a, b = twins()
    for param in a.parameters():
        param.grad = np.linspace(-1, 1, param.size).reshape(param.shape) / 3  # float64
    report = compare(a, b, X, dtype="float64")
    assert report.ok, _failing(report)
    for param in a.parameters():
        assert param.data.dtype == np.float32 and param.grad.dtype == np.float64
        np.testing.assert_array_equal(param.grad, np.linspace(-1, 1, param.size).reshape(param.shape) / 3)


def test_gradients_come_back_as_the_same_objects() -> None:
    # They came back by value: a channels-last .grad as a new contiguous tensor, and a
    # user's reference to the old one stale (and Lucid's arrays as copies).
    a, b = twins()
    b.to(memory_format=torch.channels_last)
    b.conv.weight.grad = torch.full_like(b.conv.weight, 0.5)  # channels-last, as its weight
    a.conv.weight.grad = np.full(a.conv.weight.shape, 0.5, dtype=np.float32)
    held = b.conv.weight.grad, a.conv.weight.grad
    strides = held[0].stride()
    compare(a, b, X, dtype="float64", backward=True)  # its verdict: 2.9.0 bias gradients (LUC-006)
    assert b.conv.weight.grad is held[0] and b.conv.weight.grad.stride() == strides
    assert torch.equal(held[0], torch.full_like(held[0], 0.5)) and held[0].dtype == torch.float32
    assert a.conv.weight.grad is held[1] and (held[1] == 0.5).all()
    assert all(p.grad is None for name, p in b.named_parameters() if name != "conv.weight")


@pytest.mark.parametrize(("home", "compared"), [("float64", "float32"), ("float32", "float64")])
def test_a_cast_leaves_non_persistent_buffers_as_found(home: str, compared: str) -> None:
    """Not in the state dict, so no snapshot restores them: ``compare`` must not cast them."""
    a, b = torch_pair(home)
    for model in (a, b):
        scratch = torch.linspace(0, 1, 7, dtype=torch.float64) / 3
        model.register_buffer("scratch", scratch.to(getattr(torch, home)), persistent=False)
    before = a.scratch.clone()
    assert compare(a, b, X, dtype=compared).ok
    assert a.scratch.dtype == before.dtype and torch.equal(a.scratch, before)


# ------------------------------------------------------------- transfer into aliases


class TwoLinear(torch.nn.Module):
    def __init__(self, tied: bool = False) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
        if tied:
            self.b.weight = self.a.weight


class Expanded(torch.nn.Module):
    def __init__(self, values: torch.Tensor | None = None) -> None:
        super().__init__()
        self.p1 = torch.nn.Parameter(torch.zeros(4) if values is None else values.clone())
        self.p2 = torch.nn.Parameter(torch.zeros(1).expand(4) if values is None else values.clone())


def _bytes(model: torch.nn.Module) -> dict[str, bytes]:
    return {k: t.detach().numpy().tobytes() for k, t in model.state_dict(keep_vars=True).items()}


def test_a_tied_destination_takes_only_equal_source_values() -> None:
    src, dst = TwoLinear(), TwoLinear(tied=True)
    before = _bytes(dst)
    with pytest.raises(
        StateMismatchError, match=r"a\.weight, b\.weight: one tensor on the destination"
    ) as error:
        transfer(src, dst)
    assert len(error.value.problems) == 1
    assert _bytes(dst) == before
    with torch.no_grad():
        src.b.weight.copy_(src.a.weight)  # the same values under both names: well defined
    transfer(src, dst)
    assert all(torch.equal(value, dst.state_dict()[key]) for key, value in src.state_dict().items())


def test_a_destination_overlapping_itself_is_refused_before_any_write() -> None:
    dst = Expanded()
    before = _bytes(dst)
    with pytest.raises(StateMismatchError, match=r"p2: its elements overlap in memory") as error:
        transfer(Expanded(torch.arange(4.0) + 1), dst)
    assert len(error.value.problems) == 1
    assert _bytes(dst) == before  # p1 was written before torch refused p2


def test_a_tied_lucid_destination_is_seen_too() -> None:
    class Tied(lnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = lnn.Linear(3, 3), lnn.Linear(3, 3)
            self.b.weight = self.a.weight

    with pytest.raises(StateMismatchError, match=r"a\.weight, b\.weight: one tensor"):
        transfer(TwoLinear(), Tied())


class TwoVectors(torch.nn.Module):
    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Parameter(a), torch.nn.Parameter(b)


def test_a_lucid_destination_whose_tensors_share_one_array_takes_the_transfer() -> None:
    """Lucid keeps the caller's array (two Parameters of one array share memory), but its
    load replaces each tensor's array rather than writing into it: no corruption."""

    class Shared(lnn.Module):
        def __init__(self, array: np.ndarray) -> None:
            super().__init__()
            self.a, self.b = lnn.Parameter(array), lnn.Parameter(array)

    dst = Shared(np.zeros(3, np.float32))
    assert np.shares_memory(dst.a.data, dst.b.data) and dst.a is not dst.b
    transfer(TwoVectors(torch.ones(3), torch.full((3,), 2.0)), dst)
    assert dst.a.data.tolist() == [1, 1, 1] and dst.b.data.tolist() == [2, 2, 2]


def test_distinct_torch_tensors_sharing_memory_are_named_so() -> None:
    """torch writes in place: two Parameters on one storage are refused, as sharing memory
    (they are not one tensor)."""
    base = torch.zeros(3)
    dst = TwoVectors(base, base.view(3))
    with pytest.raises(StateMismatchError, match=r"a, b: share memory on the destination") as error:
        transfer(TwoVectors(torch.ones(3), torch.full((3,), 2.0)), dst)
    assert "one tensor" not in str(error.value)


@pytest.mark.parametrize(
    ("strides", "shape", "overlaps"),
    [
        ((48, 8), (4, 6), False),
        ((8, 48), (6, 4), False),
        ((96, 16), (2, 3), False),
        ((8, 8), (3, 3), True),
        ((16, 40), (2, 3), False),
        ((0, 8), (2, 3), True),
    ],
)
def test_overlap_within_one_tensor(strides: tuple, shape: tuple, overlaps: bool) -> None:
    from parity._aliasing import _overlaps_itself

    view = np.lib.stride_tricks.as_strided(np.zeros(48), shape, strides)
    assert _overlaps_itself(view) is overlaps


# ------------------------------------------------------------------ backward errors


def _detached_head(b: TorchNet) -> None:
    inner = b.fc.forward
    b.fc.forward = lambda x: inner(x).detach()  # cuts the graph: nothing to backpropagate


def _raising_gradient_hook(b: TorchNet) -> None:
    def hook(_grad: torch.Tensor) -> None:
        raise RuntimeError("planted in a gradient hook")

    b.conv.weight.register_hook(hook)


@pytest.mark.parametrize(("plant", "stopped"), [(_detached_head, "fc"), (_raising_gradient_hook, "conv")])
@pytest.mark.parametrize("side", [0, 1])
def test_an_error_in_a_backward_is_a_row_not_a_crash(plant, stopped: str, side: int) -> None:
    # Raised inside the autograd engine: no module on the traceback. The row is where the
    # backward stopped, the first module whose input gradient never came (it was the root).
    a, b = torch_pair("float64")
    plant((a, b)[side])
    report = compare(a, b, X, dtype="float64", backward=True)
    errors = [row for row in report.rows if row.kind == "error"]
    assert not report.ok and len(errors) == 1 and report.first_divergence == errors[0].module == stopped
    assert f"side {'ab'[side]} (torch) raised in the backward before {stopped!r}" in errors[0].note
    assert "RuntimeError" in errors[0].note
    assert all(row.ok for row in report.rows if row.kind == "output")
    assert all(p.grad is None for model in (a, b) for p in model.parameters())  # put back


# ------------------------------------------------------------- what an output holds


def test_an_output_of_another_dtype_fails() -> None:
    a, b = torch_pair("float32")
    fc = b.fc
    b.fc.forward = lambda x: torch.nn.functional.linear(x.double(), fc.weight.double(), fc.bias.double())
    report = compare(a, b, X, dtype="float32")
    assert not report.ok and report.first_divergence == "fc"
    row = next(row for row in report.rows if row.module == "fc" and row.kind == "output")
    assert not row.ok and "dtypes differ: float32 vs float64" in row.note
    assert row.max_rel <= row.tol  # the values agree: the dtype alone fails it


def test_outputs_with_nothing_finite_fail_where_it_starts() -> None:
    a, b = torch_pair("float32")
    for model in (a, b):
        with torch.no_grad():
            model.bn.running_var.fill_(-1.0)  # sqrt of a negative variance: every value NaN
    report = compare(a, b, X)
    assert not report.ok and report.first_divergence == "bn"
    row = next(row for row in report.rows if row.module == "bn" and row.kind == "output")
    assert "nothing finite to compare" in row.note


def test_a_bool_output_is_compared_for_equality() -> None:
    class Masked(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.mask, self.fc = (
                torch.nn.Conv2d(3, 4, 3),
                torch.nn.Identity(),
                torch.nn.Linear(4, 3),
            )

        def forward(self, x):
            y = self.conv(x).mean((2, 3))
            return self.fc(y * self.mask(y > 0))

    a, b = Masked(), Masked()
    b.load_state_dict(a.state_dict())
    report = compare(a, b, X)
    assert report.ok, report.worst(3)
    row = next(row for row in report.rows if row.module == "mask" and row.kind == "output")
    assert row.max_abs == 0 and "bool values: compared for equality" in row.note


def test_a_write_no_version_counter_sees_is_found_one_module_late() -> None:
    """The documented limit of the Repeat shortcut (parity._capture.Repeat): a container
    that scales its last child's output through ``.data`` reuses the child's (passing)
    row; the next module that reads the values fails instead. With ``y.mul_`` (a version
    bump) the container itself fails."""

    class Block(torch.nn.Module):
        def __init__(self, write: str | None) -> None:
            super().__init__()
            self.conv, self.write = torch.nn.Conv2d(3, 4, 3, padding=1), write

        def forward(self, x):
            y = self.conv(x)
            if self.write is not None:  # after the child returned
                (y.data if self.write == "data" else y).mul_(1.5)
            return y

    class Net(torch.nn.Module):
        def __init__(self, write: str | None = None) -> None:
            super().__init__()
            self.block, self.relu = Block(write), torch.nn.ReLU()

        def forward(self, x):
            return self.relu(self.block(x)) + 0

    for write, found in (("in-place op", "block"), ("data", "relu")):
        a, b = Net(), Net(write)
        b.load_state_dict(a.state_dict())
        assert compare(a, b, X).first_divergence == found, write


# ------------------------------------------------------------ dtypes numpy cannot hold


@pytest.mark.parametrize(("dtype", "name"), [(torch.bfloat16, "bfloat16"), (torch.float16, "float16")])
def test_an_unsupported_dtype_lists_each_key_once(dtype: torch.dtype, name: str) -> None:
    plain, odd = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3).to(dtype)
    before = _bytes(plain)
    for src, dst, side in ((plain, odd, "destination"), (odd, plain, "source")):
        with pytest.raises(StateMismatchError) as error:
            transfer(src, dst)
        assert error.value.problems == [
            f"{key}: dtype {name} on the {side}; transfer supports float32 and float64"
            for key in ("weight", "bias")
        ]
    assert _bytes(plain) == before


def test_compare_refuses_a_dtype_numpy_cannot_hold_listing_every_key() -> None:
    odd = torch.nn.Linear(3, 3).to(torch.bfloat16)
    with pytest.raises(StateMismatchError, match=r"weight: dtype bfloat16 on side b \(torch\)") as error:
        compare(torch.nn.Linear(3, 3), odd, X)
    assert [line.split(":")[0] for line in error.value.problems] == ["weight", "bias"]
    assert odd.weight.dtype == torch.bfloat16


def test_a_meta_model_is_refused_listing_every_key_before_anything_is_read(tmp_path) -> None:
    """A tensor on torch's meta device has no values: reading it raised NotImplementedError
    halfway through a transfer from it, a save or a compare."""
    with torch.device("meta"):
        meta = torch.nn.Linear(3, 3)
    plain = torch.nn.Linear(3, 3)
    before = _bytes(plain)
    with pytest.raises(StateMismatchError) as error:
        transfer(meta, plain)
    assert error.value.problems == [
        f"{key}: on the source, a tensor on the meta device: it holds no values" for key in ("weight", "bias")
    ]
    assert _bytes(plain) == before
    with pytest.raises(StateMismatchError, match=r"weight: a tensor on the meta device") as error:
        save_checkpoint(meta, tmp_path / "meta.pt")
    assert len(error.value.problems) == 2 and not list(tmp_path.iterdir())
    for a, b, side in ((plain, meta, "b"), (meta, plain, "a")):
        expected = rf"weight: on side {side} \(torch\), a tensor on the meta device"
        with pytest.raises(StateMismatchError, match=expected):
            compare(a, b, X)
    assert _bytes(plain) == before and meta.weight.is_meta


# ---------------------------------------------------------------------- layer settings


def _failing(report) -> list[tuple[str, str, str]]:
    return [(row.module, row.kind, row.note) for row in report.failures]


def test_a_setting_no_output_shows_fails_at_its_layer() -> None:
    """An eval-mode forward never reads a BatchNorm's momentum: only its settings row can
    tell, and it names the layer."""
    a, b = twins()
    b.bn.momentum = 0.3
    report = compare(a, b, X)
    assert _failing(report) == [("bn", "config", "momentum 0.1 vs 0.3")]
    assert report.first_divergence == "bn"
    b.bn.momentum = 0.1
    assert compare(a, b, X).ok


def test_settings_rows_sit_where_their_layer_runs() -> None:
    """A settings row comes just before its layer's first output row, so an earlier
    divergence in the numbers stays the first divergence."""
    a, b = torch_pair("float64")
    b.bn.eps = 1e-3  # changes the BN output too
    original = b.conv.forward
    b.conv.forward = lambda x: original(x) + 1.0  # an earlier fault, in the numbers only
    report = compare(a, b, X, dtype="float64")
    assert report.first_divergence == "conv"
    order = [(row.module, row.kind) for row in report.rows]
    assert order.index(("bn", "config")) == order.index(("bn", "output")) - 1
    assert ("bn", "config", "eps 1e-05 vs 0.001") in _failing(report)


def test_a_different_kind_of_layer_fails_even_with_equal_outputs() -> None:
    """A global average pool and an 8x8 average pool agree on an 8x8 map, not on others."""
    a, b = torch_pair("float64")
    b.pool = torch.nn.AvgPool2d(8)
    report = compare(a, b, X, dtype="float64")
    assert _failing(report) == [("pool", "config", "kind adaptive-avgpool2d vs avgpool2d")]


def test_containers_and_classes_the_adapters_do_not_know_are_not_compared() -> None:
    """Two faithful models may name their own classes differently: no settings row then."""

    class OwnReLU(torch.nn.Module):
        def forward(self, x):
            return torch.relu(x)

    a, b = torch_pair("float64")
    b.relu = OwnReLU()
    report = compare(a, b, X, dtype="float64")
    assert report.ok, _failing(report)
    compared = {row.module for row in report.rows if row.kind == "config"}
    assert compared == {"conv", "bn", "pool", "fc"}  # not the root, not relu (a ReLU on side a only)


def test_a_layer_whose_settings_cannot_be_read_is_still_compared_by_its_output(monkeypatch) -> None:
    from lucid_inception.frameworks import TorchAdapter

    def unreadable(module):
        if isinstance(module, torch.nn.Conv2d):
            raise TypeError("an odd attribute")
        return original(module)

    original = TorchAdapter.layer_info
    monkeypatch.setattr(TorchAdapter, "layer_info", staticmethod(unreadable))
    a, b = twins()
    report = compare(a, b, X)
    assert report.ok and "conv" not in {row.module for row in report.rows if row.kind == "config"}
    assert ("conv", "output") in {(row.module, row.kind) for row in report.rows}


def test_settings_are_compared_as_used_not_as_stored() -> None:
    """Lucid runs a BatchNorm momentum of None as 0.1; torch as a cumulative average.
    Without padding, a pool's count_include_pad and a conv's padding mode change nothing."""
    a, b = twins()
    a.bn.momentum = None  # Lucid: 0.1, as torch's 0.1
    a.conv, b.conv = lnn.Conv2d(3, 4, 3), torch.nn.Conv2d(3, 4, 3, padding_mode="reflect")
    transfer(a, b)
    report = compare(a, b, X)
    assert report.ok, _failing(report)
    b.bn.momentum = None  # torch: a cumulative average
    assert _failing(compare(a, b, X)) == [("bn", "config", "momentum 0.1 vs None")]


def test_a_layer_replaced_by_an_identity_fails() -> None:
    a, b = torch_pair("float64")
    b.relu = torch.nn.Identity()
    assert ("relu", "config", "kind relu vs identity") in _failing(compare(a, b, X, dtype="float64"))
    assert LucidAdapter.layer_info(lnn.Identity()) == {"kind": "identity"}


@pytest.mark.parametrize(
    ("lucid_layer", "torch_layer", "kind"),
    [
        (lnn.Dropout2d, torch.nn.Dropout2d, "dropout2d"),
        (lnn.AlphaDropout, torch.nn.AlphaDropout, "alpha-dropout"),
        (lnn.BatchNorm1d, torch.nn.BatchNorm1d, "batchnorm1d"),
    ],
)
def test_every_dropout_and_batchnorm_class_is_described(lucid_layer, torch_layer, kind: str) -> None:
    # Before, only Dropout and BatchNorm2d were: another class was "module" on both sides,
    # whose settings no row compared (a Dropout1d at p 0.8 passed against Lucid's 0.2).
    arg = 0.3 if "dropout" in kind else 4  # p, or num_features
    lucid_info, torch_info = (
        LucidAdapter.layer_info(lucid_layer(arg)),
        TorchAdapter.layer_info(torch_layer(arg)),
    )
    assert lucid_info == torch_info and lucid_info["kind"] == kind


def test_an_average_pool_dividing_by_its_window_counts_its_padding() -> None:
    # divisor_override=9 on a 3x3 window divides by 9 everywhere: Lucid's pool, as used.
    lucid_pool = LucidAdapter.layer_info(lnn.AvgPool2d(3, 1, 1))
    assert TorchAdapter.layer_info(torch.nn.AvgPool2d(3, 1, 1, divisor_override=9)) == lucid_pool
    other = TorchAdapter.layer_info(torch.nn.AvgPool2d(3, 1, 1, divisor_override=4))
    assert (other["count_include_pad"], other["divisor_override"]) == (False, 4)
    # with ceil_mode a window may hang past the padded edge: torch divides it by its clipped size
    hanging = TorchAdapter.layer_info(torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True, divisor_override=9))
    assert (hanging["count_include_pad"], hanging["divisor_override"]) == (False, 9)


def test_another_dropout_class_is_another_layer() -> None:
    # Each drops something else in training (an element, a channel): a twin must match.
    a, b = twins()
    a.drop, b.drop = lnn.Dropout(0.2), torch.nn.Dropout1d(0.2)
    assert ("drop", "config", "kind dropout vs dropout1d") in _failing(compare(a, b, X))


def test_a_sync_batchnorm_is_compared_as_a_batchnorm() -> None:
    # convert_sync_batchnorm's layer computes BatchNorm2d's on one process: its settings count.
    a, b = twins()
    sync = torch.nn.SyncBatchNorm(4)
    sync.load_state_dict(b.bn.state_dict())
    b.bn = sync
    report = compare(a, b, X)
    assert report.ok, _failing(report)
    b.bn.momentum = 0.2
    assert _failing(compare(a, b, X)) == [("bn", "config", "momentum 0.1 vs 0.2")]


def test_a_size_given_as_a_numpy_array_is_a_plain_setting() -> None:
    a, b = twins()
    a.pool = lnn.AdaptiveAvgPool2d(np.array([1, 1]))
    report = compare(a, b, X)
    assert report.ok, _failing(report)


def test_a_layer_that_never_runs_has_its_settings_row_after_every_output() -> None:
    a, b = torch_pair("float64")
    a.spare, b.spare = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(3, 4, 3)
    b.spare.load_state_dict({"weight": b.spare.weight, "bias": a.spare.bias}, strict=False)
    b.spare.weight = torch.nn.Parameter(b.spare.weight)
    report = compare(a, b, X, dtype="float64")
    kinds = [(row.module, row.kind) for row in report.rows]
    last_output = max(i for i, (_, kind) in enumerate(kinds) if kind == "output")
    assert kinds.index(("spare", "config")) > last_output
    assert ("spare", "config", "in_channels 3 vs 3") not in _failing(report)
    assert any(
        m == "spare" and k == "config" and "kernel (1, 1) vs (3, 3)" in n for m, k, n in _failing(report)
    )


def test_a_divisor_override_differs_even_without_padding() -> None:
    a, b = torch_pair("float64")
    a.pool, b.pool = torch.nn.AvgPool2d(8), torch.nn.AvgPool2d(8, divisor_override=32)
    failing = _failing(compare(a, b, X, dtype="float64"))
    assert ("pool", "config", "divisor_override None vs 32") in failing


@pytest.mark.parametrize(
    ("setting", "note"),
    [
        ({"dilation": 2}, "dilation (1, 1) vs (2, 2)"),
        ({"return_indices": True}, "return_indices False vs True"),
    ],
)
def test_a_max_pools_dilation_and_indices_are_settings(setting: dict, note: str) -> None:
    """Settings Lucid's max pool does not have (it never dilates, never returns indices)
    still differ from a torch pool that uses them: a config row names the setting."""
    a, b = twins()
    a.pool, b.pool = lnn.MaxPool2d(2, 2), torch.nn.MaxPool2d(2, 2, **setting)
    assert ("pool", "config", note) in _failing(compare(a, b, X))


def test_a_torch_size_given_as_a_numpy_array_is_a_plain_setting() -> None:
    a, b = twins()
    b.pool = torch.nn.AdaptiveAvgPool2d(np.array([1, 1]))
    report = compare(a, b, X)
    assert report.ok, _failing(report)


def test_a_batchnorm_without_running_statistics_has_no_momentum_to_differ() -> None:
    a, b = torch_pair("float64")
    for model, momentum in ((a, 0.1), (b, 0.3)):
        model.bn = torch.nn.BatchNorm2d(4, momentum=momentum, track_running_stats=False)
    b.bn.load_state_dict(a.bn.state_dict())
    report = compare(a, b, X, dtype="float64")
    assert report.ok, _failing(report)


# ------------------------------------------------------------ train step: running statistics


def _untracked(model: object) -> object:
    """``model`` with a BatchNorm that keeps no running statistics (batch statistics only)."""
    if isinstance(model, torch.nn.Module):
        model.bn = torch.nn.BatchNorm2d(4, track_running_stats=False).to(model.fc.weight.dtype)
    else:
        model.bn = lnn.BatchNorm2d(4, track_running_stats=False)
        LucidAdapter.cast(model, "float64")
    return model


def test_a_batchnorm_without_running_statistics_has_a_train_step() -> None:
    """No running statistics on either side: batch statistics are compared, and there is
    no running update to compare (this crashed on the missing buffers)."""
    a, b = twins("float64")
    _untracked(a), _untracked(b)
    transfer(a, b)
    report = compare(a, b, X, dtype="float64", train_step=True)
    assert report.ok, _failing(report)
    kinds = {row.kind for row in report.rows if row.module == "bn"}
    assert "bn_batch_stats" in kinds and "bn_running_update" not in kinds


def test_running_statistics_on_one_side_only_fail_at_that_batchnorm() -> None:
    a, b = torch_pair("float64")
    _untracked(b)
    b.bn.load_state_dict({k: v for k, v in a.bn.state_dict().items() if not k.startswith(("running", "num"))})
    failing = _failing(compare(a, b, X, dtype="float64", train_step=True))
    assert ("bn", "bn_running_update", "running statistics kept on side a only") in failing


def test_a_cumulative_average_on_both_sides_is_compared_as_it_is() -> None:
    """Momentum None (torch's cumulative average) on both sides of one convention: the
    running statistics are compared directly. The planted difference is a state the
    state check does not compare (``num_batches_tracked``), so only this row sees it."""
    a, b = torch_pair("float64")
    a.bn.momentum = b.bn.momentum = None
    report = compare(a, b, X, dtype="float64", train_step=True)
    assert report.ok, _failing(report)
    (row,) = [row for row in report.rows if row.kind == "bn_running_update"]
    assert "compared as they are" in row.note
    b.bn.num_batches_tracked.fill_(3)  # the step then averages in 1/4 of the batch, not all of it
    assert [(m, k) for m, k, _ in _failing(compare(a, b, X, dtype="float64", train_step=True))] == [
        ("bn", "bn_running_update")
    ]


class TupleNet(TorchNet):
    def forward(self, x):
        return super().forward(x), x.mean()


def test_a_model_returning_a_tuple_is_not_blamed_for_the_backward_it_cannot_have() -> None:
    """``backward=True`` seeds one output's gradient; a tuple has none to seed. One row says
    so, instead of an error row per side blaming the model for 'tuple has no backward'."""
    a, b = TupleNet().double(), TupleNet().double()
    b.load_state_dict(a.state_dict())
    report = compare(a, b, X, dtype="float64", backward=True)
    assert [(row.module, row.kind) for row in report.failures] == [("", "input_grad")]
    assert report.failures[0].note.startswith("backward not run: side a (torch)'s model returned a tuple")


def test_an_exception_in_the_harness_during_the_backward_is_raised_not_blamed_on_the_model(
    monkeypatch,
) -> None:
    """The input-gradient hooks run the harness's own code inside the framework's backward;
    its exception must reach the caller, not become an error row naming the model."""
    import parity._gradients

    def broken(*_args: object) -> None:
        raise RuntimeError("a bug in the harness")

    monkeypatch.setattr(parity._gradients, "_input_grad_row", broken)
    a, b = torch_pair("float64")
    with pytest.raises(RuntimeError, match="a bug in the harness"):
        compare(a, b, X, dtype="float64", backward=True)
    assert not any(p.grad is not None for p in a.parameters())  # left as found


class TwiceNet(TorchNet):
    def forward(self, x):
        y = self.relu(self.bn(self.bn(self.conv(x))))
        return self.fc(self.pool(y).reshape(x.shape[0], -1))


def test_the_running_update_of_a_batchnorm_called_twice_follows_both_calls() -> None:
    a, b = TwiceNet().double(), TwiceNet().double()
    b.load_state_dict(a.state_dict())
    report = compare(a, b, X, dtype="float64", train_step=True)
    assert report.ok, _failing(report)
    kinds = [row.kind for row in report.rows if row.module == "bn" and row.kind.startswith("bn_")]
    call = ["bn_batch_stats", "bn_train_output"]
    assert kinds == [*call, *call, "bn_running_update"]


class LucidFlatHeads(lnn.Module):
    """Two heads on one feature map ``y``: with ``shared_relu`` both read ``relu(y)``, else
    ``fc`` reads ``relu(y)`` and ``fc2`` reads ``y``."""

    def __init__(self, shared_relu: bool) -> None:
        super().__init__()
        self.conv = lnn.Conv2d(3, 4, 3, padding=1)
        self.fc = lnn.Linear(4 * 8 * 8, 5)
        self.fc2 = lnn.Linear(4 * 8 * 8, 5)
        self.shared_relu = shared_relu

    def forward(self, x):
        y = self.conv(x)
        n = y.shape[0]
        flat = lnn.functional.relu(y.reshape(n, -1))
        return self.fc(flat) + self.fc2(flat if self.shared_relu else y.reshape(n, -1))


class TorchFlatHeads(torch.nn.Module):
    """Applies the ReLU in place to ``y.reshape(n, -1)``, a view of a contiguous ``y``, so
    the ReLU reaches ``fc2``'s input too: the twin of ``LucidFlatHeads(shared_relu=True)``,
    and a fault against ``shared_relu=False``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 5)
        self.fc2 = torch.nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        y = self.conv(x)
        n = y.shape[0]
        flat = y.reshape(n, -1).relu_()
        return self.fc(flat) + self.fc2(y.reshape(n, -1))


@pytest.mark.parametrize("faithful", [True, False])
def test_torch_runs_on_the_memory_layout_a_caller_gives_it(faithful: bool) -> None:
    """A faithful model that relies on torch's aliasing passes, and a fault that works
    through it is found. Both depend on the input's memory layout: ``reshape`` is a view of
    a contiguous tensor but a copy of a channels-last one. Handing torch a channels-last
    input (every output pair would then share the memory order of Lucid's convolutions,
    and comparing would cost a third less) failed the first and hid the second; see
    ``compare``."""
    a, b = LucidFlatHeads(shared_relu=faithful), TorchFlatHeads()
    LucidAdapter.cast(a, "float32")
    transfer(a, b)
    report = compare(a, b, X)
    if faithful:
        assert report.ok, _failing(report)
    else:
        assert report.first_divergence == "fc2", _failing(report)


def test_a_train_mode_only_fault_in_a_batchnorm_no_batchnorm_reads_is_found() -> None:
    """Batch statistics are read from a BatchNorm's input and running updates from its
    buffers: a fault in how train mode normalises shows only in its output. Here the last
    (only) BatchNorm normalises with the unbiased batch variance in train mode."""
    from parity.selftest import _train_unbiased_variance

    for dtype in ("float32", "float64"):
        a, b = twins(dtype)
        assert compare(a, b, X, dtype=dtype, train_step=True).ok
        b.bn.forward = _train_unbiased_variance(b.bn, b.bn.forward)
        assert compare(a, b, X, dtype=dtype).ok  # eval mode: nothing to see
        report = compare(a, b, X, dtype=dtype, train_step=True)
        assert [(row.module, row.kind) for row in report.failures] == [("bn", "bn_train_output")], dtype


def test_a_faithful_train_mode_batchnorm_over_many_values_passes() -> None:
    """Lucid sums a BatchNorm's N*H*W values per channel in float32 across its
    channels-last memory; over 262,144 values the faithful output differs by 2.4 x ``rel``,
    inside the tolerance for sums that long (``Tolerance.reduced``)."""
    a, b = twins("float32")
    x = np.random.default_rng(0).standard_normal((64, 3, 64, 64))
    report = compare(a, b, x, train_step=True)
    assert report.ok, _failing(report)
    (row,) = [row for row in report.rows if row.kind == "bn_train_output"]
    assert row.tol == pytest.approx(TOLERANCES["float32"].rel * (64 * 64 * 64 / K_MAX) ** 0.5)


class BatchNorm1dNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(4, eps=1e-2)

    def forward(self, x):
        return self.bn(x.flatten(2))


def test_the_epsilon_of_any_batchnorm_kind_scales_its_output_row() -> None:
    """A BatchNorm1d's eps (1e-2, against a variance of 1e-6) must enter the output's
    scale: read as 0, it inflated the scale 100-fold and hid a 0.05% train-mode fault."""
    a, b = BatchNorm1dNet(), BatchNorm1dNet()
    b.load_state_dict(a.state_dict())
    original = b.bn.forward

    def fault(x):
        y = original(x)
        return (y - b.bn.bias[:, None]) * 1.0005 + b.bn.bias[:, None] if b.bn.training else y

    b.bn.forward = fault
    x = 1e-3 * np.random.default_rng(0).standard_normal((8, 4, 4, 4))
    report = compare(a, b, x, train_step=True)
    assert [(row.module, row.kind) for row in report.failures] == [("bn", "bn_train_output")]


class KeywordBatchNormNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(input=x)  # no positional input for the input hook to capture


def test_a_batchnorm_called_with_a_keyword_input_still_has_its_train_mode_output_compared() -> None:
    a, b = KeywordBatchNormNet(), KeywordBatchNormNet()
    b.load_state_dict(a.state_dict())
    report = compare(a, b, X, train_step=True)
    assert report.ok, _failing(report)
    (row,) = [row for row in report.rows if row.kind == "bn_train_output"]
    assert "its input was not captured" in row.note
    b.bn.weight.data.mul_(1.01)  # now it differs: the state row and the output say so
    assert ("bn", "bn_train_output") in [
        (r.module, r.kind) for r in compare(a, b, X, train_step=True).failures
    ]


# --------------------------------------------------------------- grad mode, per side


class TorchFrozenBranchNet(torch.nn.Module):
    """A forward that runs a side branch under ``no_grad`` (a frozen teacher)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.teacher = torch.nn.Conv2d(4, 4, 1)
        self.head = torch.nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = self.stem(x)
        with torch.no_grad():
            t = self.teacher(y)
        return self.head(y) + 0.0 * t.mean()


class LucidFrozenBranchNet(lnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = lnn.Conv2d(3, 4, 3, padding=1)
        self.teacher = lnn.Conv2d(4, 4, 1)
        self.head = lnn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = self.stem(x)
        with lucid.no_grad():
            t = self.teacher(y)
        return self.head(y) + 0.0 * t.mean()


@pytest.mark.parametrize("framework", ["torch", "lucid"])
def test_a_side_paused_in_its_no_grad_leaves_gradients_on_for_the_other(framework: str, monkeypatch) -> None:
    """The two forwards share one thread: side b paused inside its model's ``no_grad``
    (waiting for side a at ``teacher``) turned gradients off for side a, whose output then
    had no graph and its backward raised. No lead: the sides take turns at every module."""
    monkeypatch.setattr(parity.comparison, "lead_for", lambda _input_bytes: 0)
    if framework == "torch":
        a, b = TorchFrozenBranchNet().double(), TorchFrozenBranchNet().double()
        b.load_state_dict(a.state_dict())
    else:
        a, b = LucidFrozenBranchNet(), LucidFrozenBranchNet()
        for model in (a, b):
            LucidAdapter.cast(model, "float64")
        transfer(a, b)
    modes = torch.is_grad_enabled(), lucid.grad_enabled()
    report = compare(a, b, X, dtype="float64", backward=True)
    assert report.ok, _failing(report)
    assert {"param_grad", "input_grad"} <= {row.kind for row in report.rows}
    assert (torch.is_grad_enabled(), lucid.grad_enabled()) == modes


# --------------------------------------------------------------- integer buffers


class LucidPermutedNet(lnn.Module):
    """Indexes with an integer buffer (a channel permutation)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = lnn.Conv2d(3, 4, 3, padding=1)
        self.head = lnn.Conv2d(4, 2, 1)
        self.register_buffer("perm", lnn.Buffer(np.array([3, 2, 1, 0], dtype=np.int64)))

    def forward(self, x):
        return self.head(self.conv(x)[:, self.perm.data])


def test_a_lucid_integer_buffer_keeps_its_dtype_when_compare_casts() -> None:
    """Lucid's cast turned every tensor into the compare dtype, an index buffer too: both
    forwards then raised IndexError (a faithful pair failed)."""
    a = LucidPermutedNet()
    b = copy.deepcopy(a)  # ``transfer`` and ``load_state`` carry floats only
    report = compare(a, b, X, dtype="float64")
    assert report.ok, _failing(report)
    LucidAdapter.cast(a, "float64")
    assert LucidAdapter.dtypes(a)["perm"] == np.int64
    assert LucidAdapter.dtypes(a)["conv.weight"] == np.float64


# --------------------------------------------------------------- a module under two names


class LucidTwiceNamedNet(lnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = lnn.Conv2d(3, 3, 3, padding=1)
        self.again = self.conv  # the same module under a second name
        self.relu = lnn.ReLU()

    def forward(self, x):
        return self.relu(self.again(self.conv(x)))


class TorchTwiceNamedNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.again = self.conv
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        return self.relu(self.again(self.conv(x)))


def test_a_module_under_two_names_is_listed_once_on_both_frameworks() -> None:
    """torch's ``named_modules`` lists a module once, under its first name; Lucid's walk
    listed ``again`` too, so the trees differed and a faithful pair was refused. The
    tied parameters keep every name (state keys, transfer)."""
    a, b = LucidTwiceNamedNet(), TorchTwiceNamedNet().double()
    LucidAdapter.cast(a, "float64")
    transfer(a, b)
    assert [name for name, _ in LucidAdapter.named_modules(a)] == ["", "conv", "relu"]
    assert {"conv.weight", "again.weight"} <= set(LucidAdapter.parameter_names(a))
    # Forward only: Lucid as released gets every conv bias gradient wrong (LUC-006), which
    # backward rows against torch would rightly report.
    report = compare(a, b, X, dtype="float64")
    assert report.ok, _failing(report)
    assert [row.note for row in report.rows if row.kind == "output" and row.module == "conv"] == [
        "call 1 of 2",
        "call 2 of 2",
    ]


# --------------------------------------------------------------- dropout in the train step


class LucidDropoutNet(lnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = lnn.Conv2d(3, 4, 3, padding=1)
        self.bn = lnn.BatchNorm2d(4)
        self.drop = lnn.Dropout(0.5)
        self.bn2 = lnn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn2(self.drop(self.bn(self.conv(x))))


class TorchDropoutNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.drop = torch.nn.Dropout(0.5)
        self.bn2 = torch.nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn2(self.drop(self.bn(self.conv(x))))


@pytest.mark.parametrize("pair", ["torch->torch", "lucid->torch"])
def test_the_train_step_runs_dropout_as_the_identity_and_puts_its_mode_back(pair: str) -> None:
    """Each side drew its own dropout mask in the train step, so the BatchNorm after the
    dropout saw different inputs and a faithful pair failed its batch statistics."""
    b = TorchDropoutNet().double()
    if pair == "torch->torch":
        a = TorchDropoutNet().double()
        a.load_state_dict(b.state_dict())
    else:
        a = LucidDropoutNet()
        LucidAdapter.cast(a, "float64")
        transfer(b, a)
    a.train()
    a.drop.train(False)  # an odd mix of modes, to be put back as found

    def modes() -> list[list[bool]]:
        return [adapter_for(m).training_modes(m) for m in (a, b)]

    before = modes()
    report = compare(a, b, X, dtype="float64", train_step=True)
    assert report.ok, _failing(report)
    assert {"bn_batch_stats", "bn_train_output", "bn_running_update"} <= {row.kind for row in report.rows}
    assert modes() == before


# --------------------------------------------------------------- models that share tensors


@pytest.mark.parametrize("framework", ["torch", "lucid"])
def test_two_models_sharing_a_submodule_are_refused_before_anything_runs(framework: str) -> None:
    """A shared backbone: both backwards accumulated into the same ``.grad``, and the
    parameter-gradient rows of a faithful pair failed."""
    if framework == "torch":
        nn = torch.nn
        backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
        a, b = nn.Sequential(backbone, nn.Conv2d(4, 2, 1)), nn.Sequential(backbone, nn.Conv2d(4, 2, 1))
        b[1].load_state_dict(a[1].state_dict())
    else:
        nn = lnn
        backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
        a, b = nn.Sequential(backbone, nn.Conv2d(4, 2, 1)), nn.Sequential(backbone, nn.Conv2d(4, 2, 1))
        transfer(a[1], b[1])
    calls = []
    backbone.register_forward_hook(lambda *_: calls.append(1))
    shared = r"share 4 parameter\(s\) \('0.0.weight'.*independent models"
    with pytest.raises(ValueError, match=shared):
        compare(a, b, X, backward=True)
    # With a train step, the BatchNorm's running statistics too.
    with pytest.raises(ValueError, match=r"share 6 parameter\(s\) or buffer\(s\) .*\(\+1 more\)"):
        compare(a, b, X, train_step=True)
    assert calls == []


class _Normalised(torch.nn.Module):
    """A constant every instance shares (a module-level tensor registered as a buffer)."""

    MEAN = torch.tensor([0.5, 0.25, 0.125]).reshape(1, 3, 1, 1)

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", self.MEAN)
        self.conv = torch.nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x - self.mean)


def test_a_constant_buffer_shared_by_two_instances_is_not_refused() -> None:
    """No gradient and no running statistic: two fresh instances (the advice for a shared
    backbone) were refused for it."""
    a, b = _Normalised(), _Normalised()
    transfer(a, b)
    assert a.mean is b.mean and compare(a, b, X, backward=True).ok


# --------------------------------------------------------------- inputs beyond the dtype


def test_an_input_that_overflows_the_compare_dtype_is_refused_as_such() -> None:
    """Finiteness was checked before the cast: float64 values beyond float32's range
    became inf, and the forwards failed on them as if the models were at fault."""
    a, b = torch_pair("float32")
    with pytest.raises(ValueError, match=r"values up to 3.77e\+39 overflow float32"):
        compare(a, b, X * 1e39)
    with pytest.raises(ValueError, match="NaN or infinite"):  # a non-finite input says so
        compare(a, b, np.where(X > 0, np.nan, X))
