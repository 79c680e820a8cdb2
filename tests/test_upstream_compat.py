"""Upstream lucid-dl 2.9.0 compatibility: keys, checkpoints, and ``install()``.

Upstream models are built with ``lucid_inception.upstream.build_upstream``: upstream's
own factories write ``registry.json`` into site-packages.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import sys
import tomllib
import types
from pathlib import Path

import lucid
import lucid.models
import numpy as np
import pytest

import lucid_inception
from lucid_inception import MODEL_NAMES
from lucid_inception._install import upstream_object
from lucid_inception.frameworks import LucidAdapter, StateMismatchError
from lucid_inception.upstream import build_upstream, upstream_is_released

from .conftest import image, randomize_batchnorm, released_upstream_only
from .test_models import run

UPSTREAM = {name: functools.partial(build_upstream, name) for name in MODEL_NAMES}


def package_digest() -> str:
    """A digest of every file (names and contents) in the installed lucid package."""
    root = Path(lucid.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_keys_and_module_tree_equal_upstream(shared_model, name: str) -> None:
    upstream, port = UPSTREAM[name](), shared_model(name, "lucid")
    assert list(LucidAdapter.state(upstream)) == list(LucidAdapter.state(port))
    assert [n for n, _ in LucidAdapter.named_modules(upstream)] == [
        n for n, _ in LucidAdapter.named_modules(port)
    ]
    up_shapes = {k: v.shape for k, v in LucidAdapter.state(upstream).items()}
    differing = {k for k, v in LucidAdapter.state(port).items() if v.shape != up_shapes[k]}
    if name == "inception_v4" and upstream_is_released():
        # 7 B blocks (conv.6 .. conv.12) x (branch4.0: 6 tensors + branch4.1.conv.weight)
        expected = {
            f"conv.{i}.branch4.{k}"
            for i in range(6, 13)
            for k in [
                "0.conv.weight",
                "0.conv.bias",
                "0.bn.weight",
                "0.bn.bias",
                "0.bn.running_mean",
                "0.bn.running_var",
                "1.conv.weight",
            ]
        }
        assert differing == expected
    else:
        assert differing == set()


def test_upstream_v1_checkpoint_loads_and_computes_the_same(tmp_path: Path) -> None:
    """Inception-ResNet-v1 has no stem bug: the port computes upstream's function from
    upstream's checkpoint file. Released upstream has no residual scaling, so the port
    runs with it off (scale=1); a kit-patched upstream scales by 0.2 like the port."""
    upstream = UPSTREAM["inception_resnet_v1"]()
    randomize_batchnorm(upstream, seed=6)
    path = tmp_path / "upstream_v1.lcd"
    lucid.save(upstream.state_dict(), path)
    saved = lucid.load(path)
    if upstream_is_released():
        assert saved["stem.conv.0.bn.running_var"].dtype == np.float64  # LUC-009

    port = lucid_inception.inception_resnet_v1(scale=1.0 if upstream_is_released() else 0.2)
    port.load_state_dict(saved)
    assert set(LucidAdapter.dtypes(port).values()) == {np.dtype("float32")}
    LucidAdapter.cast(upstream, "float32")
    x = image((1, 3, 75, 75), seed=7)
    np.testing.assert_allclose(run(port, x), run(upstream, x), rtol=1e-5, atol=1e-5)


def test_loading_does_not_alias_the_given_arrays() -> None:
    port = lucid_inception.inception_resnet_v1()
    state = LucidAdapter.state(port)
    port.load_state_dict(state)
    state["fc.bias"][:] = 123.0
    assert not np.any(LucidAdapter.state(port)["fc.bias"] == 123.0)


@released_upstream_only
def test_upstream_v4_checkpoint_names_every_mismatched_key(shared_model) -> None:
    port = lucid_inception.inception_v4()
    before = LucidAdapter.state(port)
    with pytest.raises(StateMismatchError) as info:
        port.load_state_dict(UPSTREAM["inception_v4"]().state_dict())
    problems = info.value.problems
    assert len(problems) == 49
    assert all("upstream lucid-dl inception_v4" in p for p in problems)
    assert any(p.startswith("conv.12.branch4.1.conv.weight: shape (192, 64, 1, 7)") for p in problems)
    after = LucidAdapter.state(port)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # nothing changed


def test_load_reports_missing_unexpected_and_non_arrays() -> None:
    port = lucid_inception.inception_resnet_v1()
    state = LucidAdapter.state(port)
    del state["fc.weight"]
    state["fc.extra"] = np.zeros(3, np.float32)
    state["fc.bias"] = [0.0] * 1000
    with pytest.raises(StateMismatchError) as info:
        port.load_state_dict(state)
    text = str(info.value)
    assert "fc.weight: missing" in text and "fc.extra: unexpected" in text
    assert "fc.bias: expected a numpy array, got list" in text
    with pytest.raises(ValueError, match="load strictly"):
        port.load_state_dict(state, strict=False)


def test_loading_a_torch_twins_state_dict_points_to_parity_transfer(shared_model) -> None:
    """A twin's ``state_dict()`` holds torch tensors: the error's first line says so and names
    what works (``parity.transfer``, ``python -m parity convert``); every problem line follows."""
    import torch

    model = shared_model("inception_resnet_v1", "lucid")
    before = LucidAdapter.state(model)
    state = shared_model("inception_resnet_v1", "torch").state_dict()
    with pytest.raises(StateMismatchError) as caught:
        model.load_state_dict(state)  # fails atomically: the shared model is unchanged
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, ValueError)
    first, second, *rest = str(caught.value).splitlines()
    assert "torch tensors" in first, first
    assert "parity.transfer(twin, model)" in first and "python -m parity convert" in first, first
    problems = caught.value.problems
    assert second == (
        f"loading a state dict into InceptionResNetV1: {len(problems)} problem(s), nothing was changed:"
    )
    assert rest == [f"  - {p}" for p in problems]
    assert "fc.weight: expected a numpy array, got Tensor" in problems
    assert "stem.conv.0.bn.num_batches_tracked: unexpected (the model has no such tensor)" in problems
    # One torch tensor among numpy arrays is enough for the pointer.
    mixed = dict(before, **{"fc.bias": torch.zeros(1000)})
    with pytest.raises(StateMismatchError) as caught:
        model.load_state_dict(mixed)
    assert str(caught.value).splitlines()[0] == first
    assert caught.value.problems == ["fc.bias: expected a numpy array, got Tensor"]
    after = LucidAdapter.state(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


@pytest.fixture
def restore_lucid_models():
    yield
    lucid_inception.uninstall()


def _factory_bindings() -> dict[tuple[str, str], object]:
    """Every ``lucid.models`` module's binding of each model name."""
    return {
        (module_name, name): module.__dict__[name]
        for module_name, module in sorted(sys.modules.items())
        if module_name == "lucid.models" or module_name.startswith("lucid.models.")
        for name in MODEL_NAMES
        if module is not None and name in module.__dict__
    }


