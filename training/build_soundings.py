"""The real-profile data of the column prior (docs/method.md §Columns and real radiosondes).

    pip download --no-deps sharppy==1.4.0a5 -d downloads
    python training/build_soundings.py --sharppy downloads/SHARPpy-1.4.0a5-py2.py3-none-any.whl \
        --package slams_diffusers/data/sharppy_columns.nc --out data/raob-columns.nc

``--package`` writes every profile (NaN where a level is empty) in the file that ships with the
package (:func:`~slams_diffusers.data.soundings.packaged_soundings`); without ``--sharppy``
the profiles are read from that file (or from an installed SHARPpy when it is missing).
``--out`` writes the training store: the profiles with every level present, the ``split``
coordinate by launch time, read by ``train_score.py --data`` as it is.
"""

from __future__ import annotations

import argparse

import numpy as np

from slams_diffusers.data.soundings import packaged_soundings, sounding_columns


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sharppy", default=None, help="SHARPpy wheel or unpacked copy")
    parser.add_argument("--package", default=None, help="netCDF of every profile")
    parser.add_argument("--out", default=None, help="training store: complete profiles only")
    args = parser.parse_args(argv)
    data = sounding_columns(args.sharppy) if args.sharppy or args.package else packaged_soundings()
    if args.package:
        data.to_netcdf(args.package, engine="scipy")
    if args.out:
        complete = np.isfinite(data.t.values).all(axis=(1, 2))
        kept = data.isel(trajectory=np.flatnonzero(complete))
        kept.to_netcdf(args.out, engine="scipy")
        counts = {s: int((kept.split.values == s).sum()) for s in ("train", "val", "test")}
        print(
            f"{args.out}: {kept.sizes['trajectory']} of {data.sizes['trajectory']} profiles "
            f"have every level; {counts}"
        )


if __name__ == "__main__":
    main()
