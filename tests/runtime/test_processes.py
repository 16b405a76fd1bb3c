"""The process group a run joined is ended at exit, not left to the interpreter's teardown."""
import torch.distributed as dist

from mst_clipiqa.runtime import processes


def test_end_process_group_destroys_the_default_group_and_is_safe_without_one(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    processes.end_process_group()
    assert not dist.is_initialized()
    processes.end_process_group()  # nothing to end: no error
