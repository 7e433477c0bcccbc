"""Finds full API keys and shopper tokens (JWTs) in the log files a test run wrote.

A key may be logged only as its prefix + last four (`hk_test_sec_…AbCd`); a token never. What is
found is reported by file and line, masked the same way, so the report does not leak it again.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path

# hk_<mode>_<kind>_ and at least 20 key characters: a real key has 43, a hint has none (it has "…")
API_KEY = re.compile(r"hk_(?:test|live)_(?:sec|pub)_[A-Za-z0-9_-]{20,}")
# header.payload.signature, base64url; the header of any JWT starts `{"` → eyJ; alg none leaves the signature empty
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
LOG_SUFFIXES = (".log", ".stderr", ".stdout")


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    what: str  # "API key" or "token"
    masked: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: a full {self.what} ({self.masked})"


def mask(secret: str) -> str:
    if secret.startswith("hk_"):
        prefix = "_".join(secret.split("_", 3)[:3])
        return f"{prefix}_…{secret[-4:]}"
    return f"eyJ…({len(secret)} characters)"


def scan_text(text: str, path: Path = Path("-")) -> list[Finding]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in (("API key", API_KEY), ("token", JWT)):
            found += [Finding(path, number, what, mask(m.group())) for m in pattern.finditer(line)]
    return found


def log_files(root: Path) -> list[Path]:
    """Every log under `root`: the services' logs/, the broker's and PostgreSQL's *.log, captured output."""
    files = []
    for folder, _, names in os.walk(root):
        files += [Path(folder) / n for n in names if n.endswith(LOG_SUFFIXES) or Path(folder).name == "logs"]
    return sorted(files)


def scan_logs(*roots: Path) -> list[Finding]:
    found = []
    for root in roots:
        for path in log_files(root):
            try:
                text = path.read_text(errors="replace")
            except OSError:  # gone since the walk
                continue
            found += scan_text(text, path)
    return found


def assert_no_secrets(*roots: Path) -> None:
    found = scan_logs(*roots)
    if found:
        listed = "\n".join(f"  {f}" for f in found[:50])
        more = f"\n  … and {len(found) - 50} more" if len(found) > 50 else ""
        raise AssertionError(f"secrets written to logs ({len(found)}):\n{listed}{more}")
