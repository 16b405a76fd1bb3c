"""Launcher processes: what the main process does alone, a launcher whose processes end up alone, and the process
group a run joined ended at exit, not left to the interpreter's teardown."""
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from mst_clipiqa.runtime import processes


def _gloo_threads() -> int:
    tasks = Path("/proc/self/task").iterdir()
    return sum((task / "comm").read_text().strip() == "pt_gloo_runloop" for task in tasks)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_end_process_group_stops_the_groups_threads_and_is_safe_without_one(tmp_path):
    """A DDP module in a reference cycle kept the group, and its threads, alive into the interpreter's shutdown,
    where one that freed a collective's tensors aborted the finished process."""
    before = _gloo_threads()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    cycle = {"ddp": torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))}
    cycle["cycle"] = cycle
    del cycle
    assert _gloo_threads() > before
    processes.end_process_group()
    assert not dist.is_initialized() and _gloo_threads() == before
    processes.end_process_group()  # nothing to end: no error


def test_a_worker_in_its_own_session_gets_sigterm_when_its_launcher_is_killed(tmp_path):
    """torchrun starts workers with start_new_session: SIGKILL to torchrun's group used to leave them running."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from mst_clipiqa.runtime import preemption

    marker = tmp_path / "stopped"
    module = Path(preemption.__file__)  # loaded alone: the worker starts in a moment, without torch
    worker = ("import importlib.util, pathlib, signal, sys, time\n"
              f"spec = importlib.util.spec_from_file_location('preemption', {str(module)!r})\n"
              "preemption = importlib.util.module_from_spec(spec)\n"
              "spec.loader.exec_module(preemption)\n"
              f"signal.signal(signal.SIGTERM, lambda *a: (pathlib.Path({str(marker)!r}).write_text('TERM'), "
              "sys.exit(143)))\n"
              "assert preemption.stop_with_parent()\n"
              "print('ready', flush=True)\n"
              "time.sleep(60)\n")
    launcher = ("import subprocess, sys, time\n"
                f"child = subprocess.Popen([sys.executable, '-c', {worker!r}], start_new_session=True, "
                "stdout=subprocess.PIPE, text=True)\n"
                "print(child.stdout.readline().strip(), child.pid, flush=True)\n"
                "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    ready, child_pid = parent.stdout.readline().split()
    assert ready == "ready"
    os.killpg(os.getpgid(parent.pid), signal.SIGKILL)  # the launcher's group; the worker is not in it
    parent.wait()
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.read_text() == "TERM"


def test_work_on_the_main_process_returns_its_result_and_raises_its_error():
    accelerator = processes.new_accelerator(cpu=True)
    assert processes.on_main(accelerator, lambda: 42) == 42

    def refuse():
        raise ValueError("already holds a run")

    with pytest.raises(ValueError, match="already holds a run"):
        processes.on_main(accelerator, refuse)


def test_the_other_processes_fail_with_the_main_processs_message(monkeypatch):
    other = SimpleNamespace(is_main_process=False, num_processes=2)
    monkeypatch.setattr(processes, "broadcast_object_list", lambda failure: failure.__setitem__(0, "holds a run"))
    with pytest.raises(processes.MainProcessFailed, match="^holds a run$"):
        processes.on_main(other, lambda: pytest.fail("ran on a process other than the main one"))
    monkeypatch.setattr(processes, "broadcast_object_list", lambda failure: None)  # the main process succeeded
    assert processes.on_main(other, lambda: pytest.fail("ran on a process other than the main one")) is None


def test_a_launcher_on_a_machine_without_cuda_gets_cpu_processes_and_a_lone_process_is_named(monkeypatch):
    settings = []

    def accelerate_that_ignores_the_launcher(**given):
        settings.append(given)
        return SimpleNamespace(num_processes=1, distributed_type="NO")

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(processes, "Accelerator", accelerate_that_ignores_the_launcher)
    with pytest.warns(RuntimeWarning, match="asked for several processes, but this Accelerator runs alone"):
        processes.new_accelerator(cpu=False, mixed_precision="no")
    assert settings == [{"cpu": True, "mixed_precision": "no"}]  # what gives gloo processes under torchrun


def test_a_lone_accelerator_under_a_launcher_warns(monkeypatch):
    alone = SimpleNamespace(num_processes=1)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.warns(RuntimeWarning, match="each process does the whole job on its own"):
        processes.warn_if_alone(alone)
    monkeypatch.setenv("WORLD_SIZE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        processes.warn_if_alone(alone)  # no launcher: nothing to say
