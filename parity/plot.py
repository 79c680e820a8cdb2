"""Per-layer error across depth: one panel per compared pair (PNG, or any format
matplotlib writes, by the file's suffix; written atomically).

Each panel plots the relative error of every compared module output in execution order
on a log scale, the tolerance as a step line, and failures as red crosses; a panel for
parameter gradients is added when the report has them. matplotlib is optional (the
``plot`` extra); without it ``plot_reports`` raises ``PlotUnavailable`` saying how to
install it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from parity._files import write_atomically

__all__ = ["PlotUnavailable", "plot_format", "plot_reports", "supported_formats"]


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise PlotUnavailable(
            "plotting needs matplotlib, which is not installed: "
            "pip install 'lucid-inception[plot]' (or pip install matplotlib)"
        ) from error
    matplotlib.use("Agg")  # files only: no display needed, safe in CI
    import matplotlib.pyplot as plt

    return plt


def _block(module: str) -> str:
    """The top-level block a module belongs to: ``conv.5``, ``stem``, ``fc``."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "conv" and len(parts) > 1 else (parts[0] or "<model>")


def _panel(ax, title: str, rows: Sequence[object], xlabel: str) -> None:
    xs = list(range(len(rows)))
    raw = [r.max_rel if math.isfinite(r.max_rel) else math.nan for r in rows]
    positive = [e for e in raw if e > 0 and math.isfinite(e)] + [r.tol for r in rows if r.tol > 0]
    # Exact agreement (0) cannot sit on a log axis: it is drawn a decade below the smallest value.
    floor = min(positive, default=1e-16) / 10
    top = max(positive, default=1.0) * 10
    # A non-finite error (a shape mismatch, a side that did not run) is drawn at the top.
    errors = [top if math.isnan(e) else max(e, floor) for e in raw]
    ax.semilogy(xs, errors, lw=0.8, marker=".", ms=2.5, color="tab:blue", label="max relative error")
    exact = [i for i, e in enumerate(raw) if e == 0]
    if exact:
        ax.scatter(exact, [floor] * len(exact), marker="_", s=20, color="tab:green", label="exactly equal")
    ax.step(xs, [max(r.tol, floor) for r in rows], where="mid", lw=1.0, color="tab:orange", label="tolerance")
    bad = [i for i, r in enumerate(rows) if not r.ok]
    if bad:
        ax.scatter(
            bad, [errors[i] for i in bad], marker="x", s=36, color="red", zorder=3, label="out of tolerance"
        )
        first = bad[0]
        ax.annotate(
            f"first: {rows[first].module or '<model>'}",
            (first, errors[first]),
            textcoords="offset points",
            xytext=(6, 6),
            fontsize=7,
            color="red",
        )
    # Faint lines where each top-level block starts: depth reads as stem -> A -> ... -> head.
    previous = None
    for i, row in enumerate(rows):
        block = _block(row.module)
        if block != previous and row.module:
            ax.axvline(i, lw=0.3, color="grey", alpha=0.5)
            ax.text(i, 1.0, block, transform=ax.get_xaxis_transform(), rotation=90, fontsize=5,
                    va="bottom", ha="center", color="grey")  # fmt: skip
        previous = block
    ax.set_title(title, fontsize=9, pad=28)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("max |a - b| / max(|a|, |b|)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, which="major", axis="y", lw=0.3, alpha=0.5)
    ax.legend(fontsize=7, loc="lower right")


def supported_formats() -> dict[str, str]:
    """The file suffixes (without the dot) matplotlib's canvas can write, with their names."""
    _pyplot()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    formats = dict(FigureCanvasAgg.get_supported_filetypes())
    # pgf needs a TeX installation, found only when the file is saved, after the whole run.
    formats.pop("pgf", None)
    return formats


def plot_format(path: str | Path) -> str:
    """The format ``path``'s suffix names; ``ValueError`` listing the supported ones if none."""
    fmt = Path(path).suffix.lower().removeprefix(".")
    formats = supported_formats()
    if fmt not in formats:
        raise ValueError(
            f"{path}: unsupported plot suffix {'.' + fmt if fmt else '(none)'}; "
            f"supported: {', '.join('.' + f for f in sorted(formats))}"
        )
    return fmt


def plot_reports(reports: Sequence[tuple[str, object]], path: str | Path) -> Path:
    """Write a PNG for ``(title, parity.Report)`` pairs: one row of panels per report
    (module outputs, and parameter gradients when compared). Returns the path."""
    if not reports:
        raise ValueError("nothing to plot: no reports (every pair was skipped?)")
    plt = _pyplot()
    fmt = plot_format(path)
    panels = []
    for title, report in reports:
        outputs = [r for r in report.rows if r.kind == "output"]
        grads = [r for r in report.rows if r.kind == "param_grad"]
        # A setting that differs (a dropout rate) may show in no output: the title names it.
        settings = [r.module or "<model>" for r in report.rows if r.kind == "config" and not r.ok]
        differ = f"; settings differ at {', '.join(settings[:3])}{' ...' if len(settings) > 3 else ''}"
        # Each panel's own verdict: the report's may fail on rows another panel shows.
        verdict = (
            f"{'PASS' if all(r.ok for r in outputs) and not settings else 'FAIL'}{differ if settings else ''}"
        )
        panels.append((f"{title}: outputs ({verdict})", outputs, "module, in execution order"))
        if grads:
            verdict = "PASS" if all(r.ok for r in grads) else "FAIL"
            order = "parameter, in backward order (the last module's first)"
            panels.append((f"{title}: parameter gradients ({verdict})", grads, order))
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 3.6 * len(panels)), squeeze=False)
    for ax, (title, rows, xlabel) in zip(axes[:, 0], panels, strict=True):
        if rows:
            _panel(ax, title, rows, xlabel)
        else:
            ax.set_title(f"{title}: no rows", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format=fmt))
    finally:
        plt.close(fig)
    return path
