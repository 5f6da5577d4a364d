"""Where a Pulumi operation spends its time, read from the engine's own log.

`pulumi preview --logtostderr -v=9 --logflow` prints one glog line per engine step
with a microsecond timestamp. `phases()` turns such a log into named spans: CLI
start-up, the language host's plugin discovery (GetRequiredPlugins), the program's
start-up (Run until its first resource), every StackReference read, every plugin
launch, every provider Diff (dbfleet's dynamic provider runs its read-only `check`
script there) and the engine's tear-down. Pure text processing, unit-tested.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

_LINE = re.compile(r"^I(\d{4}) (\d\d:\d\d:\d\d\.\d{6})\s+(\d+) [\w.]+:\d+\] (.*)$")
_READ_START = re.compile(
    r"applying step read on urn:\S+::pulumi:pulumi:StackReference::(\S+) \(preview"
)
_READ_END = re.compile(r"step read on urn:\S+::pulumi:pulumi:StackReference::(\S+) retired")
_LAUNCH = re.compile(r"Launching plugin '([^']+)'")
_PLUGIN_READY = re.compile(r"Provider\[([^,]+), [^\]]+\]\.GetPluginInfo\(\) success")
_ANALYZER_READY = re.compile(
    r"analyzer\[([^\]]+)\]\.GetPluginInfo\(\) success|GetAnalyzerInfo\(\) success"
)
_DIFF_START = re.compile(r"Provider\[pulumi-python, [^\]]+\]\.Diff\((urn:[^,]+),[^)]*\): executing")
_DIFF_END = re.compile(r"Provider\[pulumi-python, [^\]]+\]\.Diff\((urn:[^,]+),[^)]*\) success")


@dataclass
class Span:
    name: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass
class Timeline:
    """Spans of one engine run, in seconds since the first log line."""

    total: float = 0.0  # first to last engine log line
    plugins: float = 0.0  # GetRequiredPlugins (the Python host runs `pip list`)
    program_start: float = 0.0  # Run() until the program's first resource or read
    program_run: float = 0.0  # Run() until it returns (the whole program)
    stack_refs: list[Span] = field(default_factory=list)
    launches: list[Span] = field(default_factory=list)
    diffs: list[Span] = field(default_factory=list)
    before_update: float = 0.0  # first log line to "Starting Update" (stack + secrets load)
    after_run: float = 0.0  # Run() returned until the update completes

    @property
    def stack_ref_seconds(self) -> float:
        return sum(s.seconds for s in self.stack_refs)

    @property
    def diff_seconds(self) -> float:
        return sum(s.seconds for s in self.diffs)

    def launch_seconds(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.launches:
            out[s.name] = out.get(s.name, 0.0) + s.seconds
        return out

    def launch_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.launches:
            out[s.name] = out.get(s.name, 0) + 1
        return out

    @property
    def diff_span(self) -> float:
        """Wall time from the first Diff to the last (Diffs may overlap)."""
        if not self.diffs:
            return 0.0
        return max(s.end for s in self.diffs) - min(s.start for s in self.diffs)

    def to_json(self) -> dict:
        return {
            "total": self.total,
            "before_update": self.before_update,
            "plugins": self.plugins,
            "program_start": self.program_start,
            "program_run": self.program_run,
            "stack_refs": {s.name: s.seconds for s in self.stack_refs},
            "stack_ref_seconds": self.stack_ref_seconds,
            # A plugin may be launched more than once (Pulumi v3.79.0 starts the dynamic
            # provider twice in a preview: once to check its config, once to serve).
            "launches": self.launch_seconds(),
            "launch_counts": self.launch_counts(),
            "diffs": len(self.diffs),
            "diff_seconds": self.diff_seconds,
            "diff_span": self.diff_span,
            "after_run": self.after_run,
        }


# What `keep()` writes of a line: the part before any dump of property values.
_VALUES = re.compile(r"(: inputs=|\(inputs=|, props=|props=fields|: value=|\]: |with args: )")


def keep(text: str) -> str:
    """The engine log as kept on disk: only the lines `phases()` reads, each cut before
    any property values. At -v=9 the engine prints every resource input, secrets
    included, in plaintext; none of that may stay in a file."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        # The first line is the clock's zero and names the engine's pid.
        if not m or (out and not _wanted(m.group(4))):
            continue
        cut = _VALUES.search(line, m.start(4))
        out.append(line[: cut.start()] if cut else line)
    return "\n".join(out) + ("\n" if out else "")


