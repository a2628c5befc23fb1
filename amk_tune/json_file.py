"""Reading a user's JSON file (a schedule, a program, a model config) with errors that say
which file, what is wrong with it, and where."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from amk_tune.errors import AmkError


def read_json(path: str | Path, what: str, error: type[AmkError]) -> Any:
    """The decoded JSON of ``path``; ``error`` naming ``what`` the file should have been."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise error(f"cannot read {what} file {str(p)!r}: {e.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(
            f"{what} file {str(p)!r} is not JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        ) from None
