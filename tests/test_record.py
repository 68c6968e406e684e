"""The task's record has one owner (``base/record.py``): Lua names its fields through
the ``F`` table the store puts in front of every script, Python reads it through
``TaskRecord``, and nothing writes a field that owner does not name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from meetingtasks.base.keys import get_keys
from meetingtasks.base.record import RecordField, TaskRecord, with_field_names
from meetingtasks.dispatch import TaskDispatcher, TaskRequest
from meetingtasks.store import LUA_DIR, script

PACKAGE = Path(__file__).resolve().parents[1] / "meetingtasks"
FIELD_NAMES = {field.value for field in RecordField}


def _hash_calls(lua: str) -> list[str]:
    """The text of every ``redis.call('H…', …)`` (HSET, HGET, HMGET, HDEL…), comments
    left out: where a script reads or writes a record's fields."""
    code = "\n".join(line.split("--", 1)[0] for line in lua.splitlines())
    calls = []
    for start in (m.start() for m in re.finditer(r"redis\.call\('H", code)):
        depth, end = 0, start
        for end in range(code.index("(", start), len(code)):
            depth += {"(": 1, ")": -1}.get(code[end], 0)
            if depth == 0:
                break
        calls.append(code[start : end + 1])
    return calls


def _spelled(lua: str) -> set[str]:
    return {
        name for call in _hash_calls(lua) for name in re.findall(r"'(\w+)'", call)
    } & FIELD_NAMES


def test_no_lua_script_spells_a_record_field() -> None:
    spelled = {path.name: sorted(_spelled(path.read_text())) for path in LUA_DIR.glob("*.lua")}
    assert not {name: found for name, found in spelled.items() if found}
    # The check sees a spelled field, in a call over two lines too.
    assert _spelled("redis.call('HSET', k,\n  'status', (f(x) or 1), 'worker', w)") == {
        "status", "worker",
    }  # fmt: skip
    assert _hash_calls(Path(LUA_DIR / "fetch.lua").read_text())  # it finds the calls


def test_every_field_lua_names_is_one_of_the_records() -> None:
    used = {
        name
        for path in LUA_DIR.glob("*.lua")
        for name in re.findall(r"\bF\.(\w+)", path.read_text())
    }
    assert used and used <= FIELD_NAMES
    loaded = script("finish").script
    assert "F." not in loaded and "'status'" in loaded  # spelled out as it loads
    with pytest.raises(ValueError, match=r"F\.stauts"):
        with_field_names("redis.call('HGET', KEYS[1], F.stauts)")


def _bare_reads(tree: ast.AST) -> list[str]:
    """``record.get("x")`` and ``record["x"]`` with a field name spelled, on any name
    that holds a record."""
    found = []
    for node in ast.walk(tree):
        target, key = None, None
        if isinstance(node, ast.Subscript):
            target, key = node.value, node.slice
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
        ):
            target, key = node.func.value, node.args[0]
        name = getattr(target, "id", None) or getattr(target, "attr", None) or ""
        if "record" in name and isinstance(key, ast.Constant) and key.value in FIELD_NAMES:
            found.append(f"{name}[{key.value!r}] line {node.lineno}")
    return found


def test_python_reads_a_record_by_field_name_only() -> None:
    reads = {
        str(path.relative_to(PACKAGE)): _bare_reads(ast.parse(path.read_text()))
        for path in PACKAGE.rglob("*.py")
        if path.name != "record.py"
    }
    assert not {module: found for module, found in reads.items() if found}
    assert _bare_reads(ast.parse('record.get("status")'))  # the check sees one


@pytest.fixture
def worker(start_worker):
    return start_worker(["default"])


def test_a_run_writes_only_the_fields_the_record_names(app, redis, worker) -> None:
    """Through a real worker, a task sent for a client session (its links copied) whose
    result is kept: every field of its record is one ``RecordField`` names."""
    dispatcher = TaskDispatcher()
    response = dispatcher.dispatch(
        TaskRequest(type="system.echo", payload={"value": 5}, session_id="s1", user_id="u1",
                    meeting_id="m1", request_id="r1")
    )  # fmt: skip
    result = dispatcher.wait(response.task_id, timeout=60)
    assert result.result == 5
    fields = redis.hgetall(get_keys().status(response.task_id))
    assert set(fields) <= FIELD_NAMES, set(fields) - FIELD_NAMES
    record = TaskRecord(response.task_id, fields)
    assert record.type == "system.echo" and record.attempts == 1 and record.has_result
    assert record.get(RecordField.SESSION) == "s1" and record.get(RecordField.MEETING) == "m1"
    assert record.time(RecordField.STARTED_AT) and record.get(RecordField.WORKER)
