"""Run every benchmark in turn (``make bench``); each prints its own side-by-side ratios."""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("bench_reward.py", "bench_feature_cache.py", "bench_finetune.py", "bench_finetune_processes.py",
           "bench_sampling_methods.py", "bench_gpu.py", "bench_reward_overhead.py", "bench_cli_startup.py",
           "bench_demo.py")

if __name__ == "__main__":
    failed = [name for name in SCRIPTS
              if subprocess.run([sys.executable, str(HERE / name), *sys.argv[1:]]).returncode != 0]
    if failed:
        sys.exit(f"benchmarks failed: {failed}")
