"""Cross-references that readers follow must be true: every dotted ``meetingtasks.…``
name and every file path that the code, the scripts and the docs mention exists.

Paths are matched by their ending (``lua/fetch.lua`` names
``meetingtasks/store/lua/fetch.lua``); names are imported and their attributes looked up.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

from meetingtasks.base import tracing

REPO = Path(__file__).resolve().parents[1]
SKIPPED_DIRS = {
    ".git",
    ".venv",
    ".venv-phoenix",
    "node_modules",
    "vendor",
    "run",
    "__pycache__",
    "site",
}
TEXT_SUFFIXES = {".py", ".lua", ".md", ".js", ".mjs", ".cjs", ".toml", ".sh", ".html", ".yaml"}
DOTTED = re.compile(r"\bmeetingtasks(?:\.[A-Za-z_]\w*)+")
PATH = re.compile(
    r"(?<![\w./:@-])((?:[\w-]+/)*[\w-]+\.(?:py|lua|md|toml|ya?ml|sh|js|mjs|cjs|html|css|ts))\b"
)
#: Names in examples and placeholders, not references to this repository's files.
EXAMPLES = {
    "8000/client.js", "Node.js", "sample/test.py", "test_billing.py", "payload.json",
    "response.json", "dir/package-lock.json", "OUT.json", "info.json", "load.json",
    "meetingtasks.direct_send",  # an ASGI scope extension's name, not a module
    "broker.md",  # the broken link tests/test_docs.py makes on purpose
    "x/y.py",  # a file tests/test_docs.py names in a made-up page
    *tracing.ATTRIBUTES,  # span attributes, not modules
}  # fmt: skip


def _files() -> list[Path]:
    found = []
    for path in REPO.rglob("*"):
        parts = set(path.relative_to(REPO).parts)
        if path.is_file() and not parts & SKIPPED_DIRS and path != Path(__file__):
            in_scripts = path.parent.name == "scripts" and not path.suffix
            if path.suffix in TEXT_SUFFIXES or in_scripts:
                found.append(path)
    return found


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            continue
        if cut == len(parts) or module.endswith("__main__"):  # never run a CLI to look
            return True
        value: object = importlib.import_module(module)
        for attribute in parts[cut:]:
            if not hasattr(value, attribute):
                return False
            value = getattr(value, attribute)
        return True
    return False


def dangling_references(files: list[Path] | None = None) -> list[tuple[str, str]]:
    """(file, name) of each mention in ``files`` (the repository's) that points at
    nothing here."""
    every_path = [
        str(p.relative_to(REPO)) for p in REPO.rglob("*")
        if p.is_file() and not set(p.relative_to(REPO).parts) & {".git", ".venv"}
    ]  # fmt: skip
    dangling = []
    for path in _files() if files is None else files:
        text = path.read_text(errors="replace")
        where = path.name if files is not None else str(path.relative_to(REPO))
        for name in sorted(set(DOTTED.findall(text)) - EXAMPLES):
            if not _resolves(name):
                dangling.append((where, name))
        for mentioned in sorted(set(PATH.findall(text)) - EXAMPLES):
            if not any(f == mentioned or f.endswith("/" + mentioned) for f in every_path):
                dangling.append((where, mentioned))
    return dangling


def test_every_module_name_and_path_mentioned_exists() -> None:
    assert dangling_references() == []


def test_the_check_finds_a_stale_name_and_a_stale_path(tmp_path: Path) -> None:
    stale = tmp_path / "stale.md"
    stale.write_text(
        "See `meetingtasks.messages.EventDispatcher`, `store/broker.py`, and the real "
        "`meetingtasks.store.lua` and `lua/fetch.lua`.\n"
    )
    assert dangling_references([stale]) == [
        ("stale.md", "meetingtasks.messages.EventDispatcher"),
        ("stale.md", "store/broker.py"),
    ]
