"""The live meeting page in a real headless Chromium, against a real gateway, workers and
AI node: it connects, streams a chat reply, shows meeting events, cancels a delayed task,
rides out a gateway restart, and shows the gateway's refusals while staying usable.

Chromium is Debian's (``/usr/bin/chromium``, installed by .ci/run); Playwright drives it.
The first test takes the page's screenshot; with MEETINGTASKS_UPDATE_SCREENSHOT=1 it
saves it for the README (docs/images/), which a plain run leaves untouched.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.support.gateways import REPO, GatewayProcess, token
from tests.support.llm_nodes import NodeProcess

pytestmark = pytest.mark.timeout(180)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = REPO / "docs" / "images" / "live-meeting.png"
#: Playwright's own waits (expect): generous, the machines are shared.
expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@dataclass
class Stack:
    gateway: GatewayProcess
    log_dir: Path
    token: str

    def url(self, **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"token": self.token, **params}.items())
        return f"{self.gateway.base}/?{query}"

    def restart_gateway(self, down_for: Any) -> None:
        port = self.gateway.port
        self.gateway.stop()
        down_for()
        self.gateway = GatewayProcess(self.log_dir / "gateway.log", port=port)


@pytest.fixture
def stack(app, redis, start_worker, tmp_path: Path) -> Iterator[Stack]:
    node = NodeProcess(tmp_path / "node.log", "--token-delay", "0.05")
    gateway = GatewayProcess(tmp_path / "gateway.log")
    running = Stack(gateway, tmp_path, token("alice", ("m1",)))
    try:
        start_worker(["ai"], env={"MEETINGTASKS_LLM_NODES": node.address("zmq")})
        start_worker(["default", "user", "meeting", "media"])
        yield running
    finally:
        running.gateway.stop()
        node.kill()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 620})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    # The page runs under its Content-Security-Policy (no inline script or style):
    # anything it would break shows as a console error.
    opened.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text
            else None
        ),
    )
    yield opened
    context.close()
    assert not errors, f"the page raised: {errors}"


def connected(page: Page) -> None:
    expect(page.locator("#state")).to_have_text("connected")


def submit_task(page: Page, task_type: str, data: str, delay: str = "") -> None:
    page.fill("#task-type", task_type)
    page.fill("#task-data", data)
    page.fill("#task-delay", delay)
    page.click("#task-form button")


def test_the_page_connects_streams_a_chat_reply_and_shows_meeting_events(
    stack: Stack, page: Page, app, tmp_path: Path
) -> None:
    page.goto(stack.url())
    connected(page)
    assert "token=" not in page.url  # read, then taken out of the address bar and history
    expect(page.locator("#meeting-id")).to_have_value("m1")  # from the token's meetings
    expect(page.locator("#workers")).to_have_text("2")
    expect(page.locator('#queues tr[data-queue="ai"]')).to_be_visible()

    # every text the reply shows, recorded as the DOM changes
    page.evaluate(
        """() => {
        window.replyTexts = [];
        new MutationObserver(() => {
            const reply = document.querySelector(".message.reply");
            if (reply) window.replyTexts.push([reply.dataset.status, reply.textContent]);
        }).observe(document.querySelector("#messages"),
                   {subtree: true, childList: true, characterData: true, attributes: true});
    }"""
    )
    prompt = "what did the team decide about the beta release in march"
    page.fill("#prompt", prompt)
    page.click("#chat-form button")
    reply = page.locator(".message.reply")
    expect(reply).to_have_attribute("data-status", "completed")
    expect(reply).to_have_text(prompt)  # the echo node repeats the prompt
    texts: list[tuple[str, str]] = page.evaluate("window.replyTexts")
    streamed = {text for status, text in texts if status == "streaming" and text}
    assert len(streamed) > 1, texts  # shown growing, token by token, before the result
    assert all(prompt.startswith(text) for text in streamed)

    app.send_task("meeting.add_participant", kwargs={"meeting_id": "m1", "user_id": "bob"})
    app.send_task(
        "media.stream_started",
        kwargs={"meeting_id": "m1", "stream_id": "cam-1", "user_id": "bob", "kind": "video"},
    )
    expect(page.locator("#participants li")).to_have_text(["bob"])
    expect(page.locator('#streams li[data-stream="cam-1"]')).to_have_text("video of bob")
    expect(page.locator('#events li[data-type="meeting.user_joined"]')).to_contain_text("bob")

    taken = tmp_path / SCREENSHOT.name
    page.screenshot(path=str(taken), full_page=True)
    assert taken.stat().st_size > 0
    if os.environ.get("MEETINGTASKS_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(taken, SCREENSHOT)


def test_a_cancel_button_cancels_a_delayed_task(stack: Stack, page: Page) -> None:
    page.goto(stack.url())
    connected(page)
    submit_task(page, "echo", '{"value": "later"}', delay="120")
    row = page.locator("#task-list tbody tr").first
    expect(row.locator(".status")).to_have_text("scheduled")
    row.locator("button.cancel").click()
    expect(row.locator(".status")).to_have_text("cancelled")
    expect(row.locator("button.cancel")).to_be_disabled()


def test_the_page_rides_out_a_gateway_restart_and_shows_the_result_that_ended_meanwhile(
    stack: Stack, page: Page
) -> None:
    page.goto(stack.url())
    connected(page)
    submit_task(page, "sleep", '{"seconds": 4}')
    row = page.locator("#task-list tbody tr").first
    expect(row.locator(".status")).to_have_text("queued")  # no frame until its result

    def while_down() -> None:
        expect(page.locator("#state")).to_have_text("reconnecting")
        expect(row.locator(".status")).to_have_text("queued")
        page.wait_for_timeout(5000)  # the task ends while no gateway runs

    stack.restart_gateway(while_down)
    connected(page)
    expect(row.locator(".status")).to_have_text("completed")
    submit_task(page, "echo", '{"value": "after the restart"}')  # and it goes on working
    expect(page.locator("#task-list tbody tr").first.locator(".status")).to_have_text("completed")


def test_refusals_are_shown_and_the_page_stays_usable(stack: Stack, page: Page) -> None:
    page.goto(stack.url())
    connected(page)
    submit_task(page, "echo", '{"value": "' + "x" * 300_000 + '"}')
    expect(page.locator(".notice").first).to_contain_text("too_large")

    # a flood: past the session's burst of submits and its unfinished-task limit
    page.fill("#task-data", '{"value": "flood"}')
    page.evaluate(
        """() => {
        for (let i = 0; i < 150; i++) document.querySelector("#task-form").requestSubmit();
    }"""
    )
    refused = '.notice[data-code="rate_limited"], .notice[data-code="too_many_tasks"]'
    expect(page.locator(refused).first).to_be_visible()
    page.fill("#task-data", "not json")
    page.click("#task-form button")
    expect(page.locator('.notice[data-code="bad_json"]')).to_be_visible()

    page.wait_for_timeout(1500)  # the submit budget refills
    page.fill("#prompt", "still here")
    page.click("#chat-form button")
    expect(page.locator(".message.reply").last).to_have_attribute("data-status", "completed")
    expect(page.locator("#state")).to_have_text("connected")


def test_the_page_fits_a_phone_screen(stack: Stack, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        phone = context.new_page()
        phone.goto(stack.url())
        connected(phone)
        overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        boxes = [phone.locator(f"#{name}").bounding_box() for name in ("meeting", "chat")]
        assert boxes[0] and boxes[1] and boxes[1]["y"] >= boxes[0]["y"] + boxes[0]["height"]
        assert boxes[0]["width"] <= 390
    finally:
        context.close()


def test_a_bad_token_is_shown_with_its_code(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.gateway.base}/?token=not-a-token")
    expect(page.locator("#state")).to_have_text("closed")
    expect(page.locator(".notice").first).to_contain_text("token_malformed")
