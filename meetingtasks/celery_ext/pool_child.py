"""What a prefork pool process does as it starts: it leaves the worker's process group,
so a SIGTERM sent to that group reaches the main process only.

``kill -TERM -PGID``, a supervisor that signals the group, or a terminal's job control
signal every process of the worker at once. Celery's pool processes die at any SIGTERM,
so every running task died mid-run and ran again elsewhere, although the main process,
which got the same signal, starts a warm shutdown that would have let them finish. In a
group of its own a pool process hears only what the main process sends it (a revoke
that terminates, a hard time limit, a cold shutdown), and dies with the main process
all the same (Celery asks the kernel for that: PR_SET_PDEATHSIG). Blocking or ignoring
SIGTERM instead would be inherited by every program a task starts.

systemd signals a whole control group, not a process group: its unit needs
``KillMode=mixed`` (docs/reliability.md says so).
"""

from __future__ import annotations

import os


def leave_worker_group() -> None:
    """In a pool process: become the leader of a process group of its own (billiard then
    ends a timed-out task's own child processes with it, as it does for group leaders)."""
    os.setpgid(0, 0)
