"""Run metrics in the object store, and the agent's side of collecting them.

A run logs metrics by appending lines to `$CONJURE_METRICS_FILE` (the protocol is
documented in activities/conjure_metrics.py). The agent tails that file and
samples the container's hardware use; it stores points as chunks

    metrics/<N>/<time_ns>-u<end offset>.jsonl    the run's own metrics (file offset
                                                  up to which the chunk holds lines)
    metrics/<N>/<time_ns>-h<sample count>.jsonl   hardware samples

one JSON object a line: `{"n": name, "v": value, "i": index, "t": ns, "s": step, "o": offset}`
(`i` counts the values of that name, 1-based; `o` only for file points). Chunk
names carry where the agent got to, so an agent restarted mid-run resumes from
the store alone, and a reader drops file points it has already seen by offset.
Metrics never pass through workflow history; only the names a stop condition
watches are forwarded, in batches, to the run's stop-condition workflow.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conjure.infra.chunks import chunk_keys, chunk_lines
from conjure.infra.store import Store

MAX_NAME = 200
_CHUNK = re.compile(r"^(?P<t>\d+)-(?P<kind>[uh])(?P<n>\d+)\.jsonl$")

CPU = "hardware/cpu_percent"
MEMORY = "hardware/memory_mb"
GPU = "hardware/gpu_percent"
GPU_MEMORY = "hardware/gpu_memory_mb"


@dataclass
class Point:
    name: str
    value: float
    index: int
    t: int  # ns since the epoch
    step: int | None = None
    offset: int | None = None  # byte offset of the line in the metrics file

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "n": self.name,
            "v": _num_out(self.value),
            "i": self.index,
            "t": self.t,
        }
        if self.step is not None:
            d["s"] = self.step
        if self.offset is not None:
            d["o"] = self.offset
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Point:
        return cls(
            name=str(d["n"]),
            value=_num_in(d["v"]),
            index=int(d.get("i", 0)),
            t=int(d.get("t", 0)),
            step=d.get("s"),
            offset=d.get("o"),
        )


def _num_out(v: float) -> float | str:
    return v if math.isfinite(v) else str(v)


def _num_in(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError("a boolean is not a metric value")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and v.strip().lower() in (
        "nan",
        "inf",
        "+inf",
        "-inf",
        "infinity",
        "-infinity",
    ):
        return float(v)
    raise ValueError(f"{v!r} is not a number")


def parse_line(line: str) -> tuple[str, float, int | None, float | None]:
    """One line of the protocol -> (name, value, step, time in s or None); ValueError if bad."""
    text = line.strip()
    if text.startswith("{"):
        obj = json.loads(text)
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        name, value, step, when = (
            obj.get("name"),
            obj.get("value"),
            obj.get("step"),
            obj.get("time"),
        )
    else:
        parts = text.split()
        if len(parts) not in (2, 3):
            raise ValueError("expected NAME VALUE [STEP]")
        name, value = parts[0], parts[1]
        step = parts[2] if len(parts) == 3 else None
        when = None
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{parts[1]!r} is not a number") from None
    if (
        not isinstance(name, str)
        or not name
        or len(name) > MAX_NAME
        or any(c.isspace() for c in name)
    ):
        raise ValueError(f"bad metric name {name!r}")
    v = _num_in(value)
    if step is not None:
        try:
            step = int(step)
        except (TypeError, ValueError):
            raise ValueError(f"step {step!r} is not an integer") from None
    if when is not None and not isinstance(when, (int, float)):
        when = None
    return name, v, step, when


# --- reading ---------------------------------------------------------------------------


def read_metrics(store: Store, run_id: int) -> dict[str, list[Point]]:
    """Every stored point of a run, by name, in logged order."""
    out: dict[str, list[Point]] = {}
    seen_offsets: set[int] = set()
    for key in chunk_keys(store, f"metrics/{run_id}"):
        for raw in chunk_lines(store, key) or []:
            try:
                obj = json.loads(raw)
                if "n" in obj:
                    p = Point.from_json(obj)
                else:  # written by another tool in the protocol's own words
                    name, value, step, when = parse_line(raw)
                    if when is None and isinstance(obj.get("t"), (int, float)):
                        when = obj["t"]  # seconds, as the Python API reports them
                    p = Point(name, value, 0, int((when or 0) * 1e9), step)
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            if p.offset is not None:
                if p.offset in seen_offsets:
                    continue  # stored twice around an agent restart
                seen_offsets.add(p.offset)
            out.setdefault(p.name, []).append(p)
    for pts in out.values():
        pts.sort(key=lambda p: (p.index or 0, p.t))
        for n, p in enumerate(pts, 1):
            p.index = p.index or n
    return dict(sorted(out.items()))


def resume_point(store: Store, run_id: int) -> tuple[int, int]:
    """(file offset, hardware sample count) the store already holds for a run."""
    offset = samples = 0
    try:
        entries = store.ls(f"metrics/{run_id}")
    except Exception:
        return 0, 0
    for e in entries:
        m = _CHUNK.match(e.key.rsplit("/", 1)[-1])
        if not m:
            continue
        if m["kind"] == "u":
            offset = max(offset, int(m["n"]))
        else:
            samples = max(samples, int(m["n"]))
    return offset, samples


# --- hardware ----------------------------------------------------------------------------


def cpu_percent(prev: dict[str, Any] | None, cur: dict[str, Any]) -> float | None:
    """CPU use between two Docker stats samples, in percent of one CPU (200 = two CPUs)."""
    if not prev:
        return None
    try:
        cpu = (
            cur["cpu_stats"]["cpu_usage"]["total_usage"]
            - prev["cpu_stats"]["cpu_usage"]["total_usage"]
        )
        sys_ = cur["cpu_stats"]["system_cpu_usage"] - prev["cpu_stats"]["system_cpu_usage"]
        ncpu = cur["cpu_stats"].get("online_cpus") or len(
            cur["cpu_stats"]["cpu_usage"].get("percpu_usage") or [1]
        )
    except (KeyError, TypeError):
        return None
    if sys_ <= 0 or cpu < 0:
        return None
    return round(cpu / sys_ * ncpu * 100.0, 2)


def memory_mb(stats: dict[str, Any]) -> float | None:
    mem = stats.get("memory_stats") or {}
    usage = mem.get("usage")
    if usage is None:
        return None
    st = mem.get("stats") or {}
    # What `docker stats` shows: usage without the page cache.
    cache = st.get("total_inactive_file", st.get("inactive_file", st.get("cache", 0))) or 0
    return round(max(usage - cache, 0) / 2**20, 2)


def parse_nvidia_smi(text: str) -> tuple[float, float] | None:
    """`nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits`
    -> (mean utilisation %, total memory used MB) over the machine's GPUs."""
    utils, mems = [], []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2:
            continue
        try:
            utils.append(float(parts[0]))
            mems.append(float(parts[1]))
        except ValueError:
            continue
    if not utils:
        return None
    return round(sum(utils) / len(utils), 2), round(sum(mems), 2)


