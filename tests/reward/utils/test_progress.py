"""One progress style: whole lines in logs (no carriage returns, no cursor moves), tqdm on a terminal."""

import io

from tqdm.auto import tqdm

from mst_clipiqa.reward.utils import LineProgress, nested_bar_kwargs, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_logs_get_whole_lines_and_nested_bars_stay_silent():
    log = io.StringIO()
    outer = progress_bar(range(3), desc="splits", unit="split", file=log, interval=0.0)
    assert isinstance(outer, LineProgress)
    for _ in outer:
        inner = progress_bar(total=5, desc="epochs", file=log)
        inner.update(5)
        inner.close()
        outer.set_postfix(loss="0.1")
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text and "epochs" not in text
    assert text.splitlines()[-1].startswith("splits: 3/3 split in ") and text.endswith(", loss=0.1\n")
    assert nested_bar_kwargs(log) == {"disable": True}


def test_log_lines_are_rate_limited_with_a_final_line():
    log = io.StringIO()
    with progress_bar(total=100, desc="draft", unit="step", file=log, interval=3600) as bar:
        for _ in range(100):
            bar.update()
    assert log.getvalue().splitlines() == [log.getvalue().splitlines()[0]]
    assert log.getvalue().startswith("draft: 100/100 step in ")


def test_a_terminal_gets_tqdm_with_transient_nested_bars():
    screen = Terminal()
    outer = progress_bar(total=2, desc="outer", file=screen)
    inner = progress_bar(total=2, desc="inner", file=screen)
    assert isinstance(outer, tqdm) and isinstance(inner, tqdm)
    assert outer.leave and not inner.leave
    inner.close()
    outer.close()
    assert nested_bar_kwargs(screen) == {"leave": False}


def test_disabled_bars_print_nothing():
    log = io.StringIO()
    for _ in progress_bar(range(3), desc="x", file=log, disable=True):
        pass
    assert log.getvalue() == ""


def test_closing_right_after_a_line_does_not_repeat_it():
    log = io.StringIO()
    bar = progress_bar(total=2, desc="draft", file=log, interval=0.0)
    bar.set_postfix(reward="1.0")
    bar.update(2)
    bar.close()
    assert len(log.getvalue().splitlines()) == 1


def test_a_long_inner_loop_in_a_log_still_prints_a_line_every_interval(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("mst_clipiqa.reward.utils.progress.time.monotonic", lambda: clock[0])
    monkeypatch.setattr(LineProgress, "last_line", 0.0)  # earlier tests' lines were on the real clock
    log = io.StringIO()
    outer = progress_bar(total=2, desc="splits", unit="split", file=log, interval=30.0)
    inner = progress_bar(total=100, desc="split 0", unit="epoch", file=log, interval=30.0)
    for _ in range(100):  # 100 epochs of 1 s each: about three lines, none on closing
        clock[0] += 1.0
        inner.update()
        inner.set_postfix(loss="0.5")
    inner.close()
    outer.update()
    outer.close()
    lines = log.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["split 0"] * 3 + ["splits"]
    assert lines[0] == "split 0: 30/100 epoch in 30.0 s, loss=0.5" and "-inf" not in log.getvalue()
