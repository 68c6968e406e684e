// The meeting page, for the people in a meeting: who is here and sharing (loaded from the
// meeting's state when the page joins, then kept live), what happened in words, and an
// assistant that knows the meeting: questions carry its context, "Summarize" streams a
// summary of its events and conversation, replies render as sanitised Markdown.
// The operator's parts (free-form tasks, queues) are on /ops (ops.js).
import { FINAL_STATUSES } from "/client.js";
import { Marked } from "/vendor/marked.js";
import DOMPurify from "/vendor/purify.js";
import { $, applyText, connection, displayName, element, notice, showError, t } from "/ui.js";

/** Timeline entries kept, and the most recent of them an assistant's prompt carries. */
const TIMELINE_KEPT = 200;
const CONTEXT_EVENTS = 40;
/** Earlier turns of the conversation a question carries. */
const CONTEXT_TURNS = 10;

let client = null;
let following = null;
let meetingId = null;
const participants = new Set();
const streams = new Map();
/** What happened, oldest first: {time, text}. */
const timeline = [];
/** The conversation's finished turns: {role, content}. */
const conversation = [];

applyText();

// -- the meeting -----------------------------------------------------------------------

function meetingsOf(claims) {
  const granted = Array.isArray(claims.meetings) ? claims.meetings.map(String) : [];
  const asked = new URLSearchParams(location.search).get("meeting");
  return [...new Set([asked, ...granted].filter(Boolean))];
}

function offerMeetings(meetings) {
  const select = $("#meeting-id");
  select.replaceChildren(...meetings.map((id) => element("option", { value: id }, id)));
  $("#meeting-choice").hidden = meetings.length < 2;
}

async function follow(id) {
  if (following) await following.unsubscribe().catch(showError);
  following = null;
  meetingId = id;
  $("#meeting-title").textContent = t("meeting.title", { id });
  document.title = `${t("meeting.title", { id })} · meetingtasks`;
  participants.clear();
  streams.clear();
  timeline.length = 0;
  $("#events").replaceChildren();
  renderRoster();
  renderTimeline();
  try {
    following = await client.subscribe(`meeting.${id}`, onEvent, { onState });
  } catch (error) {
    showError(error);
  }
}

/** The meeting as it stands, on joining and after each reconnect. */
function onState(meeting) {
  participants.clear();
  for (const user of meeting.participants || []) participants.add(user);
  streams.clear();
  for (const [id, stream] of Object.entries(meeting.streams || {})) streams.set(id, stream);
  renderRoster();
}

function onEvent(event) {
  const payload = event.payload || {};
  if (event.type === "meeting.user_joined") participants.add(event.user_id);
  if (event.type === "meeting.user_left") participants.delete(event.user_id);
  if (event.type === "meeting.ended") participants.clear();
  if (event.type === "media.stream_started") streams.set(payload.stream_id, { user_id: event.user_id, kind: payload.kind });
  if (event.type === "media.stream_stopped") streams.delete(payload.stream_id);
  renderRoster();
  const when = new Date(event.time || Date.now());
  const text = describe(event);
  timeline.push({ time: when, text });
  if (timeline.length > TIMELINE_KEPT) timeline.shift();
  const item = element(
    "li", { "data-type": event.type },
    element("time", { datetime: when.toISOString() }, when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })),
    " ", text,
  );
  $("#events").prepend(item);
  while ($("#events").children.length > TIMELINE_KEPT) $("#events").lastElementChild.remove();
  renderTimeline();
}

/** An event in words: "Bob joined", "Bob started sharing their camera". */
function describe(event) {
  const payload = event.payload || {};
  const stream = streams.get(payload.stream_id);
  const user = event.user_id || payload.user_id || stream?.user_id;
  const kind = payload.kind || stream?.kind;
  const key = `event.${event.type}`;
  const known = t(key) !== key;
  return t(known ? key : "event.other", {
    name: displayName(user),
    kind: kind ? t(`stream.${kind}`) : "",
    type: String(event.type).replace(/[._]/g, " "),
  });
}

function person(user, ...rest) {
  return element("li", { title: user, "data-user": user }, displayName(user), ...rest);
}

function renderRoster() {
  const people = [...participants].sort((a, b) => displayName(a).localeCompare(displayName(b)));
  $("#participants").replaceChildren(...people.map((user) => person(user)));
  $("#participants-empty").hidden = people.length > 0;
  $("#people-count").textContent = people.length ? `(${people.length})` : "";
  $("#streams").replaceChildren(...[...streams].map(([id, stream]) => {
    const item = person(stream.user_id, element("span", { class: "kind" }, ` · ${t(`stream.${stream.kind}`)}`));
    item.dataset.stream = id;
    return item;
  }));
  $("#streams-empty").hidden = streams.size > 0;
}

function renderTimeline() {
  $("#events-empty").hidden = timeline.length > 0;
}

$("#meeting-id").addEventListener("change", () => {
  if (client) follow($("#meeting-id").value);
});

// -- the assistant -----------------------------------------------------------------------

