// The live meeting page: meeting events, an assistant chat streamed token by token, the
// session's tasks with cancel buttons, and the cluster's queues. Plain DOM on client.js.
import { FINAL_STATUSES, MeetingTasksClient } from "/client.js";

const $ = (selector) => document.querySelector(selector);
const params = new URLSearchParams(location.search);
const STATS_INTERVAL = 2000;
let client = null;
let following = null;

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

/** Shows an error frame (or any failure) to the user; the page stays usable. */
function notice(code, message) {
  const box = element("p", { class: "notice", "data-code": code }, element("code", {}, code), " ", message || "");
  $("#notices").prepend(box);
  while ($("#notices").children.length > 5) $("#notices").lastElementChild.remove();
}

function showError(error) {
  notice(error.code || "error", error.message || String(error));
}

/** The meetings a token grants, read from its payload (no check: the gateway checks). */
function tokenMeetings(token) {
  try {
    const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return Array.isArray(payload.meetings) ? payload.meetings : [];
  } catch {
    return [];
  }
}

// -- connection ------------------------------------------------------------------------

async function connect(token) {
  if (client) client.close();
  $("#notices").replaceChildren();
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  client = new MeetingTasksClient(url.toString(), { token });
  client.on("token_expiring", () => notice("token_expiring", "your token is about to expire: paste a new one and connect"));
  client.on("state", (state) => {
    $("#state").dataset.state = state;
    $("#state").textContent = state === "open" ? "connected" : state;
  });
  client.on("error", showError);
  client.on("task", renderTask);
  client.on("session", (session) => {
    $("#state").title = `session ${session.session_id}`;
    for (const entry of session.tasks || []) renderListed(entry);
  });
  try {
    await client.connect();
  } catch (error) {
    showError(error);
    return;
  }
  const meeting = params.get("meeting") || tokenMeetings(token)[0];
  if (meeting) {
    $("#meeting-id").value = meeting;
    await follow(meeting);
  }
}

$("#connect-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("#token").value.trim();
  if (token) connect(token);
  else notice("token_missing", "paste a client token (scripts/run prints one)");
});

// -- meeting events --------------------------------------------------------------------

const participants = new Set();
const streams = new Map();

async function follow(meetingId) {
  if (following) await following.unsubscribe().catch(showError);
  participants.clear();
  streams.clear();
  renderRoster();
  $("#events").replaceChildren();
  try {
    following = await client.subscribe(`meeting.${meetingId}`, onEvent);
  } catch (error) {
    following = null;
    showError(error);
  }
}

function onEvent(event) {
  const payload = event.payload || {};
  if (event.type === "meeting.user_joined") participants.add(event.user_id);
  if (event.type === "meeting.user_left") participants.delete(event.user_id);
  if (event.type === "media.stream_started") streams.set(payload.stream_id, `${payload.kind} of ${event.user_id}`);
  if (event.type === "media.stream_stopped") streams.delete(payload.stream_id);
  renderRoster();
  const time = new Date(event.time || Date.now()).toLocaleTimeString();
  const who = event.user_id ? ` ${event.user_id}` : "";
  const item = element("li", { "data-type": event.type }, `${time} `, element("span", { class: "type" }, event.type), who);
  $("#events").prepend(item);
}

function renderRoster() {
  $("#participants").replaceChildren(...[...participants].sort().map((user) => element("li", {}, user)));
  $("#streams").replaceChildren(...[...streams].map(([id, what]) => element("li", { "data-stream": id }, what)));
}

$("#meeting-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const meeting = $("#meeting-id").value.trim();
  if (client && meeting) follow(meeting);
});

// -- assistant chat --------------------------------------------------------------------

$("#chat-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const prompt = $("#prompt").value;
  if (!client || !prompt.trim()) return;
  $("#prompt").value = "";
  $("#messages").append(element("div", { class: "message user" }, prompt));
  const reply = element("div", { class: "message reply", "data-status": "queued" });
  $("#messages").append(reply);
  try {
    const task = await client.submit("llm_chat", { prompt });
    reply.dataset.taskId = task.id;
    for await (const delta of task.deltas()) {
      reply.dataset.status = "streaming";
      reply.textContent += delta;
      $("#messages").scrollTop = $("#messages").scrollHeight;
    }
    reply.textContent = await task.result;
    reply.dataset.status = "completed";
  } catch (error) {
    reply.dataset.status = "failed";
    reply.textContent ||= `(${error.code})`;
    showError(error);
  }
});

$("#prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("#chat-form").requestSubmit();
  }
});

// -- tasks -------------------------------------------------------------------------------

function taskRow(taskId, type) {
  let row = document.getElementById(`task-${taskId}`);
  if (!row) {
    const cancel = element("button", { type: "button", class: "cancel" }, "Cancel");
    cancel.addEventListener("click", () => {
      cancel.disabled = true;
      client.cancel(taskId).catch(showError);
    });
    row = element(
      "tr", { id: `task-${taskId}`, "data-task-id": taskId },
      element("td", {}, element("code", {}, taskId.slice(0, 8))),
      element("td", { class: "type" }, type || ""),
      element("td", { class: "status" }),
      element("td", {}, cancel),
    );
    $("#task-list tbody").prepend(row);
  }
  return row;
}

function setStatus(row, status) {
  const cell = row.querySelector(".status");
  cell.textContent = status;
  cell.dataset.status = status;
  row.querySelector(".cancel").disabled = FINAL_STATUSES.includes(status);
}

function renderTask(task) {
  if (task.id) setStatus(taskRow(task.id, task.type), task.status);
}

function renderListed(entry) {
  setStatus(taskRow(entry.task_id, client.tasks.get(entry.task_id)?.type), entry.status);
}

$("#task-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!client) return;
  let data;
  try {
    data = JSON.parse($("#task-data").value || "{}");
  } catch (error) {
    notice("bad_json", `task data is not JSON: ${error.message}`);
    return;
  }
  const delay = $("#task-delay").value ? Number($("#task-delay").value) : undefined;
  try {
    await client.submit($("#task-type").value.trim(), data, { delay });
  } catch (error) {
    showError(error);
  }
});

// -- cluster -----------------------------------------------------------------------------

async function refreshStats() {
  try {
    const response = await fetch("/stats", { cache: "no-store" });
    if (!response.ok) throw new Error(`/stats answered ${response.status}`);
    const stats = await response.json();
    $("#workers").textContent = stats.workers?.online ?? 0;
    $("#delayed").textContent = stats.delayed ?? 0;
    const rows = Object.entries(stats.queues || {}).map(([queue, depth]) => element(
      "tr", { "data-queue": queue },
      element("td", {}, queue),
      ...["critical", "high", "normal", "low"].map((priority) => element("td", {}, String(depth[priority] ?? 0))),
    ));
    $("#queues tbody").replaceChildren(...rows);
  } catch (error) {
    $("#workers").textContent = "?";
  }
}

refreshStats();
setInterval(refreshStats, STATS_INTERVAL);

// A token in the URL (scripts/run prints one) leaves it at once, so it stays out of the
// history and of any referrer; it is kept for this tab only.
const initial = params.get("token") || sessionStorage.getItem("meetingtasks-token");
if (params.has("token")) {
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : "") + location.hash);
}
if (initial) {
  sessionStorage.setItem("meetingtasks-token", initial);
  $("#token").value = initial;
  connect(initial);
}
