"""The real global grid of issue 18: ERA5's ensemble of data assimilations, from the sample that
cfgrib's source distribution ships (t on 850 and 500 hPa, 10 members, 4 times 12 h apart,
2017-01-01 to 01-02, a 3° grid of 61 × 120; ERA5 is CC-BY-4.0, Copernicus Climate Change
Service), as the netCDF3 store that ships with the package
(``slams_diffusers/data/era5_members.nc``, read without HDF5 by
:func:`slams_diffusers.data.era5.packaged_era5`):

    pip download --no-deps --no-binary :all: cfgrib==0.9.15.1 -d downloads
    pip install h5netcdf h5py   # to read the sample's netCDF4 (HDF5) file, here only
    python training/build_era5_sample.py --cfgrib downloads/cfgrib-0.9.15.1.tar.gz \
        --out slams_diffusers/data/era5_members.nc

The store has the dims ``(trajectory, time, isobaricInhPa, latitude, longitude)`` that
:func:`~slams_diffusers.data.stores.open_store` reads: ``trajectory`` is the ensemble member (each
member cycles its own perturbed-observation assimilation, an independent trajectory), and a
``split`` coordinate on ``time`` keeps the last time out of training (``train`` for the first
three, ``test`` for the last: the real-data twin of ``benchmarks/era5_twin.py``).
"""

from __future__ import annotations

import argparse
import io
import tarfile

import numpy as np
import xarray as xr

SAMPLE = "cfgrib-0.9.15.1/tests/sample-data/era5-levels-members.nc"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfgrib", required=True, help="cfgrib's source distribution (.tar.gz)")
    parser.add_argument("--out", required=True, help="netCDF3 file to write")
    args = parser.parse_args(argv)
    with tarfile.open(args.cfgrib) as archive:
        raw = archive.extractfile(SAMPLE).read()
    with xr.open_dataset(io.BytesIO(raw), engine="h5netcdf") as sample:
        t = sample["t"].astype("float32").load()
    t = t.drop_vars([c for c in ("valid_time", "step") if c in t.coords])
    t = t.rename(number="trajectory")
    split = ["train"] * (t.sizes["time"] - 1) + ["test"]
    t = t.assign_coords(split=("time", np.array(split, dtype="S5")))
    t.attrs = {"units": "K", "long_name": "air temperature", "standard_name": "air_temperature"}
    xr.Dataset(
        {"t": t},
        attrs={
            "source": "ERA5 ensemble of data assimilations, 10 members (the sample shipped "
            "with cfgrib 0.9.15.1)",
            "license": "CC-BY-4.0; contains modified Copernicus Climate Change Service "
            "information 2017",
        },
    ).to_netcdf(args.out, engine="scipy")
    print(f"{args.out}: t{dict(t.sizes)}")


if __name__ == "__main__":
    main()
