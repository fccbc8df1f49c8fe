"""Match-weight charts and tables of a fitted Fellegi-Sunter model."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from linkage_pipeline.config import (
    check_source_name,
)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- reporting
def match_weights_markdown(parameters: pd.DataFrame) -> str:
    """The m, u and match weight of every non-missing level as a markdown table (the chart's text form)."""
    rows = parameters[parameters["level"] > 0]
    if rows.empty:
        return "_no fitted linkage_"
    cols = ["linkage", "field", "label", "m", "u", "match_weight", "lambda"]
    return rows[cols].to_markdown(index=False, floatfmt=".4g")


def plot_match_weights(parameters: pd.DataFrame, path: Path, *, title: str | None = None) -> Path | None:
    """Draws one linkage's match weights (log2 m/u per field and level) as horizontal bars to a PNG.

    Uses matplotlib's Agg canvas (no pyplot state, safe in worker processes). Bars to the right reward a pair,
    to the left punish it; the missing level (weight 0) is left out.

    Args:
        parameters: rows of ``schema.TABLE_MODEL_PARAMETERS`` for one linkage.
        path: the ``.png`` to write; parent folders are created.
        title: figure title.

    Returns:
        ``path``, or ``None`` when matplotlib is not installed (use :func:`match_weights_markdown` instead).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        logger.info("matplotlib is not installed: no match-weight chart")
        return None
    rows = parameters[parameters["level"] > 0].reset_index(drop=True)
    labels = [f"{f}: {lab}" for f, lab in zip(rows["field"], rows["label"])]
    weights = rows["match_weight"].to_numpy(np.float64)
    fig = Figure(figsize=(8, 0.35 * max(len(rows), 3) + 1.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(rows))[::-1]
    ax.barh(y, np.nan_to_num(weights), color=["#2ca02c" if w > 0 else "#d62728" for w in weights])
    ax.set_yticks(y, labels, fontsize=8)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("match weight log2(m / u)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_match_weights_per_linkage(parameters: pd.DataFrame, out_dir: Path) -> dict[str, Path | None]:
    """One match-weight chart per linkage in ``parameters`` (``<out_dir>/<linkage>_match_weights.png``).

    Returns:
        Linkage name -> the PNG written, or ``None`` when matplotlib is not installed.
    """
    return {
        name: plot_match_weights(rows, Path(out_dir) / f"{check_source_name(name)}_match_weights.png",
                                 title=f"match weights: {name}")
        for name, rows in parameters.groupby("linkage", sort=False)
    }


def match_weight_charts_markdown(parameters: pd.DataFrame, out_dir: Path) -> str:
    """Every linkage's match-weight chart as markdown with the PNG inline, for an asset's metadata.

    Draws the charts with :func:`plot_match_weights_per_linkage` (one PNG per linkage under ``out_dir``) and
    embeds each as a base64 data URI under the linkage's name in bold. Without matplotlib (no chart drawn), the
    text table of :func:`match_weights_markdown` instead.

    Args:
        parameters: rows of ``schema.TABLE_MODEL_PARAMETERS``, any number of linkages.
        out_dir: folder for the PNG files.
    """
    charts = plot_match_weights_per_linkage(parameters, out_dir)
    text = "\n\n".join(
        f"**{name}**\n\n![match weights](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"
        for name, path in charts.items()
        if path is not None
    )
    return text or match_weights_markdown(parameters)
