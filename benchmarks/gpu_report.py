"""What ``bench_gpu.py`` prints: each section's figures and ratios, then the issue's table as markdown."""
from __future__ import annotations

from benchmarks.gpu_plan import GpuPlan
from benchmarks.harness.report import fmt_bytes, markdown_table, verdict

GOALS = {"fwd+bwd": (">=", 0.50), "fwd+bwd small": (">=", 0.40), "reward/encoders": ("<=", 1.02),
         "no-grad": (">=", 0.60), "highres": (">=", 0.80), "best_of_n": ("<=", 0.02), "finetune": ("<=", 1.15)}


def meets(goal: str, value: float) -> bool:
    op, bound = GOALS[goal]
    return value >= bound if op == ">=" else value <= bound


def goal_text(goal: str) -> str:
    op, bound = GOALS[goal]
    return f"{op} {bound:.0%}" if goal == "best_of_n" else f"{op} {bound}"


def _variants(rows: dict, kind: str, batch: int) -> dict[str, dict]:
    """The rows of one kind and batch by variant (eager, default, reduce-overhead)."""
    suffix = f" {kind} b{batch}"
    return {name[: -len(suffix)]: row for name, row in rows.items()
            if name.endswith(suffix) and not name.startswith("encoders")}


def print_reward(plan: GpuPlan, r: dict) -> None:
    print(f"[reward] {r['size']} px, {plan.dtype} autocast; matmul {plan.matmul_n}^3 {plan.dtype}: "
          f"{r['matmul_rate'] / 1e12:.2f} TFLOP/s; {r['flops_per_image']['fwd+bwd'] / 1e9:.1f} GFLOP per image "
          f"fwd+bwd, {r['flops_per_image']['no-grad'] / 1e9:.1f} no-grad")
    for name, row in r["rows"].items():
        print(f"  {name:<34} {row['images_per_s']:10.1f} img/s  {row['fraction']:.3f} of the matmul rate")
    print(f"  reward / bare encoders, fwd+bwd b{plan.batch}: {r['reward_over_encoders']:.3f}")
    print("  (recast: as before the weight-cast cache, autocast casting every frozen weight on every call;"
          + (" the cache is CPU-only, so on a GPU these time the same code as eager)" if plan.cuda else ")"))
    for key, value in r["compile"].items():
        print(f"  compiled {key}: {value:.3g}")
    print()


def print_highres(plan: GpuPlan, h: dict) -> None:
    s = h["seconds"]
    print(f"[high resolution] batch {plan.hr_batch}: {plan.hr_size} px inputs against the model's own size")
    for name, t in s.items():
        print(f"  {name:<14} {1e3 * t:9.1f} ms")
    print(f"  throughput ratio large / fit size: now {h['ratio_now']:.3f}, before (F.interpolate of the whole "
          f"image) {h['ratio_before']:.3f}; median of per-round ratios: now {h['ratio_now_paired']:.3f}, "
          f"before {h['ratio_before_paired']:.3f}")
    print(f"  now vs before: preprocessed pixels differ by at most {h['max_pixel_diff']:.2e}, their pixel "
          f"gradients by {h['max_grad_rel_diff']:.2e} of the largest, float32 scores by {h['max_score_diff']:.2e}\n")


def print_best_of_n(plan: GpuPlan, b: dict) -> None:
    per_image = 1e3 / b["n"]
    print(f"[best-of-{b['n']}] {plan.image_size} px, {plan.steps} DDIM steps, guidance {plan.guidance}")
    print(f"  generation {b['generation_s']:.3f} s; best_of_n's own scoring {b['best_of_n_scoring_s']:.4f} s")
    for key, label in (("scoring_now_s", "scoring, images on the device (now)"),
                       ("scoring_before_s", "scoring as before (via the CPU, re-cast weights)"),
                       ("reward_alone_s", "the bare reward on the same batch")):
        print(f"  {label:<50} {b[key]:.4f} s = {per_image * b[key]:.2f} ms/image")
    print(f"  scoring / generation: now {b['fraction_now']:.2%}, before {b['fraction_before']:.2%}; "
          f"now / before, median of per-round ratios: {b['now_over_before_paired']:.3f}")
    print(f"  showing the result (best images, contact sheet, records): {b['show_s']:.4f} s\n")


