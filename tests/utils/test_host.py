"""medvid.utils.host: malloc keeps freed memory (no page faults on reuse), fused optimiser choice."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from medvid.utils.host import fused_optimizer_ok

_FAULTS = textwrap.dedent("""
    import resource, torch
    from medvid.utils.host import reuse_freed_memory
    print(int(reuse_freed_memory()))
    x = torch.randn(2048, 1296)
    index = torch.randint(0, 2048, (8192,))
    faults = []
    for _ in range(8):  # a training step's pattern: large temporaries (42 MB, above glibc's largest mmap
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt  # threshold) alive together, then freed
        a = x.index_select(0, index)
        b = torch.nn.functional.silu(a * 2)
        del a, b
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(min(faults[1:]))
""")


def _faults(env_value):
    env = {k: v for k, v in os.environ.items() if k != "MEDVID_SYSTEM_MALLOC"}
    if env_value is not None:
        env["MEDVID_SYSTEM_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, env=env, check=True)
    applied, faults = out.stdout.split()
    return applied == "1", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_without_page_faults():
    applied, faults = _faults(None)
    assert applied and faults < 1000, faults  # freed heap reused: steps without new pages
    applied, faults = _faults("1")  # the opt-out: glibc maps ~31k fresh pages in every step
    assert not applied and faults > 10000, faults


def test_fused_optimizer_only_for_one_cpu_or_cuda_device():
    assert fused_optimizer_ok(torch.nn.Linear(3, 2))
    assert fused_optimizer_ok(torch.nn.Linear(3, 2).double())
    frozen = torch.nn.Linear(3, 2).requires_grad_(False)
    assert not fused_optimizer_ok(frozen)  # nothing to optimise
    with torch.device("meta"):
        assert not fused_optimizer_ok(torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), fused=True)  # what the trainer builds
    assert opt.defaults["fused"]
