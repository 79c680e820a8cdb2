"""pytest plugin: the parity suite in your own CI.

Installed with ``lucid-inception`` as the ``parity`` pytest11 entry point, so it is active in
every pytest session of that environment; without ``--parity`` it only adds the options and
the fixture below, and imports nothing heavy. (Without the entry point: ``pytest -p
parity.pytest_plugin``.)

Run the suite (one test per model x dtype x device spec)::

    pytest --parity                                   # all three models, float32, 299x299
    pytest --parity --parity-size 75                  # quick
    pytest --parity --parity-model inception_v4 --parity-dtype float64 --parity-backward  # batch 2
    pytest --parity --parity-devices lucid=cpu,torch=cuda   # skipped, with the reason, without CUDA
    pytest --parity --parity-devices torch=cuda --parity-require-devices   # fails without CUDA
    pytest --parity -m "not slow"      # generated tests are marked "parity", and "slow" at >= 299
    pytest --parity --parity-signal calibrated        # trained-like statistics, compared locally
    pytest --parity -k "inception_v4 and float32 and torch_cpu"   # one of the generated tests

The generated tests (``parity[MODEL-DTYPE-lucid_DEVICE-torch_DEVICE]``) belong to no file,
so a failing one is run again by ``-k``, not by its node id.

A failing test prints the same table as ``python -m parity``: verdict, first divergence,
worst rows, liveness. Or write your own tests with the ``parity_pair`` fixture, which
calls ``parity.signal.check_pair`` with the session's ``--parity-*`` options as defaults::

    def test_my_port(parity_pair):
        result = parity_pair("inception_resnet_v2", size=75)
        assert result.ok, result.explain()   # or: parity_pair.check(result)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import pytest

from parity._argtypes import int_at_least

__all__ = ["ParityFailure", "ParityItem", "parity_pair"]

_MODELS = ("inception_v4", "inception_resnet_v1", "inception_resnet_v2")
_DTYPES = ("float32", "float64")


def _devices(spec: str) -> tuple[str, str]:
    from parity.cli import parse_devices

    try:
        return parse_devices(spec)
    except argparse.ArgumentTypeError as error:
        raise pytest.UsageError(f"--parity-devices: {error}") from None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("parity", "lucid-inception parity (Lucid models vs torch twins)")
    group.addoption("--parity", action="store_true", help="add the parity tests (model x dtype x devices)")
    group.addoption(
        "--parity-model", action="append", choices=_MODELS, help="model to check, repeatable (default: all)"
    )
    group.addoption(
        "--parity-dtype", action="append", choices=_DTYPES, help="dtype, repeatable (default float32)"
    )
    group.addoption(
        "--parity-size",
        type=int_at_least(75, "a size >= 75 (the smallest input every model accepts)"),
        default=299,
        help="input size (default 299; >= 75)",
    )
    group.addoption(
        "--parity-batch",
        type=int_at_least(1, "a positive integer"),
        default=None,
        help="batch size (default 1; 2 for gradients: batch-1 gradients cannot show batch-reduction "
        "bugs, such as lucid-dl 2.9.0's broadcast gradients; an explicit 1 is honoured, with a warning)",
    )
    group.addoption(
        "--parity-seed", type=int_at_least(0, "a non-negative integer"), default=0, help="seed (default 0)"
    )
    group.addoption(
        "--parity-devices",
        action="append",
        help="FRAMEWORK=DEVICE pairs, repeatable, e.g. lucid=cpu,torch=cuda (default all cpu)",
    )
    group.addoption(
        "--parity-require-devices",
        action="store_true",
        help="an absent device fails its test instead of skipping it (CI on a machine that must have it)",
    )
    group.addoption("--parity-backward", action="store_true", help="also compare gradients (float64 runs)")
    group.addoption("--parity-train-step", action="store_true", help="also compare a train step")
    group.addoption(
        "--parity-signal",
        choices=("random", "calibrated"),
        default="random",
        help="BatchNorm statistics, as python -m parity --signal ('calibrated' implies --parity-local)",
    )
    group.addoption(
        "--parity-local",
        action="store_true",
        help="compare module by module on the same input, as python -m parity --local",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "parity: a generated Lucid-vs-torch parity test (--parity)")
    if config.getoption("parity") and "numpy" not in sys.modules:
        # As ``python -m parity`` does (see parity/_openblas.py); once numpy has loaded,
        # OpenBLAS has read its setting and only the environment of the run can change it.
        from parity._openblas import quiet_openblas_workers

        quiet_openblas_workers()
    if config.getoption("parity_backward") and config.getoption("parity_batch") == 1:
        from parity.signal import BATCH_ONE_GRADIENTS

        config.issue_config_time_warning(
            pytest.PytestConfigWarning(f"--parity-backward at --parity-batch 1: {BATCH_ONE_GRADIENTS}"),
            stacklevel=2,
        )
    if "slow" not in "".join(config.getini("markers")):
        config.addinivalue_line("markers", "slow: a full-size (299x299) run")


class ParityFailure(AssertionError):
    """A pair that does not agree; carries the ``ParityResult``."""

    def __init__(self, result: object) -> None:
        self.result = result
        super().__init__(result.explain())


def _options(config: pytest.Config) -> dict:
    """``check_pair``'s options from the session's (size, batch and seed were checked by
    their option types). A batch left unset stays ``None``: ``check_pair`` then runs
    gradients at batch 2 and everything else at batch 1 (``parity.signal.default_batch``)."""
    from parity.signal import compares_locally

    signal = config.getoption("parity_signal")
    try:
        local = compares_locally(
            signal, config.getoption("parity_local"), config.getoption("parity_backward")
        )
    except ValueError as error:
        raise pytest.UsageError(
            f"--parity-backward with --parity-local or --parity-signal calibrated: {error}"
        ) from None
    return {
        "size": config.getoption("parity_size"),
        "batch": config.getoption("parity_batch"),
        "seed": config.getoption("parity_seed"),
        "train_step": config.getoption("parity_train_step"),
        "signal": signal,
        "local": local,
    }


def _judge(result: object, *, require_devices: bool) -> None:
    """Raise unless ``result`` agrees; skip it when a device is absent (fail it instead
    under ``--parity-require-devices``)."""
    if result.skipped:
        if require_devices:
            pytest.fail(f"--parity-require-devices: {result.skipped}", pytrace=False)
        pytest.skip(f"skipped: {result.skipped}")
    if not result.ok:
        raise ParityFailure(result)


class ParityItem(pytest.Item):
    """One generated test: ``check_pair`` for a model, dtype and device pair."""

    def __init__(self, *, model: str, dtype: str, devices: tuple[str, str], options: dict, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model, self.dtype, self.devices, self.options = model, dtype, devices, options
        self.add_marker("parity")
        if options["size"] >= 299:
            self.add_marker("slow")

    def runtest(self) -> None:
        from parity.signal import check_pair

        result = check_pair(self.model, dtype=self.dtype, devices=self.devices, **self.options)
        _judge(result, require_devices=self.config.getoption("parity_require_devices"))

    def repr_failure(self, excinfo: pytest.ExceptionInfo, style=None) -> str:
        if isinstance(excinfo.value, ParityFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple:
        return self.path, None, f"parity: {self.name}"


def _generated_items(session: pytest.Session) -> list[ParityItem]:
    config = session.config
    base = _options(config)
    devices = [_devices(spec) for spec in config.getoption("parity_devices") or ["lucid=cpu,torch=cpu"]]
    dtypes = list(dict.fromkeys(config.getoption("parity_dtype") or ["float32"]))
    backward = config.getoption("parity_backward")
    if backward and "float64" not in dtypes:
        dtypes.append("float64")  # gradients are compared in float64 only (see parity.tolerances)
    items = []
    for device in devices:
        for model in dict.fromkeys(config.getoption("parity_model") or _MODELS):  # once each
            for dtype in dtypes:
                options = dict(base, backward=backward and dtype == "float64")
                # No "=" in the name: pytest's -k expressions cannot hold one.
                name = f"parity[{model}-{dtype}-lucid_{device[0]}-torch_{device[1]}]"
                items.append(
                    ParityItem.from_parent(
                        session, name=name, model=model, dtype=dtype, devices=device, options=options
                    )
                )
    return items


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """The generated tests join the session's own collection report: pytest then counts
    them as collected, and ``-k``/``-m`` deselect them like any other test (items added
    later, in ``pytest_collection_modifyitems``, were neither counted nor always seen by
    the deselection)."""
    report = yield
    if isinstance(collector, pytest.Session) and collector.config.getoption("parity"):
        report.result.extend(_generated_items(collector))
    return report


class _PairFactory:
    """``parity_pair(model, **overrides) -> ParityResult``; ``parity_pair.check(result)``
    raises with the rendered table unless the pair agrees (skips when a device is absent, or
    fails under ``--parity-require-devices``)."""

    def __init__(self, defaults: dict, *, backward: bool = False, require_devices: bool = False) -> None:
        self.defaults, self.backward, self.require_devices = defaults, backward, require_devices

    def __call__(self, model: str, **overrides: object) -> object:
        from parity.signal import check_pair

        options = {**self.defaults, **overrides}
        # --parity-backward: gradients in the float64 calls (as the generated tests), unless asked.
        options.setdefault("backward", self.backward and options.get("dtype", "float32") == "float64")
        return check_pair(model, **options)

    def check(self, result: object) -> None:
        _judge(result, require_devices=self.require_devices)


@pytest.fixture
def parity_pair(request: pytest.FixtureRequest) -> Callable[..., object]:
    """A ``check_pair`` with the session's ``--parity-*`` options as defaults (size 299,
    batch 1 (2 when gradients are compared), seed 0, float32, cpu unless given; with
    ``--parity-backward`` gradients in float64, the default dtype then unless
    ``--parity-dtype`` names one)."""
    config = request.config
    defaults = _options(config)
    dtypes = config.getoption("parity_dtype")
    backward = config.getoption("parity_backward")
    if dtypes:
        defaults["dtype"] = dtypes[0]
    elif backward:
        defaults["dtype"] = "float64"  # gradients are compared in float64 only, as the generated tests do
    specs = config.getoption("parity_devices")
    if specs:
        defaults["devices"] = _devices(specs[0])
    require_devices = config.getoption("parity_require_devices")
    return _PairFactory(defaults, backward=backward, require_devices=require_devices)
