"""benchmarks/gpu_check.sh, the one-command check for a bare GPU machine: its dry run prints every
part with its command and time cap and what must be carried there, and checks nothing GPU-related;
without a CUDA GPU the real run stops at once with one clear line. (The GPU run itself cannot be
tested here: there is no GPU.)"""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
PARTS = {
    "setup": "pip install --no-index",
    "fast_path": 'benchmarks/gpu_fast_path.py" --data "$WORK/data" --size base',
    "variance": "benchmarks/variance_speed.py",
    "micro_table2": "-m snakemake --cores 8 results/table2.csv --configfile micro.yaml",
    "one_gpu": 'config/one-gpu.yaml" --only on',
}
EIGHT_MINUTES = 480


def gpu_check(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environment = os.environ | {"OUT": str(tmp_path / "out"), "GPU_CHECK_CARRY": str(tmp_path / "carry")} | env
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60
    )


def test_the_dry_run_prints_every_part_its_cap_and_the_carry_list(tmp_path):
    done = gpu_check("--dry-run", tmp_path=tmp_path, GPU_CHECK_PYTHON="no-such-python")  # no Python needed
    assert done.returncode == 0, done.stderr
    out = done.stdout
    caps = {}
    for part, command in PARTS.items():
        line = next((line for line in out.splitlines() if line.startswith(part + " ")), None)
        assert line is not None, f"part {part} missing from the plan:\n{out}"
        assert command in line
        caps[part] = int(re.match(rf"{part}\s+(\d+)s\s", line).group(1))
    assert f"total cap {sum(caps.values())}s" in out
    assert sum(caps.values()) <= EIGHT_MINUTES - 20  # room for the CUDA check and the summary
    for carried in ("wheels", "site", "hf"):  # the wheelhouse, the tokenizer package, the hub mirror
        assert str(tmp_path / "carry" / carried) in out, f"{carried} missing from the carry list"
    assert "bash benchmarks/gpu_check.sh --prepare" in out and "mirror   FEM_HUB_MIRROR = " in out
    assert "missing: run bash benchmarks/gpu_check.sh --prepare" in out  # an empty carry folder is named so
    assert str(tmp_path / "out") in out  # outputs go to $OUT
    assert not (tmp_path / "out").exists()  # and a dry run writes nothing


def test_without_cuda_the_run_stops_with_one_clear_line(tmp_path):
    done = gpu_check(tmp_path=tmp_path, GPU_CHECK_PYTHON=sys.executable)  # this machine's torch: no CUDA
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("gpu_check: cannot run here: no CUDA GPU: torch ")
    assert "--dry-run shows the plan" in lines[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_python_without_torch_or_an_unknown_flag_is_one_line_too(tmp_path):
    done = gpu_check(tmp_path=tmp_path, GPU_CHECK_PYTHON="no-such-python")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "no Python: 'no-such-python' is not on PATH" in done.stderr
    done = gpu_check("--no-such-flag", tmp_path=tmp_path)
    assert done.returncode == 64 and done.stderr == "gpu_check: unknown argument '--no-such-flag' (try --help)\n"
