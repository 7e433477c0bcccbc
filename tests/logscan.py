"""Finds full API keys, shopper tokens (JWTs) and unescaped control characters in the log files a test run wrote.

A key may be logged only as its prefix + last four (`hk_test_sec_…AbCd`); a token never. What is
found is reported by file and line, masked the same way, so the report does not leak it again.
A line may hold no control character but its own newline: the services' formatter escapes them
(libs/runtime/logs.py), so one that got through could start or fake a record.
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
# C0 but the newline that ends the line, DEL, C1, and the Unicode line/paragraph separators
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
CONTROL_CHARACTER = "control character"


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    what: str  # "API key", "token" or "control character"
    masked: str

    def __str__(self) -> str:
        if self.what == CONTROL_CHARACTER:
            return f"{self.path}:{self.line}: an unescaped {self.what} ({self.masked})"
        return f"{self.path}:{self.line}: a full {self.what} ({self.masked})"



def mask(secret: str) -> str:
    if secret.startswith("hk_"):
        prefix = "_".join(secret.split("_", 3)[:3])
        return f"{prefix}_…{secret[-4:]}"
    return f"eyJ…({len(secret)} characters)"


def scan_text(text: str, path: Path = Path("-")) -> list[Finding]:
    found = []
    # PostgreSQL starts each continuation line of a multi-line statement with a tab, so that it cannot
    # pass for a record of its own: that one tab is its format, any other control character is not
    continuation = "\t" if path.name == "postgres.log" else None
    # split on the newline only: splitlines() would also end a line at CR, VT, FF, NEL… and hide them
    for number, line in enumerate(text.split("\n"), 1):
        for what, pattern in (("API key", API_KEY), ("token", JWT)):
            found += [Finding(path, number, what, mask(m.group())) for m in pattern.finditer(line)]
        skip = 1 if continuation and line.startswith(continuation) else 0
        control = CONTROL.search(line, skip)
        if control is not None:
            found.append(Finding(path, number, CONTROL_CHARACTER,
                                 f"U+{ord(control.group()):04X} at column {control.start() + 1}"))
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
                text = path.read_bytes().decode(errors="replace")  # not read_text: it turns a bare CR into \n
            except OSError:  # gone since the walk
                continue
            found += scan_text(text, path)
    return found


def assert_no_secrets(*roots: Path) -> None:
    found = scan_logs(*roots)
    if found:
        listed = "\n".join(f"  {f}" for f in found[:50])
        more = f"\n  … and {len(found) - 50} more" if len(found) > 50 else ""
        raise AssertionError(f"secrets or unescaped control characters written to logs ({len(found)}):\n"
                             f"{listed}{more}")
