"""The layout is the architecture: layers import downward only, and nothing imports in a
circle (docs/architecture.md draws the layers)."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "meetingtasks"

#: Top to bottom. A module may import its own layer and the layers below it.
LAYERS = {
    "entry points": ("meetingtasks.run", "meetingtasks.__main__", "meetingtasks.testing"),
    "services": ("meetingtasks.gateway", "meetingtasks.node", "meetingtasks.tasks"),
    "public API": (
        "meetingtasks.app", "meetingtasks.dispatch", "meetingtasks.scheduler",
        "meetingtasks.dead_letter_queue", "meetingtasks.runtime", "meetingtasks.task_output",
        "meetingtasks.metrics", "meetingtasks.events", "meetingtasks.llm",
    ),
    "Celery and kombu overrides": ("meetingtasks.celery_ext",),
    "policies": ("meetingtasks.policies",),
    "store": ("meetingtasks.store",),
    "base": ("meetingtasks.base", "meetingtasks.errors"),
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS.values()):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/architecture.md")


def imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported meetingtasks module, line, inside a function?) of every import."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                for alias in child.names:
                    target = f"{child.module}.{alias.name}"
                    name = target if target in MODULES else child.module
                    if name.startswith("meetingtasks"):
                        found.append((name, child.lineno, in_function))
            elif isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names
                             if a.name.startswith("meetingtasks"))  # fmt: skip
            visit(child, nested)

    visit(tree, False)
    return [(name, line, inner) for name, line, inner in found if name != module]


def test_every_module_is_in_a_layer() -> None:
    for module in MODULES:
        if module != "meetingtasks":
            layer_of(module)


def test_layers_import_only_their_own_layer_and_below() -> None:
    upward = [
        f"{module}:{line} imports {target} ({list(LAYERS)[layer_of(target)]})"
        for module in MODULES if module != "meetingtasks"
        for target, line, _ in imports(module) if layer_of(target) < layer_of(module)
    ]  # fmt: skip
    assert not upward, "imports that climb a layer:\n" + "\n".join(upward)


def test_services_do_not_import_one_another() -> None:
    """The gateway, the inference node and the service tasks meet only through the
    public API (a task, a channel, the LLM protocol), so each deploys on its own."""
    services = LAYERS["services"]

    def service_of(module: str) -> str | None:
        return next((s for s in services if module == s or module.startswith(s + ".")), None)

    crossing = [
        f"{module}:{line} imports {target}"
        for module in MODULES if service_of(module)
        for target, line, _ in imports(module)
        if service_of(target) not in (None, service_of(module))
    ]  # fmt: skip
    assert not crossing, "services importing one another:\n" + "\n".join(crossing)


def test_no_import_inside_a_function() -> None:
    """An import inside a function usually dodges a cycle; the layers make it unneeded."""
    inner = [
        f"{module}:{line} imports {target}"
        for module in MODULES
        for target, line, in_function in imports(module) if in_function
    ]  # fmt: skip
    assert not inner, "imports inside functions:\n" + "\n".join(inner)


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for module in MODULES:
        for target, _, _ in imports(module):
            if target in MODULES:
                graph[module].add(target)
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                strong(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(set(graph) | {t for targets in graph.values() for t in targets}):
        if node not in index:
            strong(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph: dict[str, set[str]] = defaultdict(set, {"a": {"b"}, "b": {"a"}, "c": {"a"}})
    assert _cycles(graph) == [["a", "b"]]
    assert _cycles(defaultdict(set, {"a": {"b"}, "c": {"a"}})) == []


#: Commands whose first argument is not a key.
_NOT_KEYED = {"PUBLISH"}
#: The one script that builds keys (the id is known only after its pop; base/keys.py says
#: why), and the key expressions it builds.
_BUILT_KEYS = {"fetch.lua": {"status_key", "ARGV[5] .. id"}}


def keys_each_script_touches() -> dict[str, set[str]]:
    """Per Lua script, the first argument of every keyed ``redis.call``."""
    call = re.compile(r"redis\.call\('(\w+)',\s*([^,)]+)")
    return {
        path.name: {arg.strip() for cmd, arg in call.findall(path.read_text())
                    if cmd.upper() not in _NOT_KEYED}
        for path in (PACKAGE / "store" / "lua").glob("*.lua")
    }  # fmt: skip


def test_lua_scripts_touch_only_the_keys_they_are_given() -> None:
    """Every key a script touches is a KEYS entry, or a name only ever assigned from
    KEYS: the keys are built in base/keys.py, never from a prefix or data inside Lua."""
    for name, touched in keys_each_script_touches().items():
        text = (PACKAGE / "store" / "lua" / name).read_text()
        from_keys = set()
        for lhs, rhs in re.findall(r"local ([\w, ]+?) = ([^\n]+)", text):
            names, values = [n.strip() for n in lhs.split(",")], rhs.split(",")
            if len(names) == len(values) and all(v.strip().startswith("KEYS[") for v in values):
                from_keys.update(names)
        allowed = _BUILT_KEYS.get(name, set())
        for key in touched:
            if not (key.startswith("KEYS[") or key in from_keys or key in allowed):
                raise AssertionError(f"{name} touches a key it builds itself: {key}")


def test_the_lua_key_check_sees_a_built_key() -> None:
    assert "ARGV[5] .. id" in keys_each_script_touches()["fetch.lua"]


#: Helpers called on every send, cancel and run's end: the component calling them (the
#: send path's ``_Sender``, the transport's channel, the inbox forwarder, each Lua
#: script, the dispatcher and scheduler, the retention policy) read the settings once
#: and pass what they need.
_GIVEN_THEIR_SETTINGS = (
    "policies/submission.py", "store/queueing.py", "store/status.py", "policies/foreign.py",
    "celery_ext/celery_app.py", "store/replication.py", "policies/cancellation.py",
    "policies/tracking.py",
)  # fmt: skip


def settings_reads(path: Path) -> list[int]:
    """Lines of ``path`` that call ``get_settings()``."""
    tree = ast.parse(path.read_text())
    return [
        node.lineno for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "get_settings"
    ]  # fmt: skip


def test_per_call_helpers_are_given_their_settings() -> None:
    reading = {name: settings_reads(PACKAGE / name) for name in _GIVEN_THEIR_SETTINGS}
    assert not {name: lines for name, lines in reading.items() if lines}
    assert settings_reads(PACKAGE / "celery_ext" / "sending.py")  # where they are read