def gpu_sample() -> tuple[float, float] | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_nvidia_smi(out.stdout) if out.returncode == 0 else None


# --- the agent's pump ----------------------------------------------------------------------

# forward(points) -> False when the receiving workflow is gone; raises on a passing fault.
Forwarder = Callable[[list[Point]], bool]


# During a run's first minute hardware metrics are sampled at least this often, so a
# run of a few seconds has some; afterwards every `hardware_metrics_seconds`.
EARLY_SECONDS = 60.0
EARLY_SAMPLE_SECONDS = 2.0


@dataclass
class MetricsPump:
    """Tails a run's metrics file and samples hardware; stores and forwards points.

    `tick()` does one round; `start()` runs rounds on a thread until `close()`,
    which does a last round. State is rebuilt from the store and the file, so a
    pump started by a restarted agent goes on where the last one stopped.
    """

    store: Store
    run_id: int
    path: Path
    sample: Callable[[], dict[str, float]] | None = None  # hardware sampler
    sample_every: float = 10.0
    forward: Forwarder | None = None
    watch: set[str] = field(default_factory=set)
    note: Callable[[str], None] | None = None  # a line for the run's log
    tick_seconds: float = 1.0

    def __post_init__(self) -> None:
        self.offset, self.samples = resume_point(self.store, self.run_id)
        self.counts: dict[str, int] = {}
        self._recount()
        self.pending: list[Point] = []  # watched points not yet forwarded
        self.bad_lines = 0
        self._last_sample = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._last_chunk = 0

    def _recount(self) -> None:
        """Per-name counts of the file's lines up to the resumed offset."""
        if not self.offset or not self.path.exists():
            return
        with open(self.path, "rb") as f:
            data = f.read(self.offset)
        for raw in data.split(b"\n"):
            if not raw.strip():
                continue
            try:
                name, *_ = parse_line(raw.decode(errors="replace"))
            except ValueError:
                continue
            self.counts[name] = self.counts.get(name, 0) + 1

    def _chunk_key(self, kind: str, n: int) -> str:
        t = max(time.time_ns(), self._last_chunk + 1)
        self._last_chunk = t
        return f"metrics/{self.run_id}/{t:020d}-{kind}{n}.jsonl"

    def _read_file(self) -> tuple[list[Point], int]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return [], self.offset
        if size <= self.offset:
            return [], self.offset
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(min(size - self.offset, 8 << 20))
        end = data.rfind(b"\n")
        if end < 0:
            return [], self.offset  # only a partial line so far
        points = []
        pos = self.offset
        now = time.time_ns()
        for raw in data[: end + 1].split(b"\n")[:-1]:
            line_offset = pos
            pos += len(raw) + 1
            if not raw.strip():
                continue
            try:
                name, value, step, when = parse_line(raw.decode(errors="replace"))
            except ValueError as e:
                self.bad_lines += 1
                if self.note and self.bad_lines <= 5:
                    self.note(f"[conjure] metrics: skipped a bad line at offset {line_offset}: {e}")
                continue
            self.counts[name] = self.counts.get(name, 0) + 1
            t = int(when * 1e9) if when is not None else now
            points.append(Point(name, value, self.counts[name], t, step, line_offset))
        return points, self.offset + end + 1

    def _hardware(self) -> list[Point]:
        every = self.sample_every
        if time.monotonic() - self._started < EARLY_SECONDS:
            every = min(every, EARLY_SAMPLE_SECONDS)  # a short run still gets its figures
        if self.sample is None or time.monotonic() - self._last_sample < every:
            return []
        self._last_sample = time.monotonic()
        try:
            values = self.sample()
        except Exception:
            return []
        if not values:
            return []
        self.samples += 1
        now = time.time_ns()
        out = []
        for name, v in values.items():
            self.counts[name] = self.counts.get(name, 0) + 1
            out.append(Point(name, float(v), self.samples, now))
        return out

    def tick(self) -> None:
        with self._lock:
            file_points, new_offset = self._read_file()
            hw = self._hardware()
            self.pending += [p for p in file_points + hw if p.name in self.watch]
            # Forward before storing: a restart re-reads from the stored offset, and the
            # receiver drops what it has already counted; the other order could lose points.
            if self.pending and self.forward is not None:
                try:
                    if not self.forward(self.pending):
                        self.forward = None  # the receiver is finished: stop sending
                    self.pending = []
                except Exception:
                    if len(self.pending) > 100_000:
                        self.pending = self.pending[-100_000:]
            if file_points or new_offset != self.offset:
                self._put(self._chunk_key("u", new_offset), file_points)
                self.offset = new_offset
            if hw:
                self._put(self._chunk_key("h", self.samples), hw)

    def _put(self, key: str, points: list[Point]) -> None:
        data = "".join(json.dumps(p.to_json()) + "\n" for p in points).encode()
        self.store.put_bytes(key, data)

    def _interval(self) -> float:
        """Every tick_seconds for the first ten minutes, then every 5 s at most, so a
        long run makes thousands of chunks, not millions."""
        if time.monotonic() - self._started < 600:
            return self.tick_seconds
        return max(self.tick_seconds, 5.0)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval()):
            try:
                self.tick()
            except Exception:  # the store is briefly unreachable: try again next round
                pass

    def start(self) -> MetricsPump:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample = None
        try:
            self.tick()
        except Exception:
            pass


