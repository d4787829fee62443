"""The run loop: provision, check steady state, drive load, run the fault timeline on schedule,
watch abort conditions, revert, check steady state after, and judge.

Every applied fault is reverted in ``finally`` — after an abort, an exception, SIGINT or
SIGTERM — and a revert that fails makes the run a harness error. The runner emits events and
nothing else; the journal, the progress display and the verdict file are observers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import platform
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from slo import SLO, Evaluation, RequestRecord, evaluate

from ._checks import wrong_backend
from ._errors import HarnessError, InjectionError, RevertError, ShardError, WaitTimeout
from ._events import EventBus, EventType, Observer, RunEvent
from ._expect import (
    Facts,
    RequestOutcome,
    Window,
    check,
    classify,
    first_failure,
    slo_window,
    time_to_alert,
    time_to_detect,
    time_to_recover,
)
from ._faults import build_injector, stream_support
from ._journal import PAGE
from ._loadgen import (
    GeneratorHealth,
    LoadGenerator,
    LoadRecord,
    LoadResult,
    RequestSpec,
    amplification,
    frozen_heap,
    judged,
    run_loop,
)
from ._loading import LoadedScenario
from ._protocols import request_body
from ._scenario import (
    Backend,
    BurnRateAbort,
    BurstFault,
    ErrorRatioAbort,
    FaultSpec,
    HttpProbe,
    MetricAbort,
    MetricProbe,
    Phase,
    ProbeAbort,
    ProbeSpec,
    Reading,
    Recovery,
    Service,
    SliProbe,
)
from ._scrape import Scrape, Scraper, endpoints_of, scrape_event, summarise
from ._shapes import Constant, schedule
from ._verdict import (
    Abort,
    ClientCounts,
    FaultResult,
    Outcome,
    ProbeResult,
    RequestCounts,
    SLOResult,
    Status,
    SteadyState,
    Verdict,
)
from ._version import __version__
from ._wait import wait_until
from .backends import LocalTarget, ServicesTarget, Target, UrlTarget, repair
from .injectors import Acted, Injector
from .shards import GeneratorSettings, RayEngine, ShardedLoad, sharding_problem

_TICK = 0.25  # how often abort conditions and the gateway's events are looked at


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached the harness: the run stops and reverts.

    A BaseException, as KeyboardInterrupt is: raised wherever the main thread happens to be,
    it must not be swallowed by a handler of ordinary errors there (an events poll that
    shrugs off a HarnessError would otherwise turn an interrupt into a run that passes)."""


@dataclass
class RunSettings:
    report_dir: Path = Path("reports")
    backend: Backend | None = None  # overrides the scenario's
    url: str | None = None  # for the url backend
    seed: int | None = None  # overrides the scenario's
    load_shards: int | None = None  # overrides the scenario's load.shards
    ray_address: str | None = None  # overrides the scenario's load.ray_address
    run_id: str | None = None
    settle: float = 20.0  # how long steady state may take to come back after the run


@dataclass
class RunResult:
    run_dir: Path
    verdict: Verdict

    @property
    def report(self) -> Path | None:
        """The run's HTML page, where an observer wrote one."""
        page = self.run_dir / PAGE
        return page if page.is_file() else None

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code


TargetFactory = Callable[[LoadedScenario, RunSettings, Path], Target]
InjectorFactory = Callable[[str, FaultSpec, Target, random.Random], Injector]


def default_target(loaded: LoadedScenario, settings: RunSettings, run_dir: Path) -> Target:
    scenario = loaded.scenario
    backend = settings.backend or scenario.backend
    if backend is Backend.URL:
        url = settings.url or scenario.url
        if url is None:
            raise HarnessError("the url backend needs a URL (--url or `url:` in the scenario)")
        try:
            headers = scenario.service.request_headers()
        except ValueError as exc:
            raise HarnessError(str(exc)) from exc
        return UrlTarget(url, run_dir, health=scenario.service.health_path, headers=headers,
                         verify=scenario.service.ssl_context())  # fmt: skip
    if loaded.services is not None:
        if (problem := wrong_backend(loaded.services.stack, backend)) is not None:
            raise HarnessError(problem)
        if backend is Backend.DOCKER:
            from .backends.compose import ComposeTarget

            return ComposeTarget(loaded.services, run_dir, log=run_dir / "stack.log")
        return ServicesTarget(loaded.services, run_dir)
    if backend is Backend.DOCKER:
        from .backends.docker import DockerTarget

        return DockerTarget(scenario.stack, run_dir, log=run_dir / "stack.log")
    return LocalTarget(scenario.stack, run_dir, log=run_dir / "stack.log")


@dataclass
class _Applied:
    name: str
    injector: Injector | None
    window: Window
    timed: bool  # has a duration; one without (a kill) ends when applied, whatever revert does


@dataclass
class _State:
    records: list[LoadRecord] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    windows: dict[str, Window] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)  # when each fault's apply() began
    provoked: dict[str, frozenset[str]] = field(default_factory=dict)  # events it causes itself
    acted: dict[str, Acted] = field(default_factory=dict)  # what faults that count did
    applied: list[_Applied] = field(default_factory=list)
    probes: dict[str, list[ProbeResult]] = field(default_factory=dict)
    probe_streak: Counter[str] = field(default_factory=Counter)
    scrapes: list[Scrape] = field(default_factory=list)  # the service's metrics, during the load
    abort: Abort | None = None
    errors: list[str] = field(default_factory=list)
    health: GeneratorHealth | None = None
    t0: float | None = None
    t0_wall: float | None = None
    last_seq: int = 0
    ran_load: bool = False
    before_ok: bool = True
    after_ok: bool = True


