"""Refusing what a linked device sent, the same way for every kind of message
(settings, status, description, state): the `reply` that says why, a log line
per device a minute at most, and per-device limits that answer a flood with
one `slow_down` a second, not one per message (docs/protocol.md section 12.6).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import linkhub_protocol as protocol
from hub.core.link_limits import LogEvery
from hub.core.rate_limits import DeviceLimits, wait_words
from linkhub_protocol import DeviceReply, ErrorCode

log = logging.getLogger(__name__)

# Refusals are logged per device at most once per interval, with a count: one
# device sending garbage in a loop must not fill the SD card the log is on
# (issue 19, item 8: 10,000 malformed messages had made 10,003 lines).
REFUSAL_LOG_INTERVAL_S = 60.0
# Over its limit, a device hears slow_down at most this often per kind of message;
# the rest of a flood is dropped unanswered (docs/protocol.md section 12.6).
SLOW_DOWN_REPLY_INTERVAL_S = 1.0
# Devices whose refusals are being counted; past this the table starts over
# (a few lines logged early), so made-up device ids cannot grow it.
MAX_REFUSAL_COUNTERS = 4096


class DeviceRefusals:
    def __init__(self, limits: DeviceLimits) -> None:
        self.limits = limits
        self._logged: dict[str, LogEvery] = {}
        self._slow_down_sent_at: dict[tuple[str, str], float] = {}

    def refusal(
        self,
        device_id: str,
        request_id: str | None,
        error: ErrorCode,
        description: str,
        *,
        retry_after_s: int | None = None,
        cause: BaseException | None = None,
    ) -> DeviceReply:
        """The reply refusing a message (noted in the log)."""
        self.note(device_id, error, description, cause)
        return DeviceReply(
            request_id,
            ok=False,
            error=error,
            # A rule's words may quote what the device sent: kept within what a reply may carry.
            error_description=description[: protocol.MAX_DESCRIPTION_CHARS],
            retry_after=retry_after_s,
        )

    def note(
        self, device_id: str, error: ErrorCode, description: str, cause: BaseException | None = None
    ) -> None:
        """One log line per device a minute at most, counting what it stands for."""
        counter = self._logged.get(device_id)
        if counter is None:
            if len(self._logged) >= MAX_REFUSAL_COUNTERS:
                self._logged.clear()
            counter = self._logged.setdefault(device_id, LogEvery(REFUSAL_LOG_INTERVAL_S))
        count = counter.due(self.limits.clock())
        if count:
            log.warning(
                "refused %d message(s) from device %s since the last such line (at most one a minute "
                "per device); the latest: %s (%s)",
                count,
                device_id,
                error,
                description,
                exc_info=cause,
            )

    def over_limit(
        self, device_id: str, kind: str, request_id: Callable[[], str | None]
    ) -> tuple[bool, DeviceReply | None]:
        """Whether `device_id` sent more `kind` messages than its limit (the message
        is then dropped), and the slow_down to answer with, unless one went to this
        device for this kind in the last SLOW_DOWN_REPLY_INTERVAL_S. Replying to
        every message of a flood would make the hub's work grow with the flood
        (each reply waits for its PUBACK) and queue other devices' messages behind it."""
        wait_s = self.limits.admit(device_id, kind)
        if not wait_s:
            return False, None
        description = (
            f"Too many {kind} messages from this device (at most {self.limits.rate(kind)}); "
            f"nothing was changed: send it again in {wait_words(wait_s)}."
        )
        now, key = self.limits.clock(), (device_id, kind)
        last = self._slow_down_sent_at.get(key)
        if last is not None and 0 <= now - last < SLOW_DOWN_REPLY_INTERVAL_S:
            self.note(device_id, ErrorCode.SLOW_DOWN, description)
            return True, None
        if len(self._slow_down_sent_at) >= MAX_REFUSAL_COUNTERS:
            self._slow_down_sent_at.clear()
        self._slow_down_sent_at[key] = now
        return True, self.refusal(
            device_id, request_id(), ErrorCode.SLOW_DOWN, description, retry_after_s=wait_s
        )
