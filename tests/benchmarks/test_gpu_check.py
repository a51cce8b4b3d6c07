"""benchmarks/gpu_check.py on a CPU: the one-line exit without CUDA, the whole script at tiny shapes with
PyTorch stand-ins for the kernels (--cpu-smoke), and its comparisons catching a wrong kernel."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(*args, timeout=600):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="2")
    env.pop("OUT", None)
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=timeout)


def test_without_cuda_one_line_and_exit_0(tmp_path):
    proc = run("--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(proc.stdout.strip().splitlines()) == 1 and "CUDA is not available" in proc.stdout


def test_cpu_smoke_runs_every_section_and_writes_json(tmp_path):
    proc = run("--cpu-smoke", "--out", str(tmp_path))
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert not data["failed"] and (tmp_path / "gpu_check_profile.txt").is_file()
    sections = data["sections"]
    assert set(sections) >= {"1 kernels", "2 medsora-b", "3 training", "4 syncs", "4 profile", "5 sampling"}
    assert all(r["status"] in ("PASS", "INFO", "SKIP") for r in data["rows"])
    kernel_rows = [r["name"] for r in sections["1 kernels"]]
    for tag in ("fp32", "bf16"):
        assert any("chunk_scan" in n and tag in n and "grads" in n for n in kernel_rows)
        assert any("causal_conv1d width 384" in n and tag in n for n in kernel_rows)
    assert any("length-1 closed form" in n for n in kernel_rows)
    assert sum(r["status"] == "PASS" for r in sections["2 medsora-b"]) == 5
    trained = {r["name"].split(" s/step")[0] for r in sections["3 training"] if r["name"].endswith("s/step")}
    assert trained == {f"{m} micro=2 ckpt={c}" for m in ("medsora-b", "stdit-b") for c in (False, True)}
    assert all(r["clips_per_s"] > 0 for r in sections["3 training"] if "clips_per_s" in r)
    assert "gpu_check: all checked rows passed" in proc.stdout


def test_a_wrong_kernel_fails_the_check(tmp_path):
    G = load_script()
    good = G.reference_ops()
    bad = SimpleNamespace(chunk_scan=lambda *a, **k: good.chunk_scan(*a, **k) * 1.01, conv1d=good.conv1d)
    rep = G.Report(tmp_path, {})
    mixer = G.M.Mamba2(64, d_state=16, headdim=32)
    G.check_scan(rep, bad, torch.device("cpu"), mixer, 4, 8, "bad", seed=0)
    G.check_scan(rep, good, torch.device("cpu"), mixer, 4, 8, "good", seed=0)
    status = {r[1].split(" ")[0] + " " + r[1].split(" ")[-1]: r[4] for r in rep.rows}
    assert [r[4] for r in rep.rows if r[1].startswith("bad") and "fp32 fwd" in r[1]] == ["FAIL"]
    assert all(r[4] == "PASS" for r in rep.rows if r[1].startswith("good")), status
    assert rep.failed
