"""Running cases and judging them against their declared deviations."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Sequence

import numpy as np

from conformance.ops.cases import CASES
from conformance.ops.known import DTYPE_KNOWN, KNOWN, Known, lucid_version
from conformance.ops.records import (
    DTYPES,
    LUCID_DEVICES,
    TOLERANCE,
    TORCH_DEVICES,
    Check,
    OpCase,
    OpResult,
    Stat,
)
from lucid_inception.frameworks import TorchAdapter
from lucid_inception.frameworks.lucid_adapter import quiet_uninitialised_casts


def _compare(name: str, got: np.ndarray, ref: np.ndarray | Stat, dtype: str, held: str) -> Check:
    """Compare one quantity. ``held`` is the dtype Lucid computes in (``dtype``, or float32
    under mlx-float32); its tolerance applies, the precision actually used."""
    if isinstance(ref, Stat):
        values = np.asarray(got, dtype=np.float64)
        refs = np.asarray(ref.value, dtype=np.float64)
        if values.shape != refs.shape:
            return Check(
                name, math.inf, math.inf, ref.bound, "abs", False, True,
                f"shape {values.shape} != reference {refs.shape}",
            )  # fmt: skip
        # The worst element (a non-finite value is infinitely far off).
        errs = np.where(np.isfinite(values), np.abs(values - refs), math.inf).reshape(-1)
        i = int(np.argmax(errs))
        err, value, want = float(errs[i]), float(values.flat[i]), float(refs.flat[i])
        rel = err / abs(want) if want else (0.0 if err == 0 else math.inf)
        where = f"[{i}] " if values.ndim else ""
        note = f"{where}{value:.6g} vs {want:.6g}, bound {ref.bound:.3g} ({ref.basis})"
        return Check(name, err, rel, ref.bound, "abs", err <= ref.bound, True, note)
    tol = TOLERANCE[held]
    lucid_dtype = str(got.dtype)
    dtype_ok = got.dtype == np.dtype(dtype)
    note = "" if dtype_ok else f"Lucid gave {got.dtype}, expected {dtype}"
    if got.shape != ref.shape:
        return Check(
            name, math.inf, math.inf, tol, "rel", False, dtype_ok,
            f"shape {got.shape} != torch {ref.shape}", lucid_dtype,
        )  # fmt: skip
    if got.size == 0:
        return Check(name, 0.0, 0.0, tol, "rel", True, dtype_ok, note, lucid_dtype)
    g64, r64 = got.astype(np.float64), ref.astype(np.float64)
    if not np.all(np.isfinite(g64)):
        return Check(
            name, math.inf, math.inf, tol, "rel", False, dtype_ok,
            "non-finite values in Lucid's result", lucid_dtype,
        )  # fmt: skip
    max_abs = float(np.max(np.abs(g64 - r64)))
    scale = float(np.max(np.abs(r64)))
    # Relative to the largest reference magnitude; a zero reference only matches zero.
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    return Check(name, max_abs, max_rel, tol, "rel", max_rel <= tol, dtype_ok, note, lucid_dtype)


def _off(c: Check, dtype: str, held: str) -> bool:
    """Whether ``c`` counts against the case: out of tolerance, or Lucid's dtype is neither
    the requested one nor ``held`` (float32 under mlx-float32: that dtype difference is the
    declared convention, nothing else is)."""
    return not c.ok or c.lucid_dtype not in ("", dtype, held)


def _expected_verdict(known: Sequence[Known]) -> str:
    if not known:
        return "pass"
    return "known-bug" if any(k.kind == "bug" for k in known) else "convention"


def run_case(
    case: OpCase,
    dtype: str = "float32",
    lucid_device: str = "cpu",
    torch_device: str = "cpu",
    version: str | None = None,
) -> OpResult:
    """Run one case at one dtype and give its verdict against its declared expectations."""
    _check_choice("dtype", dtype, DTYPES)
    _check_choice("lucid_device", lucid_device, LUCID_DEVICES)
    _check_choice("torch_device", torch_device, TORCH_DEVICES)
    version = version or lucid_version()
    for known_id in case.expect:
        if known_id not in KNOWN:
            raise ValueError(
                f"case {case.name!r} expects unknown deviation {known_id!r}; known: {', '.join(KNOWN)}"
            )
    in_force = [KNOWN[i] for i in case.expect if KNOWN[i].applies(version, lucid_device, dtype)]
    dtype_known = [KNOWN[i] for i in DTYPE_KNOWN if KNOWN[i].applies(version, lucid_device, dtype)]

    def result(checks: Sequence[Check], known: Sequence[Known], verdict: str, msg: str):
        return OpResult(
            case=case.name,
            op=case.op,
            dtype=dtype,
            lucid_device=lucid_device,
            torch_device=torch_device,
            lucid_version=version,
            checks=tuple(checks),
            expected=tuple(k.id for k in known),
            expected_verdict=_expected_verdict(known),
            verdict=verdict,
            message=msg,
        )

    # mlx-float32 (Lucid 'gpu', float64): MLX holds float64 data as float32. The values are
    # still judged, at float32's tolerance (the precision actually used), by the rules every
    # case follows (its declarations, non-finite values, shapes, the batch-1 twin); only the
    # dtype difference itself is the convention.
    held = "float32" if dtype_known else dtype
    all_known = [*in_force, *dtype_known]
    try:
        data = case.make(np.random.default_rng(case.seed), dtype)
        checks = _measure(case, data, dtype, held, lucid_device, torch_device)
    except _Mismatch as e:
        return result((), all_known, "error", str(e))
    except Exception as e:  # reported as a verdict, with the exception text
        return result((), all_known, "error", f"{type(e).__name__}: {e}")

    verdict, msg = _judge(case, checks, in_force, dtype, held, lucid_device, torch_device)
    if dtype_known and verdict in ("pass", "known-bug", "convention"):
        if all(c.lucid_dtype in ("", dtype) for c in checks):
            ids = ", ".join(k.id for k in dtype_known)
            return result(checks, all_known, "unexpected-pass", f"declared {ids}, dtype kept")
        verdict = _expected_verdict(all_known)
        msg = f"as declared: {', '.join(k.id for k in all_known)}"
    return result(checks, all_known, verdict, msg)


def _judge(
    case: OpCase,
    checks: Sequence[Check],
    in_force: Sequence[Known],
    dtype: str,
    held: str,
    lucid_device: str,
    torch_device: str,
) -> tuple[str, str]:
    """The verdict and message of ``checks`` against the case's own declarations."""
    failing = {c.quantity for c in checks if _off(c, dtype, held)}
    declared: set[str] = set()
    for k in in_force:
        declared.update(case.expect[k.id])
    unknown_q = declared - {c.quantity for c in checks}
    if unknown_q:
        return "error", f"expectations name quantities the case lacks: {sorted(unknown_q)}"
    ids = ", ".join(k.id for k in in_force)
    if not in_force:
        if failing:
            return "fail", _describe(checks, dtype, held)
        return "pass", ""
    if failing == declared:
        verdict, why = _not_the_known_deviation(
            case, checks, in_force, dtype, held, lucid_device, torch_device
        )
        if verdict:
            return verdict, f"declared {ids} on {_fmt_set(declared)}; {why}"
        return _expected_verdict(in_force), f"as declared: {ids}"
    if not failing:
        return "unexpected-pass", f"declared {ids} on {_fmt_set(declared)}, but everything agrees"
    return "fail", f"declared {ids} on {_fmt_set(declared)}; measured: {_describe(checks, dtype, held)}"