def _wanted(msg: str) -> bool:
    if "Marshaling property" in msg or "Unmarshaling property" in msg or "eventSink::" in msg:
        return False
    return bool(
        "*** Starting Update" in msg
        or "*** Update(" in msg
        or "GetRequiredPlugins(" in msg
        or ".Run(" in msg
        or "ResourceMonitor.RegisterResource received" in msg
        or msg.startswith("reading resource:")
        or _READ_START.search(msg)
        or _READ_END.search(msg)
        or _LAUNCH.search(msg)
        or _PLUGIN_READY.search(msg)
        or _ANALYZER_READY.search(msg)
        or _DIFF_START.search(msg)
        or _DIFF_END.search(msg)
    )


def _seconds(day: str, clock: str) -> float:
    t = datetime.strptime(clock, "%H:%M:%S.%f")
    # Days only matter across midnight; MMDD is enough for ordering within a run.
    return int(day[2:]) * 86400 + t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


def parse(text: str) -> list[tuple[float, int, str]]:
    """(seconds, pid, message) for each glog line."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            out.append((_seconds(m.group(1), m.group(2)), int(m.group(3)), m.group(4)))
    return out


# What the engine's log says when a phase of its run starts or ends: (mark, test).
_MARKS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("update", lambda m: "*** Starting Update" in m),
    ("plugins_start", lambda m: "GetRequiredPlugins(" in m and m.endswith("executing")),
    ("plugins_end", lambda m: "GetRequiredPlugins(" in m and " success" in m),
    ("run_start", lambda m: ".Run(" in m and m.endswith("executing")),
    ("run_end", lambda m: ".Run(" in m and " success" in m),
)


def _note_mark(marks: dict[str, float], t: float, msg: str) -> None:
    """The first time of every phase mark; the last time of `complete`."""
    for name, test in _MARKS:
        if test(msg):
            marks.setdefault(name, t)
            break
    else:
        if "*** Update(" in msg and "complete ***" in msg:
            marks["complete"] = t
    registers = "ResourceMonitor.RegisterResource received" in msg or msg.startswith(
        "reading resource:"
    )
    if registers and "run_start" in marks:
        marks.setdefault("first", t)


def _note_span(tl: Timeline, started: dict[str, dict[str, float]], t: float, msg: str) -> None:
    """Opens or closes a span: a stack read, a plugin launch, a resource diff."""
    reads, launches, diffs = started["reads"], started["launches"], started["diffs"]
    if m := _READ_START.search(msg):
        reads.setdefault(m.group(1), t)
    elif m := _READ_END.search(msg):
        if m.group(1) in reads:
            tl.stack_refs.append(Span(m.group(1), reads.pop(m.group(1)), t))
    elif m := _LAUNCH.search(msg):
        launches[m.group(1).split(" ")[0]] = t
    elif (m := _PLUGIN_READY.search(msg)) and m.group(1) in launches:
        tl.launches.append(Span(m.group(1), launches.pop(m.group(1)), t))
    elif m := _DIFF_START.search(msg):
        diffs[m.group(1)] = t
    elif (m := _DIFF_END.search(msg)) and m.group(1) in diffs:
        tl.diffs.append(Span(m.group(1).rsplit("::", 1)[-1], diffs.pop(m.group(1)), t))
    elif _ANALYZER_READY.search(msg):
        for name in [
            n for n in launches if "polic" in n or "analyzer" in n or n.startswith("policies")
        ]:
            tl.launches.append(Span(name, launches.pop(name), t))


def phases(text: str) -> Timeline:
    lines = parse(text)
    tl = Timeline()
    if not lines:
        return tl
    engine_pid = lines[0][1]
    lines = [ln for ln in lines if ln[1] == engine_pid]  # the engine's own lines
    t0 = lines[0][0]
    tl.total = lines[-1][0] - t0
    marks: dict[str, float] = {}
    started: dict[str, dict[str, float]] = {"reads": {}, "launches": {}, "diffs": {}}
    for ts, _pid, msg in lines:
        _note_mark(marks, ts - t0, msg)
        _note_span(tl, started, ts - t0, msg)
    tl.before_update = marks.get("update", 0.0)
    if "plugins_start" in marks and "plugins_end" in marks:
        tl.plugins = marks["plugins_end"] - marks["plugins_start"]
    if "run_start" in marks:
        if "first" in marks:
            tl.program_start = marks["first"] - marks["run_start"]
        if "run_end" in marks:
            tl.program_run = marks["run_end"] - marks["run_start"]
            tl.after_run = marks.get("complete", tl.total) - marks["run_end"]
    return tl