def restore_metrics_file(store: Store, run_id: int, path: Path) -> None:
    """A resumed run's metrics file on a new machine, rebuilt from the store up to where the
    last attempt's pump got (each stored line at its old offset, padded with spaces), so
    the new attempt's lines come after it: counts, indexes and offsets go on unbroken."""
    end, _ = resume_point(store, run_id)
    buf = bytearray(b" " * end)
    points = sorted(
        (p for pts in read_metrics(store, run_id).values() for p in pts if p.offset is not None),
        key=lambda p: p.offset or 0,
    )
    starts = [p.offset or 0 for p in points] + [end]
    for p, nxt in zip(points, starts[1:], strict=False):
        room = nxt - 1 - (p.offset or 0)
        step = f" {p.step}" if p.step is not None else ""
        for text in (
            json.dumps({"name": p.name, "value": _num_out(p.value), "step": p.step}),
            f"{p.name} {p.value!r}{step}",
        ):
            line = text.encode()
            if len(line) <= room:
                buf[p.offset or 0 : (p.offset or 0) + len(line)] = line
                break
        if nxt - 1 >= 0:
            buf[nxt - 1 : nxt] = b"\n"
    ensure_file(path)
    path.write_bytes(bytes(buf))


def ensure_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.touch()
        os.chmod(path, 0o666)