class _Mismatch(Exception):
    """The two sides gave different sets of quantities."""


def _measure(
    case: OpCase, data: dict, dtype: str, held: str, lucid_device: str, torch_device: str
) -> list[Check]:
    """Run both sides on ``data`` and compare every quantity (``held``: see ``_compare``)."""
    with quiet_uninitialised_casts():  # every parameter is then overwritten from `data`
        got = case.lucid(data, lucid_device)
    # Lucid's "_"-prefixed observations (dropout's mask) go to the reference side.
    observed = {k: v for k, v in got.items() if k.startswith("_")}
    ref = case.torch({**data, **observed}, torch_device)
    got = {k: v for k, v in got.items() if k not in observed}
    if set(got) != set(ref):
        raise _Mismatch(f"quantities differ: Lucid {sorted(got)}, torch {sorted(ref)}")
    return [_compare(q, got[q], ref[q], dtype, held) for q in ref]


def _batch_1(case: OpCase, data: dict) -> dict:
    """``data`` with the first sample of each of ``case.batch_keys``; ValueError unless they
    all exist and share a batch axis larger than 1."""
    sizes = {k: data[k].shape[0] if k in data and data[k].ndim else None for k in case.batch_keys}
    if not case.batch_keys or None in sizes.values() or len(set(sizes.values())) != 1:
        raise ValueError(
            f"case {case.name!r}: batch_keys {case.batch_keys} name no common batch axis: {sizes}"
        )
    if next(iter(sizes.values())) < 2:
        raise ValueError(f"case {case.name!r} already runs at batch 1: its batch-1 twin proves nothing")
    return {k: (v[:1].copy() if k in case.batch_keys else v) for k, v in data.items()}


