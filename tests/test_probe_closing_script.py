"""scripts/probe_closing.py on a finished tiny coarse RUN: one line per radius, the run left as it was."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_probe_closing_reextracts_a_run_without_touching_it(coarse_run):
    mesh = coarse_run / "coarse" / "mesh.ply"
    before = mesh.read_bytes()
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "probe_closing.py"), str(coarse_run), "--radii", "0", "3"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if "close_radius" in line]
    assert [line.split("close_radius")[1].split(":")[0].strip() for line in lines] == ["0", "3"]
    assert all("components 1, watertight True" in line for line in lines), out.stdout
    assert mesh.read_bytes() == before
