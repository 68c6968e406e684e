"""The event envelope, its JSON form, and the EventBus configuration checks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from meetingtasks.errors import ConfigurationError, InvalidEvent
from meetingtasks.events import DeliveryMode, Event, EventBusConfig, EventType


def test_round_trip_keeps_every_field() -> None:
    sent = Event(
        EventType.MEETING_USER_JOINED,
        {"user": {"name": "Ana", "roles": ["host"]}, "muted": False, "volume": 0.5},
        "meeting-service",
        meeting_id="m1",
        user_id="u1",
        trace_id="t1",
        time=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    )
    received = Event.from_json(sent.to_json())
    assert received == sent
    assert received.type == "meeting.user_joined"
    assert received.time == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_defaults_give_each_event_an_id_and_an_aware_time() -> None:
    first, second = Event("meeting.created", {}, "s"), Event("meeting.created", {}, "s")
    assert first.id != second.id
    assert first.time.tzinfo is not None
    assert first.payload == {}


def test_predefined_types() -> None:
    assert {t.value for t in EventType} == {
        "meeting.created", "meeting.started", "meeting.ended", "meeting.user_joined",
        "meeting.user_left", "media.stream_started", "media.stream_stopped",
        "ai.task_created", "ai.task_completed", "ai.task_failed",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Event(None, {}, "s"), "type: Field required"),
        (lambda: Event("meeting.*", {}, "s"), "type"),
        (lambda: Event("meeting created", {}, "s"), "type"),
        (lambda: Event("meeting.created", {"when": datetime.now(UTC)}, "s"), "payload.when"),
        (lambda: Event("meeting.created", {"ids": {1, 2}}, "s"), "payload.ids"),
        (lambda: Event("meeting.created", ["not", "an", "object"], "s"), "payload"),  # type: ignore[arg-type]
        (lambda: Event("meeting.created", {}, None), "source"),
        (lambda: Event("meeting.created", {}, "s", meting_id="m1"), "meting_id"),
        (lambda: Event("meeting.created", {}, "s", time=datetime(2024, 1, 1)), "timezone"),
    ],
)
def test_bad_events_are_refused_clearly(make: Callable[[], object], match: str) -> None:
    with pytest.raises(InvalidEvent, match=match):
        make()


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        ("not json", "Invalid JSON"),
        ("[1, 2]", "object"),
        ('{"source": "s", "payload": {}}', "type: Field required"),
        ('{"type": "a.b", "source": "s", "payload": [1]}', "payload"),
        (b"\xff\xfe", "JSON"),
    ],
)
def test_bad_wire_data_is_refused_clearly(wire: str | bytes, match: str) -> None:
    with pytest.raises(InvalidEvent, match=match):
        Event.from_json(wire)


def test_size_limit_applies_both_ways() -> None:
    big = Event("ai.task_completed", {"text": "x" * 2000}, "ai")
    with pytest.raises(InvalidEvent, match="over the 1000-byte limit"):
        big.to_json(max_bytes=1000)
    with pytest.raises(InvalidEvent, match="over the 1000-byte limit"):
        Event.from_json(big.to_json(), max_bytes=1000)


def test_decoding_ignores_fields_from_a_newer_publisher() -> None:
    event = Event.from_json('{"type": "a.b", "source": "s", "priority": "high"}')
    assert (event.type, event.source, event.payload) == ("a.b", "s", {})


def test_delivery_mode_is_chosen_per_channel() -> None:
    config = EventBusConfig(durable_channels=("ai.*", "billing"))
    assert config.mode_of("ai.results") is DeliveryMode.DURABLE
    assert config.mode_of("billing") is DeliveryMode.DURABLE
    assert config.mode_of("meeting.m1") is DeliveryMode.PUBSUB


@pytest.mark.parametrize(
    "options",
    [
        {"durable_channels": "ai.*"},
        {"durable_channels": ("bad channel",)},
        {"workers": 0},
        {"poll_interval": 0},
        {"socket_timeout": 1.0, "poll_interval": 2.0},
        {"reconnect_initial": 2.0, "reconnect_max": 1.0},
        {"group": "has space"},
    ],
)
def test_bad_config_is_refused(options: dict[str, object]) -> None:
    with pytest.raises((ConfigurationError, InvalidEvent)):
        EventBusConfig(**options)  # type: ignore[arg-type]
