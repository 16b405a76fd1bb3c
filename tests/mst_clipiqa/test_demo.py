import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mst_clipiqa.cli import COMMANDS
from mst_clipiqa.cli.demo import real_weights_status

from .written import written_list

ROOT = Path(__file__).resolve().parents[2]


# what the extras (test, peers, serve, quantize, docs) add, by import name: `make demo` installs none of them
EXTRAS = {"pytest", "xdist", "hypothesis", "importlinter", "tensorboard", "imscore", "pyiqa", "trl", "ray", "torchao",
          "mkdocs", "material", "mkdocstrings"}
RUN = f"""import json, sys
from mst_clipiqa.cli import main
status = main(sys.argv[2:])
with open(sys.argv[1], "w") as imported:
    json.dump(sorted({{m.split(".")[0] for m in sys.modules}} & {EXTRAS!r}), imported)
sys.exit(status)"""


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    """One --fast offline demo for the tests below, in a fresh process as `make demo` runs it, with an empty
    Hugging Face cache (this machine's cached real weights ignored)."""
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", HF_HOME=str(out.parent / "hf-home"),
               OMP_NUM_THREADS="1")  # as conftest.py sets it for the tests in this process
    done = subprocess.run([sys.executable, "-c", RUN, str(out.parent / "extras.json"), "demo", "--out", str(out),
                           "--fast", "--offline"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout


def test_the_demo_imports_none_of_the_extras(demo_out):
    out, _ = demo_out
    assert json.loads((out.parent / "extras.json").read_text()) == []


def test_demo_runs_every_step_offline_and_records_its_figures(demo_out):
    out, printed = demo_out
    assert "[weights] tiny: offline" in printed
    steps = ["[1/5 data]", "[2/5 train]", "[3/5 rank]", "[4/5 best-of-N]", "[5/5 DRaFT-K]", "[report]"]
    assert [printed.index(s) for s in steps] == sorted(printed.index(s) for s in steps)
    numbered = re.findall(r"^\d+\. ", COMMANDS["demo"].DESCRIPTION, re.M)  # the steps its --help lists, + the report
    headers = re.findall(r"^\[(\d+)/(\d+) ", printed, re.M)
    assert [(int(k), int(n)) for k, n in headers] == [(k, len(numbered) - 1) for k in range(1, len(numbered))]
    figures = json.loads((out / "figures.json").read_text())
    assert figures["weights"] == "tiny-random" and figures["data"]["images"] == 48  # the shipped AGIQA-3K sample
    assert figures["training"]["splits"] == 2 and -1 <= figures["training"]["srcc"]["trained"] <= 1
    ranking = json.loads((out / "best_of_n" / "ranking.json").read_text())
    scores = [c["score"] for c in ranking["candidates"]]
    assert len(scores) == figures["best_of_n"]["n"] == 4 and scores == sorted(scores, reverse=True)
    assert (scores[0], scores[-1]) == (figures["best_of_n"]["best"], figures["best_of_n"]["worst"])
    train_report = json.loads((out / "train" / "report.json").read_text())
    assert train_report["summary"]["test"]["quality"]["srcc"]["mean"] == figures["training"]["srcc"]["trained"]
    log = json.loads((out / "finetune" / "log.json").read_text())
    assert [r["step"] for r in log["history"]] == [1, 2, 3, 4] == list(range(1, figures["finetune"]["steps"] + 1))
    assert all(math.isfinite(r["reward"]) for r in log["history"])
    held = json.loads((out / "finetune" / "held_out.json").read_text())
    assert held["mean_before"] == figures["finetune"]["reward_before"] and len(held["before"]) == len(held["after"])
    assert (out / "finetune" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert out / "report.html" in written_list(printed, out)


def test_the_report_has_one_captioned_section_per_step_in_order(demo_out):
    out, _ = demo_out
    page = (out / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "<pre>" not in page and "# MST-CLIPIQA" not in page
    assert "<h1>MST-CLIPIQA demo</h1>" in page and "<table>" in page and "|---|" not in page
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    assert [h.split(".")[0] for h in headings[:5]] == ["1", "2", "3", "4", "5"] and headings[5] == "Summary"
    figures = re.findall(r'<figure><img src="([^"]+)" alt="[^"]*"><figcaption><b>Figure (\d+)\.</b> ([^<]+)'
                         r"</figcaption></figure>", page)
    assert len(figures) == page.count("<img") == page.count("<figcaption>") == 8
    assert [int(n) for _, n, _ in figures] == list(range(1, len(figures) + 1))
    assert all((out / src).is_file() for src, _, _ in figures)
    assert all(re.search(r"\d+(\.\d+)?-\d|units|-1 to 1|by optimizer step|before \(left\)", c)
               for _, _, c in figures), [c for _, _, c in figures]
    names = [src for src, _, _ in figures]
    assert any(n.startswith("ranked/") for n in names) and "finetune/before_after.png" in names
    assert names.index("best_of_n/quality_maps.png") == names.index("best_of_n/contact_sheet.png") + 1
    assert "Tiny random backbones" in page
    sheet = Image.open(out / "best_of_n" / "contact_sheet.png")
    assert sheet.width >= 4 * 160  # 32-px tiny images enlarged, not stamps


def browser() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.skipif(browser() is None, reason="no headless browser (apt-get install chromium) to render the report")
def test_the_report_renders_in_a_headless_browser(demo_out):
    out, _ = demo_out
    shot = out / "screenshot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,2400"]
    url = (out / "report.html").as_uri()
    done = subprocess.run([browser(), *flags, f"--screenshot={shot}", url], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = Image.open(shot).convert("L")
    assert pixels.size == (1280, 2400)
    dark = sum(1 for v in pixels.getdata() if v < 128) / (1280 * 2400)
    assert 0.005 < dark < 0.6  # text and figures drawn on a light page, not a blank or a black one
    dom = subprocess.run([browser(), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<figcaption>") == (out / "report.html").read_text().count("<figcaption>")


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
