"""The run report's plots: loss / SRCC curves and predicted vs MOS, as PNG."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # not pyplot: no backend to choose, no global state


def plot_curves(results: Sequence[Mapping[str, Any]], outputs: Sequence[str], path: str | Path,
                metric: str = "srcc") -> Path:
    """Train / validation loss and validation ``metric`` per epoch (0 = untrained), one line per split."""
    figure = Figure(figsize=(11, 4))
    loss_axis, metric_axis = figure.subplots(1, 2)
    for result in results:
        history = result["history"]
        epochs = [h["epoch"] for h in history]
        colour = f"C{result['split'] % 10}"
        loss_axis.plot(epochs, [h["train_loss"] for h in history], color=colour, label=f"split {result['split']}")
        loss_axis.plot(epochs, [_nan(h.get("val_loss")) for h in history], color=colour, linestyle="--")
        untrained = result.get("untrained", {}).get("val", {})
        for output, style in zip(outputs, ("-", ":", "-.", "--")):
            values = [_nan(untrained.get(output, {}).get(metric))]
            values += [_nan(h["val"].get(output, {}).get(metric)) for h in history]
            metric_axis.plot([0, *epochs], values, color=colour, linestyle=style)
            best = result.get("best_epoch")
            if best:
                metric_axis.plot([best], [values[best]], "o", color=colour)
    loss_axis.set(xlabel="epoch", ylabel="loss", title="loss (solid: train, dashed: validation)")
    metric_axis.set(xlabel="epoch", ylabel=f"validation {metric.upper()}",
                    title=f"validation {metric.upper()} ({', '.join(outputs)}); 0: untrained, dot: chosen")
    loss_axis.legend(fontsize="small")
    return _save(figure, path)


def plot_scatter(results: Sequence[Mapping[str, Any]], output: str, path: str | Path) -> Path:
    """Test predictions against MOS, pooled over splits, coloured by split."""
    figure = Figure(figsize=(5, 5))
    axis = figure.subplots()
    for result in results:
        predictions = result["test_predictions"][output]
        axis.scatter(predictions["mos"], predictions["pred"], s=10, alpha=0.6, color=f"C{result['split'] % 10}")
    srcc = [r["test"][output]["srcc"] for r in results]
    axis.set(xlabel="MOS", ylabel="predicted score",
             title=f"{output}: test SRCC {np.nanmean(np.array(srcc, dtype=float)):.3f} (mean of {len(srcc)})")
    return _save(figure, path)


def make_plots(results: Sequence[Mapping[str, Any]], outputs: Sequence[str], directory: str | Path,
               metric: str = "srcc") -> list[Path]:
    """``curves.png`` and one ``scatter_<output>.png`` per output under ``directory``."""
    directory = Path(directory)
    paths = [plot_curves(results, outputs, directory / "curves.png", metric)]
    return paths + [plot_scatter(results, o, directory / f"scatter_{o}.png") for o in outputs]


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
