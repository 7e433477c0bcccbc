"""Compare two commits on this machine, interleaved, each on a fresh `harmon dev` of its own: the issue's benchmark.

    python benchmarks/compare.py 458d5f7 HEAD [--rounds 3] [--checkouts 500] [--seconds 20] [--idle-s 60]
                                 [--json out.json] [--work-dir DIR] [--quick]

Each side is built once in its own git worktree and virtualenv (`pip install -e .` of that commit) under
`--work-dir` (default: a folder in the temp dir), and both are reused by later invocations while the commit
matches. Rounds are interleaved (BASE HEAD BASE HEAD ...). Each run starts a fresh `harmon dev` of its side on a
fresh data dir (free ports: `harmon bench --data-dir` finds the stack through its credentials.json), waits
until every service answers /readyz, and then, in this order:

    idle      no traffic for --idle-s seconds: the stack's CPU as % of one core (/proc, libs/stack/cpu.py)
    1 shopper HEAD's `harmon bench --shoppers 1 --checkouts N`: checkout p50/p99, cart, line, price p50
    32        HEAD's `harmon bench --shoppers 32 --seconds S`: orders/s, errors, CPU ms per order
    RSS       the largest VmRSS of a Python service process right after the 32-shopper run

then stops it (SIGINT, and more only if it lingers). The load client is HEAD's `harmon bench` for both sides.
It prints every run as it goes, the medians per side with HEAD/BASE, and each target of TARGETS below with
PASS or FAIL; it exits 1 when any target fails (2: it could not run).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/compare.py` puts benchmarks/ first, not the project
    sys.path.insert(0, str(ROOT))

# --- the targets (HEAD against BASE), in one place ------------------------------------------------------------
# kind: "ratio>=" / "ratio<=" compare median(HEAD) / median(BASE) with the bound; "head<=" the median of HEAD's
# runs; "every head<=" every single HEAD run (its worst one).


@dataclass(frozen=True)
class Target:
    metric: str
    kind: str
    bound: float
    what: str


TARGETS: tuple[Target, ...] = (
    Target("orders_per_s_32", "ratio>=", 2.5, "orders/s at 32 shoppers"),
    Target("errors_32", "every head<=", 0, "errors at 32 shoppers, every HEAD run"),
    Target("cpu_ms_per_order_32", "ratio<=", 0.4, "CPU per order at 32 shoppers"),
    Target("checkout_p50_1", "ratio<=", 0.5, "checkout p50 at 1 shopper"),
    Target("checkout_p99_1", "ratio<=", 0.5, "checkout p99 at 1 shopper"),
    Target("cart_p50_1", "ratio<=", 0.6, "cart p50 at 1 shopper"),
    Target("line_1_p50_1", "ratio<=", 0.6, "first line p50 at 1 shopper"),
    Target("line_2_p50_1", "ratio<=", 0.6, "second line p50 at 1 shopper"),
    Target("price_p50_1", "ratio<=", 0.6, "price p50 at 1 shopper"),
    Target("idle_pct", "head<=", 15.0, "idle CPU, % of one core"),
    Target("idle_pct", "ratio<=", 0.35, "idle CPU"),
    Target("max_rss_mib", "every head<=", 120.0, "largest Python service RSS (MiB) after 32 shoppers, every HEAD run"),
)

# what each run reports, in the order of the medians table: metric -> (label, unit)
METRICS: dict[str, tuple[str, str]] = {
    "idle_pct": ("idle CPU", "% core"),
    "checkout_p50_1": ("checkout p50 @1", "ms"),
    "checkout_p99_1": ("checkout p99 @1", "ms"),
    "cart_p50_1": ("cart p50 @1", "ms"),
    "line_1_p50_1": ("line 1 p50 @1", "ms"),
    "line_2_p50_1": ("line 2 p50 @1", "ms"),
    "price_p50_1": ("price p50 @1", "ms"),
    "checkouts_1": ("checkouts @1", ""),
    "errors_1": ("errors @1", ""),
    "orders_per_s_32": ("orders/s @32", ""),
    "errors_32": ("errors @32", ""),
    "cpu_ms_per_order_32": ("CPU/order @32", "ms"),
    "max_rss_mib": ("max service RSS", "MiB"),
}

SIDES = ("BASE", "HEAD")
MIN_ROUNDS = 3
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0
MIB = 1024 * 1024


# --- the pure parts (tests/unit/test_compare.py) --------------------------------------------------------------

def schedule(rounds: int) -> list[tuple[int, str]]:
    """(round, side) in the order they run: BASE HEAD BASE HEAD ..., so drift on the machine hits both alike."""
    return [(r, side) for r in range(1, rounds + 1) for side in SIDES]


def median(values: list[float | None]) -> float | None:
    """The median of the figures there are (a failed run has none); None when there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(head: float | None, base: float | None) -> float | None:
    """HEAD / BASE, or None when either is missing or BASE is zero (no ratio to judge)."""
    if head is None or base is None or base == 0:
        return None
    return head / base


