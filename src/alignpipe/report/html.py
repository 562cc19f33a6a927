"""The report as one self-contained HTML page, ``index.html``: every table and plot of ``README.md``, readable
offline in any browser.

The page is ``README.md`` rendered (python-markdown, ``tables`` extension) with its stylesheet inline and every PNG
it shows embedded as a ``data:`` URI, so the file alone is the report: no script, no font, no stylesheet or image
is fetched from anywhere (``tests/unit/report/test_report_html.py`` opens it in a headless browser and records
every request). Links to the CSV files stay relative: they open the files beside the page.

    write_html(out_dir, readme_text)   # -> out_dir / "index.html"
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import markdown

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1b1b1b; line-height: 1.45; }
h1, h2, h3 { line-height: 1.2; }
h3 { border-top: 1px solid #ddd; padding-top: 1rem; margin-top: 2rem; }
.scroll { overflow-x: auto; margin: 0.5rem 0 1rem; }
table { border-collapse: collapse; font-size: 0.85rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; position: sticky; top: 0; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; height: auto; }
code { background: #f3f3f3; padding: 0 0.2rem; border-radius: 3px; }
"""


def _embed_images(body: str, out: Path) -> str:
    def inline(m: re.Match) -> str:
        src = html.unescape(m.group(2))
        path = out / src
        if re.match(r"^[a-z][a-z0-9+.-]*:", src) or not path.is_file():
            raise ValueError(f"report page: image '{src}' is not a file of the report ({out})")
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'{m.group(1)}"data:image/png;base64,{data}"'

    return re.sub(r'(<img\b[^>]*?\bsrc=)"([^"]+)"', inline, body)


def render(readme: str, out: Path, title: str = "alignpipe report") -> str:
    """The page's HTML for ``readme`` (markdown), the images it links read from ``out``."""
    body = markdown.markdown(readme, extensions=["tables"], output_format="html")
    body = _embed_images(body, out)
    body = re.sub(r"<table>", '<div class="scroll"><table>', body).replace("</table>", "</table></div>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def write_html(out: Path, readme: str) -> Path:
    """Write ``out/index.html`` from the report's ``README.md`` text; returns its path."""
    path = Path(out) / "index.html"
    path.write_text(render(readme, Path(out)), encoding="utf-8")
    return path


__all__ = ["render", "write_html"]
