"""Report formatting: target verdicts, byte and timing summaries, markdown tables."""
from __future__ import annotations

import statistics


def verdict(ok: bool) -> str:
    """PASS or MISSED."""
    return "PASS" if ok else "MISSED"


def fmt_bytes(n: float) -> str:
    """Bytes in whole MiB."""
    return f"{n / 2 ** 20:.0f} MiB"


def fmt_spread(xs: list[float]) -> str:
    """Median, minimum and maximum of some timings in seconds."""
    return f"{statistics.median(xs):8.3f} s   (min {min(xs):.3f}, max {max(xs):.3f})"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table: the header, the separator line and one line per row."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)
