"""Open a local HTML page in a headless browser (Chromium, through Qt WebEngine), save a screenshot and list every
request the page made; exit status 1 if it asked the network for anything (any URL but ``file:`` and ``data:``).

    python -m alignpipe_ops.browser data/report/index.html --screenshot /tmp/report.png [--width 1280 --height 2400]

Every request of the page goes through a request interceptor that records it and blocks it unless it is a local
``file:`` or a ``data:`` URI, and local pages may ask for remote URLs (so such a request is seen, not silently
refused by Chromium's file-origin rule). ``local_files`` lists the files other than the page it loaded (a
self-contained page has none). The page is given ``--wait`` seconds after its load to run
scripts. Needs PyQt6 and PyQt6-WebEngine (installed by ``make install`` with the test extras); no display: Qt's
``offscreen`` platform.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def open_page(page: Path, screenshot: Path | None = None, width: int = 1280, height: int = 2400,
              wait_s: float = 1.0, timeout_s: float = 60.0, count: tuple[str, ...] = ()) -> dict:
    """Load ``page``; returns ``{"loaded": bool, "requests": [url, ...], "external": [network URL, ...],
    "local_files": [file URL but the page's, ...], "title": str, "text_length": int, "counts": {selector: n}}`` and writes ``screenshot`` (PNG) if given.
    ``count``: CSS selectors counted in the page once its scripts have run (e.g. the charts they drew)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
    os.environ.setdefault("QTWEBENGINE_CHROMIUM_FLAGS", "--disable-gpu --single-process --no-proxy-server")
    from PyQt6.QtCore import QSize, QTimer, QUrl
    from PyQt6.QtWebEngineCore import (QWebEnginePage, QWebEngineProfile, QWebEngineSettings,
                                       QWebEngineUrlRequestInterceptor)
    from PyQt6.QtWebEngineWidgets import QWebEngineView
    from PyQt6.QtWidgets import QApplication

    own = QUrl.fromLocalFile(str(Path(page).resolve())).toString()

    class Recorder(QWebEngineUrlRequestInterceptor):
        def __init__(self):
            super().__init__()
            self.urls: list[str] = []

        def interceptRequest(self, info):  # noqa: N802 (Qt's name)
            url = info.requestUrl().toString()
            self.urls.append(url)
            if not url.startswith(("file:", "data:")):
                info.block(True)

    app = QApplication.instance() or QApplication([sys.argv[0]])
    recorder = Recorder()
    profile = QWebEngineProfile()  # off the record: no cache or cookies on disk
    profile.setUrlRequestInterceptor(recorder)
    web = QWebEnginePage(profile)
    web.settings().setAttribute(QWebEngineSettings.WebAttribute.LocalContentCanAccessRemoteUrls, True)
    view = QWebEngineView()
    view.setPage(web)
    view.resize(QSize(width, height))
    result: dict = {"loaded": False, "title": "", "text_length": 0, "counts": {}}
    probe = "JSON.stringify(Object.fromEntries(%s.map(s => [s, document.querySelectorAll(s).length])))" % json.dumps(
        list(count))

    def finished(ok: bool) -> None:
        result["loaded"] = bool(ok)

        def text(value: str) -> None:
            result["text_length"] = len(value)
            app.quit()

        def counted(value: str) -> None:
            result["counts"] = json.loads(value) if value else {}
            web.toPlainText(text)

        def grab() -> None:
            result["title"] = web.title()
            if screenshot is not None:
                view.grab().save(str(screenshot), "PNG")
            web.runJavaScript(probe, counted)

        QTimer.singleShot(int(wait_s * 1000), grab)

    web.loadFinished.connect(finished)
    view.show()
    view.load(QUrl(own))
    QTimer.singleShot(int(timeout_s * 1000), app.quit)
    app.exec()
    view.close()
    result["requests"] = list(recorder.urls)
    result["external"] = [u for u in recorder.urls if not u.startswith(("file:", "data:"))]
    result["local_files"] = [u for u in recorder.urls if u.startswith("file:") and u != own]
    return result


def browse(page: Path, screenshot: Path | None = None, count: tuple[str, ...] = (), wait_s: float = 1.0,
           timeout_s: float = 300.0) -> tuple[int, dict]:
    """:func:`open_page` in its own process (Qt wants the main thread and one application per process):
    ``(exit status, the result)``, for tests and scripts."""
    import subprocess

    cmd = [sys.executable, "-m", "alignpipe_ops.browser", str(page), "--wait", str(wait_s)]
    cmd += ["--screenshot", str(screenshot)] if screenshot else []
    for selector in count:
        cmd += ["--count", selector]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if "{" not in proc.stdout:
        raise RuntimeError(f"alignpipe_ops.browser gave no result (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return proc.returncode, json.loads(proc.stdout[proc.stdout.index("{"):])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m alignpipe_ops.browser", description=__doc__.split("\n\n")[0])
    ap.add_argument("page", type=Path)
    ap.add_argument("--screenshot", type=Path)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=2400)
    ap.add_argument("--wait", type=float, default=1.0, help="seconds after the load before the screenshot")
    ap.add_argument("--count", action="append", default=[], metavar="SELECTOR",
                    help="count the elements matching this CSS selector after the wait (repeatable)")
    args = ap.parse_args(argv)
    if not args.page.is_file():
        print(f"{args.page}: no such file", file=sys.stderr)
        return 2
    got = open_page(args.page, args.screenshot, args.width, args.height, args.wait, count=tuple(args.count))
    print(json.dumps(got, indent=1))
    return 0 if got["loaded"] and not got["external"] else 1


if __name__ == "__main__":
    sys.exit(main())
