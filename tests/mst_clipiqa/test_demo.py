import json
import math

from mst_clipiqa.cli import main
from mst_clipiqa.demo import real_weights_status


def test_demo_runs_end_to_end_offline_and_writes_its_report(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)  # ignore this machine's cache
    out = tmp_path / "demo_out"
    assert main(["demo", "--out", str(out), "--fast", "--offline"]) == 0
    printed = capsys.readouterr().out
    assert "[weights] tiny: offline" in printed
    for step in ("[1/4 data]", "[2/4 train]", "[3/4 best-of-N]", "[4/4 DRaFT-K]", "[report]"):
        assert step in printed
    figures = json.loads((out / "figures.json").read_text())
    assert figures["weights"] == "tiny-random"
    assert figures["training"]["splits"] == 2 and -1 <= figures["training"]["srcc"]["trained"] <= 1
    ranking = json.loads((out / "best_of_n" / "ranking.json").read_text())
    scores = [c["score"] for c in ranking["candidates"]]
    assert len(scores) == figures["best_of_n"]["n"] == 4 and scores == sorted(scores, reverse=True)
    assert (scores[0], scores[-1]) == (figures["best_of_n"]["best"], figures["best_of_n"]["worst"])
    assert ranking["candidates"][0]["seed"] == figures["best_of_n"]["winner_seed"]
    train_report = json.loads((out / "train" / "report.json").read_text())
    assert train_report["summary"]["test"]["quality"]["srcc"]["mean"] == figures["training"]["srcc"]["trained"]
    log = json.loads((out / "finetune" / "log.json").read_text())
    assert [r["step"] for r in log["history"]] == [1, 2, 3, 4] == list(range(1, figures["finetune"]["steps"] + 1))
    assert all(math.isfinite(r["reward"]) for r in log["history"])
    assert (out / "finetune" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    report = (out / "report.md").read_text()
    embedded = [line[line.index("](") + 2:-1] for line in report.splitlines() if line.startswith("![")]
    assert any(p.endswith("contact_sheet.png") for p in embedded)
    assert any(p.endswith("reward_curve.png") for p in embedded)
    assert any(p.endswith("curves.png") for p in embedded)
    assert all((out / p).is_file() for p in embedded)
    assert "Tiny random backbones" in report
    t, f = figures["training"], figures["finetune"]
    assert f"test SRCC {t['srcc']['untrained']:.3f} -> {t['srcc']['trained']:.3f}" in report
    assert f"held-out reward {f['reward_before']:.3f} -> {f['reward_after']:.3f}" in report
    html = (out / "report.html").read_text()
    assert html.startswith("<!doctype html>") and html.count("<img") == len(embedded)


def test_weights_check_never_touches_the_network_when_offline(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    available, reason = real_weights_status(offline=True)
    assert not available and "offline" in reason


def test_weights_check_falls_back_when_the_hub_is_unreachable(monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)

    def unreachable(self, repo_id, timeout=None):
        assert timeout is not None and timeout <= 10  # never hangs
        raise ConnectionError("no route")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    available, reason = real_weights_status(offline=False)
    assert not available and "unreachable (ConnectionError)" in reason
