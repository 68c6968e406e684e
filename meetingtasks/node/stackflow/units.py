"""The work units the bridge holds on a StackFlow unit manager, kept in step with it.

The peer's node holds 3 work units, keeps them when a connection closes, and crashes on
a 4th setup; an exit of a work_id it does not know aborts the node. So the bridge:

- keeps at most ``max_units`` units, one per distinct setup (model, system prompt,
  options), the least recently used exited to make room;
- exits a unit only after ``taskinfo`` listed it;
- at each new connection, asks ``taskinfo`` and exits the units it finds that it does
  not hold: leftovers of an earlier run of the bridge, which must be the peer's only
  client;
- forgets the units ``taskinfo`` no longer lists: the peer's node restarted (counted as
  ``restarts``); they are set up again when next needed.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict

from meetingtasks.llm.protocol import ErrorCode, UnitSetup
from meetingtasks.node.backends import BackendError
from meetingtasks.node.stackflow.channel import Channel

log = logging.getLogger(__name__)


class Units:
    def __init__(self, channel: Channel, unit: str, max_units: int) -> None:
        self.channel, self.unit, self.max_units = channel, unit, max_units
        #: The units this bridge set up on the peer, least recently used first.
        self._held: OrderedDict[UnitSetup, str] = OrderedDict()
        self._work_id_pattern = re.compile(rf"{re.escape(unit)}\.\d+")
        self.restarts = 0
        self.leftovers_exited = 0

    def work_ids(self) -> list[str]:
        return list(self._held.values())

    def held(self, key: UnitSetup) -> bool:
        return key in self._held

    def work_id(self, key: UnitSetup) -> str:
        """The unit for ``key``, set up now if the bridge holds none; now the most
        recently used."""
        work_id = self._held[key] if key in self._held else self._set_up(key)
        self._held.move_to_end(key)
        return work_id

    def listed(self) -> set[str]:
        """The peer's work units; ours it no longer lists are forgotten (it restarted)."""
        response = self.channel.exchange({"work_id": self.unit, "action": "taskinfo"})
        found = response.data if isinstance(response.data, list) else []
        work_ids = {w for w in found if isinstance(w, str) and self._work_id_pattern.fullmatch(w)}
        gone = [key for key, work_id in self._held.items() if work_id not in work_ids]
        if gone:
            self.restarts += 1
            log.warning(
                "the StackFlow peer %s no longer has units %s: its node restarted; they "
                "are set up again when needed",
                self.channel.address.url,
                [self._held[key] for key in gone],
            )
            for key in gone:
                del self._held[key]
        return work_ids

    def exit_leftovers(self) -> None:
        """At a new connection: exit what the peer holds that the bridge does not."""
        ours = set(self._held.values())
        for work_id in sorted(self.listed() - ours):
            log.info("exiting %s, a leftover unit on the StackFlow peer", work_id)
            self._exit(work_id)
            self.leftovers_exited += 1

    def exit_all(self) -> None:
        """Exit every unit the bridge holds that the peer still lists."""
        listed = self.listed()
        for key, work_id in list(self._held.items()):
            if work_id in listed:
                self._exit(work_id)
            del self._held[key]

    def _set_up(self, key: UnitSetup) -> str:
        listed = self.listed()
        while len(listed) >= self.max_units:
            if not self._held:
                raise BackendError(
                    f"the StackFlow peer {self.channel.address.url} holds {len(listed)} "
                    "units that are not this bridge's: it must be the peer's only client",
                    ErrorCode.TASK_FULL,
                )
            _oldest, work_id = self._held.popitem(last=False)
            self._exit(work_id)
            listed.discard(work_id)
        response = self.channel.exchange(
            {
                "work_id": self.unit,
                "action": "setup",
                "object": f"{self.unit}.setup",
                "data": key.data(),
            }
        )
        if not self._work_id_pattern.fullmatch(response.work_id):
            raise BackendError(
                f"the StackFlow peer answered a setup with work_id {response.work_id!r}",
                ErrorCode.GENERAL,
            )
        self._held[key] = response.work_id
        return response.work_id

    def _exit(self, work_id: str) -> None:
        """Only for a work_id the peer listed just now: an unknown one aborts its node."""
        self.channel.exchange({"work_id": work_id, "action": "exit"})
