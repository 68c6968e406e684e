"""Sends tasks at a steady rate, the way a service does, and says which were accepted.

    python -m tests.support.failover_load COUNT RATE OUT.json

Run with MEETINGTASKS_REDIS_URL set (a sentinel:// URL in the failover tests). Each
send is ``app.send_task("test.record", ...)``; a send that returned is accepted, one that
raised is refused. The report has, per task, its label, id and the wall time of the
send, and the total time.
"""

from __future__ import annotations

import json
import sys
import time


def main(count: int, rate: float, out: str) -> None:
    import tests.worker_tasks  # noqa: F401  (the test.record route)
    from meetingtasks.app import app

    accepted: list[tuple[str, str, float]] = []
    refused: list[tuple[str, float, str]] = []
    start = time.monotonic()
    for number in range(count):
        due = start + number / rate
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        label, sent_at = str(number), time.time()
        try:
            result = app.send_task(
                "test.record", kwargs={"label": label, "journal_name": "failover"}
            )
        except Exception as exc:  # a refused send: counted, the load goes on
            refused.append((label, sent_at, f"{type(exc).__name__}: {exc}"[:300]))
        else:
            accepted.append((label, result.id, sent_at))
    report = {"accepted": accepted, "refused": refused, "seconds": time.monotonic() - start}
    with open(out, "w") as file:
        json.dump(report, file)


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3])
