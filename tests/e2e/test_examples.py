"""The README's Python snippets and examples/quickstart.ipynb run as written.

README: every ```python block, in order, in one fresh interpreter (they continue one session), in a
folder where the setup the README names first has happened: a `make demo` run (here a 1-epoch demo,
named like the demo names its runs). A block preceded by a ``<!-- no-test -->`` line is skipped (keep
that rare). The notebook: executed by nbclient on an ipykernel, no cell may fail, and its class table
has one row per class.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import cli_env, run_cli

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(<!-- no-test -->\n)?```python\n(.*?)^```$", re.S | re.M)


def readme_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown text that are meant to run, in order."""
    return [m.group(2) for m in FENCE.finditer(text) if not m.group(1)]


def test_readme_blocks_are_found():
    text = "a\n```python\nx = 1\n```\n<!-- no-test -->\n```python\nboom()\n```\n```bash\nls\n```\n```python\ny = x\n```\n"
    assert readme_blocks(text) == ["x = 1\n", "y = x\n"]
    blocks = readme_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 3 and any("classwise.evaluate(model, (x, y)" in b for b in blocks)


def test_readme_python_snippets_run(tmp_path):
    run_cli(["demo", "--epochs", "1", "--seed", "0", "--device", "cpu", "--out", "runs/demo-digits-20260101-000000"],
            tmp_path, timeout=600, check=True)
    blocks = readme_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    script = tmp_path / "readme_snippets.py"
    script.write_text("\n# ---\n".join(blocks) + "\nprint('README OK')\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=cli_env(tmp_path), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    assert proc.stdout.strip().endswith("README OK")
    assert (tmp_path / "outcomes.npz").is_file() and (tmp_path / "runs" / "trades-digits").is_dir()


def _table_rows(html: str) -> int:
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return body.count("<tr")


def test_quickstart_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=cli_env(tmp_path))  # raises CellExecutionError on the first failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    tagged = [c for c in nb.cells if "class-table" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    (out,) = [o for o in tagged[0].outputs if o.output_type == "execute_result"]
    assert _table_rows(out.data["text/html"]) == 10  # digits: one row per class
    figures = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 1
