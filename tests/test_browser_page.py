"""The meeting page and the operator's page in a real headless Chromium, against a real
gateway, workers and AI node.

The meeting page: the roster loaded for a late joiner and kept live, the timeline in
words, an assistant whose questions carry the meeting's context and whose replies render
as sanitised Markdown (no script from a model runs), a streamed "Summarize", Stop and
Copy, Enter that waits for an input method, English or Chinese from the browser, one
notice per refusal written for people, controls that wait for a connection, no
horizontal overflow on a phone with long ids, and no serious or critical axe-core
violation. The operator's page: any task, Cancel, a gateway restart ridden out, refusals.

Chromium is Debian's (``/usr/bin/chromium``, installed by .ci/run); Playwright drives it.
The first tests take the pages' screenshots, desktop and phone; with
MEETINGTASKS_UPDATE_SCREENSHOT=1 they are saved for the README (docs/images/), which a
plain run leaves untouched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from meetingtasks.base.keys import get_keys
from tests.support.gateways import REPO, GatewayProcess, token
from tests.support.llm_nodes import NodeProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
IMAGES = REPO / "docs" / "images"
AXE = REPO / "tests" / "js" / "node_modules" / "axe-core" / "axe.min.js"
LONG_ID = "alexandra.konstantinopoulou@example.com"
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

    def url(self, path: str = "/", token: str | None = None, **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"token": token or self.token, **params}.items())
        return f"{self.gateway.base}{path}?{query}"

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


class Pages:
    """Pages opened in their own browser contexts; at the end, none may have raised or
    broken its Content-Security-Policy (no inline script or style: anything it would
    break shows as a console error)."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[Any] = []
        self.errors: list[str] = []

    def open(self, width: int = 1280, height: int = 720, **options: Any) -> Page:
        options.setdefault("locale", "en-US")
        context = self.browser.new_context(viewport={"width": width, "height": height}, **options)
        self.contexts.append(context)
        opened = context.new_page()
        opened.on("pageerror", lambda error: self.errors.append(str(error)))
        opened.on(
            "console",
            lambda message: (
                self.errors.append(message.text)
                if message.type == "error" and "Content Security Policy" in message.text
                else None
            ),
        )
        return opened

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(browser: Browser) -> Iterator[Pages]:
    opened = Pages(browser)
    yield opened
    opened.close()
    assert not opened.errors, f"a page raised: {opened.errors}"


@pytest.fixture
def page(pages: Pages) -> Page:
    return pages.open()


def connected(page: Page) -> None:
    expect(page.locator("#state")).to_have_text("Connected")


def submit_task(page: Page, task_type: str, data: str, delay: str = "") -> None:
    page.fill("#task-type", task_type)
    page.fill("#task-data", data)
    page.fill("#task-delay", delay)
    page.click("#task-form button")


def record_reply(page: Page) -> None:
    """From now on, every (status, text) the last reply shows, as the DOM changes."""
    page.evaluate(
        """() => {
        window.replyTexts = [];
        new MutationObserver(() => {
            const replies = document.querySelectorAll(".message.reply");
            const reply = replies[replies.length - 1];
            if (reply) window.replyTexts.push(
                [reply.dataset.status, reply.querySelector(".body").textContent]);
        }).observe(document.querySelector("#messages"),
                   {subtree: true, childList: true, characterData: true, attributes: true});
    }"""
    )


def streamed_texts(page: Page) -> list[tuple[str, str]]:
    texts: list[tuple[str, str]] = page.evaluate("window.replyTexts")
    return texts


def join(app: Any, user: str, stream: str | None = None, meeting: str = "m1") -> None:
    app.send_task("meeting.add_participant", kwargs={"meeting_id": meeting, "user_id": user})
    if stream:
        app.send_task(
            "media.stream_started",
            kwargs={"meeting_id": meeting, "stream_id": stream, "user_id": user, "kind": "video"},
        )


