/**
 * The meetingtasks client: tasks, streamed replies and meeting events over the gateway's
 * WebSocket protocol. One ES module, no build step, no dependency; the gateway serves it
 * at /client.js, and it runs in browsers and in Node (20 with --experimental-websocket,
 * 22 and later as is, or pass a WebSocket class).
 *
 *   import { MeetingTasksClient } from "/client.js";
 *   const client = new MeetingTasksClient("ws://host:8000/ws", { token, getToken });
 *   await client.connect();
 *   const task = await client.submit("llm_chat", { prompt: "Hi" });
 *   for await (const delta of task.deltas()) show(delta);
 *   const text = await task.result;
 *   await client.subscribe("meeting.m1", (event) => console.log(event.type));
 *
 * It reconnects on its own with jittered backoff, resumes its session (the gateway keeps
 * it in Redis), subscribes again, and recovers the results of tasks that ended while it
 * was away. Errors are MeetingTasksError with the protocol's code (``rate_limited``,
 * ``task_not_found`` …) or, for a refused connection, the close code too.
 */

/** WebSocket close codes the gateway uses. */
export const CLOSE = Object.freeze({
  UNAUTHENTICATED: 4401,
  FORBIDDEN: 4403,
  AUTH_TIMEOUT: 4408,
  TOO_SLOW: 4429,
  TRY_AGAIN: 1013,
});

/** Task statuses after which nothing changes. */
export const FINAL_STATUSES = Object.freeze(["completed", "failed", "timeout", "cancelled"]);

/** An error of the protocol: ``code`` is its error code, ``closeCode`` set for a refused connection. */
export class MeetingTasksError extends Error {
  constructor(code, message, { requestId, closeCode, taskId } = {}) {
    super(message);
    this.name = "MeetingTasksError";
    this.code = code;
    if (requestId !== undefined) this.requestId = requestId;
    if (closeCode !== undefined) this.closeCode = closeCode;
    if (taskId !== undefined) this.taskId = taskId;
  }
}

/** One submitted task: its id, live status, deltas and result. */
export class Task {
  constructor(client, type, requestId) {
    this._client = client;
    this.type = type;
    this.requestId = requestId;
    this.id = null;
    this.status = "submitting";
    this.progress = null;
    this._deltas = [];
    this._waiters = [];
    this._listeners = new Set();
    /** @type {Promise<any>} the result value; rejects with the task's error status as code. */
    this.result = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    this.result.catch(() => {}); // a caller that never awaits it must not see an unhandled rejection
  }

  get done() {
    return FINAL_STATUSES.includes(this.status);
  }

  /** Deltas of a streamed reply as they arrive; ends with the result. */
  deltas() {
    let next = 0;
    return {
      [Symbol.asyncIterator]() {
        return this;
      },
      // Woken by every frame of the task: one that brings no delta (a progress, a status)
      // neither ends the stream nor yields anything; it waits again.
      next: () => new Promise((resolve) => {
        const attempt = () => {
          if (next < this._deltas.length) resolve({ value: this._deltas[next++], done: false });
          else if (this.done) resolve({ value: undefined, done: true });
          else this._waiters.push(attempt);
        };
        attempt();
      }),
      return: () => Promise.resolve({ value: undefined, done: true }),
    };
  }

  /** Calls ``listener(task, frame)`` on each change of status, progress or delta. */
  onUpdate(listener) {
    this._listeners.add(listener);
    return () => this._listeners.delete(listener);
  }

  /** Asks the gateway to cancel the task; resolves with its final status. */
  cancel() {
    return this._client.cancel(this.id);
  }

