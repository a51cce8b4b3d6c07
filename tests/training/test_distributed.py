"""Collectives put their tensors where the process group's backend needs them (NCCL: the GPU)."""

import pytest
import torch
import torch.distributed as dist

from medvid.training import distributed as D
from medvid.training import trainer as trainer_mod


class FakeGroup:
    """Stands in for torch.distributed; under "nccl" it refuses tensors that are not on the GPU, as NCCL does.

    There is no GPU here, so ``Tensor.to(cuda)`` is intercepted (``fake_cuda_moves``) and tags the copy
    it returns; a tagged tensor counts as a CUDA tensor."""

    ReduceOp = dist.ReduceOp

    def __init__(self, backend: str, world: int = 2):
        self.backend, self.world, self.calls = backend, world, 0

    def is_initialized(self):
        return True

    def get_backend(self):
        return self.backend

    def all_reduce(self, t, op=None):
        self.calls += 1
        if self.backend == "nccl" and not (t.is_cuda or getattr(t, "fake_cuda", False)):
            raise RuntimeError("No backend type associated with device type cpu")  # what NCCL raises
        if op is None:
            t.mul_(self.world)  # every rank holds the same values: SUM = world x value


def fake_cuda_moves(monkeypatch):
    real_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        dev = args[0] if args and isinstance(args[0], (torch.device, str)) else kwargs.get("device")
        if dev is not None and torch.device(dev).type == "cuda":
            out = real_to(self, "cpu", copy=True)
            out.fake_cuda = True
            return out
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)


NCCL_INFO = D.DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("cuda", 0))


def test_collective_device_per_backend(monkeypatch):
    monkeypatch.setattr(D, "dist", FakeGroup("nccl"))
    assert D.collective_device(NCCL_INFO) == torch.device("cuda", 0)
    monkeypatch.setattr(D, "dist", FakeGroup("gloo"))
    assert D.collective_device(NCCL_INFO) == torch.device("cpu")
    assert D.collective_device(D.DistInfo(device=torch.device("cuda", 0))) == torch.device("cuda", 0)


def test_the_fake_refuses_cpu_tensors_under_nccl(monkeypatch):
    """The check can fail: a CPU tensor handed straight to the fake NCCL raises, as the old
    ``mean_across`` (clone, then all_reduce) did with the trainer's CPU float64 loss terms."""
    fake = FakeGroup("nccl")
    with pytest.raises(RuntimeError, match="device type cpu"):
        fake.all_reduce(torch.tensor([1.0], dtype=torch.float64).clone())


def test_collectives_move_cpu_values_to_the_nccl_device(monkeypatch):
    fake = FakeGroup("nccl")
    monkeypatch.setattr(D, "dist", fake)
    fake_cuda_moves(monkeypatch)
    vals = torch.tensor([1.0, 2.0], dtype=torch.float64)  # the trainer's logged terms, on the CPU
    assert D.mean_across(vals, NCCL_INFO).tolist() == [1.0, 2.0] and vals.tolist() == [1.0, 2.0]
    assert D.sum_across(vals, NCCL_INFO).tolist() == [2.0, 4.0]
    assert D.all_true(True, NCCL_INFO) and not D.all_true(False, NCCL_INFO)
    assert D.max_across(vals, NCCL_INFO).tolist() == [1.0, 2.0]
    assert fake.calls == 5


def test_every_collective_in_the_trainer_goes_through_the_helpers():
    """No direct dist.all_reduce/broadcast in the trainer: they would skip the device choice."""
    import inspect

    src = inspect.getsource(trainer_mod)
    for name in ("all_reduce(", "broadcast(", "reduce_scatter(", "all_gather("):
        assert f"dist.{name}" not in src, name
    # all_gather_object and barrier pick torch.cuda.current_device() under NCCL, which
    # init_distributed sets to the local rank before the group exists.
    assert "torch.cuda.set_device(dev)" in inspect.getsource(D.init_distributed)
    assert inspect.getsource(D.init_distributed).index("set_device") < inspect.getsource(D.init_distributed).index("init_process_group")


def test_gloo_reduction_is_real(tmp_path):
    """The helpers against a real one-process gloo group (what CPU runs use)."""
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        info = D.DistInfo(rank=0, world_size=2, device=torch.device("cpu"))  # world 2 so the helpers reduce
        out = D.sum_across(torch.tensor([1.5, float("nan")]), info)
        assert out[0].item() == 1.5 and torch.isnan(out[1])
        assert not D.all_true(False, info) and D.all_true(torch.tensor(True), info)
    finally:
        dist.destroy_process_group()


def test_choosing_cuda_turns_on_tf32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert D.resolve_device("cpu") == torch.device("cpu") and not torch.backends.cuda.matmul.allow_tf32
    assert D.resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
