"""The built documentation site works opened from disk and served: every link names a file, and a headless
Chromium clicks from the index to a guide and finds the guide's title.

``make test`` builds the site once (``make docs``) and names it in ``MST_CLIPIQA_SITE``; without it the site is
built here. The browser is driven over Chrome's DevTools protocol on a pipe (``--remote-debugging-pipe``), so no
driver package is needed; without a browser the browser tests skip and say how to install one.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = "guides/finetuning.html"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if built := os.environ.get("MST_CLIPIQA_SITE"):
        return Path(built).resolve()
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    return out


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [value for name, value in attrs if name in ("href", "src") and value]


def local_target(page: Path, link: str) -> Path | None:
    """The file a link of ``page`` opens, or None for links off the site (another scheme, a host, a fragment)."""
    parts = urlsplit(link)
    if parts.scheme or parts.netloc or not parts.path:
        return None
    return (page.parent / unquote(parts.path)).resolve()


def test_every_link_of_the_site_names_a_file(site: Path):
    pages = sorted(site.rglob("*.html"))  # but 404.html, a server's page for any missing path: its links are absolute
    assert (site / "index.html") in pages and (site / GUIDE) in pages
    broken = []
    for page in pages:
        if page.name == "404.html":
            continue
        parser = Links()
        parser.feed(page.read_text(encoding="utf-8"))
        broken += [f"{page.relative_to(site)}: {link}" for link in parser.found
                   if (target := local_target(page, link)) is not None and not target.is_file()]
    assert not broken, f"{len(broken)} links open a folder or nothing, e.g. {broken[:5]}"


def test_the_menu_names_each_page_once():
    import yaml

    def entries(nav: list) -> list[tuple[str, str]]:
        found = []
        for item in nav:
            for title, target in item.items():
                found += entries(target) if isinstance(target, list) else [(title, target)]
        return found

    menu = entries(yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])
    for column in zip(*menu):
        assert len(set(column)) == len(column), sorted(x for x in column if column.count(x) > 1)


def browser() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


class Chrome:
    """A headless Chromium driven over the DevTools protocol on a pipe: JSON messages ended by a NUL byte."""

    def __init__(self, executable: str, profile: Path) -> None:
        to_chrome, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome = os.pipe()
        command = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                   f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
        self.process = subprocess.Popen(  # Chrome reads the protocol from fd 3 and writes it to fd 4
            ["bash", "-c", f'exec "$@" 3<&{to_chrome} 4>&{from_chrome}', "bash", *command],
            pass_fds=(to_chrome, from_chrome), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome)
        os.close(from_chrome)
        self._buffer, self._id, self.session = b"", 0, None

    def send(self, method: str, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:  # events arrive between the replies; only the reply to this message matters here
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_chrome, 1 << 16)
                assert chunk, "the browser closed its end of the pipe"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                assert "error" not in reply, reply["error"]
                return reply["result"]

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", url=url)["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def evaluate(self, expression: str):
        return self.send("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            time.sleep(0.1)
        return value

    def click(self, x: float, y: float) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        os.close(self._to_chrome)
        os.close(self._from_chrome)


@pytest.fixture
def served(site: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


FIND_LINK = """(() => {
  const link = [...document.querySelectorAll('a[href]')].find(a => a.getAttribute('href').endsWith('%s')
      && a.getBoundingClientRect().width > 0);
  if (!link) return null;
  link.scrollIntoView({block: 'center'});
  const box = link.getBoundingClientRect();
  return [box.x + box.width / 2, box.y + box.height / 2];
})()"""


@pytest.mark.skipif(browser() is None, reason="no headless browser (apt-get install chromium) to open the site")
@pytest.mark.parametrize("how", ["from disk", "served"])
def test_a_click_on_the_index_opens_a_guide(site: Path, how: str, request, tmp_path):
    index = (site / "index.html").as_uri() if how == "from disk" else request.getfixturevalue("served") + "index.html"
    title = re.search(r"^# (.+)$", (ROOT / "docs" / "guides" / "finetuning.md").read_text(), re.M)[1]
    chrome = Chrome(browser(), tmp_path / "profile")
    try:
        chrome.open(index)
        chrome.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")
        x, y = chrome.wait_for(FIND_LINK % GUIDE)
        chrome.click(x, y)
        href = chrome.wait_for(f"location.href.endsWith('{GUIDE}') && document.readyState === 'complete' "
                               "&& location.href")
        heading = chrome.evaluate("document.querySelector('article h1').textContent")
    finally:
        chrome.close()
    assert href.startswith("file:" if how == "from disk" else "http:")
    assert heading.rstrip("¶").strip() == title