def print_finetune(f: dict) -> None:
    print("[fine-tuning] batch 2, LoRA r4, bf16 mixed precision; memory: peak above the trained state")
    for name, case in f.items():
        line = (f"  {name:<20} {case['step_s']:.3f} s/step, peak {fmt_bytes(case['peak_bytes'])} "
                f"(denoiser checkpointing {case['checkpointing']})")
        if "ratio" in case:
            parts = ", ".join(f"{k} {v:.3f}" for k, v in case["parts_s"].items())
            line += (f"\n    parts alone: {parts} s; sum with {case['unet_calls']} UNet call(s) "
                     f"{case['parts_sum_s']:.3f} s; step / sum = {case['ratio']:.3f}")
        print(line)
    print()


def _rate(images_per_s: float) -> str:
    return f"{images_per_s:,.0f}" if images_per_s >= 100 else f"{images_per_s:.2f}"


def _reward_row(plan: GpuPlan, r: dict, kind: str, batch: int, goal: str, label: str) -> list[str]:
    variants = _variants(r["rows"], kind, batch)
    text = "; ".join(f"{name} {_rate(row['images_per_s'])} img/s = {row['fraction']:.2f}"
                     for name, row in variants.items())
    best = max(row["fraction"] for name, row in variants.items() if name != "recast")
    before = "recast" if "recast" in variants else "eager"
    return [label, text, f"{variants[before]['fraction']:.2f} ({before})", goal_text(goal), verdict(meets(goal, best))]


def summary_rows(plan: GpuPlan, results: dict) -> list[list[str]]:
    """Measure, now, before (same run), goal, status: the issue's rows that were measured."""
    rows = []
    if "reward" in results:
        r, big, small = results["reward"], plan.batch, plan.small_batch
        label = f"Reward fwd+bwd w.r.t. pixels, {r['size']} px, batch {big} (fraction of the matmul rate)"
        rows += [_reward_row(plan, r, "fwd+bwd", big, "fwd+bwd", label),
                 _reward_row(plan, r, "fwd+bwd", small, "fwd+bwd small", f"Same, batch {small}"),
                 [f"Reward / two bare encoders, fwd+bwd, batch {big}", f"{r['reward_over_encoders']:.3f}", "-",
                  goal_text("reward/encoders"), verdict(meets("reward/encoders", r["reward_over_encoders"]))],
                 _reward_row(plan, r, "no-grad", big, "no-grad", f"No-grad scoring, batch {big}")]
    if "highres" in results:
        h = results["highres"]
        rows.append([f"{plan.hr_size} px inputs vs {h['size']} px, batch {plan.hr_batch} "
                     "(throughput ratio; median of per-round ratios)", f"{h['ratio_now_paired']:.3f}x",
                     f"{h['ratio_before_paired']:.3f}x",
                     goal_text("highres"), verdict(meets("highres", h["ratio_now_paired"]))])
    if "best_of_n" in results:
        b = results["best_of_n"]
        rows.append([f"Best-of-{b['n']} scoring / generation ({plan.image_size} px, {plan.steps} DDIM steps, "
                     f"guidance {plan.guidance})", f"{b['fraction_now']:.2%} ({1e3 * b['scoring_now_s'] / b['n']:.1f} "
                     "ms/image)", f"{b['fraction_before']:.2%} ({1e3 * b['scoring_before_s'] / b['n']:.1f} ms/image)",
                     goal_text("best_of_n"), verdict(meets("best_of_n", b["fraction_now"]))])
    if "finetune" in results:
        f = results["finetune"]
        for key, label in (("draft", "DRaFT-1"), ("alignprop", f"AlignProp, K = {plan.alignprop_k}")):
            case = f[key]
            text = f"{case['step_s']:.2f} s/step = {case['ratio']:.2f} x sum of parts, {fmt_bytes(case['peak_bytes'])}"
            if key == "draft":
                text += f" ({fmt_bytes(f['draft_checkpointed']['peak_bytes'])} with checkpointing)"
            rows.append([f"{label}, batch {plan.train_batch}, LoRA r{plan.lora_rank}, bf16 (step / sum of parts)",
                         text, "-", goal_text("finetune"), verdict(meets("finetune", case["ratio"]))])
    return rows


def print_summary(plan: GpuPlan, results: dict, machine: str, command: str) -> None:
    print(f"== summary ({machine}; {results['elapsed_s']:.0f} s) ==\n")
    print(markdown_table(["Measure", "Now", "Before (same run)", "Goal", "Status"], summary_rows(plan, results)))
    goals = "" if plan.cuda else " The goals are the GPU's; on CPU they are printed for reference only."
    print(f"\nMeasured on {machine}, `{command}`.{goals}")
