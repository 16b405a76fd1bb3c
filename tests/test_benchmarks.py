"""The benchmark harness: timing, FLOP counting, peak memory, worker processes and report helpers."""
import importlib.util
import json
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

from benchmarks.harness.flops import count_flops
from benchmarks.harness.machine import cpu_count, device_name
from benchmarks.harness.memory import run_workers
from benchmarks.harness.report import fmt_bytes, markdown_table, verdict
from benchmarks.harness.timing import MatmulStep, time_interleaved

ROOT = Path(__file__).resolve().parents[1]


def test_time_interleaved_times_every_function_every_round_in_changing_orders():
    calls = []
    fns = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    times = time_interleaved(fns, torch.device("cpu"), warmup=1, repeats=12)
    assert {k: len(v) for k, v in times.items()} == {"a": 12, "b": 12, "c": 12}
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    rounds = [tuple(calls[i:i + 3]) for i in range(3, len(calls), 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    # a rotation keeps the cyclic order, so "a" would always follow "c"; here each follows different ones
    followers = {name: {r[(r.index(name) + 1) % 3] for r in rounds} for name in "abc"}
    assert all(len(f) == 2 for f in followers.values())
    assert len(set(rounds)) > 3


def test_count_flops_of_a_matmul():
    step = MatmulStep(16, torch.device("cpu"), torch.float32)
    assert count_flops(step) == step.flops == 2 * 16 ** 3


def test_peak_memory_sees_a_large_allocation():
    """In a fresh process, as the benchmarks measure memory: a long test session's freed pages would hide it."""
    code = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(ROOT)!r})
        from benchmarks.harness.memory import PeakMemory
        with PeakMemory("cpu") as mem:
            x = torch.ones(64 * 2 ** 20 // 4)  # 64 MiB, touched
            del x
        print(mem.method, mem.peak_bytes)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    method, peak = done.stdout.split()
    assert method in ("vmhwm", "ru_maxrss")
    assert int(peak) >= 32 * 2 ** 20


def test_run_workers_collects_what_each_worker_emits(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from benchmarks.harness.memory import emit_result
        print("noise")
        emit_result({{"arg": sys.argv[1]}})
    """))
    assert run_workers(script, {"x": ["1"], "y": ["2"]}) == {"x": {"arg": "1"}, "y": {"arg": "2"}}
    assert run_workers(script, {"z": ["3"]}, parallel=False) == {"z": {"arg": "3"}}


def test_report_helpers():
    assert markdown_table(["A", "B"], [["1", "2"]]) == "| A | B |\n| --- | --- |\n| 1 | 2 |"
    assert (verdict(True), verdict(False), fmt_bytes(3 * 2 ** 20)) == ("PASS", "MISSED", "3 MiB")
    assert cpu_count() >= 1 and "threads" in device_name(torch.device("cpu"))


def test_sampling_methods_benchmark_spends_the_same_budget_on_every_method(capsys):
    from benchmarks.bench_sampling_methods import main

    results = main(["--budget", "3", "--seeds", "1", "--prompts", "1"])
    for sampler, methods in results.items():
        budgeted = {m: r for m, r in methods.items() if "wall-clock" not in m and m != "plain sample"}
        assert len(budgeted) == 4, sampler
        assert all(1 <= e <= 3 for r in budgeted.values() for e in r["evaluations"]), sampler
        assert all(len(r["held-out MST"]) == 1 for r in methods.values())
    assert "| best-of-3 | 3.0 |" in capsys.readouterr().out


def test_bench_gpu_smoke_measures_every_row(tmp_path, capsys):
    from benchmarks.bench_gpu import main

    results = main(["--smoke", "--json", str(tmp_path / "figures.json")])
    out = capsys.readouterr().out
    table = out.split("== summary")[1]
    for row in ("Reward fwd+bwd w.r.t. pixels", "Same, batch 2", "Reward / two bare encoders", "No-grad scoring",
                "256 px inputs vs 64 px", "Best-of-2 scoring / generation", "DRaFT-1", "AlignProp, K = 2"):
        assert row in table
    rows = results["reward"]["rows"]
    assert {"eager fwd+bwd b4", "eager fwd+bwd b2", "encoders fwd+bwd b4", "eager no-grad b4",
            "default fwd+bwd b4", "default fwd+bwd b2", "default no-grad b4"} <= set(rows)
    assert all(row["images_per_s"] > 0 and 0 < row["fraction"] for row in rows.values())
    assert results["reward"]["compile"]["default max_grad_rel_diff"] < 1e-4  # compiled = eager
    high = results["highres"]
    assert high["max_pixel_diff"] < 1e-4 and high["max_grad_rel_diff"] < 1e-4 and high["max_score_diff"] < 1e-3
    assert results["best_of_n"]["generation_s"] > 0 and results["best_of_n"]["scoring_now_s"] > 0
    for case in ("draft", "alignprop"):
        finetune = results["finetune"][case]
        assert finetune["parts_sum_s"] > 0 and finetune["ratio"] > 0
    assert results["finetune"]["draft_checkpointed"]["checkpointing"] is True
    assert json.loads((tmp_path / "figures.json").read_text())["plan"]["smoke"] == "True"


def test_reward_overhead_smoke_times_the_reward_against_its_bare_encoders(capsys):
    from benchmarks.bench_reward_overhead import main

    results = main(["--smoke", "--repeats", "2"])
    assert set(results) == {4, 2}
    for row in results.values():
        assert row["encoders / encoders"] == 1.0
        assert row["reward s"] > 0 and row["reward, weights re-cast s"] > 0
    assert "| batch | reward / encoders |" in capsys.readouterr().out


def test_finetune_methods_smoke_judges_every_method_at_the_same_budget(capsys):
    from benchmarks.bench_finetune_methods import main

    results = main(["--smoke"])
    assert {"DRaFT-1", "AlignProp", "ReFL", "Diffusion-DPO, best-worst pairs", "DDPO", "GRPO", "best-of-N (inference)",
            "noise optimisation (inference)"} <= set(results)
    assert {r["images"] for name, r in results.items() if not name.startswith("plain")} == {8}
    for r in results.values():
        assert len(r["reward"]) == len(r["held-out MST"]) == len(r["CLIP score"]) == 2 and len(r["diversity"]) == 1
        assert all(map(math.isfinite, r["reward"] + r["held-out MST"] + r["CLIP score"] + r["diversity"]))
    best_of_n, plain = results["best-of-N (inference)"], results["plain sample (no optimisation)"]
    # candidate 0 is the plain sample (sampled in a batch of candidates: equal up to float rounding)
    assert all(b >= p - 1e-4 for b, p in zip(best_of_n["reward"], plain["reward"]))
    assert "| DRaFT-1 | 8 |" in capsys.readouterr().out


def test_learning_smoke_reports_every_row_over_seeds_with_trl_beside_ours(capsys):
    from benchmarks.bench_learning import main

    summaries = main(["--smoke", "--rows", "draft", "ddpo", "trl ddpo"])
    with_trl = importlib.util.find_spec("trl") is not None  # the peers extra, left out on the floors (make test-min)
    if not with_trl:
        assert "pip install trl==0.23.1" in summaries.pop("trl ddpo")["skipped"]
    for name, row in summaries.items():
        assert row["seeds"] == [0, 1] and row["samples"] == 8, name
        (mean, se), (per_s, _) = row["per_1k"], row["per_cpu_s"]
        assert math.isfinite(mean) and se > 0 and row["cpu_s"] > 0 and row["wall_s"] > 0
        assert per_s == per_s and (per_s > 0) == (mean > 0)
    text = capsys.readouterr().out
    assert "| draft | 8 |" in text and ("| ddpo / trl ddpo (this run) |" in text) == with_trl


def test_rows_run_round_robin_by_seed_with_cpu_and_wall_time():
    from benchmarks.harness.seeds import across_seeds, fmt_mean_se, mean_se, run_interleaved

    calls = []
    def row(seed, name):
        calls.append((seed, name))
        if name == "c":
            time.sleep(0.02)
        return {"gain": seed + (name == "b")}

    rows = {name: (lambda seed, name=name: row(seed, name)) for name in ("a", "b", "c")}
    results = run_interleaved(rows, [0, 1, 2])
    assert [seed for seed, _ in calls] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [name for _, name in calls] != ["a", "b", "c"] * 3  # shuffled within a seed
    assert [r["seed"] for r in results["b"]] == [0, 1, 2]
    assert all(r["wall_s"] >= 0.02 and r["cpu_s"] < 0.02 for r in results["c"])  # asleep: wall time, no CPU time
    assert across_seeds(results["b"], "gain") == (2.0, 1 / 3 ** 0.5) == mean_se([1, 2, 3])
    assert fmt_mean_se(2.0, 0.5) == "2 +- 0.5 (t = 4.0)"


def test_uncertainty_smoke_reports_each_source_with_a_coverage_in_range(capsys):
    from benchmarks.bench_uncertainty import SOURCES, main

    means = main(["--ensemble", "2", "--epochs", "1", "--seeds", "0"])
    assert set(means) == set(SOURCES)
    assert all(-1 <= rho <= 1 and 0 <= cover <= 1 for rho, cover in means.values())
    assert "| ensemble |" in capsys.readouterr().out


def test_reward_hacking_smoke_pairs_the_methods_by_seed(capsys):
    from benchmarks.bench_reward_hacking import main

    results = main(["--smoke"])
    assert set(results) == {"plain", "kl", "uncertainty", "gdpo"}
    assert all(len(pairs) == 1 and all(map(math.isfinite, pairs[0])) for pairs in results.values())
    # one update from the reference: the KL and its gradient are 0, so paired runs (same seed, pipeline, data)
    # end where plain grpo does, to the bit
    assert results["kl"] == results["uncertainty"] == results["plain"]
    assert "| gdpo |" in capsys.readouterr().out


def test_bench_demo_reads_the_download_size_from_pips_output(tmp_path):
    from benchmarks.bench_demo import downloaded_mb

    wheel = tmp_path / "torch-2.14.1-cp311-none-linux_x86_64.whl"
    wheel.write_bytes(b"\0" * 2**20)  # a wheel pip took from a local file index: its file's size counts
    output = (f"Collecting numpy\n  Downloading numpy-2.0-cp311.whl (16.5 MB)\nProcessing {wheel}\n"
              f"Processing {wheel}\n  Downloading tqdm-4.66.3-py3-none-any.whl (512.0 kB)\n"
              "Processing /nowhere/gone.whl\nRequirement already satisfied: pip\n")
    assert downloaded_mb(output) == 16.5 + 1 + 0.5
