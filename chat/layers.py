"""The default (one process) channel layer."""

import time

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