def _not_the_known_deviation(
    case: OpCase,
    checks: Sequence[Check],
    in_force: Sequence[Known],
    dtype: str,
    held: str,
    lucid_device: str,
    torch_device: str,
) -> tuple[str, str]:
    """("", "") when exactly the declared quantities fail and nothing tells the error apart
    from the declared deviations; else the verdict ("fail" or "error") and why.

    What is checked (a cheap model of each deviation, not an emulation of its values):
    non-finite values or wrong shapes are never a declared deviation; a deviation that
    vanishes at batch 1 must vanish in the case's batch-1 twin, on every quantity only it
    declares, and nothing undeclared may fail there.
    """
    broken = [c for c in checks if _off(c, dtype, held) and not math.isfinite(c.max_abs)]
    if broken:
        what = "; ".join(f"{c.quantity} ({c.note})" for c in broken)
        return "fail", f"but {what}: never a known deviation"
    vanishing = [k for k in in_force if k.vanishes_at_batch_1]
    if not vanishing:
        return "", ""
    others: set[str] = set()
    for k in in_force:
        if not k.vanishes_at_batch_1:
            others.update(case.expect[k.id])
    try:
        # Fresh arrays: a side may have updated the first run's buffers in place.
        data = case.make(np.random.default_rng(case.seed), dtype)
        twin = _measure(case, _batch_1(case, data), dtype, held, lucid_device, torch_device)
    except Exception as e:
        return "error", f"batch-1 twin: {type(e).__name__}: {e}"
    wrong = [c for c in twin if _off(c, dtype, held) and c.quantity not in others]
    if wrong:
        ids = ", ".join(k.id for k in vanishing)
        why = _describe(wrong, dtype, held)
        return "fail", f"{ids} vanishes at batch 1, but the batch-1 twin fails: {why}"
    return "", ""


def _describe(checks: Iterable[Check], dtype: str, held: str) -> str:
    """The failing quantities with why, in the case's order (first failure first)."""
    parts = []
    for c in checks:
        if not _off(c, dtype, held):
            continue
        if c.ok:  # in tolerance, of a wrong dtype
            parts.append(f"{c.quantity} ({c.note})")
        else:
            err = c.max_rel if c.tol_kind == "rel" else c.max_abs
            parts.append(f"{c.quantity} ({c.tol_kind} err {err:.2e} > {c.tol:.2e}{_note(c)})")
    return "; ".join(parts) or "nothing"


def _note(c: Check) -> str:
    return f"; {c.note}" if c.note else ""


def _fmt_set(s: Iterable[str]) -> str:
    return ", ".join(sorted(s)) or "nothing"


def _check_choice(what: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"{what} must be one of {', '.join(valid)}; got {value!r}")


def select_cases(pattern: str | None = None) -> tuple[OpCase, ...]:
    """Cases whose name matches a glob pattern (all when None); ValueError if none match."""
    if pattern is None:
        return CASES
    chosen = tuple(c for c in CASES if fnmatch.fnmatchcase(c.name, pattern))
    if not chosen:
        names = ", ".join(c.name for c in CASES)
        raise ValueError(f"no case matches {pattern!r}; cases: {names}")
    return chosen


def run_cases(
    dtypes: Sequence[str] = DTYPES,
    lucid_device: str = "cpu",
    *,
    torch_device: str = "cpu",
    pattern: str | None = None,
) -> list[OpResult]:
    """Run the cases (all, or those matching a glob) at each dtype; one result per pair."""
    if isinstance(dtypes, str):
        raise TypeError(f"dtypes must be a sequence of names, got the string {dtypes!r}")
    for dt in dtypes:
        _check_choice("dtype", dt, DTYPES)
    _check_choice("lucid_device", lucid_device, LUCID_DEVICES)
    _check_choice("torch_device", torch_device, TORCH_DEVICES)
    # Lucid 'gpu' without a GPU still runs (on MLX's CPU, with a warning), so it is allowed;
    # torch 'cuda' without CUDA cannot run at all.
    missing = TorchAdapter.device_unavailable(torch_device)
    if missing is not None:
        raise ValueError(f"torch_device={torch_device!r} cannot run here: {missing}")
    version = lucid_version()
    return [
        run_case(case, dt, lucid_device, torch_device, version)
        for case in select_cases(pattern)
        for dt in dtypes
    ]
