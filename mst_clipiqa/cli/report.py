"""A report a person can read: Markdown sections in order, every figure numbered and captioned, rendered to a
standalone HTML page by markdown-it-py (what ``mst-clipiqa demo`` writes)."""
from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5;
       color: #222; }
h1 { border-bottom: 2px solid #ddd; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #eee; }
table { border-collapse: collapse; margin: 1rem 0; } th, td { border: 1px solid #ccc; padding: .3rem .6rem; }
th { background: #f4f4f4; } td { font-variant-numeric: tabular-nums; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { color: #444; font-size: .92rem; margin-top: .3rem; }
blockquote { border-left: 4px solid #e0b000; background: #fffbea; margin: 1rem 0; padding: .5rem 1rem; }
code { background: #f4f4f4; padding: 0 .2rem; overflow-wrap: anywhere; }
"""


class Report:
    """Markdown built section by section; :meth:`write` saves ``report.md`` and ``report.html`` in ``folder``
    (figures are files under ``folder``, linked relatively, so the folder can be moved or zipped)."""

    def __init__(self, folder: Path, title: str):
        self.folder, self.title = Path(folder), title
        self.lines: list[str] = [f"# {title}", ""]
        self.figures: list[Path] = []

    def section(self, title: str, *paragraphs: str) -> None:
        self.lines += [f"## {title}", ""]
        self.text(*paragraphs)

    def text(self, *paragraphs: str) -> None:
        for paragraph in paragraphs:
            self.lines += [paragraph, ""]

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        self.lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        self.lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
        self.lines.append("")

    def figure(self, path: Path, caption: str) -> None:
        """An image under the report's folder with ``Figure N.`` and ``caption`` (what it shows, in which units)."""
        self.figures.append(path)
        source = html.escape(Path(path).relative_to(self.folder).as_posix())
        text = html.escape(caption)
        self.lines += [f'<figure><img src="{source}" alt="{text}">'
                       f"<figcaption><b>Figure {len(self.figures)}.</b> {text}</figcaption></figure>", ""]

    def markdown(self) -> str:
        return "\n".join(self.lines)

    def write(self) -> tuple[Path, Path]:
        from markdown_it import MarkdownIt

        body = MarkdownIt("commonmark", {"html": True}).enable("table").render(self.markdown())
        page = (f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(self.title)}"
                f"</title><meta name='viewport' content='width=device-width, initial-scale=1'>"
                f"<style>{STYLE}</style></head>\n<body>\n{body}</body></html>\n")
        md, page_path = self.folder / "report.md", self.folder / "report.html"
        md.write_text(self.markdown(), encoding="utf-8")
        page_path.write_text(page, encoding="utf-8")
        return md, page_path
