"""Real radiosonde profiles on fixed pressure levels (docs/method.md §Columns and real radiosondes).

The soundings are those that the SHARPpy package ships (``sharppy/databases/sars``: NOAA
data, distributed with SHARPpy's BSD-3-licensed code): ``hail/`` holds 1,148 observed
radiosonde launches (US sites, 1989–2008) and ``supercell/`` 994 profiles, most of them RUC-2
analyses at the storm's location. Each file is SHARPpy's text format: a ``%TITLE%`` line
``SITE YYMMDD/HHMM`` and a ``%RAW%`` table ``LEVEL (hPa), HGHT (m), TEMP (°C), DWPT (°C),
WDIR, WSPD`` down to ``%END%``, ``-9999`` for a missing value.

A profile goes to the fixed levels by linear interpolation of temperature in ``ln p`` between
the two nearest reported levels that bracket it. Nothing is extrapolated: a level below the
lowest valid report (below ground) or above the highest one (after the balloon burst) is NaN,
and so is a level whose bracketing reports are more than ``max_log_gap`` apart in ``ln p``
(a hole in the sounding). The lowest valid report is the *surface report* (pressure,
temperature, height).

:func:`sounding_columns` gathers the soundings as a canonical store ``(trajectory, time=1,
level)``: one trajectory per profile (independent states, never windowed together) with a
``split`` coordinate by launch time, so that the training scripts read it as they are.
:func:`packaged_soundings` opens the copy that ships with this package.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import math
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from ..observations import Observation, Profile, Satellite, gaussian_weighting_functions

__all__ = [
    "COLUMN_LEVELS_HPA",
    "SPLIT_YEARS",
    "SOUNDER_PEAKS_HPA",
    "SOUNDER_NOISE_STD",
    "Sounding",
    "ColumnCase",
    "read_sharppy",
    "iter_sharppy_soundings",
    "to_pressure_levels",
    "sounding_columns",
    "packaged_soundings",
    "complete_profiles",
    "surface_report_error",
    "column_cases",
]

#: The column's levels [hPa]: 850 to 100 hPa every 50 hPa. 850 hPa is above ground at every
#: launch site but the highest (1,115 of the 1,148 launches report it); 1000 and 925 hPa are
#: below ground at most Great Plains sites.
COLUMN_LEVELS_HPA = tuple(float(p) for p in range(850, 99, -50))

#: First years of the validation and test splits: launches before 2003 train, 2003–2004
#: validate, from 2005 on test (held out by time).
SPLIT_YEARS = (2003, 2005)

#: Peaks [hPa] of the simulated sounder's channels (Gaussian in ln p, width 0.5: broad,
#: overlapping weighting functions like a microwave sounder's temperature channels).
SOUNDER_PEAKS_HPA = (700.0, 500.0, 400.0, 300.0, 200.0, 150.0)

#: The sounder's error std [K]: instrument noise and forward-model error of a microwave
#: temperature channel.
SOUNDER_NOISE_STD = 0.5

MISSING = -9999.0
KINDS = {"hail": "raob", "supercell": "analysis"}
PACKAGED = "sharppy_columns.nc"


@dataclass(frozen=True)
class Sounding:
    """One profile as reported: ``pressure`` [hPa, decreasing], ``height`` [m],
    ``temperature`` and ``dewpoint`` [K]; NaN = missing."""

    site: str
    time: np.datetime64
    pressure: np.ndarray
    height: np.ndarray
    temperature: np.ndarray
    dewpoint: np.ndarray

    @property
    def surface(self) -> tuple[float, float, float]:
        """``(pressure [hPa], temperature [K], height [m])`` of the lowest report with a valid
        pressure, temperature and height."""
        valid = np.isfinite(self.pressure) & np.isfinite(self.temperature)
        valid &= np.isfinite(self.height)
        if not valid.any():
            return math.nan, math.nan, math.nan
        i = int(np.argmax(np.where(valid, self.pressure, -np.inf)))
        return float(self.pressure[i]), float(self.temperature[i]), float(self.height[i])


def _launch_time(stamp: str, where: str) -> np.datetime64:
    """``YYMMDD/HHMM`` as a UTC time; two-digit years from 1950 to 2049."""
    try:
        date, clock = stamp.split("/")
        year = int(date[:2])
        when = dt.datetime(
            year + (1900 if year >= 50 else 2000),
            int(date[2:4]),
            int(date[4:6]),
            int(clock[:2]),
            int(clock[2:4]),
        )
    except (ValueError, IndexError) as e:
        raise ValueError(f"{where}: expected a title time YYMMDD/HHMM, got {stamp!r}") from e
    return np.datetime64(when, "m")


def read_sharppy(text: str, where: str = "sounding") -> Sounding:
    """Parse one sounding in SHARPpy's text format (the module docstring). ``where`` names the
    source in errors. ``-9999`` becomes NaN; temperatures go from °C to K; rows are sorted by
    decreasing pressure and repeated pressures dropped."""
    lines = text.splitlines()
    try:
        title = lines[lines.index(next(s for s in lines if s.strip() == "%TITLE%")) + 1].split()
        start = next(i for i, s in enumerate(lines) if s.strip() == "%RAW%")
    except (StopIteration, IndexError) as e:
        raise ValueError(f"{where}: not a SHARPpy sounding (no %TITLE% / %RAW% section)") from e
    if len(title) < 2:
        raise ValueError(f"{where}: expected a title 'SITE YYMMDD/HHMM', got {title!r}")
    rows = []
    for line in lines[start + 1 :]:
        if line.strip() == "%END%":
            break
        fields = [f for f in line.replace(",", " ").split()]
        if len(fields) < 4:
            continue
        try:
            rows.append([float(f) for f in fields[:4]])
        except ValueError as e:
            raise ValueError(f"{where}: unreadable row {line.strip()!r}") from e
    if not rows:
        raise ValueError(f"{where}: the %RAW% section has no rows")
    table = np.asarray(rows, dtype=np.float64)
    table[table <= MISSING + 0.5] = np.nan
    table = table[np.isfinite(table[:, 0]) & (table[:, 0] > 0)]
    order = np.argsort(-table[:, 0], kind="stable")
    table = table[order]
    keep = np.concatenate([[True], np.diff(table[:, 0]) < 0])
    table = table[keep]
    return Sounding(
        site=title[0].upper(),
        time=_launch_time(title[1], where),
        pressure=table[:, 0],
        height=table[:, 1],
        temperature=table[:, 2] + 273.15,
        dewpoint=table[:, 3] + 273.15,
    )


def to_pressure_levels(
    pressure: np.ndarray,
    temperature: np.ndarray,
    levels_hpa: Sequence[float] = COLUMN_LEVELS_HPA,
    max_log_gap: float = 0.3,
) -> np.ndarray:
    r"""Temperature at ``levels_hpa``, linear in ``ln p`` between the reports that bracket each
    level:

    .. math:: T(p) = T_i + (T_{i+1} - T_i)\,\frac{\ln p - \ln p_i}{\ln p_{i+1} - \ln p_i},
              \qquad p_i \ge p \ge p_{i+1},

    over the reports with a valid temperature. NaN below the lowest and above the highest
    report (nothing is extrapolated) and where ``ln p_i − ln p_{i+1} > max_log_gap`` (0.3: from
    850 to 630 hPa, say). A level equal to a report takes its value."""
    p = np.asarray(pressure, dtype=np.float64)
    t = np.asarray(temperature, dtype=np.float64)
    levels = np.asarray(levels_hpa, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 1:
        raise ValueError(
            f"pressure and temperature: expected two 1-D arrays of one length, got shapes "
            f"{p.shape} and {t.shape}"
        )
    valid = np.isfinite(p) & np.isfinite(t) & (p > 0)
    p, t = p[valid], t[valid]
    out = np.full(levels.shape, np.nan)
    if p.size == 0:
        return out
    order = np.argsort(p)  # increasing pressure = increasing ln p, as np.interp needs
    log_p, t = np.log(p[order]), t[order]
    target = np.log(levels)
    inside = (target >= log_p[0]) & (target <= log_p[-1])
    out[inside] = np.interp(target[inside], log_p, t)
    upper = np.clip(np.searchsorted(log_p, target, side="left"), 1, max(len(log_p) - 1, 1))
    gap = log_p[upper] - log_p[upper - 1] if len(log_p) > 1 else np.zeros_like(target)
    exact = np.isin(target, log_p)
    out[inside & (gap > max_log_gap) & ~exact] = np.nan
    return out


def _sharppy_root(source: str | os.PathLike | None) -> Path | zipfile.Path:
    """The ``sars`` folder of an installed SHARPpy (``None``), of its wheel (a ``.whl`` file)
    or of an unpacked tree."""
    if source is None:
        spec = importlib.util.find_spec("sharppy")
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(
                "source: SHARPpy is not installed; pass its wheel (pip download --no-deps "
                "sharppy) or an unpacked copy"
            )
        return Path(next(iter(spec.submodule_search_locations))) / "databases" / "sars"
    path = Path(source)
    if path.is_file() and zipfile.is_zipfile(path):
        return zipfile.Path(path, "sharppy/databases/sars/")
    for candidate in (path, path / "databases" / "sars", path / "sharppy" / "databases" / "sars"):
        if (candidate / "hail").is_dir():
            return candidate
    raise ValueError(
        f"source: {str(path)!r} is neither a SHARPpy wheel nor a folder holding "
        "sharppy/databases/sars/hail"
    )


def iter_sharppy_soundings(
    source: str | os.PathLike | None = None,
) -> Iterator[tuple[str, Sounding]]:
    """``(kind, sounding)`` for every file of SHARPpy's sounding database, in file-name order:
    ``kind`` is ``"raob"`` (``hail/``, observed launches) or ``"analysis"`` (``supercell/``).
    ``source``: the installed package (``None``), its wheel file, or an unpacked copy."""
    root = _sharppy_root(source)
    for folder, kind in KINDS.items():
        files = sorted((f for f in (root / folder).iterdir() if f.is_file()), key=lambda f: f.name)
        for file in files:
            yield kind, read_sharppy(file.read_text(), where=f"{folder}/{file.name}")


def sounding_columns(
    source: str | os.PathLike | None = None,
    levels_hpa: Sequence[float] = COLUMN_LEVELS_HPA,
    split_years: tuple[int, int] = SPLIT_YEARS,
) -> xr.Dataset:
    """SHARPpy's soundings on ``levels_hpa`` as a canonical store: ``t`` ``(trajectory, time=1,
    level)`` in K (NaN where :func:`to_pressure_levels` leaves a level empty), one trajectory
    per profile sorted by launch time, with coordinates ``site``, ``launch_time``, ``kind``
    (``"raob"`` / ``"analysis"``), the surface report ``surface_pressure`` [hPa],
    ``surface_temperature`` [K], ``surface_height`` [m], and ``split``: ``"train"`` before
    ``split_years[0]``, ``"val"`` before ``split_years[1]``, ``"test"`` after."""
    rows = []
    for kind, sounding in iter_sharppy_soundings(source):
        values = to_pressure_levels(sounding.pressure, sounding.temperature, levels_hpa)
        rows.append((sounding.time, sounding.site, kind, values, sounding.surface))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    times = np.array([r[0] for r in rows], dtype="datetime64[ns]")
    years = times.astype("datetime64[Y]").astype(int) + 1970
    split = np.where(
        years < split_years[0], "train", np.where(years < split_years[1], "val", "test")
    )
    surface = np.array([r[4] for r in rows], dtype=np.float64)
    values = np.stack([r[3] for r in rows])[:, None, :].astype(np.float32)
    trajectory = np.arange(len(rows))
    return xr.Dataset(
        {
            "t": xr.DataArray(
                values,
                dims=("trajectory", "time", "level"),
                attrs={
                    "units": "K",
                    "long_name": "air temperature",
                    "standard_name": "air_temperature",
                },
            )
        },
        coords={
            "trajectory": trajectory,
            "time": [0],
            "level": xr.DataArray(
                np.asarray(levels_hpa, dtype=np.float64), dims="level", attrs={"units": "hPa"}
            ),
            "site": ("trajectory", np.array([r[1] for r in rows], dtype=object)),
            "launch_time": ("trajectory", times),
            "kind": ("trajectory", np.array([r[2] for r in rows], dtype=object)),
            "surface_pressure": ("trajectory", surface[:, 0], {"units": "hPa"}),
            "surface_temperature": ("trajectory", surface[:, 1], {"units": "K"}),
            "surface_height": ("trajectory", surface[:, 2], {"units": "m"}),
            "split": ("trajectory", split.astype(object)),
        },
        attrs={
            "title": "SHARPpy radiosonde and analysis profiles on fixed pressure levels",
            "source": "SHARPpy sounding database (sharppy/databases/sars): NOAA data, "
            "distributed with SHARPpy (BSD-3-Clause)",
            "history": "slams_diffusers.data.soundings.sounding_columns: linear in ln p, "
            "nothing extrapolated",
        },
    )


def packaged_soundings() -> xr.Dataset:
    """The :func:`sounding_columns` store that ships with this package (built from SHARPpy
    1.4.0a5's wheel by ``python training/build_soundings.py``), loaded into memory."""
    path = resources.files("slams_diffusers.data").joinpath(PACKAGED)
    with resources.as_file(path) as file:
        with xr.open_dataset(file, engine="scipy") as data:
            return data.load()


def complete_profiles(
    data: xr.Dataset, split: str | None = None, kind: str | None = None
) -> xr.Dataset:
    """The profiles of ``data`` (:func:`sounding_columns`) with every level and a surface
    report, of one ``split`` and ``kind`` (``None``: all)."""
    keep = np.isfinite(data.t.values).all(axis=(1, 2))
    keep &= np.isfinite(data.surface_pressure.values) & np.isfinite(data.surface_temperature.values)
    for name, wanted in (("split", split), ("kind", kind)):
        if wanted is not None:
            labels = data[name].values.astype(str)
            if wanted not in set(labels):
                raise ValueError(f"{name}: expected one of {sorted(set(labels))}, got {wanted!r}")
            keep &= labels == wanted
    return data.isel(trajectory=np.flatnonzero(keep))


def _surface_reports(data: xr.Dataset, bias: float = 0.0, std: float = 1.0) -> list[Profile]:
    """The surface report of every profile less ``bias``, with error std ``std``."""
    levels = data.level.values.tolist()
    return [
        Profile(
            values=[t - bias],
            pressures=[p],
            model_pressures=levels,
            noise_std=std,
            modality="surface",
        )
        for p, t in zip(data.surface_pressure.values, data.surface_temperature.values, strict=True)
    ]


def surface_report_error(data: xr.Dataset) -> tuple[float, float]:
    r"""``(bias, std)`` [K] of the surface report against the profile continued to the surface
    (:class:`~slams_diffusers.observations.Profile`), ``d = T_sfc − W x``, over the complete
    profiles of ``data`` (e.g. the training launches): the median and ``1.4826 · MAD`` of ``d``
    (robust to the few reports that are not a surface value). A surface report is warmer than
    the free-atmosphere profile continued down (a heated, well-mixed boundary layer at the
    evening launch): the bias is subtracted from the report, the std is its error."""
    data = complete_profiles(data)
    values = torch.as_tensor(data.t.values[:, 0], dtype=torch.float64)
    d = np.array(
        [
            float(o.values[0] - o.operator(x)[0])
            for o, x in zip(_surface_reports(data), values, strict=True)
        ]
    )
    bias = float(np.median(d))
    return bias, float(1.4826 * np.median(np.abs(d - bias)))


@dataclass(frozen=True)
class ColumnCase:
    """One held-out profile: ``truth`` ``(1, levels)`` [K], its ``observations`` by name
    (``"surface"``: the real surface report; ``"satellite"``: the simulated sounder), its
    ``site`` and launch ``time``."""

    truth: Tensor
    observations: dict[str, Observation]
    site: str
    time: np.datetime64


def column_cases(
    data: xr.Dataset,
    split: str = "test",
    kind: str = "raob",
    surface_error: tuple[float, float] | None = None,
    sounder_peaks_hpa: Sequence[float] = SOUNDER_PEAKS_HPA,
    sounder_noise_std: float = SOUNDER_NOISE_STD,
    seed: int = 0,
) -> list[ColumnCase]:
    """The real-column assimilation cases of ``data``'s complete ``split``/``kind`` profiles
    (docs/method.md §Columns and real radiosondes). The truth is the launch itself on the column
    levels; the observations are

    - ``"surface"``: the real surface report at its own pressure, less the bias of
      ``surface_error`` (``(bias, std)``; default :func:`surface_report_error` of the training
      launches), with that std (a :class:`~slams_diffusers.observations.Profile`);
    - ``"satellite"``: sounder channels ``W x + e`` computed from the truth, ``W`` Gaussian in
      ``ln p`` around ``sounder_peaks_hpa``, ``e ~ N(0, sounder_noise_std²)`` drawn from
      ``seed`` and the case's index (a :class:`~slams_diffusers.observations.Satellite` with
      no grid).
    """
    if surface_error is None:
        surface_error = surface_report_error(complete_profiles(data, "train", "raob"))
    bias, std = surface_error
    cases = complete_profiles(data, split, kind)
    levels = cases.level.values.tolist()
    weights = gaussian_weighting_functions(levels, list(sounder_peaks_hpa))
    out = []
    for index, surface in enumerate(_surface_reports(cases, bias, std)):
        truth = torch.as_tensor(cases.t.values[index], dtype=torch.get_default_dtype())
        generator = torch.Generator().manual_seed(seed * 100_003 + index)
        noise = sounder_noise_std * torch.randn(len(weights), generator=generator)
        out.append(
            ColumnCase(
                truth=truth,
                observations={
                    "surface": surface,
                    "satellite": Satellite(
                        values=weights @ truth[0] + noise,
                        weights=weights,
                        footprint=1,
                        grid_shape=(),
                        noise_std=sounder_noise_std,
                    ),
                },
                site=str(cases.site.values[index]),
                time=cases.launch_time.values[index],
            )
        )
    return out
