"""What a newcomer sees first: ``slams --help`` at once (the heavy modules load in the subcommand
handlers), plain help texts with their defaults, and the demo and the selftest telling what they
do at least every 10 s (a progress bar's update or a line), in fresh processes as from a shell."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SLAMS = [sys.executable, "-m", "slams_diffusers.cli"]


def timed_output(argv: list[str], cwd: Path) -> tuple[int, list[tuple[float, str]]]:
    """Run ``argv``; its exit status and each update of its output (a line, or a progress bar
    redrawn with ``\\r``; stdout and stderr together) with its time since the start, in s."""
    start = time.perf_counter()
    process = subprocess.Popen(
        argv, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    updates, pending = [], b""
    while chunk := process.stdout.read1(4096):
        now = time.perf_counter() - start
        *done, pending = re.split(rb"[\r\n]", pending + chunk)
        updates += [(now, part.decode()) for part in done if part.strip()]
    process.wait(timeout=60)
    return process.returncode, updates


def largest_gap(updates: list[tuple[float, str]]) -> float:
    """The longest silence, from the start to the last update."""
    times = [0.0, *(t for t, _ in updates)]
    return max(b - a for a, b in zip(times, times[1:], strict=False))


def test_help_is_plain_text_and_fast():
    """``slams --help`` parses before importing anything heavy: under 2 s in a new interpreter
    (the best of three runs, against the load of other jobs), no torch imported."""
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        done = subprocess.run([*SLAMS, "--help"], env=ENV, capture_output=True, text=True)
        seconds.append(time.perf_counter() - start)
        assert done.returncode == 0, done.stderr
    assert min(seconds) < 2.0, seconds
    assert done.stdout.startswith("usage: slams [-h]")
    assert "``" not in done.stdout and "slams demo" in done.stdout
    parse_only = (
        "import sys; from slams_diffusers.cli import build_parser; "
        "build_parser().parse_args(['demo']); "
        "print(sorted({'torch', 'diffusers'} & set(sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", parse_only], env=ENV, capture_output=True, text=True
    )
    assert loaded.stdout.strip() == "[]", loaded.stderr


def test_subcommand_help_gives_every_option_a_text_and_its_default():
    demo = subprocess.run([*SLAMS, "demo", "--help"], env=ENV, capture_output=True, text=True)
    text = " ".join(demo.stdout.split())
    for expected in (
        "--pipeline PIPELINE a pipeline folder",
        "(default: slams-qg-tiny)",
        "--members MEMBERS ensemble members (default: 16)",
        "Langevin corrections (default: 32)",
        "and the members (default: 0)",
        "--no-progress no progress bars or phase lines (stderr)",
    ):
        assert expected in text, expected
    selftest = subprocess.run([*SLAMS, "selftest", "--help"], env=ENV, capture_output=True)
    text = " ".join(selftest.stdout.decode().split())
    assert "members per run (default: 512)" in text and "sampling steps (default: 256)" in text


def test_the_demo_reports_progress_at_least_every_10_s(tmp_path):
    """The demo on the testbed's sizes (64 x 64, 100 days of spin-up) with 4 members x 8 steps: a
    line per phase, and bars for the simulation, the pipeline's preparation, sampling and
    unresolved scales."""
    argv = [*SLAMS, "demo", "--members", "4", "--steps", "8", "--out", str(tmp_path / "demo")]
    status, updates = timed_output(argv, tmp_path)
    text = "\n".join(line for _, line in updates)
    assert status == 0, text[-3000:]
    assert largest_gap(updates) < 10.0, updates
    for phase in (
        "slams demo: loading the pipeline slams-qg-tiny",
        "slams demo: simulating 2 QG trajectories",
        "simulate qg: 100%",
        "slams demo: assimilating 10 observations with slams-qg-tiny: 4 members x 8 steps",
        "SLAMS preparing: 100%",
        "SLAMS sampling: 100%",
        "SLAMS unresolved scales: 100%",
        "slams demo: OI/3D-Var with the same B",
        "slams demo: drawing",
    ):
        assert phase in text, phase
    assert (tmp_path / "demo" / "demo.png").stat().st_size > 0


def test_the_selftest_reports_progress_and_names_moment_matching(tmp_path):
    status, updates = timed_output(
        [*SLAMS, "selftest", "--members", "32", "--steps", "16"], tmp_path
    )
    assert largest_gap(updates) < 10.0, updates
    lines = [line for _, line in updates]
    records = [line for line in lines if line.startswith("{")]
    assert len(records) == 4
    assert ['"likelihood_covariance": "moment_matching"' in r for r in records] == [1, 0, 1, 0]
    assert not any("tweedie" in line for line in lines)
    assert any(line.startswith("selftest trajectory, diagonal: sampling: 100%") for line in lines)
    assert status in (0, 1)  # 32 members are too few for the tolerance; this checks the output
