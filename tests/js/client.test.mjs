// client.js under Node's test runner, against a real gateway, worker and Redis.
// Run by tests/test_js_client.py, which starts the worker and passes, in the environment:
// PYTHON, REPO, GATEWAY_PORT (a free port for the gateways these tests start and restart),
// TOKEN (alice, meeting m1), BAD_TOKEN (signed with another key), SHORT_TTL (the seconds
// of the short token a test mints when it starts), GATEWAY_LOG.
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { openSync } from "node:fs";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import { CLOSE, MeetingTasksClient, MeetingTasksError } from "../../meetingtasks/gateway/web/client.js";

const env = process.env;
const port = Number(env.GATEWAY_PORT);
const url = `ws://127.0.0.1:${port}/ws`;
let gateway = null;

async function startGateway() {
  const log = openSync(env.GATEWAY_LOG, "a");
  gateway = spawn(env.PYTHON, ["-m", "tests.support.gateways", String(port)], {
    cwd: env.REPO,
    env: { ...env, PYTHONPATH: env.REPO },
    stdio: ["ignore", log, log],
  });
  const deadline = Date.now() + 60000;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/healthz`)).ok) return;
    } catch {}
    await sleep(100);
  }
  throw new Error("the gateway did not become healthy");
}

async function stopGateway() {
  if (!gateway || gateway.exitCode !== null) return;
  const exited = new Promise((resolve) => gateway.once("exit", resolve));
  gateway.kill("SIGTERM");
  await exited;
}

/** Resolves once ``predicate()`` holds, checking every 20 ms; rejects after ``ms``. */
async function until(predicate, ms = 20000, what = "the condition") {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const clients = [];
function client(options = {}) {
  const made = new MeetingTasksClient(url, { token: env.TOKEN, minDelay: 100, maxDelay: 1000, ...options });
  clients.push(made);
  return made;
}

before(startGateway);
after(async () => {
  for (const made of clients) made.close();
  await stopGateway();
});

test("a task's result and deltas come back through submit()", async () => {
  const c = client();
  const session = await c.connect();
  assert.equal(session.resumed, false);
  const task = await c.submit("echo", { value: { hello: "world" } });
  assert.match(task.id, /\S+/);
  assert.deepEqual(await task.result, { hello: "world" });
  assert.equal(task.status, "completed");
  const seen = [];
  for await (const delta of task.deltas()) seen.push(delta);
  assert.deepEqual(seen, []); // echo streams nothing; the iterator ends with the result
});

test("protocol errors surface with their codes", async () => {
  const c = client();
  await c.connect();
  await assert.rejects(c.submit("no_such_task"), (error) => {
    assert.ok(error instanceof MeetingTasksError);
    assert.equal(error.code, "unknown_task");
    assert.ok(error.requestId);
    return true;
  });
  await assert.rejects(c.status("not-a-task-of-mine"), { code: "task_not_found" });
  await assert.rejects(c.subscribe("meeting.m2", () => {}), { code: "channel_not_allowed" });
  await assert.rejects(c.submit("echo", { value: "x".repeat(200000) }), { code: /too_large/ });
  await assert.rejects(c.submit("echo", {}, { priority: "urgent" }), { code: "bad_field" });
  const task = await c.submit("echo", { value: 1 }); // the connection is still usable
  assert.equal(await task.result, 1);
});

test("a bad token is rejected with its close code", async () => {
  const c = client({ token: env.BAD_TOKEN });
  const errors = [];
  c.on("error", (error) => errors.push(error));
  await assert.rejects(c.connect(), (error) => {
    assert.equal(error.code, "token_bad_signature");
    assert.equal(error.closeCode, CLOSE.UNAUTHENTICATED);
    return true;
  });
  assert.equal(c.state, "closed");
  assert.ok(errors.some((error) => error.code === "token_bad_signature"));
});

test("keepalive pings are answered", async () => {
  const c = client({ pingInterval: 100 });
  await c.connect();
  let pongs = 0;
  c.on("frame", (frame) => (pongs += frame.op === "pong"));
  await until(() => pongs >= 3, 10000, "three pongs");
});

test("after a gateway restart the client reconnects, resumes and recovers a result", async () => {
  const c = client();
  const first = await c.connect();
  const states = [];
  c.on("state", (state) => states.push(state));
  const task = await c.submit("sleep", { seconds: 1 });
  await stopGateway();
  await until(() => c.state === "reconnecting", 10000, "reconnecting");
  await sleep(2000); // the task ends while no gateway runs
  await startGateway();
  await until(() => c.state === "open", 20000, "the reconnection");
  assert.equal(c.sessionId, first.session_id);
  assert.equal(c.session.resumed, true);
  assert.ok(c.session.tasks.some((entry) => entry.task_id === task.id));
  assert.equal(await task.result, "slept");
  assert.ok(states.includes("reconnecting") && states.at(-1) === "open");
  const again = await c.submit("echo", { value: "after" });
  assert.equal(await again.result, "after");
});

test("a submit sent while the gateway is down goes out once it is back", async () => {
  const c = client();
  await c.connect();
  await stopGateway();
  await until(() => c.state === "reconnecting", 10000, "reconnecting");
  const pending = c.submit("echo", { value: "queued while away" });
  await startGateway();
  const task = await pending;
  assert.equal(await task.result, "queued while away");
});

test("an expiring token is swapped through getToken on the open connection", async () => {
  let asked = 0;
  // Minted here, not by the pytest that starts Node: the tests before this one outlast it.
  const shortToken = execFileSync(
    env.PYTHON,
    ["-m", "meetingtasks", "token", "--user", "alice", "--meeting", "m1", "--ttl", env.SHORT_TTL],
    { cwd: env.REPO, env: { ...env, PYTHONPATH: env.REPO }, encoding: "utf8" },
  ).trim();
  const c = client({
    token: shortToken,
    getToken: async () => {
      asked += 1;
      return env.TOKEN;
    },
  });
  const states = [];
  c.on("state", (state) => states.push(state));
  const first = await c.connect();
  // The gateway asks for a new token before the short one expires (token_expiring); the
  // client sends the one getToken gives, and the connection outlives the first token.
  await until(() => asked === 1 && c.tokenExpiresAt > Date.now() / 1000 + 60, 20000, "a refresh");
  await sleep(Number(env.SHORT_TTL) * 1000 + 500);
  assert.equal((await c.ping()).op, "pong");
  assert.deepEqual(states.filter((s) => s === "reconnecting"), []);
  assert.equal(c.sessionId, first.session_id);
  const task = await c.submit("echo", { value: "fresh" });
  assert.equal(await task.result, "fresh");
});

/** Adds a user to meeting m1's roster, as the meeting service's task does. */
function joinRoster(user) {
  const code = "import sys; from meetingtasks.base.keys import get_keys; from meetingtasks.store import get_redis; "
    + "get_redis().sadd(get_keys().participants('m1'), sys.argv[1])";
  execFileSync(env.PYTHON, ["-c", code, user], { cwd: env.REPO, env: { ...env, PYTHONPATH: env.REPO } });
}

test("a subscription gets the meeting's state, and again after a reconnect", async () => {
  joinRoster("bob");
  const c = client();
  await c.connect();
  const states = [];
  const subscription = await c.subscribe("meeting.m1", () => {}, { onState: (meeting) => states.push(meeting) });
  assert.deepEqual(subscription.meeting, { participants: ["bob"], streams: {} });
  assert.deepEqual(states, [subscription.meeting]);
  joinRoster("carol"); // while the page is away
  await stopGateway();
  await until(() => c.state === "reconnecting", 10000, "reconnecting");
  await startGateway();
  await until(() => states.length === 2, 20000, "the state after the reconnect");
  assert.deepEqual(states[1].participants, ["bob", "carol"]);
  await subscription.unsubscribe();
});
