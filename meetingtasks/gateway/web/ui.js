// What the meeting page (page.js) and the operator page (ops.js) share: their words in
// the reader's language, DOM helpers, one notice per problem written for people, and
// the connection to the gateway with its token kept for this tab.
import { MeetingTasksClient } from "/client.js";

export const $ = (selector) => document.querySelector(selector);

const TEXT = {
  en: {
    app: "meetingtasks",
    "state.idle": "Not connected",
    "state.connecting": "Connecting…",
    "state.open": "Connected",
    "state.reconnecting": "Reconnecting…",
    "state.closed": "Disconnected",
    "signin.label": "Client token",
    "signin.button": "Join",
    "signin.hint": "Paste the client token you were given to join the meeting.",
    you: "You: {name}",
    "nav.meeting": "Meeting",
    "nav.ops": "Operator",
    "meeting.title": "Meeting {id}",
    "meeting.none": "No meeting",
    "meeting.choose": "Meeting",
    people: "People",
    "people.empty": "No one has joined yet.",
    streams: "Live streams",
    "streams.empty": "No one is sharing audio, video or a screen.",
    "stream.audio": "audio",
    "stream.video": "camera",
    "stream.screen": "screen",
    timeline: "What happened",
    "timeline.empty": "Events of the meeting will appear here as they happen.",
    "event.meeting.user_joined": "{name} joined",
    "event.meeting.user_left": "{name} left",
    "event.media.stream_started": "{name} started sharing their {kind}",
    "event.media.stream_stopped": "{name} stopped sharing their {kind}",
    "event.meeting.created": "The meeting was created",
    "event.meeting.started": "The meeting started",
    "event.meeting.ended": "The meeting ended",
    "event.other": "{type}",
    assistant: "Assistant",
    "assistant.empty": "Ask the assistant about this meeting, or have it summarize what happened.",
    "assistant.label": "Ask the assistant",
    "assistant.placeholder": "Ask about the meeting…",
    send: "Send",
    summarize: "Summarize this meeting",
    "summary.title": "Summary of the meeting",
    stop: "Stop",
    copy: "Copy",
    copied: "Copied",
    "reply.queued": "Waiting for the assistant…",
    "reply.scheduled": "Waiting for the assistant…",
    "reply.submitting": "Sending…",
    "reply.processing": "The assistant is thinking…",
    "reply.retrying": "Trying again…",
    "reply.stopped": "Stopped.",
    "reply.failed": "The assistant could not answer.",
    "messages.label": "Conversation with the assistant",
    "events.label": "Timeline of the meeting",
    "error.token_expired": "Your session expired. Sign in again to continue.",
    "error.token_missing": "Sign in with the client token you were given.",
    "error.token_malformed": "This sign-in token is not valid. Ask for a new one.",
    "error.token_bad_signature": "This sign-in token is not valid. Ask for a new one.",
    "error.token_not_yet_valid": "This sign-in token is not valid yet. Check this device's clock.",
    "error.token_too_long_lived": "This sign-in token lasts too long to be accepted. Ask for a new one.",
    "error.user_mismatch": "That token is for someone else.",
    "error.origin_refused": "This page may not connect to the meeting service.",
    "error.meeting_not_allowed": "You are not invited to this meeting.",
    "error.channel_not_allowed": "You are not invited to this meeting.",
    "error.rate_limited": "You are sending too fast. Wait a moment and try again.",
    "error.too_many_tasks": "Too many requests are still running. Wait for some to finish.",
    "error.payload_too_large": "That is too long to send.",
    "error.frame_too_large": "That is too long to send.",
    "error.unavailable": "The service is busy or unreachable. Try again shortly.",
    "error.gateway_full": "The service is full right now. Reconnecting…",
    "error.request_timeout": "No answer in time. Try again.",
    "error.closed": "The connection closed.",
    "error.bad_json": "That is not valid JSON: {detail}",
    "error.unknown_task": "There is no task of that type.",
    "error.invalid_payload": "That request was refused: {detail}",
    "error.nothing_to_summarize": "Nothing has happened in this meeting yet: there is nothing to summarize.",
    "error.stats_refused": "The cluster's figures need an operator token (/stats answered {detail}).",
    "error.other": "Something went wrong: {detail}",
    "ops.tasks": "Tasks",
    "ops.type": "Task type",
    "ops.data": "Task data (JSON)",
    "ops.delay": "Delay in seconds",
    "ops.submit": "Submit",
    "ops.col.task": "Task",
    "ops.col.type": "Type",
    "ops.col.status": "Status",
    "ops.col.actions": "Actions",
    "ops.cancel": "Cancel",
    "ops.cancel.label": "Cancel task {id} ({type})",
    "ops.tasks.empty": "Tasks you submit appear here with their status.",
    "ops.cluster": "Cluster",
    "ops.workers": "Workers online",
    "ops.delayed": "Delayed",
    "ops.col.queue": "Queue",
  },
  zh: {
    app: "meetingtasks",
    "state.idle": "未连接",
    "state.connecting": "正在连接…",
    "state.open": "已连接",
    "state.reconnecting": "正在重新连接…",
    "state.closed": "已断开",
    "signin.label": "客户端令牌",
    "signin.button": "加入",
    "signin.hint": "请粘贴您收到的客户端令牌以加入会议。",
    you: "您：{name}",
    "nav.meeting": "会议",
    "nav.ops": "运维",
    "meeting.title": "会议 {id}",
    "meeting.none": "没有会议",
    "meeting.choose": "会议",
    people: "参会者",
    "people.empty": "还没有人加入。",
    streams: "正在共享",
    "streams.empty": "没有人在共享音频、视频或屏幕。",
    "stream.audio": "音频",
    "stream.video": "摄像头",
    "stream.screen": "屏幕",
    timeline: "会议动态",
    "timeline.empty": "会议中发生的事会显示在这里。",
    "event.meeting.user_joined": "{name} 加入了会议",
    "event.meeting.user_left": "{name} 离开了会议",
    "event.media.stream_started": "{name} 开始共享{kind}",
    "event.media.stream_stopped": "{name} 停止共享{kind}",
    "event.meeting.created": "会议已创建",
    "event.meeting.started": "会议已开始",
    "event.meeting.ended": "会议已结束",
    "event.other": "{type}",
    assistant: "助手",
    "assistant.empty": "可以向助手询问本次会议，或让它总结会议内容。",
    "assistant.label": "向助手提问",
    "assistant.placeholder": "询问会议相关的问题…",
    send: "发送",
    summarize: "总结本次会议",
    "summary.title": "会议总结",
    stop: "停止",
    copy: "复制",
    copied: "已复制",
    "reply.queued": "正在等待助手…",
    "reply.scheduled": "正在等待助手…",
    "reply.submitting": "正在发送…",
    "reply.processing": "助手正在思考…",
    "reply.retrying": "正在重试…",
    "reply.stopped": "已停止。",
    "reply.failed": "助手未能回答。",
    "messages.label": "与助手的对话",
    "events.label": "会议动态",
    "error.token_expired": "您的登录已过期，请重新登录。",
    "error.token_missing": "请使用您收到的客户端令牌登录。",
    "error.token_malformed": "此登录令牌无效，请重新获取。",
    "error.token_bad_signature": "此登录令牌无效，请重新获取。",
    "error.token_not_yet_valid": "此登录令牌尚未生效，请检查设备时间。",
    "error.token_too_long_lived": "此登录令牌有效期过长，无法接受，请重新获取。",
    "error.user_mismatch": "该令牌属于其他用户。",
    "error.origin_refused": "此页面无法连接到会议服务。",
    "error.meeting_not_allowed": "您未受邀参加此会议。",
    "error.channel_not_allowed": "您未受邀参加此会议。",
    "error.rate_limited": "发送过快，请稍后再试。",
    "error.too_many_tasks": "仍有太多请求在进行中，请稍候。",
    "error.payload_too_large": "内容过长，无法发送。",
    "error.frame_too_large": "内容过长，无法发送。",
    "error.unavailable": "服务繁忙或无法访问，请稍后再试。",
    "error.gateway_full": "服务当前已满，正在重新连接…",
    "error.request_timeout": "未能及时得到回复，请重试。",
    "error.closed": "连接已关闭。",
    "error.bad_json": "这不是有效的 JSON：{detail}",
    "error.unknown_task": "没有这种类型的任务。",
    "error.invalid_payload": "请求被拒绝：{detail}",
    "error.nothing_to_summarize": "会议中还没有发生任何事，暂无可总结的内容。",
    "error.stats_refused": "查看集群数据需要运维令牌（/stats 返回 {detail}）。",
    "error.other": "出了点问题：{detail}",
    "ops.tasks": "任务",
    "ops.type": "任务类型",
    "ops.data": "任务数据（JSON）",
    "ops.delay": "延迟（秒）",
    "ops.submit": "提交",
    "ops.col.task": "任务",
    "ops.col.type": "类型",
    "ops.col.status": "状态",
    "ops.col.actions": "操作",
    "ops.cancel": "取消",
    "ops.cancel.label": "取消任务 {id}（{type}）",
    "ops.tasks.empty": "您提交的任务会连同状态显示在这里。",
    "ops.cluster": "集群",
    "ops.workers": "在线工作进程",
    "ops.delayed": "延迟任务",
    "ops.col.queue": "队列",
  },
};

