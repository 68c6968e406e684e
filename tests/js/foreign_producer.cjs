// A producer in another language: celery-node (npm), configured as docs/wire.md says,
// sends meetingtasks tasks and reads their results. tests/test_foreign.py runs it:
//   node foreign_producer.cjs REDIS_URL KEY_PREFIX SCENARIO [ARGS...]
// It prints one JSON line with what it saw.
"use strict";
const { randomUUID } = require("crypto");
const celery = require("celery-node");

const [url, prefix, scenario, ...args] = process.argv.slice(2);

function client(queue) {
  const c = celery.createClient(url, url, `${queue}:inbox`);
  c.conf.CELERY_BROKER_OPTIONS = { keyPrefix: prefix };
  c.conf.CELERY_BACKEND_OPTIONS = { keyPrefix: prefix };
  return c;
}

// What celery-node's own sendTask sends, plus the headers and properties it has no
// option for (eta, priority): a message of Celery's protocol 2 built by hand.
function send(c, task, argsList, kwargs, { eta, priority } = {}) {
  const id = randomUUID();
  const headers = { lang: "js", task, id };
  if (eta) headers.eta = eta;
  const properties = { correlationId: id, replyTo: "" };
  if (priority !== undefined) properties.priority = priority;
  c.sendTaskMessage(task, { headers, properties, body: [argsList, kwargs, {}] });
  return { id, result: c.asyncResult(id) };
}

async function main() {
  const out = {};
  if (scenario === "result") {
    const c = client("default");
    const result = c.sendTask("system.echo", [], { value: args[0] });
    out.result = await result.get(30000, 50);
    await c.disconnect();
  } else if (scenario === "eta") {
    const c = client("user");
    const eta = new Date(Date.now() + 2000).toISOString();
    const { id, result } = send(c, "test.record", ["later", "node-eta"], {}, { eta });
    out.id = id;
    out.eta = eta;
    out.result = await result.get(30000, 50);
    await c.disconnect();
  } else if (scenario === "priority") {
    const c = client("user");
    out.ids = [];
    for (const [label, priority] of [["low-1", 9], ["low-2", 9], ["critical", 0]]) {
      out.ids.push(send(c, "test.record", [label, "node-order"], {}, { priority }).id);
    }
    await c.isReady();
    await new Promise((resolve) => setTimeout(resolve, 200));
    await c.disconnect();
  } else if (scenario === "cancel") {
    const c = client("user");
    const eta = new Date(Date.now() + 3000).toISOString();
    const { id } = send(c, "test.record", ["cancelled", "node-cancel"], {}, { eta });
    out.id = id;
    await c.isReady();
    // docs/wire.md: a cancel is a tombstone, from any language.
    await c.backend.redis.set(`cancelled:${id}`, "cancelled", "EX", 604800);
    await c.disconnect();
  } else {
    throw new Error(`unknown scenario ${scenario}`);
  }
  console.log(JSON.stringify(out));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
