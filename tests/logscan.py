"""Finds full API keys, shopper tokens (JWTs) and unescaped control characters in the log files a test run wrote,
and checks that our processes' logs are JSON records with the fields a log store is promised.

A key may be logged only as its prefix + last four (`hk_test_sec_…AbCd`); a token never. What is
found is reported by file and line, masked the same way, so the report does not leak it again.
A line may hold no control character but its own newline: the services' formatter escapes them
(libs/runtime/logs.py), so one that got through could start or fake a record. A line that is a JSON
object is searched twice: as written, and its decoded strings (a JSON escape must not hide a key).

`record_problems` / `assert_json_logs`: every line of a service's log is one JSON object with `ts`
(UTC ISO-8601), `level`, `service`, `instance`, `logger`, `message`, and the context fields, where
present, of the right type (docs/operations.md, "Logs").
"""

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

# hk_<mode>_<kind>_ and at least 20 key characters: a real key has 43, a hint has none (it has "…")
API_KEY = re.compile(r"hk_(?:test|live)_(?:sec|pub)_[A-Za-z0-9_-]{20,}")
# header.payload.signature, base64url; the header of any JWT starts `{"` → eyJ; alg none leaves the signature empty
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
# a webhook endpoint's signing secret (notifier): whsec_ and 43 characters
WEBHOOK_SECRET = re.compile(r"whsec_[A-Za-z0-9_-]{20,}")
LOG_SUFFIXES = (".log", ".stderr", ".stdout")
# C0 but the newline that ends the line, DEL, C1, and the Unicode line/paragraph separators
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
CONTROL_CHARACTER = "control character"
MALFORMED_RECORD = "malformed record"

# what every record has, and what it has where known (with their types)
REQUIRED_FIELDS = ("ts", "level", "service", "instance", "logger", "message")
CONTEXT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "request_id": str, "trace_id": str, "span_id": str, "tenant_id": str, "livemode": bool, "message_id": str,
    "topic": str, "partition": int, "offset": int, "exc_info": str, "stack_info": str,
}
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    what: str  # "API key", "token" or "control character"
    masked: str

    def __str__(self) -> str:
        if self.what == CONTROL_CHARACTER:
            return f"{self.path}:{self.line}: an unescaped {self.what} ({self.masked})"
        if self.what == MALFORMED_RECORD:
            return f"{self.path}:{self.line}: a {self.what}: {self.masked}"
        return f"{self.path}:{self.line}: a full {self.what} ({self.masked})"



def mask(secret: str) -> str:
    if secret.startswith("hk_"):
        prefix = "_".join(secret.split("_", 3)[:3])
        return f"{prefix}_…{secret[-4:]}"
    if secret.startswith("whsec_"):
        return f"whsec_…({len(secret)} characters)"
    return f"eyJ…({len(secret)} characters)"


def json_object(line: str) -> dict | None:
    """The line as a JSON object, or None if it is none."""
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _secrets_in(line: str) -> list[tuple[str, str]]:
    """(what, masked) of each key and token in the line, as written and, in a JSON record, decoded."""
    def search(text: str) -> list[tuple[str, str]]:
        return [(what, mask(m.group())) for what, pattern in (("API key", API_KEY), ("token", JWT),
                                                                 ("webhook secret", WEBHOOK_SECRET))
                for m in pattern.finditer(text)]

    found = search(line)
    record = json_object(line)
    for text in _strings(record) if record is not None else ():
        found += [f for f in search(text) if f not in found]  # only what the escapes hid
    return found


def scan_text(text: str, path: Path = Path("-")) -> list[Finding]:
    found = []
    # PostgreSQL starts each continuation line of a multi-line statement with a tab, so that it cannot
    # pass for a record of its own: that one tab is its format, any other control character is not
    continuation = "\t" if path.name == "postgres.log" else None
    # split on the newline only: splitlines() would also end a line at CR, VT, FF, NEL… and hide them
    for number, line in enumerate(text.split("\n"), 1):
        found += [Finding(path, number, what, masked) for what, masked in _secrets_in(line)]
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


# -- our processes' records ----------------------------------------------------------------------

def _utc_iso(ts: object) -> bool:
    if not isinstance(ts, str) or not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)", ts):
        return False
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).utcoffset() == timedelta(0)
    except ValueError:
        return False


def record_problems(line: str) -> list[str]:
    """What is wrong with one line of a service's log as a record (nothing: it is one). Never quotes a value."""
    record = json_object(line)
    if record is None:
        return ["not a JSON object"]
    problems = [f"no {name!r}" for name in REQUIRED_FIELDS if name not in record]
    problems += [f"{name!r} is not a string" for name in REQUIRED_FIELDS
                 if name in record and not isinstance(record[name], str)]
    if "ts" in record and not _utc_iso(record["ts"]):
        problems.append("'ts' is not a UTC ISO-8601 time")
    if record.get("level") not in LEVELS:
        problems.append("'level' is not a logging level")
    for name, kind in CONTEXT_FIELDS.items():
        value = record.get(name)
        # bool is an int: a partition or offset must not be one
        if name in record and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            problems.append(f"{name!r} is not a {getattr(kind, '__name__', kind)}")
    if "partition" in record and "topic" not in record:
        problems.append("a 'partition' without its 'topic'")
    return problems


def json_log_findings(path: Path) -> list[Finding]:
    """Every line of `path` that is no well-formed record (the last one may be unfinished: a process still
    writing), and every secret or unescaped control character in it."""
    text = path.read_bytes().decode(errors="replace")
    found = scan_text(text, path)
    lines = text.split("\n")
    for number, line in enumerate(lines[:-1], 1):
        found += [Finding(path, number, MALFORMED_RECORD, problem) for problem in record_problems(line)]
    return found


def read_records(path: Path) -> list[dict]:
    """The records of a service's log (its finished lines), for a test that looks for one."""
    text = path.read_bytes().decode(errors="replace")
    return [r for r in map(json_object, text.split("\n")[:-1]) if r is not None]


def assert_json_logs(*paths: Path) -> None:
    """Each file is a log of our processes: JSON records only, no secret, no unescaped control character."""
    found = [f for path in paths for f in json_log_findings(path)]
    if found:
        listed = "\n".join(f"  {f}" for f in found[:50])
        more = f"\n  … and {len(found) - 50} more" if len(found) > 50 else ""
        raise AssertionError(f"log lines that are no clean JSON record ({len(found)}):\n{listed}{more}")