/** The reader's language: the first of the browser's that the page speaks. */
export const LANG = (() => {
  for (const tag of navigator.languages?.length ? navigator.languages : [navigator.language || "en"]) {
    const base = tag.toLowerCase().split("-")[0];
    if (base in TEXT) return base;
  }
  return "en";
})();

/** The text of ``key`` in the reader's language, ``{name}`` filled from ``values``. */
export function t(key, values = {}) {
  const text = TEXT[LANG][key] ?? TEXT.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

/** Fills the static page's words: ``data-text`` (content), ``data-placeholder``. */
export function applyText(root = document) {
  document.documentElement.lang = LANG === "zh" ? "zh-CN" : "en";
  for (const node of root.querySelectorAll("[data-text]")) node.textContent = t(node.dataset.text);
  for (const node of root.querySelectorAll("[data-placeholder]")) node.placeholder = t(node.dataset.placeholder);
  for (const node of root.querySelectorAll("[data-label]")) node.setAttribute("aria-label", t(node.dataset.label));
}

export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

/** A name to show for a user id: an e-mail's local part, its words capitalised
 * (``alexandra.konstantinopoulou@example.com``: Alexandra Konstantinopoulou). */
export function displayName(userId) {
  const local = String(userId || "").split("@")[0];
  const words = local.split(/[._\-\s]+/).filter(Boolean);
  if (!words.length) return String(userId || "");
  return words.map((word) => word[0].toUpperCase() + word.slice(1)).join(" ");
}

// -- notices ---------------------------------------------------------------------------

/** Shows a problem once, in words for people: a second one of the same code replaces the
 * first (the code stays in ``data-code``, for tests and support). */
export function notice(code, detail = "") {
  const key = `error.${code}`;
  const text = t(key in TEXT.en ? key : "error.other", { detail: detail || code });
  const box = $("#notices");
  box.querySelector(`.notice[data-code="${CSS.escape(code)}"]`)?.remove();
  box.prepend(element("p", { class: "notice", "data-code": code }, text));
  while (box.children.length > 3) box.lastElementChild.remove();
}

export function showError(error) {
  notice(error.code || "other", error.message || String(error));
}

export function clearNotices() {
  $("#notices").replaceChildren();
}

// -- the connection ----------------------------------------------------------------------

const TOKEN_KEY = "meetingtasks-token";
/** Refusals after which the same token will not do: the page asks for another. */
const SIGN_IN_AGAIN = ["token_expired", "token_missing", "token_malformed", "token_bad_signature",
  "token_not_yet_valid", "token_too_long_lived", "user_mismatch", "origin_refused"];

/** The claims of a token, read without a check (the gateway checks it). */
export function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return {};
  }
}

