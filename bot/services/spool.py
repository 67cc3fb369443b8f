"""A local spool for inbound messages the database could not take.

When the database is down, a patient's message is written here (one JSON file each, fsynced,
readable by this user only) so that nothing is lost, and the web worker answers Twilio with 200.
Files are replayed through the normal inbound path, oldest first, once the database answers
again; the insert-if-absent on MessageSid makes a replay safe to repeat.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from bot.services.inbound import InboundMessage

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class Spool:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def put(self, msg: InboundMessage) -> Path:
        """Store one message (with its provider id and received_at set) durably; returns its
        file. Raises OSError if the disk refuses."""
        assert msg.provider_id and msg.received_at, "a spooled message needs an id and a time"
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        ident = _UNSAFE.sub("", msg.provider_id)[:64] or uuid.uuid4().hex
        name = f"{msg.received_at.strftime('%Y%m%dT%H%M%S%f')}-{ident}.json"
        record = asdict(msg) | {"received_at": msg.received_at.isoformat()}
        final = self.directory / name
        tmp = self.directory / f".{name}.{uuid.uuid4().hex}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, json.dumps(record).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)
        return final

    def pending(self) -> list[Path]:
        """Spooled files, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir()
                      if p.suffix == ".json" and not p.name.startswith("."))

    @staticmethod
    def load(path: Path) -> InboundMessage:
        """The message in a spool file. Raises ValueError if the file is not one."""
        try:
            fields = json.loads(path.read_text(encoding="utf-8"))
            fields["media"] = tuple(tuple(m) for m in fields.get("media") or ())
            fields["received_at"] = datetime.fromisoformat(fields["received_at"])
            return InboundMessage(**fields)
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a spooled message: {exc}") from None

    @staticmethod
    def remove(path: Path) -> None:
        path.unlink(missing_ok=True)

    @staticmethod
    def set_aside(path: Path) -> Path:
        """Keep an unreadable file for a person to look at, out of the replay's way."""
        bad = path.with_suffix(".bad")
        os.replace(path, bad)
        return bad
