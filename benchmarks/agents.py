"""Throughput of real agents on this machine: put and get through the CLI and in-process.

Starts ``--agents`` real ``lichen agent run`` processes on loopback (static peers, no mDNS,
no metrics server; the harness of ``tests/agents.py``) and measures, with k of n shards:

- ``put`` and ``get`` of 1, 16 and 64 MiB objects, in MB/s of the object's size (10^6 bytes
  per second): through the CLI (wall time of ``lichen put``/``lichen get``, Python start-up
  and imports included) and in-process (``edge_agent.datapath.put``/``get`` with one
  long-lived ``AgentClient``: the data path alone). Best and median of ``--repeat`` runs.
- small-object puts per second (1 KiB, in-process), one at a time and a few at once;
- peak RSS of the agents (VmHWM), of each CLI command (its rusage) and of this process;
- once, a CPU profile (per-thread CPU time, cProfile) of the largest put and get: of this
  process (the writer/reader) and of every agent (the holders), summed by where it goes.
  For this every agent runs in a wrapper (this script with ``--as-profiled-agent``) that
  switches cProfile on at SIGUSR1 and writes it out at SIGUSR2; it is off while timing
  (profiler and summary: ``benchmarks/profiling.py``).

Every process and directory it makes is removed on exit (SIGTERM and Ctrl-C included);
``--budget`` bounds the run time: no run starts after it (those skipped say so). This
measures; it asserts only that what is read back is what was written.

    .venv/bin/python benchmarks/agents.py            # one to two minutes, four at most
    .venv/bin/python benchmarks/agents.py --quick    # about 20 seconds, one and a half at most
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import pstats
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the harness lives in tests/, which is not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import core  # noqa: E402
from benchmarks.profiling import ThreadProfiler, print_profile, profiled_agent  # noqa: E402
from edge_agent import commands, datapath, keys  # noqa: E402
from edge_agent.coap_client import AgentClient  # noqa: E402
from lichen.identity import Identity  # noqa: E402
from lichen.messages import PeerInfo  # noqa: E402
from tests.agents import LICHEN, AgentProc, free_port  # noqa: E402

MiB = 1024 * 1024
PROFILED_AGENT = "--as-profiled-agent"  # internal: run an agent under a switchable profiler
COMMAND_TIMEOUT = 120.0  # seconds for one CLI command, a last resort
SIGNAL_WAIT = 30.0  # seconds for an agent to act on SIGUSR1/SIGUSR2, a last resort
STOP_WAIT = 10.0  # seconds for an agent to stop after SIGTERM before it is killed


@dataclass
class BenchAgent(AgentProc):
    """An agent of the harness that runs under :func:`profiled_agent` when asked."""

    profile_prefix: Path | None = None
    dumps: int = 0

    def argv(self, command: Sequence[str]) -> list[str]:
        rest = list(command[len(LICHEN) :])
        if self.profile_prefix is not None and rest[:2] == ["agent", "run"]:
            script = str(Path(__file__).resolve())
            command = [sys.executable, script, PROFILED_AGENT, str(self.profile_prefix), *rest]
        return super().argv(command)

    def profile_on(self) -> None:
        """Start profiling; return once the agent says it has."""
        assert self.proc is not None and self.profile_prefix is not None
        self.proc.send_signal(signal.SIGUSR1)
        self._await_file(Path(f"{self.profile_prefix}.{self.dumps + 1}.on"))

    def _await_file(self, path: Path) -> None:
        deadline = time.monotonic() + SIGNAL_WAIT
        while not path.exists():
            if time.monotonic() > deadline or not self.running:
                raise RuntimeError(f"agent {self.node_id[:8]} did not write {path.name}")
            time.sleep(0.01)

    def profile_off(self) -> list[pstats.Stats]:
        """Stop profiling and load what the agent wrote (main thread, worker threads)."""
        assert self.proc is not None and self.profile_prefix is not None
        self.proc.send_signal(signal.SIGUSR2)
        self.dumps += 1
        base = f"{self.profile_prefix}.{self.dumps}"
        self._await_file(Path(f"{base}.done"))
        found = []
        for part in ("main", "work"):
            path = Path(f"{base}.{part}")
            found.append(pstats.Stats(str(path)) if path.stat().st_size else None)
        return [s for s in found if s is not None]


# -- measuring helpers -------------------------------------------------------------------------


@dataclass
class Child:
    """One finished CLI command: wall seconds, exit status, output and peak RSS."""

    seconds: float
    status: int
    stdout: bytes
    stderr: bytes
    max_rss: int


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_child(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> Child:
    """Run ``argv``; its wall time and, from ``wait4``, its own peak RSS."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=child_env())
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Child(seconds, proc.returncode, out.read(), err.read(), usage.ru_maxrss * 1024)


