"""`dvc plots show` offline: an HTML template for DVC's plots page that carries Vega, Vega-Lite and Vega-Embed
inline, so the page renders with no network (DVC's default template loads them from a CDN).

    python -m alignpipe_ops.plots [--out .dvc/plots/offline.html]   # make install runs it
    dvc plots show                                                  # .dvc/config: plots.html_template

The libraries come from the pinned `vl-convert-python` wheel (its `javascript_bundle()`: Vega-Embed, Vega-Lite 5 and
Vega in one classic script, with `vegaEmbed` set on `window` before DVC's per-plot scripts call it). The template
leaves out DVC's `{scripts}` placeholder, where DVC would put its CDN `<script>` tags. The file is generated, not
committed (about 0.9 MB of minified JavaScript; `.dvc/.gitignore`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT = Path(".dvc/plots/offline.html")
EXPOSE = "window.vegaEmbed = vegaEmbed; window.vega = vega; window.vegaLite = vegaLite;"

TEMPLATE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot (offline)</title>
    <script>/* vega-embed %(embed)s, vega %(vega)s (vl-convert-python %(vlc)s) */
%(bundle)s
    </script>
    <style>
        body { font-family: system-ui, sans-serif; }
        table { border-spacing: 15px; }
        img { max-width: 100%%; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def template() -> str:
    """The template's text (DVC fills ``{plot_divs}`` and ``{refresh_tag}``)."""
    import vl_convert

    bundle = vl_convert.javascript_bundle(EXPOSE)
    if "</script" in bundle.lower():
        raise RuntimeError("the Vega bundle holds '</script': it cannot be inlined in a <script> element")
    return TEMPLATE % {"bundle": bundle, "embed": vl_convert.get_vega_embed_version(),
                       "vega": vl_convert.get_vega_version(), "vlc": vl_convert.__version__}


def write(out: Path = DEFAULT) -> Path:
    """Write the template to ``out`` (atomically; unchanged bytes are not rewritten); returns ``out``."""
    text = template()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.is_file() and out.read_text(encoding="utf-8") == text:
        return out
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m alignpipe_ops.plots", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT)
    args = ap.parse_args(argv)
    print(write(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