/** What the assistant is told of the meeting before a question. */
function meetingContext() {
  const people = [...participants].map(displayName).join(", ") || "none yet";
  const recent = timeline.slice(-CONTEXT_EVENTS).map((entry) => `${entry.time.toISOString()} ${entry.text}`);
  return [
    `You are the assistant of meeting ${meetingId}. Answer in the language of the question,`,
    "briefly; Markdown is rendered.",
    `People in the meeting: ${people}.`,
    recent.length ? `What happened, oldest first:\n${recent.join("\n")}` : "Nothing has happened yet.",
  ].join("\n");
}

/** The meeting's transcript for a summary: its events and the conversation. */
function transcript() {
  const lines = timeline.map((entry) => `${entry.time.toISOString()} ${entry.text}`);
  for (const turn of conversation) lines.push(`${turn.role}: ${turn.content}`);
  return lines.join("\n");
}

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (text) => text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
/** Markdown whose raw HTML stays text: a model's tags are shown, never parsed. */
const markdown = new Marked({ async: false, renderer: { html: ({ text }) => escapeHtml(text) } });

function renderMarkdown(node, text) {
  // Two guards: the model's own HTML is escaped above, and DOMPurify checks what Markdown
  // made of the rest (a javascript: link, say) before it reaches the DOM.
  node.innerHTML = DOMPurify.sanitize(markdown.parse(text));
}

/** A reply in the conversation: its body, its status line, Stop while it runs, Copy. */
function replyBox(title) {
  const body = element("div", { class: "body" });
  const status = element("p", { class: "status", "aria-live": "polite" });
  const stop = element("button", { type: "button", class: "secondary stop" }, t("stop"));
  const copy = element("button", { type: "button", class: "secondary copy", hidden: "" }, t("copy"));
  const box = element("article", { class: "message reply", "data-status": "submitting" });
  if (title) box.append(element("h3", {}, title));
  box.append(body, status, element("div", { class: "actions" }, stop, copy));
  $("#messages").append(box);
  $("#messages-empty").hidden = true;
  let text = "";
  let task = null;
  const view = {
    box,
    set status(value) {
      box.dataset.status = value;
      status.textContent = t(`reply.${value}`) === `reply.${value}` ? "" : t(`reply.${value}`);
      stop.hidden = FINAL_STATUSES.includes(value) || value === "stopped" || value === "failed";
    },
    set text(value) {
      text = value;
      renderMarkdown(body, text);
      copy.hidden = !text;
      $("#messages").scrollTop = $("#messages").scrollHeight;
    },
    get text() {
      return text;
    },
    set task(value) {
      task = value;
    },
  };
  stop.addEventListener("click", () => {
    stop.disabled = true;
    if (task?.id) client.cancel(task.id).catch(showError);
  });
  copy.addEventListener("click", async () => {
    await navigator.clipboard.writeText(text);
    copy.textContent = t("copied");
    setTimeout(() => (copy.textContent = t("copy")), 1500);
  });
  view.status = "submitting";
  return view;
}

/** Sends one task of the assistant and streams its reply into a new reply box. */
async function ask(type, data, title) {
  const reply = replyBox(title);
  try {
    const task = await client.submit(type, data);
    reply.task = task;
    reply.status = task.status;
    task.onUpdate(() => {
      if (!task.done) reply.status = task.status;
    });
    let streamed = "";
    for await (const delta of task.deltas()) {
      streamed += delta;
      reply.text = streamed;
    }
    reply.text = await task.result;
    reply.status = "completed";
    return reply.text;
  } catch (error) {
    if (error.code === "cancelled") {
      reply.status = "stopped";
      return null;
    }
    reply.status = "failed";
    showError(error);
    return null;
  }
}

$("#chat-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const prompt = $("#prompt").value.trim();
  if (!client || client.state !== "open" || !prompt) return;
  $("#prompt").value = "";
  $("#messages").append(element("div", { class: "message user" }, prompt));
  const messages = [
    { role: "system", content: meetingContext() },
    ...conversation.slice(-CONTEXT_TURNS),
    { role: "user", content: prompt },
  ];
  const answer = await ask("llm_chat", { messages });
  conversation.push({ role: "user", content: prompt });
  if (answer) conversation.push({ role: "assistant", content: answer });
});

$("#summarize").addEventListener("click", async () => {
  const text = transcript();
  if (!text.trim()) {
    notice("nothing_to_summarize");
    return;
  }
  await ask("summarize", { text }, t("summary.title"));
});

$("#prompt").addEventListener("keydown", (event) => {
  // Enter sends, Shift+Enter is a new line; while an input method composes (Chinese,
  // Japanese), Enter picks the characters and must not send.
  if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.keyCode === 229) return;
  event.preventDefault();
  $("#chat-form").requestSubmit();
});

// -- start -------------------------------------------------------------------------------

connection({
  onClient(created) {
    client = created;
  },
  async onConnected(connected, claims) {
    const meetings = meetingsOf(claims);
    offerMeetings(meetings);
    if (meetings.length) await follow(meetings[0]);
  },
});
