"""Figures of analyses and their scores (matplotlib, an optional dependency: ``pip install
'slams-diffusers[plot]'``).

Every function builds a :class:`matplotlib.figure.Figure` on the Agg canvas (no pyplot, no
global backend change, nothing to close), returns it, and with ``path`` also writes it as a PNG.
Inputs are tensors or arrays in physical units (K); they are validated before anything is drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .observations import Background, Gridded, Observation, Satellite, Stations

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_analysis_maps", "plot_profiles", "plot_rank_histogram", "plot_sweep"]

TEMPERATURE_CMAP = "RdYlBu_r"
SPREAD_CMAP = "viridis"


def plot_analysis_maps(
    *,
    mean: Any,
    std: Any,
    truth: Any = None,
    background: Any = None,
    observations: Sequence[Observation] | None = None,
    levels: Sequence[int] | None = None,
    level_names: Sequence[str] | None = None,
    time_index: int = -1,
    path: str | Path | None = None,
) -> Figure:
    """Maps of one analysis: a row per level; columns truth / background / observations /
    analysis mean / spread (columns without input are left out).

    Args:
        mean, std: analysis mean and spread, ``(level, y, x)`` or ``(time, level, y, x)``.
        truth, background: same shape as ``mean``, or ``None``. Without ``background`` a
            :class:`~slams_diffusers.observations.Background` among ``observations`` is shown.
        observations: stations are scattered at their positions (coloured by value), gridded
            products and satellite channels drawn as images on their coarse grids (via
            ``to_grid()``; a satellite row shows the channel whose weighting function peaks at
            that level); only those observing the drawn time step. All temperature panels of a
            row share one colour scale (stations and gridded products included); the spread has
            its own, and so has a satellite channel (a brightness temperature is a weighted mean
            over the column, not the level's temperature), with its colour bar.
        levels: level indices to draw (default: all). ``level_names``: one label per drawn level
            (e.g. ``"850 hPa"``).
        time_index: the step drawn when the inputs have a time axis (default: the last one, the
            step a filter delivers).
        path: write the figure there as a PNG.
    """
    mean = _array(mean, "mean")
    if mean.ndim not in (3, 4):
        raise ValueError(
            f"mean: expected shape (level, y, x) or (time, level, y, x), got {mean.shape}"
        )
    fields = {"truth": truth, "background": background, "std": std}
    fields = {k: _array(v, k) for k, v in fields.items() if v is not None}
    for name, value in fields.items():
        if value.shape != mean.shape:
            raise ValueError(f"{name}: expected the shape of mean {mean.shape}, got {value.shape}")
    step = None
    if mean.ndim == 4:
        if not -mean.shape[0] <= time_index < mean.shape[0]:
            raise ValueError(f"time_index: expected -{mean.shape[0]} <= index < {mean.shape[0]}")
        step = time_index % mean.shape[0]
        mean = mean[step]
        fields = {k: v[step] for k, v in fields.items()}
    num_levels, grid = mean.shape[0], mean.shape[1:]

    observations = list(observations or [])
    for i, obs in enumerate(observations):
        if not isinstance(obs, Observation):
            raise ValueError(
                f"observations[{i}]: expected an Observation, got {type(obs).__name__}"
            )
        if tuple(obs.grid_shape) != grid:
            raise ValueError(
                f"observations[{i}]: grid_shape {tuple(obs.grid_shape)} does not match the "
                f"analysis grid {grid}"
            )
    observations = [o for o in observations if step is None or o.time_index == step]
    backgrounds = [o for o in observations if isinstance(o, Background)]
    if "background" not in fields and backgrounds:
        fields["background"] = _array(backgrounds[0].values, "observations (Background)")
    observed = [o for o in observations if not isinstance(o, Background)]

    rows = list(range(num_levels)) if levels is None else [int(i) for i in levels]
    if not rows or any(not 0 <= i < num_levels for i in rows):
        raise ValueError(f"levels: expected indices in [0, {num_levels}), got {levels!r}")
    if level_names is not None and len(level_names) != len(rows):
        raise ValueError(f"level_names: expected {len(rows)} names, got {len(level_names)}")
    names = [f"level {i}" for i in rows] if level_names is None else list(level_names)

    columns = [c for c in ("truth", "background") if c in fields]
    columns += (
        ["observations"] * bool(observed) + ["analysis mean"] + ["spread"] * ("std" in fields)
    )
    fields["analysis mean"] = mean

    figure = _figure(len(columns), len(rows), width=2.6, height=2.3)
    axes = figure.subplots(len(rows), len(columns), squeeze=False, sharex=True, sharey=True)
    extent = (-0.5, grid[1] - 0.5, -0.5, grid[0] - 0.5)  # cell centres at integer indices
    for r, (level, name) in enumerate(zip(rows, names, strict=True)):
        temperature = [fields[c][level] for c in columns if c in ("truth", "background")]
        temperature.append(mean[level])
        norm = {"vmin": min(map(np.nanmin, temperature)), "vmax": max(map(np.nanmax, temperature))}
        for c, column in enumerate(columns):
            ax = axes[r, c]
            ax.set_title(f"{column}, {name}", fontsize=8)
            if column == "spread":
                image = ax.imshow(
                    fields["std"][level], origin="lower", extent=extent, cmap=SPREAD_CMAP
                )
                figure.colorbar(image, ax=ax, shrink=0.8, label="K")
                continue
            if column == "observations":
                _draw_observations(ax, observed, level, extent, norm)
                continue
            shown = ax.imshow(
                fields[column][level],
                origin="lower",
                extent=extent,
                cmap=TEMPERATURE_CMAP,
                **norm,
            )
            if column == "analysis mean":
                figure.colorbar(shown, ax=ax, shrink=0.8, label="K")
        axes[r, 0].set_ylabel("y")
    for ax in axes[-1]:
        ax.set_xlabel("x")
    return _finish(figure, path)


def plot_profiles(
    errors_by_method: Mapping[str, Any],
    spreads_by_method: Mapping[str, Any] | None,
    pressures: Any,
    *,
    xlabel: str = "RMSE (solid), spread (dashed) [K]",
    path: str | Path | None = None,
) -> Figure:
    """Vertical profiles of error (solid) and spread (dashed, same colour) per method against
    pressure (hPa, log axis, surface at the bottom). Each profile has one value per pressure."""
    p = _array(pressures, "pressures")
    if p.ndim != 1 or p.size == 0 or not bool((p > 0).all()):
        raise ValueError(f"pressures: expected a 1-d sequence of positive pressures, got {p}")
    errors = _series(errors_by_method, "errors_by_method", p.size)
    spreads = _series(spreads_by_method or {}, "spreads_by_method", p.size, allow_empty=True)
    unknown = sorted(set(spreads) - set(errors))
    if unknown:
        raise ValueError(f"spreads_by_method: methods {unknown} are not in errors_by_method")
    figure = _figure(1, 1, width=4.5, height=4.5)
    ax = figure.subplots()
    for i, (method, error) in enumerate(errors.items()):
        ax.plot(error, p, "-o", color=f"C{i}", label=method, markersize=3)
        if method in spreads:
            ax.plot(spreads[method], p, "--", color=f"C{i}")
    ax.set_yscale("log")
    ax.set_ylim(p.max() * 1.05, p.min() / 1.05)
    ax.set_yticks(p, [f"{v:g}" for v in p])
    ax.minorticks_off()
    ax.set_ylabel("pressure [hPa]")
    ax.set_xlabel(xlabel)
    ax.set_xlim(left=0)
    ax.legend(fontsize=8)
    return _finish(figure, path)


def plot_rank_histogram(
    counts: Any | Mapping[str, Any], *, path: str | Path | None = None
) -> Figure:
    """Rank histograms (``N + 1`` counts each, e.g. from
    :func:`~slams_diffusers.metrics.rank_histogram`) as relative frequencies, one panel per
    method when given a dict; the dotted line is the flat histogram ``1 / (N + 1)``."""
    named = counts if isinstance(counts, Mapping) else {"": counts}
    hist = _series(named, "counts", None)
    for method, c in hist.items():
        if c.size < 2 or bool((c < 0).any()) or not c.sum() > 0:
            raise ValueError(
                f"counts{f'[{method!r}]' if method else ''}: expected N + 1 >= 2 non-negative "
                f"counts, not all zero; got {c}"
            )
    figure = _figure(len(hist), 1, width=3.2, height=2.6)
    axes = figure.subplots(1, len(hist), squeeze=False)[0]
    for ax, (method, c) in zip(axes, hist.items(), strict=True):
        ax.bar(np.arange(c.size), c / c.sum(), width=0.9, color="C0")
        ax.axhline(1 / c.size, color="k", linestyle=":", linewidth=1)
        ax.set_title(method, fontsize=9)
        ax.set_xlabel(f"rank of the truth among {c.size - 1} members")
    axes[0].set_ylabel("relative frequency")
    return _finish(figure, path)


def plot_sweep(
    x: Any,
    y_by_method: Mapping[str, Any],
    xlabel: str,
    ylabel: str,
    path: str | Path | None = None,
    *,
    logx: bool = False,
    title: str | None = None,
) -> Figure:
    """Score against degradation (e.g. RMSE against the coarsening factor), a line per method."""
    xs = _array(x, "x")
    if xs.ndim != 1 or xs.size == 0:
        raise ValueError(f"x: expected a 1-d sequence, got shape {xs.shape}")
    ys = _series(y_by_method, "y_by_method", xs.size)
    figure = _figure(1, 1, width=4.5, height=3.4)
    ax = figure.subplots()
    for method, y in ys.items():
        ax.plot(xs, y, "-o", label=method, markersize=4)
    if logx:
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{v:g}" for v in xs])
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return _finish(figure, path)


# --------------------------------------------------------------------------- helpers


def _draw_observations(ax, observed: list[Observation], level: int, extent, norm: dict) -> None:
    """Gridded / satellite images, then stations on top, on a grey ground (not observed)."""
    ax.set_facecolor("0.9")
    ax.set_xlim(extent[:2])
    ax.set_ylim(extent[2:])
    for obs in observed:
        if isinstance(obs, Satellite | Gridded):
            values, mask = (t.detach().cpu().double().numpy() for t in obs.to_grid())
            if isinstance(obs, Gridded):
                image = np.where(mask[level] > 0, values[level], np.nan)
                ax.imshow(image, origin="lower", extent=extent, cmap=TEMPERATURE_CMAP, **norm)
                continue
            channel = int(obs.weights[:, level].argmax())
            image = np.where(mask[channel] > 0, values[channel], np.nan)
            if np.isnan(image).all():
                continue
            own = {"vmin": np.nanmin(image), "vmax": np.nanmax(image)}
            shown = ax.imshow(image, origin="lower", extent=extent, cmap=TEMPERATURE_CMAP, **own)
            ax.figure.colorbar(shown, ax=ax, shrink=0.8, label=f"channel {channel} [K]")
    for obs in observed:
        if isinstance(obs, Stations) and level in obs.levels:
            j = obs.levels.index(level)
            seen = obs.mask[:, j].cpu().numpy()
            position = obs.positions.cpu().double().numpy()[seen]
            value = obs.values[:, j].cpu().double().numpy()[seen]
            ax.scatter(
                position[:, 1],
                position[:, 0],
                c=value,
                s=18,
                cmap=TEMPERATURE_CMAP,
                edgecolors="k",
                linewidths=0.4,
                **norm,
            )


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(
            "slams_diffusers.plotting needs matplotlib: pip install 'slams-diffusers[plot]'"
        ) from e
    return Figure, FigureCanvasAgg


def _figure(columns: int, rows: int, width: float, height: float) -> Figure:
    figure_class, canvas_class = _matplotlib()  # Agg canvas, no pyplot state
    figure = figure_class(figsize=(width * columns, height * rows), layout="constrained")
    canvas_class(figure)
    return figure


def _finish(figure: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        figure.savefig(Path(path), format="png", dpi=110)
    return figure


def _array(x: Any, name: str) -> np.ndarray:
    try:
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().double().numpy()
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{name}: expected numbers (a tensor or array), got {type(x).__name__}"
        ) from e


def _series(
    by_method: Mapping[str, Any], name: str, length: int | None, allow_empty: bool = False
) -> dict[str, np.ndarray]:
    """``{method: 1-d float64 array}``, each of ``length`` values (any length if ``None``)."""
    if not isinstance(by_method, Mapping) or (not by_method and not allow_empty):
        raise ValueError(f"{name}: expected a non-empty dict {{method: values}}, got {by_method!r}")
    out = {}
    for method, values in by_method.items():
        v = _array(values, f"{name}[{method!r}]")
        if v.ndim != 1 or (length is not None and v.size != length):
            expected = "1-d" if length is None else f"{length} values (one per x / pressure)"
            raise ValueError(f"{name}[{method!r}]: expected {expected}, got shape {v.shape}")
        out[str(method)] = v
    return out