def test_install_puts_corrected_factories_into_lucid_models(restore_lucid_models) -> None:
    originals = _factory_bindings()
    # lucid.models itself and the defining module of each factory, at least
    expected = {("lucid.models", n) for n in MODEL_NAMES} | {
        (upstream_object(n).__module__, n) for n in MODEL_NAMES
    }
    assert expected <= set(originals)
    digest = package_digest()

    lucid_inception.install()
    lucid_inception.install()  # idempotent
    assert lucid_inception.installed()
    model = lucid.models.inception_resnet_v2(scale=0.2)
    assert isinstance(model, lucid_inception.InceptionResNetV2)
    assert model.dropout.p == 0.2
    corrected = {n: getattr(lucid_inception, n) for n in MODEL_NAMES}
    assert all(value.__wrapped__ is corrected[name] for (_, name), value in _factory_bindings().items())
    assert package_digest() == digest  # nothing written into site-packages

    lucid_inception.uninstall()
    lucid_inception.uninstall()  # idempotent
    assert not lucid_inception.installed()
    restored = _factory_bindings()
    assert restored.keys() == originals.keys()
    assert all(restored[k] is originals[k] for k in originals)
    assert package_digest() == digest


def test_an_install_failing_half_way_undoes_itself(restore_lucid_models) -> None:
    """A binding that fails (planted: one module refuses the name) leaves every module as
    it was, and ``installed()`` looks at every module that binds a name, not only
    ``lucid.models``."""
    originals = _factory_bindings()
    module = sys.modules[upstream_object("inception_resnet_v2").__module__]

    class Refusing(types.ModuleType):
        def __setattr__(self, name: str, value: object) -> None:
            if name == "inception_resnet_v2":
                raise RuntimeError("planted: this module refuses the binding")
            super().__setattr__(name, value)

    module.__class__ = Refusing
    try:
        with pytest.raises(RuntimeError, match="planted"):
            lucid_inception.install()
    finally:
        module.__class__ = types.ModuleType
    assert not lucid_inception.installed()
    after = _factory_bindings()
    assert after.keys() == originals.keys() and all(after[k] is originals[k] for k in originals)
    assert lucid_inception._install._saved == {}
    lucid_inception.install()  # and a later install is whole
    assert lucid_inception.installed()
    module.inception_resnet_v2 = originals[(module.__name__, "inception_resnet_v2")]  # undone by hand
    assert not lucid_inception.installed()  # one module still upstream's: not installed