def verdict(target: Target, base_runs: list[dict[str, Any]], head_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether `target` holds for these runs' figures; a missing figure (a failed run) fails it."""
    head_values = [run.get(target.metric) for run in head_runs]
    base_median, head_median = median([run.get(target.metric) for run in base_runs]), median(head_values)
    out: dict[str, Any] = {"metric": target.metric, "kind": target.kind, "bound": target.bound, "what": target.what,
                           "base": base_median, "head": head_median}
    if target.kind in ("ratio>=", "ratio<="):
        value = ratio(head_median, base_median)
        ok = value is not None and (value >= target.bound if target.kind == "ratio>=" else value <= target.bound)
    elif target.kind == "head<=":
        value = head_median
        ok = value is not None and value <= target.bound
    elif target.kind == "every head<=":
        missing = not head_values or any(v is None for v in head_values)
        value = None if missing else max(head_values)
        ok = value is not None and value <= target.bound
    else:
        raise ValueError(f"unknown target kind {target.kind!r}")
    out.update(value=value, passed=bool(ok))
    return out


def verdicts(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_side = {side: [r["figures"] for r in runs if r["side"] == side] for side in SIDES}
    return [verdict(t, by_side["BASE"], by_side["HEAD"]) for t in TARGETS]


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def describe_verdict(v: dict[str, Any]) -> str:
    mark = "PASS" if v["passed"] else "FAIL"
    if v["kind"].startswith("ratio"):
        sign = "≥" if v["kind"] == "ratio>=" else "≤"
        got = f"HEAD {_num(v['head'])} / BASE {_num(v['base'])} = {_num(v['value'], 2)}×"
        return f"{mark}  {v['what']}: {got} (target {sign} {v['bound']}× BASE)"
    worst = "worst HEAD run" if v["kind"] == "every head<=" else "HEAD median"
    return f"{mark}  {v['what']}: {worst} {_num(v['value'])} (target ≤ {v['bound']:g})"


def figures_of(idle: dict[str, Any], one: dict[str, Any], many: dict[str, Any], rss: dict[str, Any]) -> dict[str, Any]:
    """One run's figures from the idle reading, the two `harmon bench --json` levels and the RSS reading."""
    ms = one["ms"]
    return {
        "idle_pct": idle["pct"],
        "checkout_p50_1": ms["checkout"]["p50"], "checkout_p99_1": ms["checkout"]["p99"],
        "cart_p50_1": ms["cart"]["p50"], "line_1_p50_1": ms["line_1"]["p50"], "line_2_p50_1": ms["line_2"]["p50"],
        "price_p50_1": ms["price"]["p50"], "checkouts_1": ms["checkout"]["n"], "errors_1": sum(one["errors"].values()),
        "orders_per_s_32": many["orders_per_s"], "errors_32": sum(many["errors"].values()),
        "cpu_ms_per_order_32": round(sum(many["cpu_ms_per_order"].values()), 1) if many["cpu_ms_per_order"] else None,
        "max_rss_mib": rss["max_mib"],
    }


# --- output -----------------------------------------------------------------------------------------------------

class Say:
    """Every line names both commits."""

    def __init__(self) -> None:
        self.tag = ""

    def __call__(self, text: str = "", stream: Any = None) -> None:
        for line in (text.splitlines() or [""]):
            print(f"{self.tag}{line}", file=stream or sys.stdout, flush=True)


say = Say()


def run_line(run: dict[str, Any]) -> str:
    f, head = run["figures"], f"round {run['round']} {run['side']} {run['sha'][:7]}"
    if run.get("error"):
        return f"{head}: FAILED: {run['error']}"
    return (f"{head}: idle {_num(f['idle_pct'])} % core | 1 shopper: checkout p50 {_num(f['checkout_p50_1'])} "
            f"p99 {_num(f['checkout_p99_1'])} ms, cart {_num(f['cart_p50_1'])}, line {_num(f['line_1_p50_1'])}/"
            f"{_num(f['line_2_p50_1'])}, price {_num(f['price_p50_1'])} ms (n={f['checkouts_1']}, errors "
            f"{f['errors_1']}) | 32 shoppers: {_num(f['orders_per_s_32'])} orders/s, errors {f['errors_32']}, CPU "
            f"{_num(f['cpu_ms_per_order_32'], 0)} ms/order | max RSS {_num(f['max_rss_mib'])} MiB "
            f"({run.get('rss', {}).get('max_service', '-')})"
            + (f" | planned broker restarts {run['planned_broker_restarts']}" if run.get("planned_broker_restarts")
               else ""))


def medians_table(runs: list[dict[str, Any]]) -> str:
    counts = {side: sum(1 for r in runs if r["side"] == side and not r.get("error")) for side in SIDES}
    rows = [f"{'median of runs':<22} {'BASE (' + str(counts['BASE']) + ')':>12} {'HEAD (' + str(counts['HEAD']) + ')':>12} "
            f"{'HEAD/BASE':>10}"]
    for metric, (label, unit) in METRICS.items():
        base = median([r["figures"].get(metric) for r in runs if r["side"] == "BASE"])
        head = median([r["figures"].get(metric) for r in runs if r["side"] == "HEAD"])
        r = ratio(head, base)
        rows.append(f"{(label + (' ' + unit if unit else '')):<22} {_num(base):>12} {_num(head):>12} "
                    f"{(_num(r, 2) + '×') if r is not None else '-':>10}")
    return "\n".join(rows)


# --- building a side --------------------------------------------------------------------------------------------

class CannotRun(Exception):
    """Something that stops the comparison as a whole (exit 2)."""


class RunFailed(Exception):
    """One run could not be measured; its figures stay missing and the targets they feed fail."""


def git(*args: str, cwd: Path = ROOT) -> str:
    # safe.directory: as root in a checkout another user owns, git refuses to read it otherwise
    done = subprocess.run(["git", "-c", f"safe.directory={cwd}", "-C", str(cwd), *args],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise CannotRun(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def clean_env(venv: Path | None = None) -> dict[str, str]:
    """This environment without the project's own venv, HARMON_* settings (a HARMON_DATABASE_URL would move the
    stack onto another server) or PYTHONPATH; with `venv`, that venv first on PATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HARMON_") and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    return env


@dataclass
class Side:
    label: str
    sha: str
    home: Path  # <work-dir>/<sha>

    @property
    def short(self) -> str:
        return self.sha[:7]

    @property
    def src(self) -> Path:
        return self.home / "src"

    @property
    def venv(self) -> Path:
        return self.home / "venv"

    @property
    def harmon(self) -> Path:
        return self.venv / "bin" / "harmon"

    @property
    def built_marker(self) -> Path:
        return self.venv / ".harmon-compare-built"


def work_dir(given: str | None) -> Path:
    if given:
        path = Path(given).absolute()
        path.mkdir(parents=True, exist_ok=True)
        return path
    path = Path(tempfile.gettempdir()) / f"harmon-compare-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    if path.stat().st_uid != os.getuid():  # the shared temp dir: never build in someone else's folder
        raise CannotRun(f"{path} belongs to another user; pass --work-dir")
    return path


def build(side: Side) -> None:
    """The side's worktree at its commit and a venv with `pip install -e .` of it; both reused when they match."""
    side.home.mkdir(parents=True, exist_ok=True)
    if (side.src / ".git").exists() and git("rev-parse", "HEAD", cwd=side.src) == side.sha:
        say(f"{side.label} {side.short}: worktree {side.src} (reused)")
    else:
        if side.src.exists():
            shutil.rmtree(side.src)
        # --force: a worktree of this path that was registered and then deleted with the temp dir is taken over
        git("worktree", "add", "--force", "--detach", str(side.src), side.sha)
        say(f"{side.label} {side.short}: worktree {side.src}")
    if side.harmon.exists() and side.built_marker.exists() and side.built_marker.read_text().strip() == side.sha:
        say(f"{side.label} {side.short}: venv {side.venv} (reused)")
        return
    shutil.rmtree(side.venv, ignore_errors=True)
    say(f"{side.label} {side.short}: building venv {side.venv} (pip install -e .) ...")
    for argv in ([sys.executable, "-m", "venv", str(side.venv)],
                 [str(side.venv / "bin" / "python"), "-m", "pip", "install", "-q", "-e", str(side.src)]):
        done = subprocess.run(argv, cwd=side.src, env=clean_env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise CannotRun(f"{side.label} {side.short}: {' '.join(argv)} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    if not side.harmon.exists():
        raise CannotRun(f"{side.label} {side.short}: no harmon command in {side.venv}")
    side.built_marker.write_text(side.sha + "\n")


def check_bench_client(head: Side) -> None:
    done = subprocess.run([str(head.harmon), "bench", "--help"], cwd=head.src, env=clean_env(head.venv),
                          capture_output=True, text=True)
    if "--checkouts" not in done.stdout:
        raise CannotRun(f"HEAD {head.short}'s harmon bench has no --checkouts (it drives both sides); "
                        "compare against a HEAD that has it")


# --- one run ----------------------------------------------------------------------------------------------------

def stack_processes(data_dir: Path) -> dict[int, str]:
    """pid -> part (a service's name, broker, postgres, supervisor) of the stack running on `data_dir`."""
    from libs.stack.cpu import BENCH, CpuMeter

    return {pid: part for pid, (part, _) in CpuMeter(data_dir).snapshot().items() if part != BENCH}


def health_port(pid: int, service: str, gateway_port: int) -> int | None:
    """The port a service answers /readyz on: the gateway's own, or HARMON_<SERVICE>_HEALTH_PORT it was given."""
    if service == "gateway":
        return gateway_port
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    wanted = f"HARMON_{service.upper()}_HEALTH_PORT=".encode()
    return next((int(v[len(wanted):]) for v in environ if v.startswith(wanted)), None)


def readyz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def not_ready(data_dir: Path, services: tuple[str, ...]) -> str:
    """What keeps the stack on `data_dir` from being ready ("" once every service answers /readyz with 200)."""
    creds_path = data_dir / "credentials.json"
    if not creds_path.exists():
        return "no credentials.json yet"
    gateway_port = int(json.loads(creds_path.read_text())["base_url"].rsplit(":", 1)[1])
    running = {part: pid for pid, part in stack_processes(data_dir).items() if part in services}
    if missing := [s for s in services if s not in running]:
        return f"no process of {', '.join(missing)}"
    answers = {s: (readyz(port) if (port := health_port(running[s], s, gateway_port)) else None) for s in services}
    return ", ".join(f"{s} /readyz {code or 'no answer'}" for s, code in answers.items() if code != 200)


class DevStack:
    """A `harmon dev` of one side on a fresh data dir, in a process group of its own."""

    def __init__(self, side: Side, services: tuple[str, ...]) -> None:
        self.side, self.services = side, services
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"harmon-compare-{side.short}-", dir="/tmp"))
        self.data_dir.chmod(0o711)  # as root PostgreSQL runs as `nobody`, which must get in
        self.out = self.data_dir / "harmon-dev.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen: dict[int, int | None] = {}  # pid -> start time of every stack process seen: none may outlive it
        self.exit_code: int | None = None

    def start(self) -> float:
        """Start it and wait until every service is ready; returns the seconds that took."""
        started = time.monotonic()
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen([str(self.side.harmon), "dev", "--data-dir", str(self.data_dir), "--port", "0"],
                                         cwd=self.side.src, env=clean_env(self.side.venv), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        last = "not started"
        while time.monotonic() - started < READY_TIMEOUT_S:
            if self.proc.poll() is not None:
                raise RunFailed(f"harmon dev exited with {self.proc.returncode} while starting:\n{self.tail()}")
            # credentials.json is written once the demo data is in, after the stack's own readiness wait
            last = not_ready(self.data_dir, self.services)
            if not last:
                self.note_processes()
                return time.monotonic() - started
            time.sleep(0.5)
        raise RunFailed(f"not ready within {READY_TIMEOUT_S:.0f} s ({last}):\n{self.tail()}")

    def note_processes(self) -> None:
        self.seen.update({pid: _started_at(pid) for pid in stack_processes(self.data_dir)})

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.out.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGINT (Ctrl-C), then SIGTERM, then SIGKILL to its group; any stack process left is killed too.
        A Ctrl-C meanwhile waits until this is done (at most ≈ 90 s), so it cannot leave the stack behind."""
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            self._stop()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)

    def _stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            self.note_processes()
        for sig, wait_s in ((signal.SIGINT, STOP_TIMEOUT_S), (signal.SIGTERM, 15.0)):
            if proc.poll() is not None:
                break
            proc.send_signal(sig)
            try:
                proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                say(f"harmon dev of {self.side.label} {self.side.short} still running {wait_s:.0f} s after "
                    f"{sig.name}", sys.stderr)
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
        self.exit_code = proc.returncode
        # its children run in sessions of their own and die with it (parent-death signal); make sure of it
        def left() -> list[int]:  # still alive, and still the same process (not a pid used again since)
            return [pid for pid, t in self.seen.items() if t is not None and _started_at(pid) == t and _alive(pid)]

        deadline = time.monotonic() + 10
        while left() and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in left():
            say(f"harmon dev of {self.side.label} {self.side.short} left pid {pid} running: killed", sys.stderr)
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def discard(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _started_at(pid: int) -> int | None:
    """A process's start time (clock ticks since boot; with the pid, it names one process), or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rindex(")") + 2:].split()[19])  # field 22; the name in parentheses may hold spaces


def _alive(pid: int) -> bool:
    from libs.stack.processes import alive

    return alive(pid)


def measure_idle(data_dir: Path, seconds: float) -> dict[str, Any]:
    """The stack's CPU (all its processes, not this script's) over `seconds` of no traffic, as % of one core."""
    from libs.stack.cpu import BENCH, CpuMeter

    meter = CpuMeter(data_dir)
    if not meter.available:
        raise RunFailed("no CPU figures (needs Linux /proc and the stack's stack.lock)")
    before, t0 = meter.snapshot(), time.monotonic()
    time.sleep(seconds)
    after, elapsed = meter.snapshot(), time.monotonic() - t0
    used = {part: s for part, s in CpuMeter.since(before, after).items() if part != BENCH}
    parts = {part: round(s / elapsed * 100, 2) for part, s in sorted(used.items(), key=lambda kv: -kv[1])}
    return {"seconds": round(elapsed, 2), "pct": round(sum(used.values()) / elapsed * 100, 2), "parts_pct": parts}


def _planned_restarts(out: Path) -> int:
    """How often `harmon dev` restarted its broker on purpose (its bound, libs/stack/supervisor.py), from its output."""
    try:
        return out.read_text(errors="replace").count("every service is quiet: restarting the broker")
    except OSError:
        return 0


def bench(head: Side, data_dir: Path, name: str, options: list[str], timeout_s: float) -> dict[str, Any]:
    """HEAD's `harmon bench` against the stack on `data_dir`; its one level from --json."""
    out, printed = data_dir / f"bench-{name}.json", data_dir / f"bench-{name}.out"
    with open(printed, "wb") as f:
        try:
            done = subprocess.run([str(head.harmon), "bench", "--data-dir", str(data_dir), *options, "--json", str(out)],
                                  cwd=head.src, env=clean_env(head.venv), stdin=subprocess.DEVNULL, stdout=f,
                                  stderr=subprocess.STDOUT, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RunFailed(f"harmon bench {' '.join(options)} did not end within {timeout_s:.0f} s") from None
    if done.returncode != 0 or not out.exists():
        text = printed.read_text(errors="replace").splitlines()[-25:]
        raise RunFailed(f"harmon bench {' '.join(options)} exited with {done.returncode}:\n" + "\n".join(text))
    [level] = json.loads(out.read_text())["levels"]
    return level


def service_rss(data_dir: Path, services: tuple[str, ...]) -> dict[str, Any]:
    """VmRSS of each Python service process of the stack now; the largest and whose."""
    from libs.stack.processes import resident_bytes

    rss: dict[str, float] = {}
    for pid, part in stack_processes(data_dir).items():
        if part in services and (b := resident_bytes(pid)) is not None:
            rss[part] = max(rss.get(part, 0.0), round(b / MIB, 1))
    if not rss:
        raise RunFailed("no service process to read VmRSS of")
    worst = max(rss, key=lambda s: rss[s])
    return {"mib": dict(sorted(rss.items(), key=lambda kv: -kv[1])), "max_mib": rss[worst], "max_service": worst}


def run_once(side: Side, head: Side, args: argparse.Namespace, round_no: int, services: tuple[str, ...]) -> dict[str, Any]:
    run: dict[str, Any] = {"round": round_no, "side": side.label, "sha": side.sha, "figures": {}}
    stack = DevStack(side, services)
    run["data_dir"] = str(stack.data_dir)
    t0 = time.monotonic()
    try:
        run["ready_s"] = round(stack.start(), 1)
        run["idle"] = measure_idle(stack.data_dir, args.idle_s)
        one = bench(head, stack.data_dir, "1", ["--shoppers", "1", "--checkouts", str(args.checkouts)],
                    timeout_s=600 + args.checkouts * 10)
        run["bench_1"] = one
        stack.note_processes()
        many = bench(head, stack.data_dir, "32", ["--shoppers", "32", "--seconds", str(args.seconds)],
                     timeout_s=600 + args.seconds * 3)
        run["bench_32"] = many
        run["rss"] = service_rss(stack.data_dir, services)
        run["figures"] = figures_of(run["idle"], one, many, run["rss"])
    except RunFailed as exc:
        run["error"] = str(exc)
    finally:  # also on Ctrl-C: the stack is stopped, and its data dir kept only for a failed run
        stack.stop()
        # harmon dev's bound on the embedded broker restarts it (holding requests) mid-measurement, if it grows
        run["planned_broker_restarts"] = _planned_restarts(stack.out)
        run["stop_exit_code"] = stack.exit_code
        run["seconds"] = round(time.monotonic() - t0, 1)
        if not run.get("error"):
            stack.discard()
            run.pop("data_dir")
    if run.get("error"):
        say(f"round {round_no} {side.label} {side.short}: data dir kept: {stack.data_dir} (logs/, harmon-dev.out)")
    return run


# --- the whole comparison ---------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python benchmarks/compare.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", metavar="BASE", help="the commit to compare against (e.g. 458d5f7)")
    p.add_argument("head", metavar="HEAD", help="the commit measured (HEAD: this checkout's HEAD commit)")
    p.add_argument("--rounds", type=int, default=MIN_ROUNDS, help=f"BASE+HEAD pairs, interleaved (default and "
                                                                   f"minimum {MIN_ROUNDS}, unless --quick)")
    p.add_argument("--checkouts", type=int, default=500, help="checkouts at 1 shopper per run (default: 500)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds at 32 shoppers per run (default: 20)")
    p.add_argument("--idle-s", type=float, default=60.0, help="seconds of idle CPU measured per run (default: 60)")
    p.add_argument("--json", metavar="FILE", help="write every run's raw figures and the verdicts here")
    p.add_argument("--work-dir", metavar="DIR", help="where the worktrees and venvs are built and kept "
                                                     "(default: harmon-compare-<uid> in the temp dir)")
    p.add_argument("--quick", action="store_true", help="allow fewer than 3 rounds (a trial, not the figures)")
    args = p.parse_args(argv)
    if args.rounds < 1 or (args.rounds < MIN_ROUNDS and not args.quick):
        p.error(f"--rounds must be at least {MIN_ROUNDS} (or at least 1 with --quick)")
    if args.checkouts < 1 or args.seconds <= 0 or args.idle_s <= 0:
        p.error("--checkouts, --seconds and --idle-s must be positive")
    return args


def report(args: argparse.Namespace, base: Side, head: Side, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "base": {"ref": args.base, "sha": base.sha}, "head": {"ref": args.head, "sha": head.sha},
        "settings": {"rounds": args.rounds, "checkouts": args.checkouts, "seconds": args.seconds,
                     "idle_s": args.idle_s, "quick": args.quick},
        "machine": {"cpus": os.cpu_count(), "load_before": list(os.getloadavg()), "uid": os.getuid()},
        "targets": [t.__dict__ for t in TARGETS],
        "runs": runs,
    }


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM as Ctrl-C, and Ctrl-C even when started in the background (where the shell ignores it):
    # either way the running stack is stopped first
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        from libs.stack.supervisor import SERVICES

        base_sha = git("rev-parse", "--verify", f"{args.base}^{{commit}}")
        head_sha = git("rev-parse", "--verify", f"{args.head}^{{commit}}")
        work = work_dir(args.work_dir)
        base, head = Side("BASE", base_sha, work / base_sha), Side("HEAD", head_sha, work / head_sha)
        say.tag = f"[BASE {base.short} HEAD {head.short}] "
        say(f"load average {os.getloadavg()[0]:.2f}; {args.rounds} round(s), {args.checkouts} checkouts at 1 shopper, "
            f"{args.seconds:g} s at 32, {args.idle_s:g} s idle{' (quick: not the figures)' if args.quick else ''}")
        for side in (base, head):
            build(side)
        check_bench_client(head)
    except CannotRun as exc:
        say(f"compare: {exc}", sys.stderr)
        return 2
    data = report(args, base, head, [])
    out = Path(args.json) if args.json else None
    try:
        for round_no, label in schedule(args.rounds):
            side = base if label == "BASE" else head
            say(f"round {round_no} {label} {side.short}: starting harmon dev ...")
            run = run_once(side, head, args, round_no, SERVICES)  # its stack is stopped whatever happens
            data["runs"].append(run)
            say(run_line(run))
            if out:
                out.write_text(json.dumps(data, indent=2) + "\n")  # so far, in case the rest is interrupted
    except KeyboardInterrupt:
        say(f"interrupted after {len(data['runs'])} run(s){f'; they are in {out}' if out else ''}", sys.stderr)
        return 130
    say()
    say(medians_table(data["runs"]))
    say()
    data["verdicts"] = verdicts(data["runs"])
    for v in data["verdicts"]:
        say(describe_verdict(v))
    failed = [r for r in data["runs"] if r.get("error")]
    data["passed"] = all(v["passed"] for v in data["verdicts"]) and not failed
    if failed:
        say(f"{len(failed)} run(s) failed: their figures are missing")
    say(f"{'all targets met' if data['passed'] else 'targets NOT met'}")
    if out:
        out.write_text(json.dumps(data, indent=2) + "\n")
        say(f"wrote {out}")
    return 0 if data["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