class Runner:
    def __init__(
        self,
        loaded: LoadedScenario,
        settings: RunSettings | None = None,
        *,
        observers: list[Observer] | None = None,
        target_factory: TargetFactory = default_target,
        injector_factory: InjectorFactory = build_injector,
    ) -> None:
        self.loaded = loaded
        self.scenario = loaded.scenario
        self.settings = settings or RunSettings()
        self.seed = self.settings.seed if self.settings.seed is not None else self.scenario.seed
        self.bus = EventBus(observers)
        self._target_factory = target_factory
        self._injector_factory = injector_factory
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.state = _State()
        self._next_index = 0
        # The main load's and every burst's.
        self._generators: list[LoadGenerator | ShardedLoad] = []
        self._scraper: Scraper | None = None
        self._load_running = False  # the timeline is on: probes read scrapes, not make them
        self._interruptible = True  # False once the final revert and stop have begun
        self._signalled: str | None = None  # the first SIGINT/SIGTERM, whatever became of it
        self._late_signals: list[str] = []
        self.slos: dict[str, SLO] = {s.name: s for s in loaded.slos}
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.run_id = self.settings.run_id or f"{stamp}-{self.scenario.name}"
        self.run_dir = self.settings.report_dir / self.run_id

    # -- plumbing --------------------------------------------------------------------------

    def now(self) -> float | None:
        return None if self.state.t0 is None else time.monotonic() - self.state.t0

    def emit(self, type_: EventType, t: float | None = None, **data: Any) -> None:
        self.bus.emit(RunEvent(type_, self.now() if t is None else t, data))

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM become :class:`Interrupted` in the main thread, so ``finally``
        blocks revert every fault before the process ends."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def interrupt(signum: int, _frame: Any) -> None:
            name = signal.Signals(signum).name
            first = self._signalled is None
            if first:
                self._signalled = name
            self._stop.set()
            if first and self._interruptible:
                raise Interrupted(f"interrupted by {name}")
            # Once the run is reverting and stopping (after the first signal, or on its own),
            # a signal cannot cut that short: it is said, and the cleanup goes on to the end.
            # Only noted here: an observer may be mid-write in the interrupted frame.
            self._late_signals.append(name)

        previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> RunResult:
        self._claim_run_dir()
        self.emit(
            EventType.RUN_STARTED,
            run_id=self.run_id, run_dir=str(self.run_dir), scenario=self.scenario.name,
            file=str(self.loaded.path),
            text=self.loaded.text, seed=self.seed,
            backend=(self.settings.backend or self.scenario.backend).value,
            environment=_environment(),
            slos=[s.model_dump(mode="json") for s in self.loaded.slos],
            judge=self.scenario.load.judge.value,
        )  # fmt: skip
        # The handlers cover the observers' work on the verdict too (verdict.json, the report):
        # a signal then is said and waited out, never a KeyboardInterrupt that loses them.
        with self._signals():
            self._provision_and_experiment()
            verdict = self._verdict()
            self.emit(EventType.VERDICT, verdict=verdict)
            self.emit(EventType.RUN_FINISHED, passed=verdict.passed, exit_code=verdict.exit_code)
        return RunResult(self.run_dir, verdict)

    def _claim_run_dir(self) -> None:
        """A directory of its own: two runs of one file started in the same second (parallel
        CI jobs) get ``…-name`` and ``…-name-2``; mkdir is the atomic claim."""
        base = self.run_dir
        for attempt in range(1, 1000):
            candidate = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
            try:
                candidate.mkdir(parents=True, exist_ok=False)
            except FileExistsError:
                if self.settings.run_id is not None:
                    raise HarnessError(f"run directory {candidate} exists already") from None
                continue
            self.run_dir, self.run_id = candidate, candidate.name
            return
        raise HarnessError(f"no free run directory next to {base}")

    def _provision_and_experiment(self) -> None:
        target: Target | None = None
        try:
            if problem := sharding_problem(self._shards):
                raise ShardError(problem)  # before anything starts
            # What an earlier run killed with SIGKILL left (processes, proxies, damaged model
            # files): undone first, each thing said, before anything of this run starts.
            repair(log=lambda line: self.emit(EventType.REPAIR, text=line))
            target = self._target_factory(self.loaded, self.settings, self.run_dir)
            self.emit(EventType.TARGET_READY, target=target.describe())
            asked = {fault.kind for fault in self.scenario.faults}
            if asked - target.honours:
                # The file's checks refuse these before anything starts; a target made in code
                # (a target_factory) is held to what it says it honours here, before the load.
                raise HarnessError(
                    f"{type(target).__name__} does not carry out {sorted(asked - target.honours)} "
                    f"faults (it honours {sorted(target.honours)})"
                )
            if "stream" in asked and (problem := stream_support(target)) is not None:
                raise HarnessError(problem)
            self._experiment(target)
        except InjectionError as exc:
            self.state.errors.append(str(exc))
        except Interrupted as exc:
            self.state.abort = Abort(reason=str(exc), t=self.now(), rule="signal")
            self.emit(EventType.ABORT, reason=str(exc))
        except HarnessError as exc:
            self.state.errors.append(str(exc))
        except Exception as exc:  # a harness bug must still revert and leave a verdict
            self.state.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            self._interruptible = False
            self._revert_all()
            if target is not None:
                self._collect_events(target)
                try:
                    target.stop()
                except Exception as exc:
                    self.state.errors.append(f"stopping the target: {exc}")
        if self._signalled is not None and self.state.abort is None:
            # However the interrupt ended (raised during the cleanup, or caught on its way),
            # a signalled run is an aborted run: it never reports what it did not finish.
            reason = f"interrupted by {self._signalled}"
            self.state.abort = Abort(reason=reason, t=self.now(), rule="signal")
            self.emit(EventType.ABORT, reason=reason)
        if self._late_signals:
            self.emit(EventType.MESSAGE, text=f"{', '.join(self._late_signals)} came while "
                      "reverting and stopping: every revert still ran")  # fmt: skip

    def _experiment(self, target: Target) -> None:
        metrics = self.scenario.metrics
        if metrics is None:
            self._run_experiment(target)
            return
        try:
            endpoints = endpoints_of(metrics, target, self.scenario.service)
        except ValueError as exc:  # the API key's variable, gone since the pre-flight
            raise HarnessError(str(exc)) from exc
        self._scraper = Scraper(metrics, endpoints)
        try:
            self._run_experiment(target)
        finally:
            self._scraper.close()

    def _run_experiment(self, target: Target) -> None:
        before = self._probe_phase(target, Phase.BEFORE, settle=self.settings.settle)
        if not before:
            self.state.before_ok = False
            self.emit(EventType.MESSAGE, text="steady state not met before the run: no load sent")
            return
        self.state.ran_load = True
        load = self.scenario.load
        times = schedule(load.to_shape(), load.duration, arrivals=load.arrivals, seed=self.seed)
        self._next_index = len(times)  # bursts number their requests after the main load's
        generator = self._generator(target, times)
        # The heap the run built before the load is frozen while it runs: a full garbage
        # collection would stall the generator's schedule (see frozen_heap).
        with frozen_heap():
            self._generators.append(generator)
            main = _LoadThread("load", generator)
            main.start()
            try:
                wait_until(lambda: generator.started.is_set() or not main.is_alive(),
                           timeout=generator.start_timeout_s,
                           message="the load generator's start", stop=self._stop)  # fmt: skip
            except WaitTimeout as exc:
                raise HarnessError(f"the load generator did not start: {exc}") from exc
            if not generator.started.is_set():
                raise HarnessError(f"the load generator did not start{main.failure_text()}")
            self.state.t0, self.state.t0_wall = generator.start_monotonic, generator.start_wall
            self.emit(EventType.LOAD_STARTED, t=0.0, scheduled=len(times), duration=load.duration)
            bursts: list[_LoadThread] = []
            self._load_running = True
            try:
                self._timeline(target, main, bursts)
            finally:
                self._load_running = False
                for thread in (main, *bursts):
                    thread.stop.set()
                for thread in (main, *bursts):
                    thread.join()
        # The load's truth is the run's: a generator that died measured nothing whole, and one
        # that could not keep its schedule measured itself.
        for thread in (main, *bursts):
            if thread.error is not None:
                self.state.errors.append(f"the {thread.name} generator failed: {thread.error}")
        if main.result is not None:
            self.state.health = _health(main.result, [b.result for b in bursts if b.result])
        self.emit(
            EventType.LOAD_FINISHED,
            generator=None if self.state.health is None else self.state.health.model_dump(),
        )
        self._revert_all()
        self._collect_events(target)
        if self.state.abort is None:
            self.state.after_ok = self._probe_phase(
                target, Phase.AFTER, settle=self.settings.settle
            )

    @property
    def _shards(self) -> int:
        """How many processes send the main load: the setting's, else the scenario's."""
        return self.settings.load_shards or self.scenario.load.shards

    def _generator(self, target: Target, times: list[float]) -> LoadGenerator | ShardedLoad:
        """The main load's generator: this process's, or the shards' controller."""
        load = self.scenario.load
        shards = self._shards
        client = self._client(target)
        if shards == 1:
            return LoadGenerator(
                target.url, times, self._requests(), on_record=self._on_record,
                timeout_s=load.timeout, max_lag_p99_s=load.max_lag, max_cpu_share=load.max_cpu,
                **client,
            )  # fmt: skip
        ca_file = self.scenario.service.ca_file
        settings = GeneratorSettings(
            timeout_s=load.timeout, max_lag_p99_s=load.max_lag, max_cpu_share=load.max_cpu,
            headers=client["headers"], rules=client["rules"],
            server_hostname=client["server_hostname"],
            ca_pem=None if ca_file is None else ca_file.read_text(),
        )  # fmt: skip
        engine = RayEngine(self.settings.ray_address or load.ray_address)
        self.emit(EventType.MESSAGE, text=f"load: {shards} shards on {engine.where}")
        return ShardedLoad(
            target.url, times, self._requests(), shards=shards, engine=engine,
            settings=settings, on_record=self._on_record,
        )  # fmt: skip

    def _timeline(self, target: Target, load: _LoadThread, bursts: list[_LoadThread]) -> None:
        rng = random.Random(self.seed)
        names = self.scenario.fault_names()
        actions: list[tuple[float, int, str, FaultSpec]] = []
        for name, fault in zip(names, self.scenario.faults, strict=True):
            actions.append((fault.at, 1, name, fault))
            if fault.end is not None and not isinstance(fault, BurstFault):
                actions.append((fault.end, 0, name, fault))  # reverts first on a tie
        actions.sort(key=lambda a: (a[0], a[1]))
        probes = [p for p in self.scenario.steady_state.probes if Phase.DURING in p.when]
        interval = self.scenario.steady_state.interval
        next_probe = next_scrape = 0.0
        pending: dict[str, concurrent.futures.Future[ProbeResult]] = {}
        scraping: concurrent.futures.Future[Scrape] | None = None
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            # Until the load's duration is over, not only while requests are out: a fault due
            # after the last arrival still applies (and is judged) rather than silently not.
            end = self.scenario.load.duration
            while self.state.abort is None and (
                load.is_alive() or any(b.is_alive() for b in bursts) or (self.now() or 0.0) < end
            ):
                now = self.now() or 0.0
                while actions and actions[0][0] <= now:
                    _, kind, name, fault = actions.pop(0)
                    if kind == 1:
                        self._apply(target, name, fault, rng, bursts)
                    else:
                        self._revert(name)
                if now >= next_probe:
                    next_probe = now + interval
                    for probe in probes:
                        if probe.name not in pending:
                            pending[probe.name] = pool.submit(self._probe, target, probe)
                if scraping is not None and scraping.done():
                    self._record_scrape(scraping.result())
                    scraping = None
                if self._scraper is not None and now >= next_scrape and scraping is None:
                    # On the interval's grid: a slow scrape delays the next, never shifts all.
                    next_scrape = max(next_scrape + self._scraper.metrics.interval, now)
                    scraping = pool.submit(self._scraper.scrape, now)
                for name, future in list(pending.items()):
                    if future.done():
                        del pending[name]
                        self._record_probe(Phase.DURING, future.result())
                self._poll_events(target)
                self._check_abort()
                soon = [a[0] for a in actions[:1]] + ([next_scrape] if self._scraper else [])
                wait = min([_TICK, *(t - now for t in soon)])
                if self._stop.wait(max(0.0, wait)):
                    break
            if scraping is not None:  # the last scrape of the load is part of its record
                self._record_scrape(scraping.result())

    # -- faults ----------------------------------------------------------------------------

    def _apply(
        self,
        target: Target,
        name: str,
        fault: FaultSpec,
        rng: random.Random,
        bursts: list[_LoadThread],
    ) -> None:
        if isinstance(fault, BurstFault):
            bursts.append(self._burst(target, name, fault))
            return
        injector = self._injector_factory(name, fault, target, rng)
        entry = _Applied(name, injector, Window(None, None), timed=fault.end is not None)
        # Time to detect counts from here: a service may react while apply() still runs.
        self.state.started[name] = self.now() or 0.0
        self.state.provoked[name] = injector.provokes
        try:
            injector.apply()
        except InjectionError as exc:
            if injector.applied:  # a part would not undo: the final revert tries it again
                self.state.applied.append(entry)
            self.emit(EventType.FAULT_FAILED, fault=name, stage="apply", error=str(exc))
            raise
        entry.window = Window(self.now(), None)
        self.state.windows[name] = entry.window
        if fault.end is not None or injector.applied:
            self.state.applied.append(entry)
        self.emit(
            EventType.FAULT_APPLIED, fault=name, kind=fault.kind, description=injector.description,
            planned_at=fault.at, planned_end=fault.end,
        )  # fmt: skip

    def _revert(self, name: str) -> None:
        for entry in [e for e in self.state.applied if e.name == name]:
            assert entry.injector is not None
            try:
                entry.injector.revert()
            except Interrupted:
                raise  # still applied: the final revert of every fault runs it again
            except Exception as exc:  # a RevertError, or a surprise: loud either way
                self.state.applied.remove(entry)
                error = str(exc) if isinstance(exc, RevertError) else f"reverting {name}: {exc!r}"
                self.state.errors.append(error)
                self.emit(EventType.FAULT_FAILED, fault=name, stage="revert", error=error)
                continue
            # Only once reverted: an interrupt inside revert() leaves it for the final pass.
            self.state.applied.remove(entry)
            if entry.timed:
                entry.window = Window(entry.window.applied, self.now())
                self.state.windows[name] = entry.window
            acted = entry.injector.acted
            if acted is not None:
                self.state.acted[name] = acted
                self.emit(EventType.FAULT_REVERTED, fault=name, seen=acted.seen,
                          affected=acted.affected)  # fmt: skip
            else:
                self.emit(EventType.FAULT_REVERTED, fault=name)

    def _revert_all(self) -> None:
        for entry in reversed(list(self.state.applied)):
            self._revert(entry.name)

    def _burst(self, target: Target, name: str, fault: BurstFault) -> _LoadThread:
        """A second generator on the run's time axis: its schedule starts now, its records
        are shifted onto t = 0 of the run, the abort stops it, and its health counts."""
        assert self.state.t0 is not None
        start = self.now() or 0.0
        times = schedule(
            Constant(fault.rate), fault.duration, arrivals=self.scenario.load.arrivals,
            seed=self.seed + 1,
        )  # fmt: skip
        load = self.scenario.load
        generator = LoadGenerator(
            target.url, [start + t for t in times], self._requests(salt=1),
            on_record=self._on_record, origin=self.state.t0, first_index=self._next_index,
            timeout_s=load.timeout, max_lag_p99_s=load.max_lag, max_cpu_share=load.max_cpu,
            **self._client(target),
        )  # fmt: skip
        self._next_index += len(times)
        self._generators.append(generator)
        thread = _LoadThread(f"burst {name}", generator)
        thread.start()
        self.state.windows[name] = Window(start, start + fault.duration)
        self.emit(EventType.BURST, fault=name, rate=fault.rate, duration=fault.duration)
        self.emit(EventType.FAULT_APPLIED, fault=name, kind="burst",
                  description=f"burst of {fault.rate:g}/s for {fault.duration:g}s",
                  planned_at=fault.at, planned_end=fault.end)  # fmt: skip
        return thread

    # -- requests --------------------------------------------------------------------------

    def _requests(self, salt: int = 0) -> Callable[[int], RequestSpec]:
        load, service = self.scenario.load, self.scenario.service
        prompts = self.loaded.prompts
        seed = self.seed * 7919 + salt

        def request(index: int) -> RequestSpec:
            rng = random.Random(seed * 1_000_003 + index)
            prompt = prompts[rng.randrange(len(prompts))]
            user = f"user-{rng.randrange(load.users)}" if rng.random() < load.user_share else None
            body = request_body(
                service.api, prompt, max_tokens=load.max_new_tokens, model=service.model,
                temperature=load.temperature, user=user, stream=load.stream,
            )  # fmt: skip
            # Drawn after the prompt and the user, so that a scenario without client groups
            # sends what it sent before they existed.
            group, draw, below = None, rng.random(), 0.0
            for candidate in load.clients:
                below += candidate.share
                if draw < below:
                    group = candidate
                    break
            if group is None:
                return RequestSpec(body, stream=load.stream, api=service.api)
            return RequestSpec(
                body, stream=load.stream, api=service.api, client=group.name,
                retry=group.retry, cancel=group.cancel, seed=rng.randrange(2**62),
            )  # fmt: skip

        return request

    def _client(self, target: Target) -> dict[str, Any]:
        """What every request carries: the service's headers (its API key, read now, never
        recorded), the degraded-answer rules, and for an https service the name its
        certificate is checked against."""
        service = self.scenario.service
        try:
            headers = service.request_headers()
        except ValueError as exc:
            raise HarnessError(str(exc)) from exc
        if target.host_header is not None:
            headers["Host"] = target.host_header
        return {"headers": headers, "rules": service.answer_rules(),
                "server_hostname": target.server_hostname,
                "ssl_context": service.ssl_context()}  # fmt: skip

    def _on_record(self, record: LoadRecord) -> None:
        with self._lock:
            self.state.records.append(record)
        self.emit(
            EventType.REQUEST, t=record.end,
            index=record.index, scheduled=record.scheduled, sent=record.sent,
            first_byte=record.first_byte, first_token=record.first_token, end=record.end,
            status=record.status, error=record.error, model=record.model,
            version=record.version, degraded=record.degraded, tokens=record.tokens,
            latency_s=record.latency_s, ttft_s=record.ttft_s, tpot_s=record.tpot_s,
            output_tps=record.output_tps, finish_reason=record.finish_reason,
            gaps=[round(g, 6) for g in record.gaps],
            **self._client_fields(record),
        )  # fmt: skip

    @staticmethod
    def _client_fields(record: LoadRecord) -> dict[str, Any]:
        """A request's client behaviour, journaled only where it has one (a plain request's
        event stays as it was)."""
        fields: dict[str, Any] = {}
        if record.client is not None:
            fields["client"] = record.client
        if record.cancelled:
            fields["cancelled"] = True
        if record.attempts:
            fields["attempts"] = [
                {"sent": a.sent, "end": a.end, "status": a.status, "error": a.error}
                for a in record.attempts
            ]
            fields["last_sent"] = record.last_sent
        return fields

    # -- steady state and abort ------------------------------------------------------------

    def _probe(self, target: Target, probe: ProbeSpec) -> ProbeResult:
        if isinstance(probe, SliProbe):
            return self._sli_probe(probe)
        if isinstance(probe, MetricProbe):
            return self._metric_probe(probe)
        return _http_probe(target, probe, self.scenario.service)

    def _metric_probe(self, probe: MetricProbe) -> ProbeResult:
        """During the load, the latest scrape (none for two intervals and a timeout: no value,
        not ok); before and after it, a fresh one (two, an interval apart, for a rate)."""
        scraper = self._scraper
        if scraper is None:  # pragma: no cover - the model refuses a series without `metrics`
            raise HarnessError(f"probe {probe.name}: the scenario scrapes no metrics")
        interval = scraper.metrics.interval
        now = self.now()
        latest = None
        if self._load_running:
            with self._lock:
                latest = self.state.scrapes[-1] if self.state.scrapes else None
            stale = 2 * interval + scraper.metrics.timeout
            if latest is not None and (now is None or latest.t is None or now - latest.t > stale):
                latest = None
            if latest is None and (now or 0.0) < stale and not self.state.scrapes:
                # The first scrape of the load is still under way: nothing to judge yet.
                return ProbeResult(probe=probe.name, ok=True, detail="no scrape yet")
            if latest is None:
                return ProbeResult(probe=probe.name, ok=False,
                                   detail=f"no scrape in the last {stale:g}s")  # fmt: skip
        else:
            latest = scraper.scrape(now)
            series = scraper.metrics.series_named(probe.series)
            if (
                latest.values.get(probe.series) is None
                and series
                and series.read is not Reading.VALUE
            ):
                self._stop.wait(interval)
                latest = scraper.scrape(self.now())
        value = latest.values.get(probe.series)
        if value is None:
            why = latest.problems.get(probe.series, "no value")
            return ProbeResult(probe=probe.name, ok=False, detail=f"{probe.series}: {why}")
        bound = probe.at_most if probe.at_most is not None else probe.at_least
        return ProbeResult(
            probe=probe.name,
            ok=probe.holds(value),
            value=value,
            bound=bound,
            detail=f"{probe.series} = {value:g}, expected {probe.bounds_text()}",
        )

    def _record_scrape(self, scrape: Scrape) -> None:
        with self._lock:
            self.state.scrapes.append(scrape)
        self.emit(EventType.METRICS, t=scrape.t, **scrape_event(scrape))

    def _sli_probe(self, probe: SliProbe) -> ProbeResult:
        slo = self.slos[probe.slo]
        now = self.now()
        if now is None:
            return ProbeResult(probe=probe.name, ok=True, detail="no load yet")
        recent = self._slo_window(slo, now, probe.window)
        if not recent:
            return ProbeResult(probe=probe.name, ok=True, detail="no requests in the window")
        ev = evaluate(slo, recent)
        floor = probe.min if probe.min is not None else slo.target
        ok = ev.sli is None or ev.sli >= floor
        detail = f"{slo.name} SLI over {probe.window:g}s: {ev.sli} ({ev.total} events)"
        return ProbeResult(probe=probe.name, ok=ok, value=ev.sli, bound=floor, detail=detail)

    def _time_to_alert(self, records: list[LoadRecord], started: float, end: float) -> float | None:
        """When the scenario's first-firing burn-rate rule would have fired after ``started``
        (None: no such rule, or it never would have)."""
        times = [
            time_to_alert(records, self.slos[rule.slo], rule, started=started, end=end,
                          timeout=self.scenario.load.timeout)
            for rule in self.scenario.abort if isinstance(rule, BurnRateAbort)
        ]  # fmt: skip
        found = [t for t in times if t is not None]
        return min(found) if found else None

    def _finished_since(self, since: float) -> list[LoadRecord]:
        with self._lock:
            return [r for r in self.state.records if r.scheduled >= since]

    def _overdue(self, now: float, since: float, bound: float) -> list[LoadRecord]:
        """Requests scheduled from ``since`` on that are still unanswered after ``bound``
        seconds: whatever their answer will be, it is already too late."""
        return [
            r for g in self._generators for r in g.pending()
            if r.scheduled >= since and now - r.scheduled > bound
        ]  # fmt: skip

    def _slo_window(self, slo: SLO, now: float, window: float) -> list[RequestRecord]:
        pending = [r for g in self._generators for r in g.pending()]
        finished = self._finished_since(now - window)
        return slo_window(
            slo, finished, pending, now=now, window=window, timeout=self.scenario.load.timeout
        )

    def _record_probe(self, phase: Phase, result: ProbeResult) -> None:
        self.state.probes.setdefault(phase.value, []).append(result)
        name = result.probe
        self.state.probe_streak[name] = 0 if result.ok else self.state.probe_streak[name] + 1
        self.emit(EventType.PROBE, phase=phase.value, **result.model_dump())

    def _probe_phase(self, target: Target, phase: Phase, *, settle: float) -> bool:
        """Probes of a phase; each may take up to ``settle`` seconds to pass."""
        ok = True
        for probe in self.scenario.steady_state.probes:
            if phase not in probe.when:
                continue
            deadline = time.monotonic() + settle
            while True:
                result = self._probe(target, probe)
                if result.ok or time.monotonic() >= deadline or isinstance(probe, SliProbe):
                    break
                self._stop.wait(0.5)  # a retry interval: the condition itself is the probe
            self._record_probe(phase, result)
            ok = ok and result.ok
        return ok

    def _check_abort(self) -> None:
        now = self.now()
        if now is None or self.state.abort is not None:
            return
        for rule in self.scenario.abort:
            reason = None
            if isinstance(rule, ProbeAbort):
                if self.state.probe_streak[rule.probe] >= rule.failures:
                    reason = f"probe {rule.probe} failed {rule.failures} times in a row"
            elif isinstance(rule, ErrorRatioAbort):
                bound = rule.overdue or self.scenario.load.timeout
                finished = self._finished_since(now - rule.window)
                overdue = self._overdue(now, now - rule.window, bound)
                judged = len(finished) + len(overdue)
                if judged < rule.min_requests:
                    continue
                failed = len(overdue) + sum(
                    1 for r in finished if classify(r) is RequestOutcome.FAILED
                )
                ratio = failed / judged
                if ratio > rule.above:
                    reason = (
                        f"error ratio {ratio:.1%} over the last {rule.window:g}s "
                        f"> {rule.above:.1%} ({len(overdue)} unanswered for over {bound:g}s)"
                    )
            elif isinstance(rule, MetricAbort):
                with self._lock:
                    last = self.state.scrapes[-rule.samples :]
                values = [s.values.get(rule.series) for s in last]
                if len(values) == rule.samples and all(
                    v is not None and rule.beyond(v) for v in values
                ):
                    bounds = [f"> {rule.above:g}" if rule.above is not None else "",
                              f"< {rule.below:g}" if rule.below is not None else ""]  # fmt: skip
                    reason = (
                        f"{rule.series} {' or '.join(b for b in bounds if b)} for "
                        f"{rule.samples} scrapes in a row (last {values[-1]:g})"
                    )
            elif isinstance(rule, BurnRateAbort):
                recent = self._slo_window(self.slos[rule.slo], now, rule.window)
                if len(recent) < rule.min_requests:
                    continue
                ev = evaluate(self.slos[rule.slo], recent)
                if ev.burn_rate is not None and ev.burn_rate > rule.above:
                    reason = (
                        f"{rule.slo} burn rate {ev.burn_rate:.1f}× over the last "
                        f"{rule.window:g}s > {rule.above:g}×"
                    )
            if reason is not None:
                self.state.abort = Abort(reason=reason, t=now, rule=rule.kind)
                self.emit(EventType.ABORT, reason=reason)
                self._stop.set()
                return

    # -- the service's own events ----------------------------------------------------------

    def _poll_events(self, target: Target) -> None:
        try:
            found = target.events(self.state.last_seq)
        except (httpx.HTTPError, HarnessError, KeyError, ValueError):
            return  # the gateway may be the fault; its events are fetched again later
        for raw in found:
            self.state.last_seq = max(self.state.last_seq, int(raw.get("seq", 0)))
            t = None
            if self.state.t0_wall is not None and "wall" in raw:
                t = float(raw["wall"]) - self.state.t0_wall
            event = {**raw, "t": t}
            self.state.events.append(event)
            self.emit(EventType.SERVICE_EVENT, t=t, event=event)

    def _collect_events(self, target: Target) -> None:
        with contextlib.suppress(Exception):
            self._poll_events(target)

    # -- judgement -------------------------------------------------------------------------

    def _verdict(self) -> Verdict:
        st = self.state
        load_end = self.scenario.load.duration
        sent = sorted(st.records, key=lambda r: r.scheduled)
        # What SLOs and expectations judge (one definition: judged()): requests or attempts,
        # never a request its client cancelled.
        records = judged(sent, self.scenario.load.judge)
        slo_records = [r.to_slo() for r in records]
        evaluations: dict[str, Evaluation] = {}
        if slo_records:
            evaluations = {
                name: evaluate(slo, slo_records, start=0.0, end=load_end)
                for name, slo in self.slos.items()
            }
        outcomes: list[Outcome] = []
        if st.ran_load and records:
            series = {
                name: [(s.t, s.values.get(name)) for s in st.scrapes if s.t is not None]
                for name in (m.name for m in self.scenario.metrics.series)
            } if self.scenario.metrics else {}  # fmt: skip
            facts = Facts(records, st.windows, st.events, evaluations, load_end, series, sent)
            outcomes = [check(spec, facts) for spec in self.scenario.expect]
        faults = []
        for name, spec in zip(self.scenario.fault_names(), self.scenario.faults, strict=True):
            window = st.windows.get(name, Window(None, None))
            applied, started = window.applied, st.started.get(name, window.applied)
            detected = None
            if applied is not None and started is not None:
                detected = time_to_detect(st.events, started, ignore=st.provoked.get(name))
            alerted = None
            if applied is not None and started is not None:
                alerted = self._time_to_alert(records, started, load_end)
            faults.append(FaultResult(
                name=name, kind=spec.kind, at=spec.at, planned_end=spec.end,
                apply_started=None if applied is None else started, time_to_alert_s=alerted,
                applied=applied, reverted=window.reverted, time_to_detect_s=detected,
                first_failure_s=None if started is None or applied is None else first_failure(
                    records, started
                ),
                seen=None if name not in st.acted else st.acted[name].seen,
                affected=None if name not in st.acted else st.acted[name].affected,
            ))  # fmt: skip
        errors = list(st.errors)
        if st.ran_load and st.abort is None and not errors:
            # A fault the scenario planned and the run never applied was not tested: the run
            # cannot pass on the strength of the faults it did apply.
            errors += [
                f"fault {f.name} (planned at {f.at:g}s) never applied" for f in faults
                if f.applied is None
            ]  # fmt: skip
            # Applied and in place, yet it picked no answer of the ones that went through it
            # (or none went through): the fault was not tested either.
            errors += [
                f"fault {f.name} applied but acted on none of the {f.seen} answers that "
                "went through it" for f in faults if f.affected == 0
            ]  # fmt: skip
        ends = [w.end for w in st.windows.values() if w.end is not None]
        # One figure: measured as the recovery expectation measures it (its window, where the
        # scenario has one), from the end of the last fault that applied.
        recovery = next((e for e in self.scenario.expect if isinstance(e, Recovery)), None)
        hold = recovery.window if recovery is not None else Recovery.model_fields["window"].default
        since = max(ends) if ends else None
        ttr = time_to_recover(records, since, load_end, hold) if since is not None else None
        detects = [f.time_to_detect_s for f in faults if f.time_to_detect_s is not None]
        alerts = [f.time_to_alert_s for f in faults if f.time_to_alert_s is not None]
        expectations_ok = len(outcomes) == len(self.scenario.expect) and all(
            o.passed for o in outcomes
        )
        if errors:
            status = Status.HARNESS_ERROR
        elif st.abort is not None:
            status = Status.ABORTED
        elif st.health is not None and not st.health.valid:
            status = Status.INVALID
        elif not (st.before_ok and st.after_ok and expectations_ok):
            status = Status.FAILED
        else:
            status = Status.PASSED
        outcome_counts = Counter(classify(r) for r in sent if not r.cancelled)
        statuses = Counter("error" if r.error else str(r.status) for r in sent
                           if not r.cancelled)  # fmt: skip
        return Verdict(
            run_id=self.run_id,
            scenario=self.scenario.name,
            description=self.scenario.description,
            file=str(self.loaded.path),
            status=status,
            seed=self.seed,
            backend=(self.settings.backend or self.scenario.backend).value,
            started_wall=st.t0_wall,
            duration_s=load_end,
            abort=st.abort,
            harness_errors=errors,
            steady_state=SteadyState(
                before_ok=st.before_ok, after_ok=st.after_ok, results=st.probes
            ),
            expectations=outcomes,
            slos=[SLOResult.of(ev) for ev in evaluations.values()],
            faults=faults,
            time_to_detect_s=min(detects) if detects else None,
            time_to_alert_s=min(alerts) if alerts else None,
            time_to_recover_s=ttr,
            recovered_since=since,
            requests=RequestCounts(
                total=len(sent),
                ok=outcome_counts[RequestOutcome.OK],
                degraded=outcome_counts[RequestOutcome.DEGRADED],
                shed=outcome_counts[RequestOutcome.SHED],
                by_status=dict(sorted(statuses.items())),
                cancelled=sum(r.cancelled for r in sent),
                attempts=sum(r.tries for r in sent if r.error != "dropped"),
                amplification=amplification(sent),
                clients={
                    name: ClientCounts(
                        requests=len(mine),
                        attempts=sum(r.tries for r in mine),
                        cancelled=sum(r.cancelled for r in mine),
                        ok=sum(classify(r) is RequestOutcome.OK for r in mine if not r.cancelled),
                        amplification=amplification(mine),
                        shed=sum(a.status == 429 for r in mine for a in r.attempts)
                        + sum(r.status == 429 for r in mine),
                    )
                    for name in sorted({r.client for r in sent if r.client is not None})
                    if (mine := [r for r in sent if r.client == name])
                },
            ),
            generator=st.health,
            service_events=dict(Counter(str(e.get("kind")) for e in st.events)),
            metrics=[summarise(m, st.scrapes) for m in self.scenario.metrics.series]
            if self.scenario.metrics
            else [],
        )


