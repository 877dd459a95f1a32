"""The default (one process) channel layer."""

import contextlib
import time

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as BaseInMemoryChannelLayer


class InMemoryChannelLayer(BaseInMemoryChannelLayer):
    """Channels' in-memory layer scans every channel and group for expired messages on every
    send; with fifty pages streaming that is most of a frame's fan-out. Messages expire after
    a minute, so sweeping once a second changes nothing but the cost."""

    sweep_interval = 1.0
    _last_sweep = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep >= self.sweep_interval:
            self._last_sweep = now
            super()._clean_expired()

    async def group_send(self, group: str, message: dict) -> None:
        """Channels' version starts a task per member channel and waits for them all; a send
        to this layer never waits (a full channel raises at once), so the members are served
        in a loop: a live frame reaches its pages without a task per page per frame."""
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            with contextlib.suppress(ChannelFull):  # that page misses a frame; the next comes
                await self.send(channel, message)
