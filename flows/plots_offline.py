"""`dvc plots show` that renders offline: a local HTML template with vega inlined.

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so it stays blank on a machine
without internet. `rlhf plots-template` fetches the same versions from the npm registry (each
tarball checked against the registry's sha512 integrity), inlines their minified builds into
`.state/vega/template.html`, and points DVC at it (`dvc config --local plots.html_template`, a
path relative to `.dvc/`): the
page `dvc plots show` writes then needs no network at all.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

from rlhf.errors import UserError
from rlhf.files import write_text

REGISTRY = os.environ.get("NPM_CONFIG_REGISTRY", "https://registry.npmjs.org").rstrip("/")
# the versions DVC's own page asks for (dvc_render.vega.VegaRenderer.SCRIPTS), and their builds
PACKAGES = {"vega": ("5.20.2", "build/vega.min.js"), "vega-lite": ("5.2.0", "build/vega-lite.min.js"),
            "vega-embed": ("6.18.2", "build/vega-embed.min.js")}
TEMPLATE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>rlhf pipeline: dvc plots</title>
{inlined}
<style>body {{ font-family: sans-serif; }} div {{ margin: 8px; }}</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as answer:
            return answer.read()
    except OSError as err:
        raise UserError(f"cannot fetch {url} ({err}): the npm registry must be reachable (NPM_CONFIG_REGISTRY)") from err


def fetch_build(name: str, version: str, member: str) -> str:
    """The file `member` of the npm package `name@version`, its tarball checked against the registry."""
    meta = json.loads(_get(f"{REGISTRY}/{name}/{version}"))
    tarball = _get(meta["dist"]["tarball"])
    algorithm, _, digest = meta["dist"]["integrity"].partition("-")
    if base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode() != digest:
        raise UserError(f"{name}@{version}: the tarball does not match the registry's {algorithm} integrity")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        return tar.extractfile(f"package/{member}").read().decode("utf-8")


def write_template(root: Path) -> Path:
    scripts = [fetch_build(name, version, member) for name, (version, member) in PACKAGES.items()]
    scripts = [js.replace("</script", "<\\/script") for js in scripts]  # nothing may close the tag early
    inlined = "\n".join(f"<script>\n{js}\n</script>" for js in scripts)
    path = root / ".state" / "vega" / "template.html"
    write_text(path, TEMPLATE.format(inlined=inlined))
    done = subprocess.run([sys.executable, "-m", "dvc", "config", "--local", "plots.html_template",
                           str(Path("..") / path.relative_to(root))], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"dvc config plots.html_template failed: {done.stderr.strip()}")
    return path
