"""A test SMS gateway, set as `SMS_BACKEND` by the root conftest's `sms` fixture."""

import re
import time


class RecordingSms:
    """Keep what it sent; fail the first `failures` messages (or every one, with `fail`), each after `delay` seconds."""

    sent: list[tuple[str, str]] = []
    fail = False
    failures = 0
    delay = 0.0

    def send(self, *, phone: str, text: str) -> None:
        cls = type(self)
        time.sleep(cls.delay)
        if cls.fail:
            raise ConnectionError("gateway unreachable")
        if cls.failures:
            cls.failures -= 1
            raise ConnectionError("gateway unreachable")
        cls.sent.append((phone, text))

    @classmethod
    def last_code(cls) -> str:
        """Return the six-digit code of the last text sent."""
        return re.search(r"\b(\d{6})\b", cls.sent[-1][1]).group(1)  # type: ignore[union-attr]

    @classmethod
    def reset(cls) -> None:
        cls.sent, cls.fail, cls.failures, cls.delay = [], False, 0, 0.0