def proc_status(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/<pid>/status, in bytes (0 if absent)."""
    for text in Path(f"/proc/{pid}/status").read_text().splitlines():
        if text.startswith(key + ":"):
            return int(text.split()[1]) * 1024
    return 0


def proc_cpu(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def self_cpu() -> tuple[float, float]:
    """User and system CPU seconds of this process so far."""
    times = os.times()
    return times.user, times.system


def cpu_since(before: tuple[float, float], after: tuple[float, float]) -> tuple[float, float]:
    """(total, of which in the kernel) CPU seconds between two readings."""
    user, system = after[0] - before[0], after[1] - before[1]
    return user + system, system


@dataclass
class Series:
    """Timings of one measured operation."""

    size: int
    seconds: list[float] = field(default_factory=list)
    max_rss: int = 0

    def row(self, label: str, wanted: int) -> str:
        if not self.seconds:
            return f"  {label:<24} {'skipped (time budget)':>44}"
        best, median = min(self.seconds), statistics.median(self.seconds)
        rss = f"{self.max_rss / MiB:7.0f} MiB" if self.max_rss else ""
        runs = f"{len(self.seconds)}/{wanted}"
        return (
            f"  {label:<24} {runs:>5} {self.size / best / 1e6:9.1f} {self.size / median / 1e6:9.1f}"
            f" {best:8.3f} {median:8.3f}   {rss}"
        )


class Budget:
    """A deadline for the measuring phases."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> bool:
        return time.monotonic() < self.end


# -- the mesh ----------------------------------------------------------------------------------


@contextlib.contextmanager
def started_mesh(base: Path, count: int, profile: bool) -> Iterator[list[BenchAgent]]:
    """``count`` running agents that are each other's static peers; agent 0 (the writer's
    own agent, started last) has verified every other. All stopped on exit."""
    agents = [
        BenchAgent(
            base / f"agent{i}",
            free_port(),
            profile_prefix=(base / f"agent{i}.prof") if profile else None,
        )
        for i in range(count)
    ]
    peers = [arg for a in agents for arg in ("--peer", f"127.0.0.1:{a.port}")]
    try:
        with ThreadPoolExecutor(max_workers=count) as pool:
            list(pool.map(lambda a: a.init("--no-mdns", *peers), agents))
            # Agent 0 starts last so its first round of hellos finds every other up.
            list(pool.map(lambda a: a.start(), agents[1:]))
        agents[0].start()
        for other in agents[1:]:
            agents[0].wait_for(rf"peer {other.node_id} verified")
        yield agents
    finally:
        for agent in agents:  # SIGTERM to all first: they shut down side by side
            if agent.proc is not None and agent.running:
                agent.proc.send_signal(signal.SIGTERM)
        for agent in agents:
            if agent.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    agent.proc.wait(timeout=STOP_WAIT)
            agent.kill()


# -- the benchmark -----------------------------------------------------------------------------


@dataclass
class Settings:
    sizes: list[int]
    repeat: int
    k: int
    n: int
    small_count: int
    small_size: int
    concurrency: list[int]
    profile: bool


def cli_runs(
    writer: AgentProc, work: Path, s: Settings, budget: Budget
) -> dict[tuple[int, str], Series]:
    """``lichen put`` and ``lichen get`` of each size, timed as whole commands."""
    results: dict[tuple[int, str], Series] = {}
    data_dir = str(writer.data_dir)
    for size in s.sizes:
        put, get = Series(size), Series(size)
        results[size, "put"], results[size, "get"] = put, get
        data = os.urandom(size)
        source, target = work / "in.bin", work / "out.bin"
        source.write_bytes(data)
        for _ in range(s.repeat):
            if not budget.left():
                break
            args = ["--k", str(s.k), "--n", str(s.n), "--data-dir", data_dir]
            done = run_child([*LICHEN, "put", str(source), *args])
            if done.status != 0:
                raise RuntimeError(f"lichen put failed: {done.stderr.decode(errors='replace')}")
            put.seconds.append(done.seconds)
            put.max_rss = max(put.max_rss, done.max_rss)
            address = done.stdout.decode().strip()
            done = run_child([*LICHEN, "get", address, "-o", str(target), "--data-dir", data_dir])
            if done.status != 0:
                raise RuntimeError(f"lichen get failed: {done.stderr.decode(errors='replace')}")
            if target.read_bytes() != data:
                raise RuntimeError("lichen get returned other bytes than were put")
            get.seconds.append(done.seconds)
            get.max_rss = max(get.max_rss, done.max_rss)
            target.unlink()
        source.unlink()
    return results


@dataclass
class Writer:
    """This process as the owner of agent 0: its client, keys and the mesh it sees."""

    client: AgentClient
    identity: Identity
    keyring: keys.Keyring
    mesh: list[PeerInfo]
    k: int
    n: int

    async def put(self, data: bytes) -> datapath.PutResult:
        return await datapath.put(
            self.client,
            data,
            owner=self.identity,
            key_for_new_object=self.keyring.new_object_key,
            peers=self.mesh,
            k=self.k,
            n=self.n,
            label="bench",
        )

    async def get(self, object_cid: bytes) -> bytes:
        manifest = await datapath.find_manifest(self.client, object_cid, self.mesh)
        decoded = await datapath.get(self.client, manifest, self.keyring.key_for, self.mesh)
        return decoded.plaintext


async def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = await work()
    return time.perf_counter() - start, result


async def inprocess_runs(w: Writer, s: Settings, budget: Budget) -> dict[tuple[int, str], Series]:
    """``datapath.put`` and ``get`` of each size from this process."""
    results: dict[tuple[int, str], Series] = {}
    warm = os.urandom(MiB)  # connections opened and code paths warmed before timing
    if await w.get((await w.put(warm)).manifest.object_cid) != warm:
        raise RuntimeError("warm-up object read back wrong")
    for size in s.sizes:
        put, get = Series(size), Series(size)
        results[size, "put"], results[size, "get"] = put, get
        data = os.urandom(size)
        for _ in range(s.repeat):
            if not budget.left():
                break
            seconds, result = await timed(lambda: w.put(data))  # noqa: B023
            put.seconds.append(seconds)
            object_cid = result.manifest.object_cid
            seconds, back = await timed(lambda: w.get(object_cid))  # noqa: B023
            if back != data:
                raise RuntimeError("datapath.get returned other bytes than were put")
            get.seconds.append(seconds)
    return results


@dataclass(frozen=True)
class SmallRun:
    """``count`` small puts, ``concurrency`` at a time: wall and CPU seconds (all processes)."""

    concurrency: int
    count: int
    seconds: float
    cpu: float


def mesh_cpu(agents: Sequence[AgentProc]) -> float:
    """CPU seconds so far of this process and every running agent."""
    pids = [a.proc.pid for a in agents if a.proc is not None and a.running]
    return sum(self_cpu()) + sum(sum(proc_cpu(pid)) for pid in pids)


async def small_puts(
    w: Writer, agents: Sequence[AgentProc], s: Settings, budget: Budget
) -> list[SmallRun]:
    """``small_count`` small objects put one at a time, then ``concurrency`` at a time."""
    found = []
    for concurrency in [1, *s.concurrency]:
        if not budget.left():
            break
        limit = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with limit:  # noqa: B023
                await w.put(os.urandom(s.small_size))

        cpu = mesh_cpu(agents)
        seconds, _ = await timed(lambda: asyncio.gather(*(one() for _ in range(s.small_count))))
        found.append(SmallRun(concurrency, s.small_count, seconds, mesh_cpu(agents) - cpu))
    return found


@dataclass
class Profiled:
    """One profiled operation: wall time, CPU by process, and the stats of both sides."""

    what: str
    wall: float
    writer_cpu: tuple[float, float]
    agent_cpu: list[tuple[float, float]]
    writer: list[pstats.Stats]
    holders: list[pstats.Stats]


async def profile_op(
    what: str, agents: list[BenchAgent], work: Callable[[], Any], profiler: ThreadProfiler
) -> tuple[Profiled, Any]:
    before = [proc_cpu(a.proc.pid) for a in agents if a.proc is not None]
    mine = self_cpu()
    for agent in agents:
        agent.profile_on()
    profiler.start()
    seconds, result = await timed(work)
    writer = [st for st in profiler.stop() if st is not None]
    mine_used = cpu_since(mine, self_cpu())
    holders = [st for agent in agents for st in agent.profile_off()]
    after = [proc_cpu(a.proc.pid) for a in agents if a.proc is not None]
    cpu = [cpu_since(a, b) for a, b in zip(before, after, strict=True)]
    return Profiled(what, seconds, mine_used, cpu, writer, holders), result


async def profile_runs(
    w: Writer, agents: list[BenchAgent], size: int
) -> tuple[tuple[float, float], list[Profiled]]:
    """The core alone on one ``size`` object, then its put and get profiled on every side."""
    profiler = ThreadProfiler()
    data = os.urandom(size)
    nonce, key = w.keyring.new_object_key()
    alone = core.write_and_read(data, key, nonce, w.k, w.n, w.identity, 1, from_parity=False)
    with profiler.patch_to_thread():
        put, result = await profile_op("put", agents, lambda: w.put(data), profiler)
        object_cid = result.manifest.object_cid
        get, back = await profile_op("get", agents, lambda: w.get(object_cid), profiler)
    if back != data:
        raise RuntimeError("profiled get returned other bytes than were put")
    return alone, [put, get]


# -- reporting ---------------------------------------------------------------------------------


def print_machine(s: Settings, agents: int) -> None:
    model = ""
    with contextlib.suppress(OSError):
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                model = text.split(":", 1)[1].strip()
                break
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("aiocoap", "cbor2", "zfec", "PyNaCl")
    )
    print(
        f"Lichen agents on loopback: {platform.machine()} {model or '?'}, "
        f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
        f"Python {platform.python_version()}, Linux {platform.release()}"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"  {versions}; load average before starting {load} (other work skews every figure)")
    print(
        f"  {agents} agents (static peers, no mDNS, no metrics), k={s.k} n={s.n}, "
        f"objects {', '.join(f'{x // MiB} MiB' for x in s.sizes)}, {s.repeat} runs each, "
        f"shards in flight {datapath.PARALLEL_TRANSFERS}; MB/s = 10^6 bytes of object per s"
    )


