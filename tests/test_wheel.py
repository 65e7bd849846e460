"""A user's install, not a checkout's: ``python -m build`` makes the sdist and, from it, the wheel;
the wheel, installed in a fresh virtual environment, carries the embedded pipelines (safetensors
only), loads them by name and runs ``slams demo`` from a folder outside the checkout."""

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from slams_diffusers.hub import FORBIDDEN_WEIGHT_SUFFIXES

REPO = Path(__file__).resolve().parents[1]
#: What the build reads; copied so that building leaves no egg-info in the checkout.
SOURCES = ("pyproject.toml", "README.md", "slams_diffusers", "pipelines")
MAX_WHEEL_MB = 25  # the four pipelines are ~13 MB of float32 safetensors, which barely compress

LOAD = """
import json, sys
import diffusers
import slams_diffusers
from slams_diffusers import SLAMSPipeline, embedded_pipelines
from slams_diffusers.hub import EMBEDDED_ROOT

pipe = SLAMSPipeline.from_pretrained("slams-qg-tiny")
entry = diffusers.DiffusionPipeline.from_pretrained("sda-l96")
print(json.dumps({
    "package": slams_diffusers.__file__,
    "embedded": str(EMBEDDED_ROOT),
    "names": embedded_pipelines(),
    "modalities": pipe.observation_encoder.modality_names,
    "entry": type(entry).__name__,
    "prefix": sys.prefix,
}))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The sdist and the wheel of ``python -m build`` (isolated, as a user runs it)."""
    if importlib.util.find_spec("build") is None:
        pytest.skip("`build` is not installed: pip install -e '.[dev]'")
    root = tmp_path_factory.mktemp("build")
    (root / "src").mkdir()
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(source, root / "src" / name, ignore=ignore)
        else:
            shutil.copy2(source, root / "src" / name)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(root / "dist"), str(root / "src")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(f"python -m build: {time.perf_counter() - start:.1f} s")
    (wheel,) = (root / "dist").glob("slams_diffusers-*.whl")
    (sdist,) = (root / "dist").glob("slams_diffusers-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def pipeline_files() -> set[str]:
    """The embedded pipelines' files, relative to ``pipelines/``."""
    root = REPO / "pipelines"
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_the_wheel_and_the_sdist_carry_the_package_and_the_embedded_pipelines(built):
    size = built["wheel"].stat().st_size / 1e6
    print(f"wheel {built['wheel'].name}: {size:.1f} MB")
    assert size < MAX_WHEEL_MB
    with zipfile.ZipFile(built["wheel"]) as wheel:
        files = set(wheel.namelist())
    embedded = {f.removeprefix("slams_diffusers/embedded/") for f in files if "/embedded/" in f}
    assert embedded == pipeline_files()
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "slams_diffusers").rglob("*.py")}
    assert modules <= files, sorted(modules - files)  # every subpackage is listed in pyproject
    assert "slams_diffusers/data/sharppy_columns.nc" in files
    weights = [f for f in files if f.endswith((".safetensors", *FORBIDDEN_WEIGHT_SUFFIXES))]
    assert weights and all(f.endswith(".safetensors") for f in weights), weights

    with tarfile.open(built["sdist"]) as sdist:
        names = sdist.getnames()
    top = names[0].split("/")[0]
    shipped = {n.removeprefix(f"{top}/pipelines/") for n in names if n.startswith(f"{top}/pipe")}
    assert pipeline_files() <= shipped


def test_the_installed_wheel_loads_by_name_and_runs_the_demo_elsewhere(built, tmp_path):
    """A venv that reads its dependencies from this environment's site-packages (a ``.pth`` file:
    ``--system-site-packages`` would give the base interpreter's, not those of a venv running
    the tests), the wheel installed with ``--no-deps``: the package imported there must be the
    wheel's, not this checkout or an editable install of it."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    scripts = venv / ("Scripts" if os.name == "nt" else "bin")
    python = scripts / "python"
    ask = [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
    purelib = Path(subprocess.run(ask, check=True, capture_output=True, text=True).stdout.strip())
    purelib = purelib.resolve()
    here = [p for p in (*site.getsitepackages(), site.getusersitepackages()) if os.path.isdir(p)]
    (purelib / "_test_environment.pth").write_text("\n".join(here) + "\n")
    install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    install += ["--no-deps", "--no-index", "--ignore-installed", str(built["wheel"])]
    subprocess.run(install, check=True)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    run = {"cwd": elsewhere, "env": env, "capture_output": True, "text": True}
    result = subprocess.run([str(python), "-c", LOAD], **run)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert Path(loaded["prefix"]).resolve() == venv.resolve()
    assert Path(loaded["package"]).resolve().is_relative_to(purelib), loaded["package"]
    assert Path(loaded["embedded"]).resolve().is_relative_to(purelib), loaded["embedded"]
    assert loaded["names"] == sorted(p.name for p in (REPO / "pipelines").iterdir())
    assert loaded["modalities"] == ["gridded", "satellite", "stations"]
    assert loaded["entry"] == "SLAMSPipeline"

    start = time.perf_counter()
    demo = [str(scripts / "slams"), "demo", "--members", "4", "--steps", "8", "--no-progress"]
    result = subprocess.run(demo, **run)
    print(f"slams demo in the venv: {time.perf_counter() - start:.1f} s")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "RMSE SLAMS" in result.stdout
    assert (elsewhere / "analysis.nc").is_file() and (elsewhere / "demo.png").is_file()