def test_building_writes_nothing_into_site_packages(tmp_path: Path) -> None:
    digest = package_digest()
    mtime = os.stat(Path(lucid.__file__).parent / "models").st_mtime_ns
    for name in MODEL_NAMES:
        lucid_inception.build(name)
    assert package_digest() == digest
    assert os.stat(Path(lucid.__file__).parent / "models").st_mtime_ns == mtime


def test_the_install_module_is_importable_beside_the_function() -> None:
    """The function ``lucid_inception.install`` must not shadow its module: the module is
    ``lucid_inception._install``."""
    module = importlib.import_module("lucid_inception._install")
    assert isinstance(module, types.ModuleType)
    assert module.install is lucid_inception.install and set(module.FACTORIES) == set(MODEL_NAMES)


def test_installed_factories_are_drop_in_for_upstreams(restore_lucid_models) -> None:
    """Upstream's ``register_model`` wrapper takes ``weights=`` and names the model
    (``_alt_name``: Lucid's repr, ``summarize`` and ``lucid.weights.apply`` read it)."""
    digest = package_digest()
    lucid_inception.install()
    model = lucid.models.inception_resnet_v1(num_classes=10, weights=None)
    assert isinstance(model, lucid_inception.InceptionResNetV1) and model.num_classes == 10
    assert model._alt_name == "inception_resnet_v1" and repr(model).startswith("inception_resnet_v1(")
    for name in MODEL_NAMES:
        with pytest.raises(RuntimeError, match=f"no pretrained weights for the corrected {name}"):
            getattr(lucid.models, name)(weights="IMAGENET1K_V1")
    assert package_digest() == digest  # no registry.json


def test_package_metadata_declares_an_spdx_license_with_its_file() -> None:
    """setuptools deprecates ``license = {text = ...}`` (builds fail from 2027-02-18); an SPDX
    expression needs setuptools >= 77."""
    root = Path(__file__).parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert "setuptools>=77" in project["build-system"]["requires"]
    for name in project["project"]["license-files"]:
        assert "MIT License" in (root / name).read_text()


def test_a_mismatch_is_also_upstreams_key_error(shared_model) -> None:
    """Upstream's ``load_state_dict`` raises ``KeyError`` for missing or unexpected keys:
    code written for it still catches the strict loader's error, which reads as text."""
    model = shared_model("inception_resnet_v1", "lucid")
    state = model.state_dict()
    del state["fc.bias"]
    with pytest.raises(KeyError) as caught:
        model.load_state_dict(state)  # fails atomically: the shared model is unchanged
    assert isinstance(caught.value, StateMismatchError) and isinstance(caught.value, ValueError)
    assert str(caught.value) == (
        "loading a state dict into InceptionResNetV1: 1 problem(s), nothing was changed:\n"
        "  - fc.bias: missing (the model has float32 (1000,))"
    )