def print_table(
    title: str, results: dict[tuple[int, str], Series], repeat: int, rss: bool = False
) -> None:
    print(title)
    head = f"  {'':<24} {'runs':>5} {'best':>9} {'median':>9} {'best':>8} {'median':>8}"
    print(head + ("   peak RSS" if rss else ""))
    print(f"  {'':<24} {'':>5} {'MB/s':>9} {'MB/s':>9} {'s':>8} {'s':>8}")
    for (size, op), series in results.items():
        print(series.row(f"{op} {size // MiB} MiB", repeat))


# -- main --------------------------------------------------------------------------------------


@dataclass
class Results:
    """Everything measured, printed once the mesh is down."""

    cli: dict[tuple[int, str], Series]
    status: list[Child]
    inproc: dict[tuple[int, str], Series] = field(default_factory=dict)
    small: list[SmallRun] = field(default_factory=list)
    core: tuple[float, float] | None = None
    profiles: list[Profiled] = field(default_factory=list)
    rss: list[tuple[int, int]] = field(default_factory=list)


async def measure_inprocess(
    agents: list[BenchAgent], s: Settings, budget: Budget, results: Results
) -> None:
    data_dir = agents[0].data_dir
    async with commands.local_agent(data_dir) as local:
        mesh = await commands.local_mesh(local)
        keyring = keys.Keyring.load(data_dir)
        w = Writer(local.client, local.identity, keyring, mesh, s.k, s.n)
        progress("in-process puts and gets")
        results.inproc = await inprocess_runs(w, s, budget)
        progress("small puts")
        results.small = await small_puts(w, agents, s, budget)
        if s.profile and budget.left():
            progress("profile")
            results.core, results.profiles = await profile_runs(w, agents, max(s.sizes))


