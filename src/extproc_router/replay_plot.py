"""The replay report as a picture: what each pool's traffic costs, routed vs all-baseline.

matplotlib is needed only here (the `plot` extra), so the router never imports it.
"""

from __future__ import annotations

from pathlib import Path

from extproc_router.replay import Report

__all__ = ["plot_report"]


def plot_report(report: Report, path: Path) -> None:
    """Two stacked bars (each segment the traffic one pool received: at its own price, and at
    the baseline model's price), and the expected latency beside them."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError(
            "the plot needs matplotlib: pip install 'extproc-router[plot]'"
        ) from None
    figure, (costs, latency) = plt.subplots(
        1, 2, figsize=(9, 4.5), gridspec_kw={"width_ratios": [2, 1]}
    )
    bars = ["routed", f"all {report.baseline_model}"]
    bottoms = [0.0, 0.0]
    colours = plt.get_cmap("tab10")
    for index, line in enumerate(report.pools):
        values = [line.cost_usd, line.baseline_cost_usd]
        costs.bar(
            bars, values, bottom=bottoms, label=f"{line.pool} ({line.model})", color=colours(index)
        )
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    for x, total in enumerate(bottoms):
        costs.annotate(f"${total:,.2f}", (x, total), ha="center", va="bottom")
    costs.set_ylabel("cost (USD)")
    costs.set_title(f"cost of {report.routed_requests:,.0f} requests, by pool")
    costs.legend(title="traffic routed to", fontsize="small")
    costs.margins(y=0.12)
    figures = [report.latency_s, report.baseline_latency_s]
    shown = [value or 0.0 for value in figures]
    latency.bar(bars, shown, color=[colours(len(report.pools)), colours(len(report.pools) + 1)])
    for x, value in enumerate(figures):
        label = "unknown" if value is None else f"{value:.2f} s"
        latency.annotate(label, (x, shown[x]), ha="center", va="bottom")
    latency.set_ylabel("expected mean latency (s)")
    latency.set_title("latency")
    latency.margins(y=0.12)
    latency.tick_params(axis="x", labelrotation=15)
    figure.suptitle(f"extproc-router replay: {Path(report.source).name}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
