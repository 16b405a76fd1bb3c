#!/usr/bin/env python
"""The served reward against the in-process one, and asynchronous scoring in a grpo rollout.

    python benchmarks/bench_serve.py                 # Ray Serve, 30 s of load per client count
    python benchmarks/bench_serve.py --quick         # a few seconds each (what the docs' CPU numbers used)
    python benchmarks/bench_serve.py --model paper-random --engine local --parts throughput --repeats 3
                                                     # the paper's size: served / in-process at batch 1, 8, 32

It starts servers, so it runs inside a loopback-only network namespace (it re-runs itself under ``unshare -n``
when it can). Measured, interleaved in one run:

1. throughput served (HTTP over loopback, binary body) / in-process at batch 1, 8, 32 (goal >= 0.8 at 32),
   with the served requests' p50 / p99 latency;
2. batching: images per second and images per forward pass with 1, 4 and 16 concurrent clients sending one image
   each;
3. async overlap: a grpo fine-tune on a tiny SD3 whose rollout is sampled in chunks, scored by a RemoteReward
   whose server takes ``--score-share`` of a chunk's sampling time (a remote GPU scorer's stand-in), seconds per
   step with and without ``async_scoring`` and the share of the scoring time hidden.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.harness.machine import cpu_count, cpu_name  # noqa: E402
from benchmarks.harness.report import markdown_table  # noqa: E402
from mst_clipiqa.integrations.serving import LocalServer, RemoteReward, ScoringService, ServeOptions  # noqa: E402
from mst_clipiqa.reward import MSTCLIPIQAReward  # noqa: E402


def in_namespace_or_rerun() -> None:
    import socket

    if [name for _, name in socket.if_nameindex()] == ["lo"] or os.environ.get("BENCH_SERVE_ANY_NETWORK"):
        return
    if shutil.which("unshare") is None:
        sys.exit("bench_serve starts servers: run it inside a loopback-only network namespace (unshare -n)")
    unshare = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    command = [*unshare, "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable, *sys.argv]
    sys.exit(subprocess.run(command).returncode)


def throughput(reward, remote, size: int, repeats: int) -> dict[str, float]:
    """Interleaved: in-process reward(images) and the served one, ``repeats`` times each, wall and CPU time
    (this process's CPU: with ``--engine local`` the server's threads are in it too)."""
    images = torch.rand(size, 3, 224, 224, generator=torch.Generator().manual_seed(size))
    wall: dict[str, list[float]] = {"local": [], "served": []}
    cpu: dict[str, list[float]] = {"local": [], "served": []}
    with torch.inference_mode():
        reward(images), remote(images)  # warm up both
        for _ in range(repeats):
            for name, call in (("local", reward), ("served", remote)):
                start, cpu_start = time.perf_counter(), time.process_time()
                call(images)
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - cpu_start)
    local_rate, served_rate = size / np.median(wall["local"]), size / np.median(wall["served"])
    return {"in-process img/s": local_rate, "served img/s": served_rate,
            "served / in-process": served_rate / local_rate,
            "p50 ms": 1e3 * np.percentile(wall["served"], 50), "p99 ms": 1e3 * np.percentile(wall["served"], 99),
            "in-process CPU ms": 1e3 * np.median(cpu["local"]), "served CPU ms": 1e3 * np.median(cpu["served"])}


def concurrency(url: str, stats, clients: int, seconds: float) -> dict[str, float]:
    images = torch.rand(1, 3, 224, 224)
    counts = [0] * clients
    stop = time.monotonic() + seconds
    before = stats()

    def client(c: int) -> None:
        remote = RemoteReward(url, retries=10, backoff=0.05)
        while time.monotonic() < stop:
            remote(images)
            counts[c] += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    after = stats()
    batches = max(after["batches"] - before["batches"], 1)
    return {"img/s": sum(counts) / elapsed, "images per forward pass": (after["images"] - before["images"]) / batches}


def async_overlap(share: float, steps: int) -> dict[str, float]:
    """s/step of a grpo fine-tune scored by a slow remote reward, without and with async_scoring, interleaved."""
    from mst_clipiqa.integrations import PolicyFinetuneConfig, PolicyTrainer
    from mst_clipiqa.integrations.finetune.config import from_flat_settings
    from mst_clipiqa.integrations.pipelines.tiny import tiny_sd3_pipeline

    prompts = ["a cat", "a dog", "a red car", "a boat"]
    settings = dict(method="grpo", num_inference_steps=4, guidance_scale=1.0, group_size=4, prompts_per_step=2,
                    learning_rate=1e-3, save_every=0, lora_rank=2, rollout_chunk=2, progress_bar=False)
    probe = PolicyTrainer(tiny_sd3_pipeline(), lambda x: x.mean(dim=(1, 2, 3)), prompts,
                          from_flat_settings(PolicyFinetuneConfig,
                                             dict(max_steps=2, output_dir=tempfile.mkdtemp(), **settings)))
    probe.train(max_steps=1)  # warm up
    start = time.perf_counter()
    probe.policy.sampler.rollout(probe.policy.model, prompts[:2], [0, 1])
    delay = share * (time.perf_counter() - start)  # the server's time per chunk

    def slow(images):
        time.sleep(delay)
        return images.mean(dim=(1, 2, 3))

    seconds: dict[bool, list[float]] = {False: [], True: []}
    with LocalServer(ScoringService(slow)) as server:
        for _ in range(steps):
            for mode in (False, True):
                trainer = PolicyTrainer(tiny_sd3_pipeline(), RemoteReward(server.url), prompts,
                                        from_flat_settings(PolicyFinetuneConfig,
                                                           dict(max_steps=2, async_scoring=mode,
                                                                output_dir=tempfile.mkdtemp(), **settings)))
                trainer.train(max_steps=1)
                start = time.perf_counter()
                trainer.train()
                seconds[mode].append(time.perf_counter() - start)
    chunks = 8 // 2
    sync, overlapped = np.median(seconds[False]), np.median(seconds[True])
    scoring = chunks * delay
    return {"scoring / sampling per chunk": share, "sync s/step": sync, "async s/step": overlapped,
            "sync / async": sync / overlapped, "scoring time hidden": min((sync - overlapped) / scoring, 1.0)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds per measurement instead of 30")
    parser.add_argument("--engine", choices=("ray", "local"), default="ray",
                        help="serve with Ray Serve (mst-clipiqa serve) or the Ray-free LocalServer")
    parser.add_argument("--model", default="paper-random",
                        help="what is served: paper-random (the paper's architecture with random weights, saved to a "
                             "folder and served from it: the real model's cost, offline), tiny, or any model name, "
                             "trained folder or Hub id")
    parser.add_argument("--score-share", type=float, default=0.35, help="scoring time / sampling time per chunk")
    parser.add_argument("--batches", default="1,8,32", help="batch sizes of the throughput part (default: 1,8,32)")
    parser.add_argument("--repeats", type=int, help="timed calls per batch size and side (default: 2 --quick, 20)")
    parser.add_argument("--parts", default="throughput,concurrency,async",
                        help="what to measure, comma-separated: throughput, concurrency, async (default: all)")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    in_namespace_or_rerun()
    torch.set_num_threads(1)
    repeats, seconds, steps = (2, 3.0, 2) if args.quick else (20, 30.0, 5)
    repeats = args.repeats or repeats
    print(f"machine: {cpu_name()}, {cpu_count()} CPU cores; model {args.model}; engine {args.engine}", flush=True)
    if args.model == "paper-random":
        from benchmarks.reward_workload import build_model

        args.model = tempfile.mkdtemp(prefix="paper-random-")
        build_model(torch.device("cpu")).save_pretrained(args.model)
    reward = MSTCLIPIQAReward.from_pretrained(args.model)
    if args.engine == "ray":
        import ray

        from mst_clipiqa.integrations.serving import ray_app

        ray.init(num_cpus=max(cpu_count(), 2), include_dashboard=False, log_to_driver=False)
        handle = ray_app.serve_reward(args.model, ServeOptions(port=8000, num_cpus=1))
        url, stats = "http://127.0.0.1:8000", lambda: RemoteReward(handle).info()["stats"]
        server = None
    else:
        server = LocalServer(ScoringService(reward)).start()
        url, stats = server.url, lambda: server.service.stats
    remote = RemoteReward(url, timeout=900)
    if "throughput" in parts:
        rows = [[b, *[f"{v:.3g}" for v in throughput(reward, remote, int(b), repeats).values()]]
                for b in args.batches.split(",")]
        print(markdown_table(["batch", "in-process img/s", "served img/s", "served / in-process", "p50 ms", "p99 ms",
                              "in-process CPU ms", "served CPU ms"], rows), flush=True)
    if "concurrency" in parts:
        rows = [[str(c), *[f"{v:.3g}" for v in concurrency(url, stats, c, seconds).values()]] for c in (1, 4, 16)]
        print(markdown_table(["clients", "img/s", "images per forward pass"], rows), flush=True)
    if server is not None:
        server.stop()
    else:
        ray_app.shutdown()
    if "async" in parts:
        result = async_overlap(args.score_share, steps)
        print(markdown_table(list(result), [[f"{v:.3g}" for v in result.values()]]))


if __name__ == "__main__":
    main()