  _update(frame) {
    if (frame.op === "delta") {
      this._deltas.push(frame.delta);
    } else if (frame.op === "progress") {
      this.progress = frame;
    }
    if (frame.status) this.status = frame.status;
    else if ((frame.op === "delta" || frame.op === "progress") && !FINAL_STATUSES.includes(this.status)) {
      // Only a running task streams; a retry's progress says it waits for another run.
      this.status = frame.state === "retrying" ? "retrying" : "processing";
    }
    if (this.done) {
      if (this.status === "completed") this._resolve(frame.result);
      else this._reject(new MeetingTasksError(this.status, frame.error || `task ${this.status}`, { taskId: this.id }));
    }
    for (const wake of this._waiters.splice(0)) wake();
    for (const listener of this._listeners) listener(this, frame);
  }
}

export class MeetingTasksClient {
  /**
   * @param {string} url ws:// or wss:// URL of the gateway's /ws
   * @param {object} options token (string), getToken (async function returning a fresh
   *   token, called when the token expired), WebSocket (a class, default the global one),
   *   minDelay/maxDelay (reconnect backoff, ms), pingInterval/pongTimeout (keepalive, ms),
   *   requestTimeout (ms a request waits for its answer)
   */
  constructor(url, options = {}) {
    this.url = url;
    this.token = options.token || null;
    this.getToken = options.getToken || null;
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    if (!this.WebSocket) throw new Error("no WebSocket class: pass options.WebSocket (Node 20: --experimental-websocket)");
    this.minDelay = options.minDelay ?? 250;
    this.maxDelay = options.maxDelay ?? 10000;
    this.pingInterval = options.pingInterval ?? 15000;
    this.pongTimeout = options.pongTimeout ?? 10000;
    this.requestTimeout = options.requestTimeout ?? 30000;
    this.state = "idle";
    this.sessionId = options.session || null;
    this.session = null;
    this.limits = {};
    this.tasks = new Map();
    this._unaccepted = new Map();
    this._requests = new Map();
    this._channels = new Map();
    this._listeners = new Map();
    this._counter = 0;
    this._attempt = 0;
    this._socket = null;
    this._timers = new Set();
    this._opened = null;
  }

