"""Settings: the event settings every process reads alike, from the environment."""

from __future__ import annotations

import pydantic
import pytest

from meetingtasks.base.settings import Settings
from meetingtasks.events import DeliveryMode, EventBusConfig


@pytest.mark.parametrize(
    ("value", "patterns"),
    [("ai.*", ("ai.*",)), (" ai.* , billing ,", ("ai.*", "billing")), ("", ())],
)
def test_durable_channels_are_comma_separated_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, patterns: tuple[str, ...]
) -> None:
    monkeypatch.setenv("MEETINGTASKS_EVENT_DURABLE_CHANNELS", value)
    monkeypatch.setenv("MEETINGTASKS_EVENT_STREAM_MAXLEN", "500")
    settings = Settings()
    assert settings.event_durable_channels == patterns
    assert settings.event_stream_maxlen == 500


def test_defaults_make_the_ai_channels_durable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEETINGTASKS_EVENT_DURABLE_CHANNELS", raising=False)
    monkeypatch.delenv("MEETINGTASKS_EVENT_STREAM_MAXLEN", raising=False)
    settings = Settings()
    assert (settings.event_durable_channels, settings.event_stream_maxlen) == (("ai.*",), 100_000)


@pytest.mark.parametrize(
    "env", [{"EVENT_DURABLE_CHANNELS": "ai.*,bad channel"}, {"EVENT_STREAM_MAXLEN": "0"}]
)
def test_a_bad_event_setting_is_refused(monkeypatch: pytest.MonkeyPatch, env: dict) -> None:
    for name, value in env.items():
        monkeypatch.setenv(f"MEETINGTASKS_{name}", value)
    with pytest.raises(pydantic.ValidationError):
        Settings()


def test_event_bus_config_defaults_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(event_durable_channels="billing.*", event_stream_maxlen=5)
    monkeypatch.setattr("meetingtasks.events.config.get_settings", lambda: settings)
    config = EventBusConfig()
    assert (config.durable_channels, config.stream_maxlen) == (("billing.*",), 5)
    assert config.mode_of("billing.invoices") is DeliveryMode.DURABLE
    assert config.mode_of("ai.results") is DeliveryMode.PUBSUB

    explicit = EventBusConfig(durable_channels=("ai.*",), stream_maxlen=9)
    assert (explicit.durable_channels, explicit.stream_maxlen) == (("ai.*",), 9)
