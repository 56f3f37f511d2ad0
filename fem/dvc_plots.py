"""`dvc plots show` and `dvc plots diff` that draw offline.

DVC's page loads Vega, Vega-Lite and vega-embed from a CDN (dvc_render/vega.py), so on a
cluster node or an offline laptop its plots stay blank. Snakemake ships the same libraries
for its own HTML report (snakemake/assets/data); the template written here inlines them,
and DVC uses it for every `dvc plots` command of the repository once it is configured:

    fem dvc plots-template     # .dvc/tmp/plots_template.html, set as plots.html_template (local config)
    dvc plots show             # dvc_plots/index.html: every plot of dvc.yaml (fem/dvc_stages.py plots_of)

The template lives in .dvc/tmp (git-ignored, about 1.5 MB) and the setting in .dvc/config.local,
so nothing of it is committed.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.resources import files
from pathlib import Path

TEMPLATE = Path(".dvc") / "tmp" / "plots_template.html"  # relative to the repository root
VEGA_SCRIPTS = ("vega/vega.js", "vega-lite/vega-lite.js", "vega-embed/vega-embed.js")  # in this order

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>fem: DVC plots</title>
    <!-- Vega, Vega-Lite and vega-embed as Snakemake bundles them: no network needed -->
    @scripts@
    <style>table { border-spacing: 15px; } body { font-family: sans-serif; }</style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def offline_template() -> str:
    """DVC's page (dvc_render/html.py PAGE_HTML) with the Vega libraries inlined instead of
    the CDN's `{scripts}`; `{plot_divs}` and `{refresh_tag}` are DVC's placeholders."""
    assets = files("snakemake.assets") / "data"
    scripts = "\n".join(f"<script>\n{(assets / name).read_text(encoding='utf-8')}\n</script>" for name in VEGA_SCRIPTS)
    return PAGE.replace("@scripts@", scripts)  # DVC fills its placeholders with str.replace: braces in code are safe


def configure_offline_plots(root: str | Path = ".") -> Path:
    """Write the template into `root`'s .dvc/tmp and point DVC's local config at it."""
    root = Path(root)
    if not (root / ".dvc").is_dir():
        raise FileNotFoundError(f"{root.resolve()} is not a DVC repository (no .dvc folder): run `dvc init` first")
    path = root / TEMPLATE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(offline_template(), encoding="utf-8")
    # the setting is relative to .dvc/, as `dvc config plots.html_template` documents
    command = [sys.executable, "-m", "dvc", "config", "--local", "plots.html_template", "tmp/plots_template.html"]
    subprocess.run(command, cwd=root, check=True, capture_output=True, text=True)
    return path