class _ThreadStop:
    """An asyncio stop event that another thread can set."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._set = threading.Event()

    def bind(self) -> asyncio.Event:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        if self._set.is_set():
            self._event.set()
        return self._event

    def set(self) -> None:
        self._set.set()
        if self._loop is not None and self._event is not None:
            with contextlib.suppress(RuntimeError):  # the loop already finished
                self._loop.call_soon_threadsafe(self._event.set)


async def _drive(generator: LoadGenerator | ShardedLoad, stop: _ThreadStop) -> LoadResult:
    return await generator.run(stop.bind())


class _LoadThread(threading.Thread):
    """One load generator on an event loop of its own: what it returned, or why it failed."""

    def __init__(self, name: str, generator: LoadGenerator | ShardedLoad) -> None:
        super().__init__(name=name, daemon=True)
        self.generator = generator
        self.stop = _ThreadStop()
        self.result: LoadResult | None = None
        self.error: str | None = None

    def run(self) -> None:
        try:
            self.result = run_loop(_drive(self.generator, self.stop))
        except Exception as exc:  # the run judges it: a dead generator is a harness error
            self.error = f"{type(exc).__name__}: {exc}"

    def failure_text(self) -> str:
        return f": {self.error}" if self.error else ""


def _health(main: LoadResult, bursts: list[LoadResult]) -> GeneratorHealth:
    """The main generator's health, with every burst's reasons: a burst that could not keep
    its schedule makes the run as invalid as the main load would."""
    h = main.health
    reasons = list(h.reasons)
    for burst in bursts:
        reasons += [f"burst: {reason}" for reason in burst.health.reasons]
    return GeneratorHealth(
        scheduled=h.scheduled + sum(b.health.scheduled for b in bursts),
        started=h.started + sum(b.health.started for b in bursts),
        late=h.late + sum(b.health.late for b in bursts),
        dropped=h.dropped + sum(b.health.dropped for b in bursts),
        lag_p50_ms=h.lag_p50_ms,
        lag_p99_ms=max([h.lag_p99_ms, *(b.health.lag_p99_ms for b in bursts)]),
        lag_max_ms=max([h.lag_max_ms, *(b.health.lag_max_ms for b in bursts)]),
        cpu_share=h.cpu_share, reasons=tuple(reasons), shards=h.shards,
    )  # fmt: skip


def _http_probe(target: Target, probe: HttpProbe, service: Service) -> ProbeResult:
    """The probe's request as the load sends it: through the client hop, with the service's
    headers and key, and for https the real host's name checked against its certificate."""
    try:
        headers = service.request_headers()
    except ValueError as exc:
        return ProbeResult(probe=probe.name, ok=False, detail=str(exc))
    if probe.admin:
        headers.update(target.headers())
    extensions: dict[str, Any] = {}
    if target.host_header is not None:
        headers["Host"] = target.host_header
    if target.server_hostname is not None:
        extensions["sni_hostname"] = target.server_hostname
    try:
        with httpx.Client(verify=service.ssl_context() or True, timeout=probe.timeout) as client:
            response = client.request(
                probe.method, f"{target.url}{probe.path}", json=probe.body, headers=headers,
                extensions=extensions,
            )  # fmt: skip
    except httpx.HTTPError as exc:
        return ProbeResult(probe=probe.name, ok=False, detail=f"{type(exc).__name__}: {exc}")
    problems = []
    if response.status_code != probe.status:
        problems.append(f"HTTP {response.status_code}, expected {probe.status}")
    if probe.json_:
        try:
            data = response.json()
        except ValueError:
            data = None
            problems.append("the answer is not JSON")
        for check_ in probe.json_:
            if data is None:
                break
            value = _dig(data, check_.field)
            if check_.equals is not None and value != check_.equals:
                problems.append(f"{check_.field} = {value!r}, expected {check_.equals!r}")
            number = value if isinstance(value, int | float) else None
            if check_.at_least is not None and (number is None or number < check_.at_least):
                problems.append(f"{check_.field} = {value!r}, expected ≥ {check_.at_least:g}")
            if check_.at_most is not None and (number is None or number > check_.at_most):
                problems.append(f"{check_.field} = {value!r}, expected ≤ {check_.at_most:g}")
    detail = "; ".join(problems) or f"HTTP {response.status_code}"
    return ProbeResult(probe=probe.name, ok=not problems, detail=detail)


def _dig(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def _environment() -> dict[str, Any]:
    return {
        "ichaos": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
    }