/** The token this tab was given: from ``?token=`` (then taken out of the address bar, so
 * it stays out of the history and of any referrer) or kept from earlier in the tab. */
export function initialToken() {
  const params = new URLSearchParams(location.search);
  const token = params.get("token") || sessionStorage.getItem(TOKEN_KEY);
  if (params.has("token")) {
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : "") + location.hash);
  }
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  return token;
}

/** The form that asks for a token, hidden until one is needed. */
function signInForm() {
  return element(
    "form", { id: "signin", hidden: "" },
    element("p", {}, t("signin.hint")),
    element("label", { for: "token" }, t("signin.label")),
    element("input", { id: "token", name: "token", type: "password", autocomplete: "off" }),
    element("button", { type: "submit" }, t("signin.button")),
  );
}

/**
 * Runs the page's connection: the state badge, the sign-in form (shown when there is no
 * token, or the gateway refused it), and ``[data-needs-connection]`` controls, enabled
 * only while connected. ``onClient(client, claims)`` runs for each new client, before it
 * connects; ``onConnected(client, claims)`` once it is.
 */
export function connection({ onClient, onConnected }) {
  let client = null;
  const badge = $("#state");
  $("header").after(signInForm());

  function setState(state) {
    badge.dataset.state = state;
    badge.textContent = t(`state.${state}`);
    for (const control of document.querySelectorAll("[data-needs-connection]")) control.disabled = state !== "open";
  }

  function askForToken(show) {
    $("#signin").hidden = !show;
    if (show) $("#token").focus();
  }

  async function signIn(token) {
    if (client) client.close();
    clearNotices();
    askForToken(false);
    const claims = tokenClaims(token);
    $("#me").textContent = claims.sub ? t("you", { name: displayName(claims.sub) }) : "";
    $("#me").title = claims.sub || "";
    const url = new URL("/ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    client = new MeetingTasksClient(url.toString(), { token });
    client.on("state", setState);
    client.on("error", (error) => {
      if (SIGN_IN_AGAIN.includes(error.code)) askForToken(true);
      showError(error);
    });
    onClient(client, claims);
    try {
      await client.connect();
    } catch (error) {
      // The client emitted this refusal as an error already: it is shown once.
      if (SIGN_IN_AGAIN.includes(error.code)) askForToken(true);
      return;
    }
    await onConnected(client, claims);
  }

  $("#signin").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("#token").value.trim();
    if (!token) {
      notice("token_missing");
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    signIn(token);
  });

  setState("idle");
  const token = initialToken();
  if (token) signIn(token);
  else askForToken(true);
}
