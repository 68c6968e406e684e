"""The docs site builds with mkdocs-material in strict mode: a link to a page or an anchor
that does not exist fails the build, and so this test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config),
               "-d", str(site)]  # fmt: skip
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_the_docs_build_strictly(tmp_path: Path) -> None:
    done = build(REPO / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "index.html").exists()
    for page in ("gateway", "benchmark", "architecture"):
        assert (tmp_path / "site" / page / "index.html").exists(), page


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(REPO / "docs", docs)
    page = docs / "events.md"
    page.write_text(page.read_text() + "\nSee [the old page](broker.md#sending).\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text((REPO / "mkdocs.yml").read_text())
    done = build(config, tmp_path / "site")
    assert done.returncode != 0
    assert "broker.md" in done.stdout + done.stderr


def test_the_readme_stays_short_and_starts_with_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text().splitlines()
    assert len(readme) <= 250
    first_screen = "\n".join(readme[:20])
    assert "scripts/run" in first_screen and "scripts/test" in first_screen


def path_files(architecture: str) -> list[str]:
    """The files "One task's path" names, in order (``routes/*.toml`` counts as one)."""
    start = architecture.index("## One task's path")
    end = architecture.index("### Beside the path", start)
    return re.findall(r"`([\w/.*-]+\.(?:py|lua|toml))`", architecture[start:end])


def test_one_tasks_path_walks_at_most_20_files_each_named_once() -> None:
    files = path_files((REPO / "docs" / "architecture.md").read_text())
    assert len(files) <= 20 and len(set(files)) == len(files), files
    package = REPO / "meetingtasks"
    for name in files:
        assert list(package.glob(name)) or list(REPO.glob(name)), f"{name} does not exist"
    # The walk reaches the client: the gateway's frame and its connection are on it.
    assert {"base/frames.py", "gateway/connection.py", "celery_ext/sending.py"} <= set(files)
    assert len(path_files("## One task's path\n`x/y.py` `x/y.py`\n### Beside the path")) == 2
