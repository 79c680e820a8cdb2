"""parity.transfer (parity/weights.py): strict, atomic weight transfer between models and checkpoint files."""

from __future__ import annotations

import json
import os
import pickle
import tracemalloc
import warnings

import lucid
import numpy as np
import pytest
import torch

import lucid_inception
from lucid_inception.frameworks import LucidAdapter, TorchAdapter, adapter_for
from parity import StateMismatchError, compare, transfer
from parity.weights import checkpoint_format, convert_checkpoint, load_checkpoint_file, save_checkpoint

from .conftest import randomize_batchnorm

NAME = "inception_resnet_v1"  # the smallest of the three: transfer is the same code for all


def _random_state(model: object, seed: int, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Seeded random values for every tensor, in ``dtype``, put into ``model``: nothing
    a transfer could get right by accident (no zeros, no ones)."""
    adapter = adapter_for(model)
    adapter.cast(model, dtype)
    rng = np.random.default_rng(seed)
    state = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in adapter.state(model).items()}
    adapter.load_state(model, state)
    return state


def _assert_bit_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        assert got[key].tobytes() == want[key].tobytes(), key


# The code is the same for every model: both dtypes on the smallest, float64 on the largest
# (the full sweep is slow).
BIT_EXACT = [(NAME, "float32"), (NAME, "float64"), ("inception_v4", "float64")]
BIT_EXACT += [
    pytest.param(name, dtype, marks=pytest.mark.slow)
    for name in lucid_inception.MODEL_NAMES
    for dtype in ("float32", "float64")
    if (name, dtype) not in BIT_EXACT
]


@pytest.mark.parametrize(("name", "dtype"), BIT_EXACT)
def test_lucid_torch_lucid_is_bit_exact(name: str, dtype: str) -> None:
    source = lucid_inception.build(name, "lucid")
    want = _random_state(source, seed=1, dtype=dtype)
    twin, back = lucid_inception.build(name, "torch"), lucid_inception.build(name, "lucid")
    for model in (twin, back):
        adapter_for(model).cast(model, dtype)
    transfer(source, twin)
    transfer(twin, back)
    _assert_bit_equal(TorchAdapter.state(twin), want)
    _assert_bit_equal(LucidAdapter.state(back), want)


@pytest.mark.parametrize(
    "frameworks", [("lucid", "lucid"), ("torch", "torch"), ("torch", "lucid"), ("lucid", "torch")]
)
def test_every_direction(frameworks: tuple[str, str]) -> None:
    src, dst = (lucid_inception.build(NAME, fw) for fw in frameworks)
    want = _random_state(src, seed=2)
    transfer(src, dst)
    _assert_bit_equal(adapter_for(dst).state(dst), want)
    # A copy, not a view: changing the source afterwards leaves the destination alone.
    _random_state(src, seed=3)
    _assert_bit_equal(adapter_for(dst).state(dst), want)


@pytest.mark.parametrize("source", ["lucid", "torch"])
def test_a_transfer_into_torch_holds_no_copy_of_the_weights(source: str) -> None:
    """The source is read through views and a torch destination copies straight into its
    tensors: the numpy memory a transfer allocates is a small fraction of the weights
    (a whole-state copy, as before, would be all of them; torch's allocations: next test)."""
    src, dst = lucid_inception.build(NAME, source), lucid_inception.build(NAME, "torch")
    _random_state(src, seed=4)
    weights = sum(v.nbytes for v in adapter_for(src).state_views(src).values())
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. torch's warning about read-only arrays
            transfer(src, dst)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.05 * weights, f"transfer allocated {peak / 2**20:.1f} MiB for {weights / 2**20:.0f} MiB"
    _assert_bit_equal(TorchAdapter.state(dst), adapter_for(src).state(src))


@pytest.mark.parametrize("source", ["lucid", "torch"])
def test_a_transfer_into_torch_copies_straight_from_the_source(source: str, monkeypatch) -> None:
    """tracemalloc cannot see torch's allocations: a torch copy of every weight on the way
    (``torch.tensor(array)``) passes the test above. Every write into the destination must
    read the source's own memory."""
    src, dst = lucid_inception.build(NAME, source), lucid_inception.build(NAME, "torch")
    _random_state(src, seed=4)
    views = adapter_for(src).state_views(src)
    keys = {id(tensor): key for key, tensor in TorchAdapter.tensors(dst).items()}
    copies: list[tuple[str, torch.Tensor]] = []
    copy = torch.Tensor.copy_

    def spy(tensor: torch.Tensor, other: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        copies.append((keys.get(id(tensor), "<not a destination tensor>"), other))
        return copy(tensor, other, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "copy_", spy)
    transfer(src, dst)
    monkeypatch.undo()
    assert sorted(key for key, _ in copies) == sorted(views)
    for key, other in copies:
        assert np.shares_memory(other.numpy(), views[key]), f"{key}: copied from a copy of the source"
    _assert_bit_equal(TorchAdapter.state(dst), adapter_for(src).state(src))


def test_state_views_are_read_only_views_of_the_live_tensors() -> None:
    for framework in ("lucid", "torch"):
        model = lucid_inception.build(NAME, framework)
        adapter = adapter_for(model)
        live, views = adapter.tensors(model), adapter.state_views(model)
        assert list(views) == list(live)
        for key, view in views.items():
            assert not view.flags.writeable, key
            assert np.shares_memory(view, adapter.read_only(live[key])), key
        with pytest.raises(ValueError, match="read-only"):
            next(iter(views.values()))[...] = 0


def _transpose_a_1xk_kernel(model: torch.nn.Module) -> str:
    """Swap the kernel axes of the first (1, k) conv: a (1, 7) kernel and a (7, 1) kernel
    hold the same number of elements, and a transfer must still refuse it."""
    key = next(
        k for k, v in TorchAdapter.state(model).items() if v.ndim == 4 and v.shape[2] == 1 < v.shape[3]
    )
    conv = model.get_submodule(key.rsplit(".", 1)[0])
    conv.weight = torch.nn.Parameter(conv.weight.detach().permute(0, 1, 3, 2).clone())
    return key


def _broken_twin() -> tuple[torch.nn.Module, set[str]]:
    """A twin with one problem of each kind; returns it and the keys the error must name."""
    twin = lucid_inception.build(NAME, "torch")
    stem = twin.stem.conv  # ConvBNReLU2d blocks
    reshaped = _transpose_a_1xk_kernel(twin)
    stem[1].bn.running_var.data = stem[1].bn.running_var.data.double()  # a dtype mismatch
    stem[2].conv.register_parameter("bias", None)  # a missing key
    stem[2].bn.register_buffer("extra", torch.zeros(3))  # an unexpected key
    problems = {reshaped, "stem.conv.1.bn.running_var", "stem.conv.2.conv.bias", "stem.conv.2.bn.extra"}
    return twin, problems


def test_a_failed_transfer_names_every_key_and_changes_nothing() -> None:
    twin, problems = _broken_twin()
    dst = lucid_inception.build(NAME, "lucid")
    before = LucidAdapter.state(dst)
    with pytest.raises(StateMismatchError) as caught:
        transfer(twin, dst)
    assert isinstance(caught.value, ValueError)
    named = {line.split(":")[0] for line in caught.value.problems}
    assert named == problems, caught.value.problems
    assert "nothing was changed" in str(caught.value)
    _assert_bit_equal(LucidAdapter.state(dst), before)
    # The same in the other direction (torch destination).
    lucid_src = lucid_inception.build(NAME, "lucid")
    twin_before = TorchAdapter.state(twin)
    with pytest.raises(StateMismatchError):
        transfer(lucid_src, twin)
    _assert_bit_equal(TorchAdapter.state(twin), twin_before)


def test_weight_shape_mismatch_is_never_reshaped() -> None:
    src, dst = lucid_inception.build(NAME, "torch"), lucid_inception.build(NAME, "torch")
    key = _transpose_a_1xk_kernel(src)
    with pytest.raises(StateMismatchError, match=r"shape \(\d+, \d+, 7, 1\), the model has") as caught:
        transfer(src, dst)
    assert [line.split(":")[0] for line in caught.value.problems] == [key]


def test_only_float32_and_float64_transfer() -> None:
    src, dst = lucid_inception.build(NAME, "torch"), lucid_inception.build(NAME, "torch")
    src.half()
    dst.half()  # equal dtypes, but not a supported one
    with pytest.raises(StateMismatchError, match="float16") as caught:
        transfer(src, dst)
    assert len(caught.value.problems) >= len(TorchAdapter.state(src))


def test_num_batches_tracked_is_not_part_of_a_transfer() -> None:
    src, dst = lucid_inception.build(NAME, "torch"), lucid_inception.build(NAME, "torch")
    src.stem.conv[0].bn.num_batches_tracked.fill_(7)
    transfer(src, dst)
    assert int(dst.stem.conv[0].bn.num_batches_tracked) == 0


# ----------------------------------------------------------------------- checkpoint files


@pytest.fixture(scope="module")
def trained() -> tuple[object, dict[str, np.ndarray]]:
    model = lucid_inception.build(NAME, "lucid")
    randomize_batchnorm(model, seed=5)
    return model, LucidAdapter.state(model)


@pytest.mark.parametrize("suffix", [".lcd", ".pt", ".pth"])
def test_save_and_load_round_trip(tmp_path, trained, suffix: str) -> None:
    model, want = trained
    path = tmp_path / f"weights{suffix}"
    save_checkpoint(model, path)
    _assert_bit_equal(load_checkpoint_file(path), want)
    assert os.listdir(tmp_path) == [path.name]  # no temporary left behind


def test_files_are_the_frameworks_own_formats(tmp_path, trained) -> None:
    model, want = trained
    save_checkpoint(model, tmp_path / "w.lcd")
    _assert_bit_equal(dict(lucid.load(tmp_path / "w.lcd")), want)
    save_checkpoint(model, tmp_path / "w.pt")
    twin = lucid_inception.build(NAME, "torch")
    # torch's own strict loader takes it (a missing num_batches_tracked defaults to 0).
    twin.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    _assert_bit_equal(TorchAdapter.state(twin), want)


def test_a_torch_state_dict_file_loads_without_num_batches_tracked(tmp_path) -> None:
    twin = lucid_inception.build(NAME, "torch")
    torch.save(twin.state_dict(), tmp_path / "twin.pt")
    loaded = load_checkpoint_file(tmp_path / "twin.pt")
    assert not any(k.endswith("num_batches_tracked") for k in loaded)
    _assert_bit_equal(loaded, TorchAdapter.state(twin))
    # A conversion says which counters it left out: nothing is dropped unsaid.
    counters = convert_checkpoint(tmp_path / "twin.pt", tmp_path / "twin.lcd")
    assert counters == [k for k in twin.state_dict() if k.endswith("num_batches_tracked")] and counters
    assert convert_checkpoint(tmp_path / "twin.lcd", tmp_path / "back.pt") == []


def test_convert_both_ways_is_bit_exact(tmp_path, trained) -> None:
    model, want = trained
    save_checkpoint(model, tmp_path / "a.lcd")
    convert_checkpoint(tmp_path / "a.lcd", tmp_path / "b.pt")
    convert_checkpoint(tmp_path / "b.pt", tmp_path / "c.lcd")
    _assert_bit_equal(load_checkpoint_file(tmp_path / "c.lcd"), want)
    assert sorted(os.listdir(tmp_path)) == ["a.lcd", "b.pt", "c.lcd"]


def test_unknown_suffix_lists_the_valid_ones(tmp_path, trained) -> None:
    with pytest.raises(ValueError, match=r"\.lcd \(lucid\), \.pt \(torch\), \.pth \(torch\)"):
        save_checkpoint(trained[0], tmp_path / "w.npz")
    with pytest.raises(ValueError, match="unknown checkpoint suffix"):
        checkpoint_format("w.safetensors")
    with pytest.raises(FileNotFoundError):
        load_checkpoint_file(tmp_path / "missing.pt")


def test_a_failed_write_leaves_nothing_half_written(tmp_path, trained, monkeypatch) -> None:
    model, _ = trained
    target = tmp_path / "w.pt"
    target.write_bytes(b"the old file")

    def crash(state, path) -> None:
        with open(path, "wb") as f:
            f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(TorchAdapter, "save_file", staticmethod(crash))
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, target)
    assert target.read_bytes() == b"the old file"
    assert os.listdir(tmp_path) == ["w.pt"]


def test_a_bad_file_names_every_offending_key(tmp_path) -> None:
    torch.save({"a": torch.zeros(2), "b": torch.zeros(2, dtype=torch.int32), "c": 3}, tmp_path / "bad.pt")
    with pytest.raises(StateMismatchError) as caught:
        convert_checkpoint(tmp_path / "bad.pt", tmp_path / "out.lcd")
    assert [line.split(":")[0] for line in caught.value.problems] == ["b", "c"]
    assert not (tmp_path / "out.lcd").exists()
    # Tensors numpy cannot hold (bfloat16, the meta device) are listed with the others,
    # instead of the first one raising a line that names no key.
    odd = {"a": torch.zeros(2, dtype=torch.bfloat16), "b": torch.zeros(2), "c": torch.zeros(2, device="meta")}
    torch.save(odd | {"d": torch.zeros(2, dtype=torch.float16)}, tmp_path / "odd.pt")
    with pytest.raises(StateMismatchError) as caught:
        convert_checkpoint(tmp_path / "odd.pt", tmp_path / "out.lcd")
    assert caught.value.problems == [
        "a: dtype bfloat16; supported: float32, float64",
        "c: a tensor on the meta device: it holds no values",
        "d: dtype float16; supported: float32, float64",
    ]
    assert not (tmp_path / "out.lcd").exists()
    (tmp_path / "junk.lcd").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="junk.lcd"):
        load_checkpoint_file(tmp_path / "junk.lcd")
    (tmp_path / "text.pt").write_text(json.dumps({"a": 1}))
    with pytest.raises(ValueError, match="not a torch state dict"):
        load_checkpoint_file(tmp_path / "text.pt")


# ------------------------------------------------------------------ memory and odd tensors


def test_a_source_sharing_modules_with_the_destination_is_read_before_it_is_overwritten() -> None:
    """One module in both models, at other places: written key by key, the destination
    would overwrite a source tensor before that tensor is read."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(2, 2, bias=False), torch.nn.Linear(2, 2, bias=False)
    src, dst = torch.nn.Sequential(a, b), torch.nn.Sequential(b, a)  # the same two, swapped
    want = TorchAdapter.state(src)
    transfer(src, dst)
    _assert_bit_equal(TorchAdapter.state(dst), want)


class _Buffers(torch.nn.Module):
    """A parameter (written first) and the given buffers, kept as given (views too)."""

    def __init__(self, **buffers: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.full((2,), 5.0))
        for name, tensor in buffers.items():
            self.register_buffer(name, tensor)


def _source_for(dst: torch.nn.Module) -> torch.nn.Module:
    """A model with dst's keys and shapes, independent seeded values, its own memory."""
    rng = np.random.default_rng(6)
    src = _Buffers(
        **{k: torch.from_numpy(rng.standard_normal(b.shape, np.float32)) for k, b in dst.named_buffers()}
    )
    src.w.data = torch.from_numpy(rng.standard_normal(2, np.float32))
    return src


def _off_the_host(monkeypatch) -> None:
    """A destination as if on CUDA: no host views, torch's metadata only (as on a GPU)."""
    monkeypatch.setattr(TorchAdapter, "device", staticmethod(lambda model: "cuda"))


def _refused(dst: torch.nn.Module) -> list[str]:
    """The keys a transfer into ``dst`` names; every destination tensor left bit for bit."""
    before = TorchAdapter.snapshot(dst)
    with pytest.raises(StateMismatchError) as caught:
        transfer(_source_for(dst), dst)
    _assert_bit_equal(TorchAdapter.snapshot(dst), before)
    return [line.split(":")[0] for line in caught.value.problems]


def _halves(first: slice, second: slice) -> dict[str, torch.Tensor]:
    base = torch.zeros(6)
    return {"p": base[first], "q": base[second]}


@pytest.mark.parametrize(
    ("buffers", "named"),
    [
        (lambda: {"e": torch.zeros(3).expand(2, 3)}, ["e"]),  # torch: overlaps (stride 0)
        (lambda: {"s": torch.zeros(5).as_strided((3, 3), (1, 1))}, ["s"]),  # torch: cannot tell
        (lambda: _halves(slice(0, 4), slice(2, 6)), ["p, q"]),
        (lambda: _halves(slice(0, 6, 2), slice(1, 6, 2)), ["p, q"]),  # conservative: byte ranges
    ],
    ids=["expanded", "strided", "partly", "interleaved"],
)
def test_off_the_host_memory_is_read_from_torchs_metadata(buffers, named: list[str], monkeypatch) -> None:
    """Without host views a destination's overlaps were found by object only: torch then
    raised halfway through (expanded) or wrote wrong values silently (the others)."""
    _off_the_host(monkeypatch)
    problems = _refused(_Buffers(**buffers()))
    assert problems == named


def test_off_the_host_memory_takes_what_it_can_hold(monkeypatch) -> None:
    """A slice (torch cannot tell it does not overlap itself) and two names of the very
    same memory given equal values transfer there, as on the host."""
    _off_the_host(monkeypatch)
    base = torch.zeros(4)
    dst = _Buffers(s=torch.zeros(8)[::2], t=base[1:], u=base[1:].view(3))
    src = _source_for(dst)
    src.u.copy_(src.t)
    transfer(src, dst)
    _assert_bit_equal(TorchAdapter.state(dst), TorchAdapter.state(src))


def test_on_the_host_interleaved_slices_are_told_apart() -> None:
    dst = _Buffers(**_halves(slice(0, 6, 2), slice(1, 6, 2)))
    src = _source_for(dst)
    transfer(src, dst)
    _assert_bit_equal(TorchAdapter.state(dst), TorchAdapter.state(src))


class _Scale(torch.nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.s = torch.nn.Parameter(torch.tensor(value))  # 0-d: a learnable scalar


class _LucidScale(lucid.nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.s = lucid.nn.Parameter(lucid.Tensor(np.float32(value)))


def test_a_zero_dimensional_tensor_transfers_into_torch() -> None:
    """``np.ascontiguousarray`` made a 0-d source 1-d: ``copy_`` refused it after the keys
    before it were written (a half-written destination and a RuntimeError naming no key)."""
    pairs = [
        (
            torch.nn.Sequential(torch.nn.Linear(2, 2), _Scale(3.0)),
            torch.nn.Sequential(torch.nn.Linear(2, 2), _Scale(5.0)),
        ),
        (lucid.nn.Sequential(_LucidScale(3.0)), torch.nn.Sequential(_Scale(5.0))),
    ]
    for src, dst in pairs:
        transfer(src, dst)
        assert dst[-1].s.shape == () and dst[-1].s.item() == 3.0
        _assert_bit_equal(TorchAdapter.state(dst), adapter_for(src).state(src))


def test_meta_and_inference_tensors_are_refused_before_any_write() -> None:
    """copy_ into a meta tensor does nothing (no error: nothing was transferred); into an
    inference tensor torch raises, after the keys before it were written."""
    with torch.device("meta"):
        meta = torch.nn.Linear(3, 2)
    with pytest.raises(StateMismatchError, match="meta device") as caught:
        transfer(torch.nn.Linear(3, 2), meta)
    # (a meta tensor has no values to find unchanged)
    assert [line.split(":")[0] for line in caught.value.problems] == ["weight", "bias"]
    with torch.inference_mode():
        frozen = torch.zeros(2)
    assert _refused(_Buffers(z=frozen)) == ["z"]


class _WithExtraState(torch.nn.Conv2d):
    def get_extra_state(self) -> dict:
        return {"version": 2}

    def set_extra_state(self, state: object) -> None:
        pass


def _lucid_conv() -> lucid.nn.Sequential:
    return lucid.nn.Sequential(lucid.nn.Conv2d(3, 2, 1))


@pytest.mark.parametrize(
    ("src", "dst", "sides"),
    [
        (lambda: torch.nn.Sequential(_WithExtraState(3, 2, 1)), _lucid_conv, "source"),
        (_lucid_conv, lambda: torch.nn.Sequential(_WithExtraState(3, 2, 1)), "destination"),
        (
            lambda: torch.nn.Sequential(_WithExtraState(3, 2, 1)),
            lambda: torch.nn.Sequential(_WithExtraState(3, 2, 1)),
            "source and extra state (a dict) on the destination",
        ),
    ],
    ids=["torch-lucid", "lucid-torch", "torch-torch"],
)
def test_extra_state_is_named_not_a_crash(src, dst, sides: str) -> None:
    """A module's extra state (any object) is no tensor: it was an AttributeError."""
    source, target = src(), dst()
    adapter = adapter_for(target)
    before = adapter.state(target)
    with pytest.raises(StateMismatchError) as caught:
        transfer(source, target)
    assert caught.value.problems == [
        f"0._extra_state: extra state (a dict) on the {sides}, which transfer does not carry: tensors only"
    ]
    _assert_bit_equal(adapter.state(target), before)


def test_save_checkpoint_names_extra_state_instead_of_dropping_it(tmp_path) -> None:
    with pytest.raises(StateMismatchError) as caught:
        save_checkpoint(torch.nn.Sequential(_WithExtraState(3, 2, 1)), tmp_path / "w.pt")
    assert caught.value.problems == [
        "0._extra_state: extra state (a dict), which a checkpoint of tensors does not carry "
        "(torch.save(model.state_dict()) does)"
    ]
    assert not list(tmp_path.iterdir())


def test_compare_takes_models_with_extra_state() -> None:
    a, b = torch.nn.Sequential(_WithExtraState(3, 2, 1)), torch.nn.Sequential(_WithExtraState(3, 2, 1))
    b.load_state_dict(a.state_dict())
    assert compare(a, b, np.ones((1, 3, 4, 4)), dtype="float64").ok
