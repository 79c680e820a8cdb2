"""The text tables ``python -m parity`` prints: one block per compared pair
(``render_result``), the overall verdicts (``render_overall``), the worst rows
(``worst_table``) and the self-test's faults (``render_selftest``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from tabulate import tabulate

from parity.report import KINDS, module_label

__all__ = ["render_overall", "render_result", "render_selftest", "worst_table"]


def _num(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.3g}"


def _ratio(row: object) -> str:
    if row.tol > 0:
        return _num(row.max_rel / row.tol)
    return "0" if row.max_rel == 0 else "inf"


def _shape(row: object) -> str:
    a, b = row.shape_a, row.shape_b
    return _show_shape(a) if a == b else f"{_show_shape(a)} vs {_show_shape(b)}"


def _show_shape(shape: tuple | None) -> str:
    """``2x3x8x8``; a structured output's shapes (one per array) as ``(2x4, 2x2)``."""
    if shape is None:
        return "-"
    if not shape:  # a 0-d array, or a structured output with no array (None)
        return "()"
    if any(isinstance(part, tuple) for part in shape):
        return "(" + ", ".join(_show_shape(part) for part in shape) + ")"
    return "x".join(map(str, shape))


def _short(note: str, width: int = 48) -> str:
    """A row's note in a table cell: its first ``width`` characters (the JSON has it all)."""
    return note if len(note) <= width else note[: width - 3] + "..."


def worst_table(rows: Sequence[object]) -> str:
    table = [
        [
            r.module or "<model>",
            r.kind,
            _shape(r),
            _num(r.max_abs),
            _num(r.max_rel),
            _num(r.tol),
            _ratio(r),
            "ok" if r.ok else "FAIL",
            _short(r.note),  # which parameter, which setting, what raised
        ]
        for r in rows
    ]
    headers = ["module", "kind", "shape", "max abs", "max rel", "tol", "rel/tol", "verdict", "note"]
    return tabulate(table, headers=headers, tablefmt="simple", disable_numparse=True)


def _kind_summary(report: object, kind: str) -> list[str] | None:
    rows = [r for r in report.rows if r.kind == kind]
    if not rows:
        return None
    worst = max(rows, key=lambda r: math.inf if math.isnan(r.max_rel) else r.max_rel)
    failed = sum(not r.ok for r in rows)
    return [
        kind,
        str(len(rows)),
        str(failed),
        worst.module or "<model>",
        _num(worst.max_rel),
        _num(worst.tol),
    ]


def _settings_summary(report: object, shown: int = 3) -> str:
    """The ``config`` rows in a line: how many layers, and what differs where."""
    rows = [r for r in report.rows if r.kind == "config"]
    if not rows:
        return "-"
    differing = [r for r in rows if not r.ok]
    if not differing:
        return f"same on both sides ({len(rows)} layers)"
    listed = "; ".join(f"{module_label(r.module)}: {r.note}" for r in differing[:shown])
    more = f"; +{len(differing) - shown} more" if len(differing) > shown else ""
    return f"{len(differing)} of {len(rows)} layers differ: {listed}{more}"


def render_result(result: object, top: int) -> str:
    """The table block of one ``ParityResult``."""
    title = f"== {result.label} =="
    if result.skipped:
        return f"{title}\nskipped: {result.skipped}"
    report = result.report
    first = report.first_divergence
    logits = [r for r in report.rows if r.kind == "output" and r.module == ""]
    outputs = [r for r in report.rows if r.kind == "output"]
    first_failure = report.failures[0] if report.failures else None
    summary = [
        ["verdict", "PASS" if result.ok else "FAIL"],
        ["first divergence", module_label(first)],
        *([["why", first_failure.note]] if first_failure is not None and first_failure.note else []),
        ["input", "x".join(map(str, report.input_shape)) or f"{result.batch}x3x{result.size}x{result.size}"],
        ["compared", "locally (each module on the Lucid side's input)" if report.local else "as given"],
        ["rows compared", f"{len(report.rows)} ({len(report.failures)} out of tolerance)"],
        ["layer settings", _settings_summary(report)],
        ["logits max rel / tol", f"{_num(logits[-1].max_rel)} / {_num(logits[-1].tol)}" if logits else "-"],
        ["worst output max rel", _num(max((r.max_rel for r in outputs), default=0.0))],
        ["liveness", result.liveness.summary() if result.liveness else "not checked"],
        ["seconds", f"{result.seconds:.1f}"],
    ]
    parts = [title, tabulate(summary, tablefmt="plain", disable_numparse=True)]
    worst = report.worst(top)
    if worst:
        parts.append(f"worst {len(worst)} rows:\n{worst_table(worst)}")
    # One summary line per kind of the backward and the train step, and errors: the kinds
    # the summary table above does not already speak for.
    summarised = ("state", "config", "output", "input")
    grads = [s for s in (_kind_summary(report, k) for k in KINDS if k not in summarised) if s]
    if report.backward or report.train_step or any(s[0] == "error" for s in grads):
        headers = ["kind", "rows", "failed", "worst module", "max rel", "tol"]
        heading = "gradients and train step" if report.backward or report.train_step else "errors"
        parts.append(f"{heading}:\n" + tabulate(grads, headers=headers, disable_numparse=True))
    return "\n".join(parts)


def render_overall(results: Sequence[object]) -> str:
    table = []
    for r in results:
        if r.skipped:
            table.append(
                [r.model, r.dtype, f"lucid={r.devices[0]},torch={r.devices[1]}", "skipped", "-", "-", "-"]
            )
            continue
        worst = r.report.worst(1)
        table.append(
            [
                r.model,
                r.dtype,
                f"lucid={r.devices[0]},torch={r.devices[1]}",
                "PASS" if r.ok else "FAIL",
                module_label(r.report.first_divergence),
                _ratio(worst[0]) if worst else "-",
                "-"
                if r.liveness is None
                else ("ok" if r.liveness.ok else f"{len(r.liveness.invisible)} invisible"),
            ]
        )
    headers = ["model", "dtype", "devices", "verdict", "first divergence", "worst rel/tol", "liveness"]
    return tabulate(table, headers=headers, disable_numparse=True)


def render_selftest(report: object) -> str:
    table = [
        [
            r.fault.id,
            r.fault.model,
            f"{r.fault.needs} ({r.fault.dtype})",
            r.fault.where,
            "yes" if r.caught else "NO",
            module_label(r.found) if r.found is not None else (r.error or "-"),
            r.kind or "-",
            module_label(r.found_by_values),
            "yes" if r.localized else "NO",
            f"{r.seconds:.1f}",
        ]
        for r in report.results
    ]
    headers = [
        "fault",
        "model",
        "needs",
        "planted in",
        "caught",
        "first divergence",
        "kind",
        "by values alone",
        "localised",
        "s",
    ]
    lines = [tabulate(table, headers=headers, disable_numparse=True)]
    for control, why in report.controls.items():
        lines.append(f"control {control}: {'clean pair passes' if why is None else 'FAILED: ' + why}")
    found = sum(r.ok for r in report.results)
    lines.append(
        f"{'PASS' if report.ok else 'FAIL'}: {found}/{len(report.results)} faults caught and localised "
        f"({report.size}x{report.size}, seed {report.seed}{', compared locally' if report.local else ''})"
    )
    return "\n".join(lines)