  /** ``listener(value)`` for ``state`` (a new state), ``session`` (the session frame),
   * ``error`` (a MeetingTasksError not tied to a request), ``frame`` (every server frame),
   * ``task`` (a task changed). Returns a function that removes it. */
  on(name, listener) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(listener);
    return () => this._listeners.get(name).delete(listener);
  }

  /** Opens the connection; resolves with the session frame, rejects if the token is refused. */
  connect() {
    if (this.state === "open") return Promise.resolve(this.session);
    if (!this._opened) {
      this._opened = deferred();
      this._closing = false;
      this._open();
    }
    return this._opened.promise;
  }

  /** Closes for good (no reconnect); pending requests reject with ``closed``. */
  close() {
    this._closing = true;
    this._clearTimers();
    if (this._socket) this._socket.close(1000, "client closed");
    this._setState("closed");
    this._failRequests(new MeetingTasksError("closed", "the client was closed"));
  }

  /**
   * Submits a task by its client name; resolves once the gateway accepted it.
   * @returns {Promise<Task>}
   */
  async submit(type, data = {}, { priority, timeout, delay, meetingId } = {}) {
    const requestId = this._nextId("t");
    const task = new Task(this, type, requestId);
    const frame = { op: "submit", request_id: requestId, type, data };
    if (priority !== undefined) frame.priority = priority;
    if (timeout !== undefined) frame.timeout = timeout;
    if (delay !== undefined) frame.delay = delay;
    if (meetingId !== undefined) frame.meeting_id = meetingId;
    this._unaccepted.set(requestId, { task, frame });
    try {
      const accepted = await this._request(frame);
      this._accept(task, accepted.task_id, accepted.status);
    } finally {
      this._unaccepted.delete(requestId);
    }
    return task;
  }

  /** The task's status frame (with ``result`` or ``error`` once it is over). */
  async status(taskId) {
    const frame = await this._request({ op: "status", task_id: taskId });
    const task = this.tasks.get(taskId);
    if (task && !task.done) task._update({ ...frame, op: "result" });
    return frame;
  }

  /** Cancels a task of this session; resolves with its final status. */
  async cancel(taskId) {
    const task = this.tasks.get(taskId);
    const over = task ? task.result.then(() => task.status, () => task.status) : null;
    await this._request({ op: "cancel", task_id: taskId }, { answered: (frame) => frame.op === "result" && frame.task_id === taskId });
    return over ?? "cancelled";
  }

  /** Subscribes to a channel (``meeting.<id>``); ``onEvent(event, frame)`` gets each event,
   * and ``options.onState(meeting)`` the meeting's state (``participants``, ``streams``)
   * each time the gateway confirms the subscription: now, and after every reconnect,
   * before the events that follow it. Resolves with an object whose ``unsubscribe()``
   * ends it, and ``meeting``, the state as it stood. Kept across reconnects. */
  async subscribe(channel, onEvent, options = {}) {
    let entry = this._channels.get(channel);
    if (!entry) {
      entry = { handlers: new Set(), stateHandlers: new Set(), confirmed: false, meeting: null };
      this._channels.set(channel, entry);
    }
    entry.handlers.add(onEvent);
    if (options.onState) entry.stateHandlers.add(options.onState);
    if (!entry.confirmed) {
      try {
        this._onSubscribed(entry, await this._request({ op: "subscribe", channel }));
      } catch (error) {
        entry.handlers.delete(onEvent);
        entry.stateHandlers.delete(options.onState);
        if (!entry.handlers.size) this._channels.delete(channel);
        throw error;
      }
    } else if (options.onState && entry.meeting) {
      options.onState(entry.meeting);
    }
    return {
      channel,
      meeting: entry.meeting,
      unsubscribe: async () => {
        entry.handlers.delete(onEvent);
        entry.stateHandlers.delete(options.onState);
        if (entry.handlers.size || !this._channels.has(channel)) return;
        this._channels.delete(channel);
        if (this.state === "open") await this._request({ op: "unsubscribe", channel });
      },
    };
  }

  /** Replaces the token: sent at once on an open connection (the gateway answers
   * ``authenticated`` with its expiry), used on every reconnect. */
  async refreshToken(token) {
    this.token = token;
    if (this.state === "open") return this._request({ op: "auth", token });
    return null;
  }

  /** Sends a ping and resolves on its pong. */
  ping() {
    return this._request({ op: "ping" });
  }

  // -- the connection ---------------------------------------------------------------

  _open() {
    this._setState(this._attempt ? "reconnecting" : "connecting");
    const url = new URL(this.url);
    if (this.token) url.searchParams.set("token", this.token);
    if (this.sessionId) url.searchParams.set("session", this.sessionId);
    let socket;
    try {
      socket = new this.WebSocket(url.toString());
    } catch (error) {
      this._scheduleReconnect();
      return;
    }
    this._socket = socket;
    let opened = false;
    socket.onopen = () => (opened = true);
    socket.onmessage = (message) => this._onFrame(socket, message.data);
    socket.onclose = (event) => this._onClose(socket, event.code, event.reason || "");
    // Browsers follow every error with a close; Node 20's WebSocket does not when the
    // connection could not be made at all, so a failed attempt counts as closed here.
    socket.onerror = () => {
      if (!opened) this._onClose(socket, 1006, "");
    };
  }

  _onFrame(socket, text) {
    if (socket !== this._socket) return;
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    this._emit("frame", frame);
    switch (frame.op) {
      case "session":
        return this._onSession(frame);
      case "accepted":
      case "status":
      case "pong":
      case "subscribed":
      case "unsubscribed":
        return this._answer(frame);
      case "delta":
      case "progress":
      case "result":
        return this._onTaskFrame(frame);
      case "event":
        return this._onEvent(frame);
      case "error":
        return this._onError(frame);
      case "token_expiring":
        return this._onTokenExpiring(frame);
      case "authenticated":
        this.tokenExpiresAt = frame.expires_at;
        this._emit("authenticated", frame);
        return this._answer(frame);
    }
  }

  /** The gateway closes at the token's expiry: fetch a new one (getToken) and send it. */
  _onTokenExpiring(frame) {
    this.tokenExpiresAt = frame.expires_at;
    this._emit("token_expiring", frame);
    if (!this.getToken) return;
    Promise.resolve(this.getToken()).then(
      (token) => this.refreshToken(token),
      (error) => this._emit("error", new MeetingTasksError("token_expiring", `could not get a new token: ${error}`)),
    );
  }

  async _onSession(frame) {
    this.session = frame;
    this.sessionId = frame.session_id;
    this.limits = frame.limits || {};
    this.tokenExpiresAt = frame.expires_at;
    this._attempt = 0;
    this._setState("open");
    this._startKeepalive();
    this._emit("session", frame);
    if (this._opened) {
      this._opened.resolve(frame);
      this._opened = null;
    }
    for (const pending of this._requests.values()) {
      if (!pending.sent && pending.frame.op !== "submit") {
        this._send(pending.frame);
        pending.sent = true;
      }
    }
    await this._recover(frame);
  }

  /** After a reconnect: subscribe again, match unanswered submits by request id, and
   * fetch the results of tasks that ended while we were away. */
  async _recover(frame) {
    const listed = new Map((frame.tasks || []).map((entry) => [entry.task_id, entry]));
    const byRequest = new Map((frame.tasks || []).filter((e) => e.request_id).map((e) => [e.request_id, e]));
    for (const [channel, entry] of this._channels) {
      this._request({ op: "subscribe", channel }).then((answer) => this._onSubscribed(entry, answer), (error) => this._emit("error", error));
    }
    for (const [requestId, { task, frame: submit }] of this._unaccepted) {
      const known = byRequest.get(requestId);
      const pending = this._requests.get(requestId);
      if (known && pending) {
        this._requests.delete(requestId);
        clearTimeout(pending.timer);
        pending.resolve({ op: "accepted", task_id: known.task_id, status: known.status });
      } else if (pending && !pending.sent) {
        this._send(submit);
        pending.sent = true;
      }
    }
    for (const task of this.tasks.values()) {
      if (task.done) continue;
      const entry = listed.get(task.id);
      if (!frame.resumed) {
        task._update({ op: "result", status: "failed", error: "session_not_found: the session expired while the client was away" });
      } else if (!entry || FINAL_STATUSES.includes(entry.status)) {
        this.status(task.id).catch((error) => this._emit("error", error));
      } else {
        task._update({ op: "status", status: entry.status });
      }
    }
  }

  _onClose(socket, code, reason) {
    if (socket !== this._socket) return;
    this._socket = null;
    this._stopKeepalive();
    for (const pending of this._requests.values()) pending.sent = false;
    if (this._closing) return;
    const refusal = reason.split(/[:\s]/)[0] || "closed";
    if (code === CLOSE.UNAUTHENTICATED && refusal === "token_expired" && this.getToken) {
      Promise.resolve(this.getToken()).then(
        (token) => {
          this.token = token;
          this._scheduleReconnect(0);
        },
        (error) => this._fail(new MeetingTasksError("token_expired", `could not get a new token: ${error}`, { closeCode: code })),
      );
      return;
    }
    if (code === CLOSE.UNAUTHENTICATED || code === CLOSE.FORBIDDEN) {
      this._fail(new MeetingTasksError(refusal, reason || "the gateway refused the token", { closeCode: code }));
      return;
    }
    this._scheduleReconnect();
  }

  _fail(error) {
    this._setState("closed");
    this._closing = true;
    this._emit("error", error);
    if (this._opened) {
      this._opened.reject(error);
      this._opened = null;
    }
    this._failRequests(error);
  }

  _scheduleReconnect(delay) {
    const base = Math.min(this.maxDelay, this.minDelay * 2 ** this._attempt);
    const wait = delay ?? base / 2 + (Math.random() * base) / 2;
    this._attempt += 1;
    this._setState("reconnecting");
    this._later(() => this._open(), wait);
  }

  _startKeepalive() {
    this._stopKeepalive();
    this._keepalive = setInterval(() => {
      const socket = this._socket;
      this._request({ op: "ping" }, { timeout: this.pongTimeout }).catch(() => {
        if (socket && socket === this._socket) socket.close(4000, "no pong");
      });
    }, this.pingInterval);
  }

  _stopKeepalive() {
    clearInterval(this._keepalive);
  }

  // -- requests and answers ---------------------------------------------------------

  _request(frame, { timeout = this.requestTimeout, answered } = {}) {
    const requestId = frame.request_id || this._nextId("r");
    frame.request_id = requestId;
    return new Promise((resolve, reject) => {
      const pending = { frame, resolve, reject, answered, sent: false };
      pending.timer = setTimeout(() => {
        this._requests.delete(requestId);
        reject(new MeetingTasksError("request_timeout", `no answer to ${frame.op} within ${timeout} ms`, { requestId }));
      }, timeout);
      this._requests.set(requestId, pending);
      if (this.state === "open") {
        this._send(frame);
        pending.sent = true;
      } // else sent once the session is open (submits by _recover, which checks them first)
    });
  }

  _answer(frame) {
    const pending = frame.request_id && this._requests.get(frame.request_id);
    if (!pending) return;
    this._requests.delete(frame.request_id);
    clearTimeout(pending.timer);
    pending.resolve(frame);
  }

  _onError(frame) {
    const error = new MeetingTasksError(frame.code, frame.message, { requestId: frame.request_id });
    const pending = frame.request_id && this._requests.get(frame.request_id);
    if (pending) {
      this._requests.delete(frame.request_id);
      clearTimeout(pending.timer);
      pending.reject(error);
    } else {
      this._emit("error", error);
    }
  }

  _onTaskFrame(frame) {
    let task = this.tasks.get(frame.task_id);
    if (!task && frame.request_id && this._unaccepted.has(frame.request_id)) {
      task = this._unaccepted.get(frame.request_id).task; // a frame raced its accepted
      this._accept(task, frame.task_id, task.status);
    }
    if (task) {
      task._update(frame);
      this._emit("task", task);
    }
    for (const [requestId, pending] of this._requests) {
      if (pending.answered && pending.answered(frame)) {
        this._requests.delete(requestId);
        clearTimeout(pending.timer);
        pending.resolve(frame);
      }
    }
  }

  _onSubscribed(entry, frame) {
    entry.confirmed = true;
    if (!frame.meeting) return;
    entry.meeting = frame.meeting;
    for (const handler of entry.stateHandlers) handler(frame.meeting);
  }

  _onEvent(frame) {
    const entry = this._channels.get(frame.channel);
    if (!entry) return;
    for (const handler of entry.handlers) handler(frame.event, frame);
  }

  _accept(task, taskId, status) {
    if (task.id) return;
    task.id = taskId;
    this.tasks.set(taskId, task);
    if (status && !task.done) task._update({ op: "accepted", status });
    this._emit("task", task);
  }

  _send(frame) {
    if (this._socket && this._socket.readyState === 1) this._socket.send(JSON.stringify(frame));
  }

  _failRequests(error) {
    for (const [requestId, pending] of this._requests) {
      clearTimeout(pending.timer);
      pending.reject(new MeetingTasksError(error.code, error.message, { requestId, closeCode: error.closeCode }));
    }
    this._requests.clear();
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", state);
  }

  _emit(name, value) {
    for (const listener of this._listeners.get(name) || []) listener(value);
  }

  _later(callback, delay) {
    const timer = setTimeout(() => {
      this._timers.delete(timer);
      callback();
    }, delay);
    this._timers.add(timer);
  }

  _clearTimers() {
    for (const timer of this._timers) clearTimeout(timer);
    this._timers.clear();
    this._stopKeepalive();
  }

  _nextId(prefix) {
    this._counter += 1;
    return `${prefix}${this._counter}-${Math.random().toString(36).slice(2, 8)}`;
  }
}

function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
