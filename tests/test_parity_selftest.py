"""parity.selftest: every planted fault is caught where it was planted, and the verdict can
fail (a fault that changes nothing, a fault declared in the wrong place)."""

from __future__ import annotations

import dataclasses

import pytest

from parity.selftest import FAULTS, Fault, run_selftest
from parity.tables import render_selftest

# Two faults that must NOT pass: the verdict has to be able to fail.
NOTHING = Fault(
    "plants-nothing", "inception_resnet_v1", "conv.0", "a plant that changes nothing", lambda twin: None
)
MISPLACED = dataclasses.replace(
    next(f for f in FAULTS if f.id == "missing-relu"), id="declared-elsewhere", where="conv.3"
)


@pytest.fixture(scope="module")
def report():
    return run_selftest([*FAULTS, NOTHING, MISPLACED], size=75)


def test_the_catalogue_is_broad() -> None:
    assert len({f.id for f in FAULTS}) == len(FAULTS) >= 12
    assert {f.model for f in FAULTS} == {"inception_v4", "inception_resnet_v1", "inception_resnet_v2"}
    assert any(f.backward for f in FAULTS) and any(f.train_step for f in FAULTS)


def test_every_clean_pair_passes(report) -> None:
    assert set(report.controls) >= {
        "inception_v4/forward",
        "inception_resnet_v1/train-step",
        "inception_resnet_v2/forward at batch 2",
    }
    assert all(why is None for why in report.controls.values()), report.controls


@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_fault_is_caught_and_localised(report, fault: Fault) -> None:
    result = next(r for r in report.results if r.fault is fault)
    assert result.error is None, result.error
    assert result.caught, f"{fault.id}: not caught"
    assert result.localized, f"{fault.id}: planted in {fault.where}, first divergence {result.found}"


def test_kinds_of_evidence(report) -> None:
    by_values = {r.fault.id: r.value_kind for r in report.results}
    assert by_values["bn-momentum"] == "bn_running_update"
    assert by_values["bn-train-variance"] == "bn_train_output"  # no later BatchNorm reads it
    assert by_values["bias-gradient"] == "param_grad"
    assert by_values["weight-after-transfer"] == "state"
    assert by_values["avgpool-count-include-pad"] == "output"
    assert by_values["dropout-rate"] is None  # no computed value sees it
    # A changed setting is named first, at the layer that holds it (before its output row).
    kinds = {r.fault.id: r.kind for r in report.results}
    assert kinds["bn-momentum"] == kinds["avgpool-count-include-pad"] == kinds["dropout-rate"] == "config"
    assert kinds["concat-order"] == "output"  # no layer's settings changed


def test_a_settings_row_does_not_stand_in_for_the_numbers(report) -> None:
    """A fault whose numbers are caught elsewhere is not localised, even when its ``config``
    row names the right layer: the settings check must not hide a blind output check."""
    stride = next(r for r in report.results if r.fault.id == "avgpool-stride")
    assert stride.ok and stride.kind == "config"
    blind = dataclasses.replace(stride, found_by_values="conv.2")
    assert blind.caught and not blind.localized
    unseen = dataclasses.replace(stride, found_by_values=None, value_kind=None)
    assert not unseen.localized
    # A static fault needs its config row.
    rate = next(r for r in report.results if r.fault.id == "dropout-rate")
    assert rate.ok and not dataclasses.replace(rate, kind="output").localized


def test_the_verdict_can_fail(report) -> None:
    results = {r.fault.id: r for r in report.results}
    assert not results["plants-nothing"].caught and not results["plants-nothing"].ok
    misplaced = results["declared-elsewhere"]
    assert misplaced.caught and not misplaced.localized and misplaced.found.startswith("stem.conv.4")
    assert not report.ok
    table = render_selftest(report)
    assert f"FAIL: {len(FAULTS)}/{len(FAULTS) + 2} faults caught and localised" in table
    assert "declared-elsewhere" in table and "NO" in table


def test_a_fault_that_mixes_samples_needs_a_batch_of_two() -> None:
    """Why ``samples-mixed`` runs at batch 2: in a batch of one its pool is exact."""
    mixed = next(f for f in FAULTS if f.id == "samples-mixed")
    assert mixed.min_batch == 2
    at_one = run_selftest([dataclasses.replace(mixed, min_batch=1)], size=75)
    assert not at_one.results[0].caught and at_one.results[0].error is None


@pytest.fixture(scope="module")
def local_report():
    return run_selftest(FAULTS, size=75, local=True)


@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_a_local_compare_catches_and_localises_every_fault_too(local_report, fault: Fault) -> None:
    """Comparing module by module on the same inputs must not blind the harness: a fault in
    code between modules (the residual scale) shows in the next module's input row."""
    assert local_report.local and all(why is None for why in local_report.controls.values())
    result = next(r for r in local_report.results if r.fault is fault)
    assert result.error is None, result.error
    assert result.ok, f"{fault.id}: planted in {fault.where}, first divergence {result.found}"
    if fault.id == "residual-scale":
        assert (result.found, result.kind) == ("conv.8.relu", "input")
