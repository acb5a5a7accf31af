"""Process helpers for the reward tests."""

from __future__ import annotations

import os
from pathlib import Path


def process_gone(pid: int) -> bool:
    """True when no process (not even a zombie) has this pid, or it is another program now."""
    status = Path(f"/proc/{pid}/status")
    try:
        text = status.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
    return fields.get("PPid", "").strip() != str(os.getpid())
