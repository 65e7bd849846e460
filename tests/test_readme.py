"""Every example of the README runs as written: its Python blocks in order, then its ``slams``
commands (the demo, then assimilate and evaluate on the files the Python example wrote), in a
fresh folder outside the checkout (the embedded pipelines load by name). The training commands
run, with tiny sizes, in ``tests/test_own_data.py``; ``slams simulate qg`` of the full default
dataset (minutes) in the reference section and ``slams cycle``, which needs the user's initial
state and observations (``tests/test_cli_cycle.py`` runs it on a tiny pipeline), are left out;
``slams train`` prints the training commands of the README as they are written there."""

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from slams_diffusers.cli import main

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def slams_commands() -> list[list[str]]:
    """The arguments of the ``slams ...`` lines of the bash blocks (continuations joined, leading
    environment assignments and comments dropped), ``slams simulate`` and ``slams cycle`` left
    out."""
    lines = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and "=" in words[0]:
                words = words[1:]
            if words[:1] == ["slams"] and words[1:2] not in (["simulate"], ["cycle"]):
                lines.append(words[1:])
    return lines


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("readme")


def test_the_readme_has_examples():
    assert len(blocks("python")) >= 3
    assert [argv[0] for argv in slams_commands()] == ["demo", "assimilate", "evaluate"]


def test_python_examples_run_as_written(folder, monkeypatch):
    monkeypatch.chdir(folder)
    namespace: dict = {}
    for block in blocks("python"):
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    dataset = namespace["out"].dataset
    assert namespace["cycled"].cycle == 8 and namespace["cycle"].analysis.shape == (20, 1, 40)
    assert set(dataset.data_vars) >= {"mean", "std", "members"}
    for name in ("truth.nc", "background.nc", "stations.csv", "satellite.nc"):
        assert (folder / name).stat().st_size > 0


def test_commands_run_as_written(folder, monkeypatch, capsys):
    """The demo, then ``slams assimilate`` and ``slams evaluate`` on the files the README's Python
    example wrote."""
    monkeypatch.chdir(folder)
    if not (folder / "stations.csv").exists():
        pytest.fail("the Python examples must run first (they write the files)")
    for argv in slams_commands():
        assert main(argv) == 0, argv
    assert (folder / "demo" / "analysis.nc").stat().st_size > 0
    assert (folder / "demo" / "demo.png").stat().st_size > 0
    with xr.open_dataset(folder / "analysis.nc") as analysis:
        assert analysis["mean"].dims == ("time", "level", "y", "x")
    assert (folder / "analysis.png").stat().st_size > 0
    assert "spread/skill" in capsys.readouterr().out


def test_slams_train_prints_the_training_commands_of_the_readme(tmp_path, monkeypatch, capsys):
    """``slams train --data my_run.nc`` from the checkout's root prints the block of "Training on
    your own data" as it stands (a small ``ta(time, plev, y, x)`` run in Pa stands in for
    my_run.nc)."""
    data = tmp_path / "my_run.nc"
    values = np.random.default_rng(0).normal(250.0, 5.0, (20, 3, 8, 8)).astype("float32")
    plev = ("plev", [85000.0, 50000.0, 20000.0], {"units": "Pa"})
    run = xr.DataArray(values, dims=("time", "plev", "y", "x"), coords={"plev": plev})
    xr.Dataset({"ta": run.assign_attrs(units="K")}).to_netcdf(data)
    monkeypatch.chdir(REPO)
    assert main(["train", "--data", str(data)]) == 0
    printed = capsys.readouterr().out.replace(shlex.quote(str(data)), "my_run.nc")
    section = README.split("## Training on your own data", 1)[1]
    (expected, *_) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert printed == expected
