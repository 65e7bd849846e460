"""Figures of analyses and their scores (matplotlib, an optional dependency: :data:`INSTALL_HINT`).

Every function builds a :class:`matplotlib.figure.Figure` on the Agg canvas (no pyplot, no
global backend change, nothing to close), returns it, and with ``path`` also writes it as a PNG.
Inputs are tensors or arrays in physical units (K); they are validated before anything is drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .observations import Background, Gridded, Observation, Satellite, Stations

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "INSTALL_HINT",
    "check_matplotlib",
    "plot_analysis_maps",
    "plot_profiles",
    "plot_rank_histogram",
    "plot_sweep",
]

#: How to install matplotlib: the ``plot`` extra of a checkout (the package is not on PyPI yet).
INSTALL_HINT = 'pip install matplotlib (in a checkout of slams-diffusers: pip install -e ".[plot]")'

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
    x: Any = None,
    y: Any = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Maps of one analysis: a row per level; columns truth / background / observations /
    analysis mean / spread (columns without input are left out); the figure's title says which
    time step it draws, and a legend explains the observation panels.

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
        x, y: the grid's coordinates (cell centres, evenly spaced), 1-d arrays or ``xarray``
            coordinates (their ``units`` label the axes), e.g. a file's ``x`` and ``y`` in m;
            default: grid indices.
        title: the figure's title, before the time step drawn.
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
    heading = [title] if title else []
    if mean.ndim == 4:
        if not -mean.shape[0] <= time_index < mean.shape[0]:
            raise ValueError(f"time_index: expected -{mean.shape[0]} <= index < {mean.shape[0]}")
        step = time_index % mean.shape[0]
        heading.append(f"time step {step + 1} of {mean.shape[0]}")
        mean = mean[step]
        fields = {k: v[step] for k, v in fields.items()}
    num_levels, grid = mean.shape[0], mean.shape[1:]
    axes_x = _grid_axis(x, "x", grid[1])
    axes_y = _grid_axis(y, "y", grid[0])

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
    if heading:
        figure.suptitle(", ".join(heading))
    axes = figure.subplots(len(rows), len(columns), squeeze=False, sharex=True, sharey=True)
    extent = (*axes_x.edges, *axes_y.edges)
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
                _draw_observations(ax, observed, level, extent, norm, (axes_y, axes_x))
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
        axes[r, 0].set_ylabel(axes_y.label)
    for ax in axes[-1]:
        ax.set_xlabel(axes_x.label)
    if observed:
        figure.legend(
            handles=_observation_legend(observed),
            loc="outside lower center",
            ncols=2,
            fontsize=8,
            frameon=False,
        )
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


@dataclass(frozen=True)
class _GridAxis:
    """A map axis: cell ``i``'s centre at ``start + i * step``; ``label`` names it with units."""

    start: float
    step: float
    size: int
    label: str

    @property
    def edges(self) -> tuple[float, float]:
        return self.start - self.step / 2, self.start + (self.size - 0.5) * self.step

    def at(self, index: np.ndarray) -> np.ndarray:
        """Coordinates of fractional grid indices (a station's position)."""
        return self.start + index * self.step


def _grid_axis(coordinate: Any, name: str, size: int) -> _GridAxis:
    """The axis of ``coordinate`` (``x`` or ``y`` of :func:`plot_analysis_maps`), ``size`` cells."""
    if coordinate is None:
        return _GridAxis(0.0, 1.0, size, f"{name} (grid index)")
    attrs = getattr(coordinate, "attrs", {})
    label = str(getattr(coordinate, "name", None) or name)
    units = attrs.get("units")
    values = _array(coordinate, name)
    if values.shape != (size,):
        raise ValueError(f"{name}: expected {size} coordinates (one per cell), got {values.shape}")
    steps = np.diff(values)
    if size > 1 and not np.allclose(steps, steps[0], rtol=1e-4, atol=0.0):
        raise ValueError(f"{name}: expected evenly spaced coordinates, got steps {steps}")
    return _GridAxis(
        float(values[0]),
        float(steps[0]) if size > 1 else 1.0,
        size,
        f"{label} [{units}]" if units else label,
    )


#: Colour of the observation panels where nothing is observed (no station, gap, cloud).
UNOBSERVED = "0.9"


def _observation_legend(observed: list[Observation]) -> list:
    """Legend entries of the observation panels: the grey ground, and stations if any."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=UNOBSERVED, edgecolor="0.6", label="not observed (or cloudy)")]
    if any(isinstance(o, Stations) for o in observed):
        handles.append(
            Line2D(
                [],
                [],
                marker="o",
                linestyle="",
                markerfacecolor="0.6",
                markeredgecolor="k",
                label="station, coloured on the row's temperature scale (analysis mean's bar)",
            )
        )
    return handles


def _draw_observations(
    ax, observed: list[Observation], level: int, extent, norm: dict, grid: tuple
) -> None:
    """Gridded / satellite images, then stations on top (at their coordinates on ``grid``, the
    ``(y, x)`` axes), on a grey ground (not observed)."""
    ax.set_facecolor(UNOBSERVED)
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
                grid[1].at(position[:, 1]),
                grid[0].at(position[:, 0]),
                c=value,
                s=18,
                cmap=TEMPERATURE_CMAP,
                edgecolors="k",
                linewidths=0.4,
                **norm,
            )


def check_matplotlib() -> None:
    """Raise an ``ImportError`` that says what to install (:data:`INSTALL_HINT`) when matplotlib
    is missing."""
    _matplotlib()


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(f"slams_diffusers.plotting needs matplotlib: {INSTALL_HINT}") from e
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