def save_screenshot(page: Page, name: str, tmp_path: Path) -> None:
    taken = tmp_path / name
    page.screenshot(path=str(taken), full_page=True)
    assert taken.stat().st_size > 0
    if os.environ.get("MEETINGTASKS_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(taken, IMAGES / name)


def sent_frames(page: Page) -> list[dict[str, Any]]:
    """Every frame the page sends on its WebSockets from now on (a live list)."""
    frames: list[dict[str, Any]] = []
    page.on(
        "websocket",
        lambda ws: ws.on("framesent", lambda payload: frames.append(json.loads(payload))),
    )
    return frames


# -- the meeting page ----------------------------------------------------------------------


def test_the_meeting_page_streams_a_reply_that_knows_the_meeting(
    stack: Stack, page: Page, app, tmp_path: Path
) -> None:
    frames = sent_frames(page)
    page.goto(stack.url())
    connected(page)
    assert "token=" not in page.url  # read, then taken out of the address bar and history
    expect(page.locator("#meeting-title")).to_have_text("Meeting m1")  # the token's meeting
    expect(page.locator("#me")).to_have_text("You: Alice")
    expect(page.locator("#participants-empty")).to_be_visible()

    join(app, "bob", stream="cam-1")
    expect(page.locator("#participants li")).to_have_text(["Bob"])
    expect(page.locator('#streams li[data-stream="cam-1"]')).to_have_text("Bob · camera")
    expect(page.locator("#events li").first).to_contain_text("Bob started sharing their camera")
    expect(page.locator('#events li[data-type="meeting.user_joined"]')).to_contain_text(
        "Bob joined"
    )
    expect(page.locator("#participants-empty")).to_be_hidden()

    record_reply(page)
    prompt = "what did the team decide about the beta release in march"
    page.fill("#prompt", prompt)
    page.click("#chat-form button")
    reply = page.locator(".message.reply")
    expect(reply).to_have_attribute("data-status", "completed")
    expect(reply.locator(".body")).to_have_text(prompt)  # the echo node repeats the question
    texts = streamed_texts(page)
    shown = {text.strip() for _, text in texts if text.strip()}
    assert len(shown) > 2, texts  # shown growing, token by token, before the result
    assert all(prompt.startswith(text) for text in shown), shown
    statuses = [status for status, _ in texts]
    assert "processing" in statuses, statuses  # not "queued" until it completes
    submit = next(f for f in frames if f.get("op") == "submit")
    context = submit["data"]["messages"][0]
    assert context["role"] == "system" and "m1" in context["content"]
    assert "Bob" in context["content"] and "Bob joined" in context["content"]
    assert submit["data"]["messages"][-1] == {"role": "user", "content": prompt}
    save_screenshot(page, "live-meeting.png", tmp_path)


def test_a_late_joiner_sees_who_is_already_here(stack: Stack, page: Page, app, redis) -> None:
    join(app, "carol.nguyen@example.com", stream="screen-9")
    join(app, "dmitri")
    keys = get_keys()
    wait_until(lambda: redis.scard(keys.participants("m1")) == 2, "both joined, before the page")
    wait_until(lambda: redis.hlen(keys.streams("m1")) == 1, "the stream started")
    page.goto(stack.url())
    connected(page)
    expect(page.locator("#participants li")).to_have_text(["Carol Nguyen", "Dmitri"])
    expect(page.locator("#participants li").first).to_have_attribute(
        "title", "carol.nguyen@example.com"
    )
    expect(page.locator('#streams li[data-stream="screen-9"]')).to_have_text(
        "Carol Nguyen · camera"
    )
    app.send_task("meeting.remove_participant", kwargs={"meeting_id": "m1", "user_id": "dmitri"})
    expect(page.locator("#participants li")).to_have_text(["Carol Nguyen"])  # then kept live


def test_summarize_streams_a_summary_of_what_happened(stack: Stack, page: Page, app) -> None:
    page.goto(stack.url())
    connected(page)
    page.click("#summarize")
    expect(page.locator('.notice[data-code="nothing_to_summarize"]')).to_be_visible()
    join(app, "bob", stream="cam-1")
    expect(page.locator("#events li")).to_have_count(2)
    record_reply(page)
    page.click("#summarize")
    summary = page.locator(".message.reply").last
    expect(summary.locator("h3")).to_have_text("Summary of the meeting")
    expect(summary).to_have_attribute("data-status", "completed")
    # The echo node returns what it was asked to summarize: the meeting's events, in words.
    expect(summary.locator(".body")).to_contain_text("Bob joined")
    expect(summary.locator(".body")).to_contain_text("Bob started sharing their camera")
    shown = {text for _, text in streamed_texts(page) if text}
    assert len(shown) > 2  # streamed


def test_markdown_is_rendered_and_a_script_in_a_reply_never_runs(stack: Stack, page: Page) -> None:
    page.goto(stack.url())
    connected(page)
    hostile = (
        "**The Agenda:** *beta* `v2` "
        '<img src="x" onerror="window.pwned=1"> <script>window.pwned=2</script> '
        '<a href="javascript:window.pwned=3">link</a>'
    )
    page.fill("#prompt", hostile)
    page.click("#chat-form button")
    body = page.locator(".message.reply .body")
    expect(page.locator(".message.reply")).to_have_attribute("data-status", "completed")
    expect(body.locator("strong")).to_have_text("The Agenda:")
    expect(body.locator("em")).to_have_text("beta")
    expect(body.locator("code")).to_have_text("v2")
    assert body.locator("script").count() == 0
    assert body.locator("[onerror]").count() == 0
    assert body.locator('a[href^="javascript"]').count() == 0
    assert page.evaluate("window.pwned") is None
    assert "**" not in body.inner_text()
    expect(body).to_contain_text("<script>window.pwned=2</script>")  # shown as text


def test_stop_ends_a_streaming_reply_and_copy_copies_one(stack: Stack, pages: Pages) -> None:
    page = pages.open(permissions=["clipboard-read", "clipboard-write"])
    page.goto(stack.url())
    connected(page)
    page.fill("#prompt", "short answer please")
    page.click("#chat-form button")
    first = page.locator(".message.reply").first
    expect(first).to_have_attribute("data-status", "completed")
    first.locator("button.copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == "short answer please"
    expect(first.locator("button.copy")).to_have_text("Copied")

    long_prompt = " ".join(f"word{i}" for i in range(400))  # 20 s at 50 ms a word
    page.fill("#prompt", long_prompt)
    page.click("#chat-form button")
    second = page.locator(".message.reply").last
    expect(second).to_have_attribute("data-status", "processing")
    second.locator("button.stop").click()
    expect(second).to_have_attribute("data-status", "stopped")
    expect(second.locator(".status")).to_have_text("Stopped.")
    expect(second.locator("button.stop")).to_be_hidden()
    assert len(second.locator(".body").inner_text().split()) < 400


def test_enter_while_an_input_method_composes_does_not_send(stack: Stack, page: Page) -> None:
    page.goto(stack.url())
    connected(page)
    page.fill("#prompt", "会议的结论")
    for init in ("{key: 'Enter', isComposing: true}", "{key: 'Enter', keyCode: 229}"):
        page.evaluate(
            f"""() => document.querySelector("#prompt").dispatchEvent(
                new KeyboardEvent("keydown", {{...{init}, bubbles: true, cancelable: true}}))"""
        )
    page.wait_for_timeout(500)
    assert page.locator(".message.user").count() == 0
    assert page.input_value("#prompt") == "会议的结论"
    page.press("#prompt", "Enter")  # composition over: Enter sends
    expect(page.locator(".message.user")).to_have_text(["会议的结论"])


def test_a_refused_token_is_one_notice_in_words_and_nothing_can_be_sent(
    stack: Stack, page: Page
) -> None:
    page.goto(f"{stack.gateway.base}/?token=not-a-token")
    expect(page.locator("#state")).to_have_text("Disconnected")
    notices = page.locator(".notice")
    expect(notices).to_have_count(1)
    expect(notices).to_have_attribute("data-code", "token_malformed")
    expect(notices).to_have_text("This sign-in token is not valid. Ask for a new one.")
    page.wait_for_timeout(1000)  # a late second notice would show by now
    expect(notices).to_have_count(1)
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#chat-form button")).to_be_disabled()
    expect(page.locator("#summarize")).to_be_disabled()


def test_with_no_token_the_page_asks_for_one(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.gateway.base}/")
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#signin p")).to_have_text(
        "Paste the client token you were given to join the meeting."
    )
    expect(page.locator("#chat-form button")).to_be_disabled()
    page.click("#signin button")
    expect(page.locator('.notice[data-code="token_missing"]')).to_be_visible()
    page.fill("#token", stack.token)
    page.click("#signin button")
    connected(page)
    expect(page.locator("#signin")).to_be_hidden()
    expect(page.locator("#chat-form button")).to_be_enabled()


def test_a_phone_with_long_ids_has_no_horizontal_overflow(
    stack: Stack, pages: Pages, app, tmp_path: Path
) -> None:
    phone = pages.open(390, 844, is_mobile=True)
    phone.goto(stack.url(token=token(LONG_ID, ("m1",))))
    connected(phone)
    join(app, LONG_ID, stream="cam-long")
    join(app, "bob")
    expect(phone.locator('#streams li[data-stream="cam-long"]')).to_be_visible()
    expect(phone.locator("#participants li")).to_have_count(2)
    phone.fill("#prompt", LONG_ID * 3)
    phone.click("#chat-form button")
    expect(phone.locator(".message.reply")).to_have_attribute("data-status", "completed")
    overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    boxes = [phone.locator(f"#{name}").bounding_box() for name in ("meeting", "chat")]
    assert boxes[0] and boxes[1] and boxes[1]["y"] >= boxes[0]["y"] + boxes[0]["height"]
    save_screenshot(phone, "live-meeting-phone.png", tmp_path)

    phone.goto(stack.url("/ops"))
    connected(phone)
    expect(phone.locator("#queues th", has_text="critical")).to_be_visible()  # no column hidden
    expect(phone.locator("#task-list th").nth(1)).to_be_visible()
    assert phone.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0


def test_a_chinese_browser_gets_the_page_in_chinese(stack: Stack, pages: Pages) -> None:
    page = pages.open(locale="zh-CN")
    page.goto(stack.url())
    expect(page.locator("#state")).to_have_text("已连接")
    expect(page.locator("#meeting-title")).to_have_text("会议 m1")
    expect(page.locator("#chat-form button")).to_have_text("发送")
    expect(page.locator("#summarize")).to_have_text("总结本次会议")
    assert page.evaluate("document.documentElement.lang") == "zh-CN"


def test_axe_finds_no_serious_or_critical_violation(stack: Stack, pages: Pages, app) -> None:
    """axe-core (npm, installed by scripts/test) on both pages with content in them; the
    page runs axe's inline script only with its CSP bypassed, in this context alone."""
    axe = AXE.read_text()
    for path in ("/", "/ops"):
        page = pages.open(bypass_csp=True)
        page.goto(stack.url(path))
        connected(page)
        if path == "/":
            join(app, "bob", stream="cam-1")
            expect(page.locator("#participants li")).to_have_count(1)
            page.fill("#prompt", "**hello** there")
            page.click("#chat-form button")
            expect(page.locator(".message.reply")).to_have_attribute("data-status", "completed")
        else:
            submit_task(page, "echo", '{"value": "x"}')
            expect(page.locator("#task-list tbody tr")).to_have_count(1)
            expect(page.locator('#queues tr[data-queue="ai"]')).to_be_visible()
        page.add_script_tag(content=axe)
        results = page.evaluate("axe.run(document)")
        serious = [
            (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
            for v in results["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        assert not serious, (path, serious)


def test_the_favicon_is_served(stack: Stack, page: Page) -> None:
    for path in ("/favicon.svg", "/favicon.ico"):
        response = page.request.get(f"{stack.gateway.base}{path}")
        assert response.status == 200 and response.headers["content-type"] == "image/svg+xml"


# -- the operator's page ---------------------------------------------------------------------


def test_the_operator_page_shows_the_cluster(stack: Stack, page: Page) -> None:
    page.goto(stack.url("/ops"))
    connected(page)
    expect(page.locator("#workers")).to_have_text("2")
    expect(page.locator('#queues tr[data-queue="ai"]')).to_be_visible()
    submit_task(page, "echo", '{"value": "hello"}')
    row = page.locator("#task-list tbody tr").first
    expect(row.locator(".status")).to_have_text("completed")
    cancel = row.locator("button.cancel")
    expect(cancel).to_have_attribute("aria-label", re.compile("^Cancel task .* \\(echo\\)$"))


def test_a_cancel_button_cancels_a_delayed_task(stack: Stack, page: Page) -> None:
    page.goto(stack.url("/ops"))
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
    page.goto(stack.url("/ops"))
    connected(page)
    submit_task(page, "sleep", '{"seconds": 4}')
    row = page.locator("#task-list tbody tr").first
    expect(row.locator(".status")).to_have_text("processing")  # a worker took it

    def while_down() -> None:
        expect(page.locator("#state")).to_have_text("Reconnecting…")
        expect(page.locator("#task-form button")).to_be_disabled()  # nothing to send it to
        page.wait_for_timeout(5000)  # the task ends while no gateway runs

    stack.restart_gateway(while_down)
    connected(page)
    expect(row.locator(".status")).to_have_text("completed")
    submit_task(page, "echo", '{"value": "after the restart"}')  # and it goes on working
    expect(page.locator("#task-list tbody tr").first.locator(".status")).to_have_text("completed")


def test_refusals_are_shown_and_the_page_stays_usable(stack: Stack, page: Page) -> None:
    page.goto(stack.url("/ops"))
    connected(page)
    submit_task(page, "echo", '{"value": "' + "x" * 300_000 + '"}')
    expect(page.locator(".notice").first).to_have_attribute("data-code", re.compile("too_large"))
    expect(page.locator(".notice").first).to_have_text("That is too long to send.")

    # a flood past the session's unfinished-task limit: delayed, its tasks stay unfinished
    # however slowly the gateway takes them in
    page.fill("#task-data", '{"value": "flood"}')
    page.fill("#task-delay", "600")
    page.evaluate(
        """() => {
        for (let i = 0; i < 150; i++) document.querySelector("#task-form").requestSubmit();
    }"""
    )
    refused = '.notice[data-code="rate_limited"], .notice[data-code="too_many_tasks"]'
    expect(page.locator(refused).first).to_be_visible()
    assert page.locator(".notice").count() <= 3  # one per problem, not one per refusal
    page.fill("#task-data", "not json")
    page.click("#task-form button")
    expect(page.locator('.notice[data-code="bad_json"]')).to_be_visible()

    page.wait_for_timeout(1500)  # the submit budget refills
    for row in page.locator("#task-list tbody tr").all()[:5]:
        row.locator("button.cancel").click()  # room for one more unfinished task
    expect(page.locator('td.status[data-status="cancelled"]')).to_have_count(5)
    page.fill("#task-delay", "")
    page.fill("#task-data", '{"value": "still here"}')
    page.click("#task-form button")
    expect(page.locator("#task-list tbody tr").first.locator(".status")).to_have_text("completed")
    expect(page.locator("#state")).to_have_text("Connected")
