// The operator's page (/ops): submit any client task by name with JSON data and an
// optional delay, follow the session's tasks with a Cancel button each, and watch the
// cluster's workers and queue depths per priority (/stats).
import { FINAL_STATUSES } from "/client.js";
import { $, applyText, connection, element, notice, showError, t } from "/ui.js";

const STATS_INTERVAL = 2000;
const PRIORITIES = ["critical", "high", "normal", "low"];
let client = null;

applyText();

function taskRow(taskId, type) {
  let row = document.getElementById(`task-${taskId}`);
  if (!row) {
    const short = taskId.slice(0, 8);
    const cancel = element(
      "button",
      { type: "button", class: "cancel secondary", "aria-label": t("ops.cancel.label", { id: short, type: type || "" }) },
      t("ops.cancel"),
    );
    cancel.addEventListener("click", () => {
      cancel.disabled = true;
      client.cancel(taskId).catch(showError);
    });
    row = element(
      "tr", { id: `task-${taskId}`, "data-task-id": taskId },
      element("td", {}, element("code", {}, short)),
      element("td", { class: "type" }, type || ""),
      element("td", { class: "status" }),
      element("td", {}, cancel),
    );
    $("#task-list tbody").prepend(row);
    $("#tasks-empty").hidden = true;
  }
  return row;
}

function setStatus(row, status) {
  const cell = row.querySelector(".status");
  cell.textContent = status;
  cell.dataset.status = status;
  row.querySelector(".cancel").disabled = FINAL_STATUSES.includes(status);
}

$("#task-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!client) return;
  let data;
  try {
    data = JSON.parse($("#task-data").value || "{}");
  } catch (error) {
    notice("bad_json", error.message);
    return;
  }
  const delay = $("#task-delay").value ? Number($("#task-delay").value) : undefined;
  try {
    await client.submit($("#task-type").value.trim(), data, { delay });
  } catch (error) {
    showError(error);
  }
});

async function refreshStats() {
  try {
    const response = await fetch("/stats", { cache: "no-store" });
    if (!response.ok) {
      notice("stats_refused", String(response.status));
      return;
    }
    const stats = await response.json();
    $("#workers").textContent = stats.workers?.online ?? 0;
    $("#delayed").textContent = stats.delayed ?? 0;
    const rows = Object.entries(stats.queues || {}).map(([queue, depth]) => element(
      "tr", { "data-queue": queue },
      element("th", { scope: "row" }, queue),
      ...PRIORITIES.map((priority) => element("td", {}, String(depth[priority] ?? 0))),
    ));
    $("#queues tbody").replaceChildren(...rows);
  } catch {
    $("#workers").textContent = "?";
  }
}

refreshStats();
setInterval(refreshStats, STATS_INTERVAL);

connection({
  onClient(created) {
    client = created;
    client.on("task", (task) => {
      if (task.id) setStatus(taskRow(task.id, task.type), task.status);
    });
    client.on("session", (session) => {
      for (const entry of session.tasks || []) {
        setStatus(taskRow(entry.task_id, client.tasks.get(entry.task_id)?.type), entry.status);
      }
    });
  },
  async onConnected() {},
});