def progress(what: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {what}\n")


def print_results(r: Results, s: Settings) -> None:
    print_table(
        "through the CLI (wall time of the whole command, Python start-up included)",
        r.cli,
        s.repeat,
        rss=True,
    )
    print(
        f"  fixed cost of a command: 'lichen status' takes {min(c.seconds for c in r.status):.2f}"
        f" s (start-up, imports, one request), peak RSS "
        f"{max(c.max_rss for c in r.status) / MiB:.0f} MiB"
    )
    print()
    print_table(
        "in-process (datapath.put / find_manifest + get, one AgentClient)", r.inproc, s.repeat
    )
    print()
    print(f"small objects ({s.small_size} bytes, k={s.k} n={s.n}, in-process)")
    for run in r.small:
        print(
            f"  {run.concurrency:>2} at a time  {run.count / run.seconds:8.1f} puts/s   "
            f"{1000 * run.seconds / run.count * run.concurrency:7.1f} ms each on average, "
            f"{1000 * run.cpu / run.count:5.1f} ms CPU each (all processes; "
            f"{run.cpu / run.seconds:.1f} CPUs busy), {run.count} puts"
        )
    if len(r.small) < 1 + len(s.concurrency):
        print("  (some skipped: time budget)")
    print()
    print("memory (peak RSS)")
    if r.rss:
        hwm = [h for h, _ in r.rss]
        print(f"  agent 0 (the writer's own, also a holder): {hwm[0] / MiB:.0f} MiB")
        print(
            f"  all agents: {min(hwm) / MiB:.0f}-{max(hwm) / MiB:.0f} MiB"
            f" (now {min(x for _, x in r.rss) / MiB:.0f}-{max(x for _, x in r.rss) / MiB:.0f} MiB)"
            + (", in the profiling wrapper" if s.profile else "")
        )
    mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"  this process (the in-process writer and reader): {mine / MiB:.0f} MiB")
    for size in s.sizes:
        put, get = r.cli[size, "put"], r.cli[size, "get"]
        if put.max_rss:
            print(
                f"  CLI, {size // MiB} MiB: lichen put {put.max_rss / MiB:.0f} MiB, "
                f"lichen get {get.max_rss / MiB:.0f} MiB"
            )
    if r.core is not None:
        print_profiles(r.core, r.profiles, max(s.sizes) // MiB)
    elif s.profile:
        print("\nprofile skipped: time budget")


def print_profiles(core: tuple[float, float], runs: list[Profiled], mib: int) -> None:
    cpus = len(os.sched_getaffinity(0))
    print()
    print(
        f"the core alone on a {mib} MiB object, no network, in this process: "
        f"encode_object {core[0]:.3f} s, decode_object from the data shards {core[1]:.3f} s"
    )
    print(
        f"profile of one {mib} MiB put and get (CPU time per thread, cProfile; the profiler "
        "slows Python code, so wall times here are longer than above)"
    )
    for p in runs:
        agents = sum(c for c, _ in p.agent_cpu), sum(k for _, k in p.agent_cpu)
        print(
            f"{p.what}: wall {p.wall:.2f} s on {cpus} CPUs; CPU {p.writer_cpu[0] + agents[0]:.2f}"
            f" s = writer {p.writer_cpu[0]:.2f} s ({p.writer_cpu[1]:.2f} s of it in the kernel)"
            f" + agents {agents[0]:.2f} s ({agents[1]:.2f} s in the kernel; busiest agent "
            f"{max(c for c, _ in p.agent_cpu):.2f} s)"
        )
        print_profile("writer/reader (this process)", p.writer, p.writer_cpu[0])
        print_profile(f"all {len(p.agent_cpu)} agents together", p.holders, agents[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 and 16 MiB, 2 runs, 16 MiB profile")
    parser.add_argument("--agents", type=int, default=10, help="agents to start (default 10)")
    parser.add_argument("--k", type=int, default=3, help="shards needed (default 3)")
    parser.add_argument("--n", type=int, default=10, help="shards written (default 10)")
    parser.add_argument("--mib", type=int, nargs="+", help="object sizes (default 1 16 64)")
    parser.add_argument("--repeat", type=int, help="runs per figure (default 3)")
    parser.add_argument("--small", type=int, help="small puts per concurrency (default 100)")
    parser.add_argument("--no-profile", action="store_true", help="skip the profile")
    parser.add_argument(
        "--budget", type=float, help="no run starts after this many seconds (240; --quick 60)"
    )
    args = parser.parse_args()
    quick = args.quick
    s = Settings(
        sizes=[m * MiB for m in (args.mib or ([1, 16] if quick else [1, 16, 64]))],
        repeat=args.repeat or (2 if quick else 3),
        k=args.k,
        n=args.n,
        small_count=args.small or (30 if quick else 100),
        small_size=1024,
        concurrency=[4, 16],
        profile=not args.no_profile,
    )
    if not 1 <= s.k <= s.n <= args.agents:
        parser.error("need 1 <= k <= n <= agents")
    budget = Budget(args.budget or (60.0 if quick else 240.0))
    # SIGTERM (a timeout, a CI runner) unwinds like Ctrl-C, so every agent is stopped too.
    signal.signal(signal.SIGTERM, lambda _s, _f: sys.exit(128 + signal.SIGTERM))
    print_machine(s, args.agents)

    with tempfile.TemporaryDirectory(prefix="lichen-bench-") as tmp:
        base = Path(tmp)
        start = time.perf_counter()
        progress(f"starting {args.agents} agents")
        with started_mesh(base, args.agents, s.profile) as agents:
            print(f"  mesh up in {time.perf_counter() - start:.1f} s\n")
            data_dir = str(agents[0].data_dir)
            status = [run_child([*LICHEN, "status", "--data-dir", data_dir]) for _ in range(3)]
            progress("CLI puts and gets")
            results = Results(cli_runs(agents[0], base, s, budget), status)
            asyncio.run(measure_inprocess(agents, s, budget, results))
            results.rss = [
                (proc_status(a.proc.pid, "VmHWM"), proc_status(a.proc.pid, "VmRSS"))
                for a in agents
                if a.proc is not None and a.running
            ]
            progress("stopping the agents")
    print_results(results, s)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == PROFILED_AGENT:
        sys.exit(profiled_agent(sys.argv[2], sys.argv[3:]))
    main()
