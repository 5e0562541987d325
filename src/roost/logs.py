"""The node's logging: plain text for people or one JSON object per line for log shippers
(``log_format``), with a level for all of Roost (``log_level``) and per module
(``log_levels = "roost.cluster=debug,roost.transport=warning"``).

Lines about one client carry its details as fields (``client_id``, ``peer``, ``protocol``,
``reason``): the JSON format writes them as keys of their own, so a shipper can filter on
them without parsing the message.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CLIENT_FIELDS = ("client_id", "peer", "protocol", "reason")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the
    client fields a record has, and the traceback of an exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CLIENT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def parse_module_levels(text: str) -> dict[str, str]:
    """``"roost.cluster=debug, roost.http=warning"`` as {logger: level}; raises ValueError
    naming the part that is not ``NAME=LEVEL``."""
    levels = {}
    for part in filter(None, (part.strip() for part in text.split(","))):
        name, equals, level = part.partition("=")
        if not equals or not name.strip() or not level.strip():
            raise ValueError(f"{part!r} is not MODULE=LEVEL")
        levels[name.strip()] = level.strip().lower()
    return levels


def configure_logging(level: str, log_format: str, module_levels: str) -> None:
    """Send the root logger's records to stderr in ``log_format`` ("text" or "json") at
    ``level``, with the levels of ``module_levels`` for those loggers (checked already by
    the settings' validation)."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, module_level in parse_module_levels(module_levels).items():
        logging.getLogger(name).setLevel(module_level.upper())
