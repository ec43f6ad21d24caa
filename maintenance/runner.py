"""The maintenance runner: a change applied to the planned hosts, wave by wave, over pinned SSH.

The gates come first (a change that fails validation, is not announced, lacks its notices or is
outside its window is refused; an operator may override them only explicitly, to drill the
runner itself, and the override is logged and reported). Then per host: pre-checks, the steps
(each idempotent, each one ``sudo -n bash -c`` chain with stdin closed), post-checks. A failed
host rolls back its steps where they have a rollback. Once the error budget is spent (or a canary
fails) no new host starts; hosts never started are reported untouched. The run state is written
atomically after every host, so a halted run resumes without redoing finished hosts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from fabric import Connection
from invoke.exceptions import CommandTimedOut

from erpcloud import policy
from erpcloud.inventory import Inventory, InventoryHost, write_known_hosts
from erpcloud.model import Customer
from erpcloud.output import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_WARNING
from erpcloud.ssh import HostKeyError, connect, result_summary, run, run_as_root
from maintenance.checks import (
    backup_script,
    evaluate_postchecks,
    evaluate_prechecks,
    https_check,
    parse_facts,
    postcheck_script,
    precheck_script,
)
from maintenance.notices import notice_problems
from maintenance.planner import Plan, plan_waves, select_hosts
from maintenance.records import (
    Attempt,
    CheckRecord,
    CheckStatus,
    HostRecord,
    HostStatus,
    RollbackRecord,
    RunSettings,
    RunState,
    RunStatus,
    RunStore,
    StepRecord,
    WaveRecord,
)
from maintenance.reports import write_reports
from maintenance.rules import ChangeCheck
from maintenance.steps import Step

Clock = Callable[[], datetime]
Progress = Callable[[str], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _quiet(_: str) -> None:
    return None


class RunRefused(Exception):
    """The run may not start (or resume); ``code`` is the exit code, ``details`` the reasons."""

    def __init__(self, message: str, code: int = EXIT_FAILED, details: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details or []


@dataclass
class RunOptions:
    dry_run: bool = False
    #: Override the gates to drill the runner itself: the reason is logged and reported.
    drill_reason: str | None = None
    #: A run id to resume, or "latest" (the change's newest run that is waiting for a window).
    resume: str | None = None
    wave_size: int | None = None
    wave_percent: float | None = None
    concurrency: int | None = None
    max_errors: int | None = None


@dataclass
class RunInputs:
    check: ChangeCheck
    inventory: Inventory
    customers: Mapping[str, Customer]
    store: RunStore
    notices_dir: Path
    clock: Clock = utc_now
    progress: Progress = _quiet
    connect_timeout: float = 10.0
    step_timeout: float = policy.MAINTENANCE_STEP_TIMEOUT.total_seconds()


def planned_hosts(inputs: RunInputs) -> list[InventoryHost]:
    change = inputs.check.loaded.change
    return select_hosts(inputs.inventory, inputs.check.customers, change.targets.environments)


def make_plan(inputs: RunInputs, options: RunOptions) -> Plan:
    return plan_waves(
        planned_hosts(inputs),
        inputs.customers,
        wave_size=options.wave_size,
        wave_percent=options.wave_percent,
        concurrency=options.concurrency,
        max_errors=options.max_errors,
    )


# --- gates -------------------------------------------------------------------------------------
def gate_problems(inputs: RunInputs, now: datetime) -> list[str]:
    """Why the change may not run now (policy reasons: the ones a drill may override)."""
    check = inputs.check
    change = check.loaded.change
    problems = [f"fails validation: {error}" for error in check.rules]
    if change.announced_at > now:
        problems.append(
            f"not announced yet: announced_at is {change.announced_at:%Y-%m-%d %H:%M %Z}"
        )
    problems.extend(notice_problems(check, inputs.notices_dir))
    windows = [check.windows[r] for r in sorted(check.windows)]
    if windows and not any(w.contains(now) for w in windows):
        shown = "; ".join(
            f"{w.region} {w.starts_at:%Y-%m-%d %H:%M}-{w.ends_at:%H:%M} UTC" for w in windows
        )
        problems.append(f"outside its window at {now:%Y-%m-%d %H:%M} UTC (windows: {shown})")
    return problems


def _new_run_id(store: RunStore, change_id: str, now: datetime, dry_run: bool) -> str:
    base = f"{change_id}-{now:%Y%m%dT%H%M%SZ}{'-dry-run' if dry_run else ''}"
    run_id, number = base, 1
    while store.run_dir(run_id).exists():
        number += 1
        run_id = f"{base}-{number}"
    return run_id


def _new_state(inputs: RunInputs, options: RunOptions, plan: Plan, now: datetime) -> RunState:
    check = inputs.check
    loaded = check.loaded
    hosts: dict[str, HostRecord] = {}
    for wave in plan.waves:
        for name in wave.hosts:
            host = inputs.inventory.host(name)
            customer = inputs.customers[host.customer]
            window = check.window_for(customer)
            hosts[name] = HostRecord(
                name=name,
                customer=customer.id,
                environment=host.environment,
                region=customer.region,
                wave=wave.index,
                window_start=window.starts_at if window else None,
                window_end=window.ends_at if window else None,
            )
    return RunState(
        run_id=_new_run_id(inputs.store, loaded.id, now, options.dry_run),
        change_id=loaded.id,
        change_file=loaded.file,
        change_digest=loaded.digest,
        kind=loaded.change.kind.value,
        window_year=check.year,
        dry_run=options.dry_run,
        drill_reason=options.drill_reason,
        created_at=now,
        updated_at=now,
        settings=RunSettings(
            wave_size=plan.wave_size, concurrency=plan.concurrency, max_errors=plan.max_errors
        ),
        waves=[WaveRecord(index=w.index, label=w.label, hosts=list(w.hosts)) for w in plan.waves],
        hosts=hosts,
    )


def _resumable(inputs: RunInputs, options: RunOptions) -> RunState | None:
    change_id = inputs.check.loaded.id
    if options.resume is None:
        return None
    if options.resume == "latest":
        runs = inputs.store.runs_of(change_id)
        if not runs or runs[-1].status is RunStatus.COMPLETED:
            return None  # nothing to continue: a new run
        state = runs[-1]
        if state.status in (RunStatus.HALTED, RunStatus.FAILED):
            raise RunRefused(
                f"run {state.run_id} {state.status.value} ({state.halted_reason}); an operator "
                f"resumes it by its id after fixing the cause: --resume {state.run_id}"
            )
        return state
    try:
        state = inputs.store.load(options.resume)
    except FileNotFoundError as exc:
        raise RunRefused(str(exc), EXIT_BAD_INPUT) from None
    if state.change_id != change_id:
        raise RunRefused(
            f"run {state.run_id} applied change {state.change_id}, not {change_id}", EXIT_BAD_INPUT
        )
    if state.dry_run:
        raise RunRefused(f"run {state.run_id} was a dry run; start a real run", EXIT_BAD_INPUT)
    return state


def prepare_run(inputs: RunInputs, options: RunOptions) -> RunState:
    """The state of a new or resumed run, after the gates (or :class:`RunRefused`)."""
    check = inputs.check
    loaded = check.loaded
    now = inputs.clock()
    if check.structural:
        raise RunRefused(
            f"{loaded.id} cannot be planned", EXIT_BAD_INPUT, [str(e) for e in check.structural]
        )
    if options.drill_reason is not None and not options.drill_reason.strip():
        raise RunRefused("--drill needs a reason (it is logged and reported)", EXIT_BAD_INPUT)
    if options.dry_run and options.resume:
        raise RunRefused("a dry run starts afresh: drop --resume", EXIT_BAD_INPUT)
    problems = gate_problems(inputs, now)
    overrides: list[str] = []
    if problems and not options.dry_run:
        if options.drill_reason is None:
            code = EXIT_BAD_INPUT if check.rules else EXIT_FAILED
            raise RunRefused(f"{loaded.id} may not run now", code, problems)
        overrides = [f"drill ({options.drill_reason}): overrode: {p}" for p in problems]
    state = _resumable(inputs, options)
    if state is None:
        plan = make_plan(inputs, options)
        if not plan.host_count:
            raise RunRefused(
                f"no host in the inventory for {loaded.id}'s targets "
                f"({', '.join(c.id for c in check.customers)})",
                EXIT_BAD_INPUT,
            )
        state = _new_state(inputs, options, plan, now)
    else:
        if state.change_digest != loaded.digest:
            raise RunRefused(
                f"{loaded.file} changed since run {state.run_id} started; a resumed run applies "
                "the change it started with: start a new run",
                EXIT_BAD_INPUT,
            )
        for record in state.hosts.values():
            if record.status is not HostStatus.DONE:
                if record.status is not HostStatus.PENDING:
                    record.history.append(record.outcome())
                record.status = HostStatus.PENDING
                record.reason = ""
        state.status = RunStatus.RUNNING
        state.halted_reason = ""
        state.drill_reason = options.drill_reason or state.drill_reason
    if options.dry_run:
        state.overrides.extend(f"dry run: apply would refuse: {p}" for p in problems)
    state.overrides.extend(overrides)
    state.attempts.append(Attempt(started_at=now, resumed=bool(state.attempts)))
    state.updated_at = now
    inputs.store.save(state)
    return state


# --- executing ----------------------------------------------------------------------------------
@dataclass
class _Budget:
    max_errors: int
    failures: int = 0
    halted: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


class Runner:
    """Executes one run's state against the hosts; every change of state is saved at once."""

    def __init__(self, state: RunState, inputs: RunInputs) -> None:
        self.state = state
        self.inputs = inputs
        self.steps: list[Step] = inputs.check.loaded.steps
        self.lock = threading.Lock()
        self.budget = _Budget(max_errors=state.settings.max_errors)
        self.known_hosts = write_known_hosts(
            inputs.inventory, inputs.store.run_dir(state.run_id) / "known_hosts"
        )
        self.total = len(state.hosts)
        self.started = 0

    # -- bookkeeping
    def _save(self) -> None:
        with self.lock:
            self.state.updated_at = self.inputs.clock()
            self.inputs.store.save(self.state)

    def _say(self, line: str) -> None:
        with self.lock:
            self.inputs.progress(line)

    def run(self) -> RunState:
        state = self.state
        for override in state.overrides:
            self._say(f"OVERRIDE {override}")
        todo = [h for h in state.hosts.values() if h.status is HostStatus.PENDING]
        self._say(
            f"run {state.run_id}: {len(todo)} of {self.total} host(s) to do in "
            f"{len(state.waves)} wave(s), concurrency {state.settings.concurrency}, "
            f"max_errors {state.settings.max_errors}{' (dry run)' if state.dry_run else ''}"
        )
        for wave in state.waves:
            pending = [n for n in wave.hosts if state.hosts[n].status is HostStatus.PENDING]
            if not pending:
                continue
            if self.budget.halted:
                for name in pending:
                    self._untouched(name, self.budget.halted)
                continue
            self._say(
                f"wave {wave.index}/{len(state.waves)} ({wave.label}): {len(pending)} host(s)"
            )
            with ThreadPoolExecutor(max_workers=state.settings.concurrency) as pool:
                list(pool.map(self._host, pending))
            failed = [
                n
                for n in wave.hosts
                if state.hosts[n].status in (HostStatus.FAILED, HostStatus.REFUSED)
            ]
            if wave.label == "canary" and failed and not self.budget.halted:
                self.budget.halted = (
                    f"canary {', '.join(failed)} failed: production waves not started"
                )
        self._finish()
        return state

    def _finish(self) -> None:
        state = self.state
        attempt = state.attempts[-1]
        attempt.finished_at = self.inputs.clock()
        statuses = [h.status for h in state.hosts.values()]
        if state.dry_run:
            state.status = RunStatus.DRY_RUN
        elif all(s is HostStatus.DONE for s in statuses):
            state.status = RunStatus.COMPLETED
        elif self.budget.halted:
            state.status = RunStatus.HALTED
            state.halted_reason = self.budget.halted
        elif any(s in (HostStatus.FAILED, HostStatus.REFUSED) for s in statuses):
            state.status = RunStatus.FAILED
            state.halted_reason = "host(s) failed within the error budget"
        else:
            state.status = RunStatus.WAITING
        self._save()
        paths = write_reports(state, self.inputs.store.run_dir(state.run_id))
        done = state.count(HostStatus.DONE)
        self._say(
            f"run {state.run_id}: {state.status.value}: {done} done, "
            f"{state.count(HostStatus.FAILED)} failed, {state.count(HostStatus.REFUSED)} "
            f"refused, {state.count(HostStatus.UNTOUCHED)} untouched"
            f"{', ' + str(state.count(HostStatus.CHECKED)) + ' checked' if state.dry_run else ''}"
        )
        if state.halted_reason:
            self._say(f"{state.status.value}: {state.halted_reason}")
        self._say(f"report: {paths[1]}")

    def _untouched(self, name: str, reason: str) -> None:
        record = self.state.hosts[name]
        record.status = HostStatus.UNTOUCHED
        record.reason = reason
        self._save()
        self._say(f"  {name}: untouched ({reason})")

    def _host(self, name: str) -> None:
        record = self.state.hosts[name]
        with self.budget.lock:
            halted = self.budget.halted
        if halted:
            self._untouched(name, halted)
            return
        now = self.inputs.clock()
        override = self.state.drill_reason is not None or self.state.dry_run
        start, end = record.window_start, record.window_end
        if not override and start and end and not start <= now < end:
            self._untouched(
                name, f"outside its window ({start:%Y-%m-%d %H:%M}-{end:%H:%M} UTC): waits for it"
            )
            return
        with self.lock:
            self.started += 1
            number = self.started
        record.attempts += 1
        record.started_at = now
        record.finished_at = None
        record.prechecks, record.steps, record.rollbacks, record.postchecks = [], [], [], []
        record.error = ""
        record.downtime_seconds = 0.0
        self._save()
        self._say(f"  [{number}/{self.total}] {name} ({record.environment.value}): started")
        begun = time.monotonic()
        host = self.inputs.inventory.host(name)
        try:
            self._work(host, record)
        except Exception as exc:  # one host's surprise must not end the run: report it
            record.status = HostStatus.FAILED
            record.error = record.error or f"{type(exc).__name__}: {exc}"
        record.seconds = round(time.monotonic() - begun, 3)
        record.finished_at = self.inputs.clock()
        if record.status in (HostStatus.FAILED, HostStatus.REFUSED):
            with self.budget.lock:
                self.budget.failures += 1
                if self.budget.failures > self.budget.max_errors and not self.budget.halted:
                    self.budget.halted = (
                        f"error budget spent: {self.budget.failures} failed host(s), "
                        f"max_errors {self.budget.max_errors}"
                    )
        self._save()
        verdict = record.status.value.upper() if record.status is not HostStatus.DONE else "done"
        detail = f": {record.error.splitlines()[0]}" if record.error else ""
        rolled = f" (rolled back {len(record.rollbacks)} step(s))" if record.rollbacks else ""
        self._say(
            f"  [{number}/{self.total}] {name}: {verdict} {record.seconds:.1f} s{detail}{rolled}"
        )

    # -- one host
    def _work(self, host: InventoryHost, record: HostRecord) -> None:
        target = self.inputs.inventory.target(host, self.known_hosts)
        try:
            connection = connect(target, timeout=self.inputs.connect_timeout)
        except HostKeyError as exc:
            record.status = HostStatus.REFUSED
            record.error = str(exc)
            record.prechecks.append(
                CheckRecord(name="host_key", status=CheckStatus.FAILED, detail=str(exc))
            )
            return
        except Exception as exc:
            record.status = HostStatus.FAILED
            record.error = f"unreachable: {target}: {exc}"
            record.prechecks.append(
                CheckRecord(name="reachable", status=CheckStatus.FAILED, detail=str(exc))
            )
            return
        try:
            record.prechecks.append(
                CheckRecord(name="reachable", status=CheckStatus.OK, detail=str(target))
            )
            record.prechecks.append(
                CheckRecord(name="host_key", status=CheckStatus.OK, detail="matches the pinned key")
            )
            if not self._prechecks(connection, host, record):
                record.status = HostStatus.FAILED
                return
            downtime_from = self._steps(connection, host, record)
            if record.status is HostStatus.FAILED:
                self._measure_downtime(record, downtime_from)
                return
            self._postchecks(connection, host, record)
            self._measure_downtime(record, downtime_from)
            if self.state.dry_run:
                record.status = HostStatus.CHECKED
            elif any(c.status is CheckStatus.FAILED for c in record.postchecks):
                failed = next(c for c in record.postchecks if c.status is CheckStatus.FAILED)
                record.error = f"post-check {failed.name} failed: {failed.detail}"
                self._rollback(connection, host, record, len(self.steps))
                record.status = HostStatus.FAILED
            else:
                record.status = HostStatus.DONE
        finally:
            connection.close()

    def _root(self, connection: Connection, script: str) -> tuple[bool, str]:
        try:
            result = run_as_root(connection, script, timeout=self.inputs.step_timeout)
        except CommandTimedOut:
            return False, f"timed out after {self.inputs.step_timeout:.0f} s"
        return result.ok, result_summary(result)

    def _prechecks(self, connection: Connection, host: InventoryHost, record: HostRecord) -> bool:
        result = run_as_root(connection, precheck_script(host), timeout=self.inputs.step_timeout)
        if not result.ok:
            detail = result_summary(result) or f"exit {result.exited}"
            record.prechecks.append(
                CheckRecord(
                    name="sudo",
                    status=CheckStatus.FAILED,
                    detail=f"root commands fail (sudo -n, non-interactive): {detail}",
                )
            )
            record.error = f"pre-check sudo failed: {detail}"
            return False
        record.prechecks.append(
            CheckRecord(name="sudo", status=CheckStatus.OK, detail="sudo -n works")
        )
        verdict = evaluate_prechecks(
            host, parse_facts(result.stdout), self.steps, self.inputs.clock()
        )
        record.prechecks.extend(verdict.checks)
        if verdict.failed:
            first = verdict.failed[0]
            record.error = f"pre-check {first.name} failed: {first.detail}"
            return False
        if verdict.backup_needed and not self.state.dry_run:
            began = time.monotonic()
            ok, output = self._root(connection, backup_script(host))
            seconds = time.monotonic() - began
            if not ok:
                record.prechecks.append(
                    CheckRecord(name="backup", status=CheckStatus.FAILED, detail=output)
                )
                record.error = f"pre-check backup failed: could not take a backup: {output}"
                return False
            record.prechecks.append(
                CheckRecord(
                    name="backup",
                    status=CheckStatus.TAKEN,
                    detail=f"took a backup before the risky step(s) in {seconds:.1f} s (S6)",
                )
            )
        return True

    def _steps(
        self, connection: Connection, host: InventoryHost, record: HostRecord
    ) -> float | None:
        """Run the steps in order; the monotonic time service was first interrupted, if it was."""
        downtime_from: float | None = None
        change_id = self.state.change_id
        for position, step in enumerate(self.steps):
            ctx = step.context(host.host_root, change_id, host.db)
            script = step.dry_run_script(ctx) if self.state.dry_run else step.apply_script(ctx)
            began = time.monotonic()
            if step.interrupts_service and downtime_from is None and not self.state.dry_run:
                downtime_from = began
            ok, output = self._root(connection, script)
            marker = next(
                (
                    line.split(":", 1)[1]
                    for line in output.splitlines()
                    if line.startswith("erpcloud-step:")
                ),
                "",
            )
            step_record = StepRecord(
                index=step.index,
                op=step.name,
                status=marker if ok and marker else "failed",
                seconds=round(time.monotonic() - began, 3),
                output=output,
            )
            record.steps.append(step_record)
            if step_record.status == "failed":
                record.error = f"step {step.index} ({step.name}) failed: {output}"
                record.status = HostStatus.FAILED
                self._rollback(connection, host, record, position + 1)
                return downtime_from
        return downtime_from

    def _rollback(
        self, connection: Connection, host: InventoryHost, record: HostRecord, upto: int
    ) -> None:
        """Undo the failed step and those before it, newest first, where they have a rollback."""
        for step in reversed(self.steps[:upto]):
            script = step.rollback_script(
                step.context(host.host_root, self.state.change_id, host.db)
            )
            if script is None:
                continue
            ok, output = self._root(connection, script)
            record.rollbacks.append(
                RollbackRecord(index=step.index, op=step.name, ok=ok, output=output)
            )

    def _postchecks(self, connection: Connection, host: InventoryHost, record: HostRecord) -> None:
        result = run(connection, postcheck_script(host), timeout=self.inputs.step_timeout)
        record.postchecks.extend(evaluate_postchecks(host, parse_facts(result.stdout)))
        if host.https_url:
            record.postchecks.append(
                https_check(host.https_url, self.inputs.inventory.https_ca_file)
            )

    def _measure_downtime(self, record: HostRecord, downtime_from: float | None) -> None:
        if downtime_from is not None:
            record.downtime_seconds = round(time.monotonic() - downtime_from, 3)


def apply_change(inputs: RunInputs, options: RunOptions) -> RunState:
    """Gate, plan (or resume), run and report; the returned state is also on disk."""
    state = prepare_run(inputs, options)
    return Runner(state, inputs).run()


def run_exit_code(state: RunState) -> int:
    """0 completed (or a clean dry run), 1 halted or a host failed, 3 waiting for a window."""
    failed = state.count(HostStatus.FAILED) + state.count(HostStatus.REFUSED)
    if state.status is RunStatus.COMPLETED or (state.status is RunStatus.DRY_RUN and not failed):
        return EXIT_OK
    if state.status is RunStatus.WAITING:
        return EXIT_WARNING
    return EXIT_FAILED
