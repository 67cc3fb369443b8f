"""A local spool for inbound messages (and delivery status callbacks) the database could not
take.

When the database is down, a patient's message is written here (one JSON file each, fsynced,
readable by this user only) so that nothing is lost, and the web worker answers Twilio with 200.
Files are replayed through the normal inbound path, oldest first, once the database answers
again; the insert-if-absent on MessageSid makes a replay safe to repeat. A status callback is
kept the same way (Twilio does not retry those): an undelivered WhatsApp message still falls
back to SMS, an undelivered alert still moves its chain on, once the database is back.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from bot.services.inbound import InboundMessage

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_STATUS = "-status-"  # in the file name of a spooled status callback


@dataclass(frozen=True)
class SpooledStatus:
    """A delivery status callback kept while the database was down."""

    sid: str
    status: str
    code: int | None
    received_at: datetime
    outbox_ref: str | None = None  # the outbox row and route the callback's URL named


class Spool:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def put(self, msg: InboundMessage) -> Path:
        """Store one message (with its provider id and received_at set) durably; returns its
        file. Raises OSError if the disk refuses."""
        assert msg.provider_id and msg.received_at, "a spooled message needs an id and a time"
        ident = _UNSAFE.sub("", msg.provider_id)[:64] or uuid.uuid4().hex
        name = f"{msg.received_at.strftime('%Y%m%dT%H%M%S%f')}-{ident}.json"
        return self._write(name, asdict(msg) | {"received_at": msg.received_at.isoformat()})

    def put_status(self, event: SpooledStatus) -> Path:
        """Store one status callback durably. Raises OSError if the disk refuses."""
        ident = _UNSAFE.sub("", f"{event.sid}-{event.status}")[:80] or uuid.uuid4().hex
        name = f"{event.received_at.strftime('%Y%m%dT%H%M%S%f')}{_STATUS}{ident}.json"
        return self._write(name, asdict(event) | {"kind": "status",
                                                  "received_at": event.received_at.isoformat()})

    def _write(self, name: str, record: dict) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
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

    def set_aside_count(self) -> int:
        """Files set aside (.bad) for a person to read: unreadable, or failing every replay."""
        if not self.directory.is_dir():
            return 0
        return sum(1 for p in self.directory.iterdir() if p.suffix == ".bad")

    def pending_inbound(self) -> list[Path]:
        """Spooled patient messages (not status callbacks), oldest first."""
        return [p for p in self.pending() if _STATUS not in p.name]

    @staticmethod
    def load(path: Path) -> InboundMessage | SpooledStatus:
        """The message or status callback in a spool file. Raises ValueError if the file is
        neither."""
        try:
            fields = json.loads(path.read_text(encoding="utf-8"))
            if fields.pop("kind", None) == "status":
                fields["received_at"] = datetime.fromisoformat(fields["received_at"])
                return SpooledStatus(**fields)
            fields["media"] = tuple(tuple(m) for m in fields.get("media") or ())
            fields["received_at"] = datetime.fromisoformat(fields["received_at"])
            return InboundMessage(**fields)
        except FileNotFoundError:
            raise  # gone: another replayer took it
        except Exception as exc:  # anything else in the file (`null`, a list, bad bytes...)
            raise ValueError(f"not a spooled message: {type(exc).__name__}") from None

    @staticmethod
    def remove(path: Path) -> None:
        path.unlink(missing_ok=True)

    @staticmethod
    def set_aside(path: Path) -> Path:
        """Keep an unreadable file for a person to look at, out of the replay's way (a file
        another replayer has taken meanwhile is left to it)."""
        bad = path.with_suffix(".bad")
        try:
            os.replace(path, bad)
        except FileNotFoundError:
            pass
        return bad
