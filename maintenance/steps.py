"""The step registry: the only operations a change file may name, each with typed arguments.

A step is three shell fragments that run as root on the host, under the host's ``host_root``
(``/`` in production; a private folder on the loopback test hosts):

- ``check``: exit 0 when the step is already in effect. It makes every step idempotent (the
  runner skips ``apply`` when it passes) and verifies ``apply`` afterwards.
- ``apply``: make it so.
- ``rollback`` (where one exists): put back what ``apply`` changed, from what it saved first.

Each runs as one ``sudo -n bash -c`` chain (:func:`erpcloud.ssh.run_as_root`). Nothing here
opens a connection; :mod:`maintenance.runner` does.
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
import re
import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from erpcloud import policy
from erpcloud.inventory import Database
from erpcloud.model import check_region_name

q = shlex.quote

_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+@/-]*$")


def check_host_path(value: str) -> str:
    """An absolute, normalised path without '..', as the host sees it below ``host_root``."""
    if not _SAFE_PATH.match(value):
        raise ValueError("must be an absolute path of letters, digits and ._+@-/ only")
    if posixpath.normpath(value) != value or "/../" in f"{value}/":
        raise ValueError("must be normalised (no '..', '//' or trailing '/')")
    if value == "/":
        raise ValueError("must name a file, not '/'")
    return value


HostPath = Annotated[str, AfterValidator(check_host_path)]
RegionName = Annotated[str, AfterValidator(check_region_name)]


class StepArgs(BaseModel):
    # No whitespace stripping: a file's content is written byte for byte.
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class StepContext:
    """Where a step runs: the host's root, the change and step it belongs to, its database."""

    host_root: str
    change_id: str
    index: int
    db: Database | None = None

    def path(self, path: str) -> str:
        """``path`` below the host's root."""
        return posixpath.normpath(posixpath.join(self.host_root, path.lstrip("/")))

    @property
    def saved(self) -> str:
        """Where ``apply`` keeps what ``rollback`` needs: per change and step, on the host."""
        return self.path(f"/var/lib/erpcloud/maintenance/{self.change_id}/step-{self.index}")


A = TypeVar("A", bound=StepArgs)


class Operation(ABC, Generic[A]):
    """One named operation of the registry."""

    name: ClassVar[str]
    summary: ClassVar[str]
    args_model: type[A]
    #: Wants a recent good backup first, or takes one (S6).
    risky: ClassVar[bool] = False
    #: Needs the host's PostgreSQL (``db`` in the inventory).
    needs_db: ClassVar[bool] = False
    #: Only verifies (``check``); a failing check fails the step, nothing is applied.
    verify_only: ClassVar[bool] = False

    def interrupts_service(self, args: A) -> bool:  # noqa: ARG002 - one signature for all
        return False

    def migration_target(self, args: A) -> tuple[str, bool] | None:  # noqa: ARG002
        """``(to_region, for_recovery)`` for a data-centre migration (S14), else None."""
        return None

    @abstractmethod
    def check(self, args: A, ctx: StepContext) -> str: ...

    def apply(self, args: A, ctx: StepContext) -> str:  # noqa: ARG002
        return ":"

    def rollback(self, args: A, ctx: StepContext) -> str | None:  # noqa: ARG002
        return None


def _save_original(target: str, ctx: StepContext) -> str:
    """Keep the file as it was before the first apply (or that it was absent) for rollback."""
    return (
        f'S={q(ctx.saved)}; mkdir -p "$S"; '
        f'if [ ! -e "$S/.saved" ]; then '
        f'if [ -e {q(target)} ]; then cp -a {q(target)} "$S/original"; fi; '
        f'touch "$S/.saved"; fi'
    )


def _restore_original(target: str, ctx: StepContext) -> str:
    return (
        f"S={q(ctx.saved)}; "
        f'if [ -e "$S/.saved" ]; then '
        f'if [ -e "$S/original" ]; then cp -a "$S/original" {q(target)}; '
        f"else rm -f {q(target)}; fi; "
        f'rm -rf "$S"; fi'
    )


# --- the operations ------------------------------------------------------------------------------
class NoArgs(StepArgs):
    pass


class Noop(Operation[NoArgs]):
    name = "noop"
    summary = "Nothing: proves the runner reaches the host (drills, benchmarks)."
    args_model = NoArgs

    def check(self, args: NoArgs, ctx: StepContext) -> str:  # noqa: ARG002
        return "true"


class HealthArgs(StepArgs):
    paths: list[HostPath] = Field(default_factory=list)


class HealthCheck(Operation[HealthArgs]):
    name = "health_check"
    summary = "Verify the host: its root is writable, disk use is under the alarm threshold (S5)."
    args_model = HealthArgs
    verify_only = True

    def check(self, args: HealthArgs, ctx: StepContext) -> str:
        root = q(ctx.host_root)
        alarm = policy.DISK_ALARM_PERCENT
        parts = [
            f"probe={root}/.erpcloud-health.$$",
            'touch "$probe" && rm -f "$probe"',
            f'used=$(df -P {root} | awk \'NR==2 {{sub("%","",$5); print $5}}\')',
            f'[ "$used" -lt {alarm} ] || '
            f'{{ echo "disk $used% used (alarm at {alarm}%, S5)" >&2; exit 1; }}',
        ]
        parts.extend(
            f"[ -e {q(ctx.path(p))} ] || {{ echo {q(f'missing: {p}')} >&2; exit 1; }}"
            for p in args.paths
        )
        return "; ".join(parts)


class WriteFileArgs(StepArgs):
    path: HostPath
    content: str
    mode: Annotated[str, Field(pattern=r"^0?[0-7]{3,4}$")] = "0644"

    @property
    def mode_bits(self) -> int:
        return int(self.mode, 8)


class WriteFile(Operation[WriteFileArgs]):
    name = "write_file"
    summary = "Write a file (configuration drop-ins) with its mode; rollback restores the old one."
    args_model = WriteFileArgs

    def check(self, args: WriteFileArgs, ctx: StepContext) -> str:
        target = q(ctx.path(args.path))
        digest = hashlib.sha256(args.content.encode()).hexdigest()
        return (
            f"[ -f {target} ] && "
            f'[ "$(sha256sum {target} | cut -d" " -f1)" = {digest} ] && '
            f'[ "$(stat -c %a {target})" = {format(args.mode_bits, "o")} ]'
        )

    def apply(self, args: WriteFileArgs, ctx: StepContext) -> str:
        target = ctx.path(args.path)
        encoded = base64.b64encode(args.content.encode()).decode()
        temporary = q(f"{target}.erpcloud-tmp")
        return "; ".join(
            [
                _save_original(target, ctx),
                f"mkdir -p {q(posixpath.dirname(target))}",
                f"printf %s {q(encoded)} | base64 -d > {temporary}",
                f"chmod {format(args.mode_bits, 'o')} {temporary}",
                f"mv -f {temporary} {q(target)}",
            ]
        )

    def rollback(self, args: WriteFileArgs, ctx: StepContext) -> str:
        return _restore_original(ctx.path(args.path), ctx)


class RemoveFileArgs(StepArgs):
    path: HostPath


class RemoveFile(Operation[RemoveFileArgs]):
    name = "remove_file"
    summary = "Remove a file; rollback puts it back."
    args_model = RemoveFileArgs

    def check(self, args: RemoveFileArgs, ctx: StepContext) -> str:
        return f"[ ! -e {q(ctx.path(args.path))} ]"

    def apply(self, args: RemoveFileArgs, ctx: StepContext) -> str:
        target = ctx.path(args.path)
        return f"{_save_original(target, ctx)}; rm -f {q(target)}"

    def rollback(self, args: RemoveFileArgs, ctx: StepContext) -> str:
        return _restore_original(ctx.path(args.path), ctx)


_PG_NAME = r"^[a-z][a-z0-9_]{1,62}$"


class PostgresSettingArgs(StepArgs):
    name: Annotated[str, Field(pattern=_PG_NAME)]
    value: Annotated[str, Field(min_length=1, max_length=200)]

    @field_validator("value")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if any(c in value for c in "\n\r\0"):
            raise ValueError("must be one line")
        return value


def psql(db: Database, sql: str) -> str:
    """``psql`` as ``postgres`` on the host (peer or trust on the local socket)."""
    host = f"-h {q(db.socket_dir)} " if db.socket_dir else ""
    # No parentheses: inside "$(...)" they would read as arithmetic "$((".
    return (
        f"cd / && runuser -u postgres -- psql -X -q -At -v ON_ERROR_STOP=1 {host}"
        f"-p {db.port} -d postgres -c {q(sql)}"
    )


def _pg_setting(db: Database, column: str, name: str) -> str:
    """A column of ``pg_settings`` for one parameter (``name`` matched ``_PG_NAME``)."""
    return psql(db, f"select {column} from pg_settings where name = '{name}'")  # noqa: S608


class PostgresSetting(Operation[PostgresSettingArgs]):
    name = "postgres_setting"
    summary = (
        "Set one PostgreSQL parameter in a conf.d fragment and reload; settings that need a "
        "restart are refused (the step never restarts the database)."
    )
    args_model = PostgresSettingArgs
    risky = True
    needs_db = True

    def _file(self, args: PostgresSettingArgs, ctx: StepContext) -> str:
        assert ctx.db is not None
        return posixpath.join(ctx.db.conf_d, f"60-erpcloud-{args.name}.conf")

    def _line(self, args: PostgresSettingArgs) -> str:
        return f"{args.name} = '{args.value.replace(chr(39), chr(39) * 2)}'"

    def _in_effect(self, args: PostgresSettingArgs, ctx: StepContext) -> str:
        assert ctx.db is not None
        source = _pg_setting(ctx.db, "sourcefile", args.name)
        return f'[ "$({source})" = {q(self._file(args, ctx))} ]'

    def check(self, args: PostgresSettingArgs, ctx: StepContext) -> str:
        target = q(self._file(args, ctx))
        return (
            f'[ -f {target} ] && [ "$(cat {target})" = {q(self._line(args))} ] && '
            f"{self._in_effect(args, ctx)}"
        )

    def apply(self, args: PostgresSettingArgs, ctx: StepContext) -> str:
        assert ctx.db is not None
        target = self._file(args, ctx)
        known = _pg_setting(ctx.db, "1", args.name)
        pending = _pg_setting(ctx.db, "pending_restart", args.name)
        unknown = q(f"PostgreSQL has no parameter {args.name}")
        needs_restart = q(f"{args.name} needs a restart; this step only reloads")
        return "; ".join(
            [
                f'[ -n "$({known})" ] || {{ echo {unknown} >&2; exit 1; }}',
                _save_original(target, ctx),
                f"printf '%s\\n' {q(self._line(args))} > {q(target)}.erpcloud-tmp",
                f"chown postgres:postgres {q(target)}.erpcloud-tmp",
                f"mv -f {q(target)}.erpcloud-tmp {q(target)}",
                f"{psql(ctx.db, 'select pg_reload_conf()')} >/dev/null",
                # The reload is asynchronous: wait for the server to read the file (5 s at most).
                f"for _ in $(seq 50); do {self._in_effect(args, ctx)} && break; sleep 0.1; done",
                f'[ "$({pending})" != t ] || {{ echo {needs_restart} >&2; exit 1; }}',
            ]
        )

    def rollback(self, args: PostgresSettingArgs, ctx: StepContext) -> str:
        assert ctx.db is not None
        return (
            f"{_restore_original(self._file(args, ctx), ctx)}; "
            f"{psql(ctx.db, 'select pg_reload_conf()')} >/dev/null"
        )


class MigrateArgs(StepArgs):
    #: The region of the data centre the customer moves to (S10, S14).
    to_region: RegionName
    #: A move between availability zones of the same region to recover from a failure (S14:
    #: the one migration that needs no advance notice).
    for_recovery: bool = False


class MigrateDataCentre(Operation[MigrateArgs]):
    name = "migrate_data_centre"
    summary = (
        "The host's part of a data-centre migration (S14): after the pre-step backup (S6), mark "
        "the host handed over to the target region; the new host is built by the customer's "
        "stack there and restored from that backup."
    )
    args_model = MigrateArgs
    risky = True

    def interrupts_service(self, args: MigrateArgs) -> bool:  # noqa: ARG002
        return True

    def migration_target(self, args: MigrateArgs) -> tuple[str, bool]:
        return args.to_region, args.for_recovery

    def _marker(self, ctx: StepContext) -> str:
        return ctx.path("/var/lib/erpcloud/migration")

    def _content(self, args: MigrateArgs, ctx: StepContext) -> str:
        return f"change={ctx.change_id} to_region={args.to_region} recovery={args.for_recovery}"

    def check(self, args: MigrateArgs, ctx: StepContext) -> str:
        marker = q(self._marker(ctx))
        return f'[ -f {marker} ] && [ "$(cat {marker})" = {q(self._content(args, ctx))} ]'

    def apply(self, args: MigrateArgs, ctx: StepContext) -> str:
        marker = self._marker(ctx)
        return "; ".join(
            [
                _save_original(marker, ctx),
                f"mkdir -p {q(posixpath.dirname(marker))}",
                f"printf '%s' {q(self._content(args, ctx))} > {q(marker)}",
            ]
        )

    def rollback(self, args: MigrateArgs, ctx: StepContext) -> str:  # noqa: ARG002
        return _restore_original(self._marker(ctx), ctx)


REGISTRY: dict[str, Operation[Any]] = {
    op.name: op
    for op in (
        Noop(),
        HealthCheck(),
        WriteFile(),
        RemoveFile(),
        PostgresSetting(),
        MigrateDataCentre(),
    )
}


# --- a step of a change: an operation with its validated arguments ------------------------------
NOT_IN_EFFECT = "the step did not take effect (its check fails after apply)"


@dataclass(frozen=True)
class Step:
    index: int  # 1-based, as people count steps
    op: Operation[Any]
    args: StepArgs

    @property
    def name(self) -> str:
        return self.op.name

    @property
    def interrupts_service(self) -> bool:
        return self.op.interrupts_service(self.args)

    @property
    def migration_target(self) -> tuple[str, bool] | None:
        return self.op.migration_target(self.args)

    def context(self, host_root: str, change_id: str, db: Database | None) -> StepContext:
        return StepContext(host_root=host_root, change_id=change_id, index=self.index, db=db)

    def apply_script(self, ctx: StepContext) -> str:
        """Idempotent: skip when in effect; after applying, the check must pass."""
        check = self.op.check(self.args, ctx)
        if self.op.verify_only:
            return f"{check}; echo erpcloud-step:verified"
        return (
            f"if ( {check} ); then echo erpcloud-step:already; else "
            f"{self.op.apply(self.args, ctx)}; "
            f"( {check} ) || {{ echo {q(NOT_IN_EFFECT)} >&2; exit 1; }}; "
            "echo erpcloud-step:applied; fi"
        )

    def dry_run_script(self, ctx: StepContext) -> str:
        check = self.op.check(self.args, ctx)
        verdict = "verified" if self.op.verify_only else "already"
        failing = "would-fail" if self.op.verify_only else "would-apply"
        return (
            f"if ( {check} ) >/dev/null 2>&1; then echo erpcloud-step:{verdict}; "
            f"else echo erpcloud-step:{failing}; fi"
        )

    def rollback_script(self, ctx: StepContext) -> str | None:
        return self.op.rollback(self.args, ctx)


@dataclass(frozen=True)
class StepError:
    field: str  # e.g. "steps[2].args.path"
    rule: str


def resolve_steps(raw: Any) -> tuple[list[Step], list[StepError]]:
    """Validate a change file's ``steps`` against the registry; every error at once."""
    steps: list[Step] = []
    errors: list[StepError] = []
    if not isinstance(raw, list):
        return steps, errors  # the schema reports the shape
    for position, item in enumerate(raw):
        where = f"steps[{position}]"
        if not isinstance(item, dict) or not isinstance(item.get("op"), str):
            continue  # the schema reports a missing or mistyped op
        op = REGISTRY.get(item["op"])
        if op is None:
            known = ", ".join(sorted(REGISTRY))
            errors.append(
                StepError(f"{where}.op", f"unknown operation {item['op']!r} (known: {known})")
            )
            continue
        raw_args = item.get("args") or {}
        if not isinstance(raw_args, dict):
            continue  # the schema reports it
        try:
            args = op.args_model.model_validate(raw_args)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                loc = ".".join(str(p) for p in error["loc"])
                message = str(error["msg"]).removeprefix("Value error, ")
                if error["type"] == "extra_forbidden":
                    message = f"is not an argument of {op.name}"
                elif error["type"] == "missing":
                    message = f"is required by {op.name}"
                errors.append(StepError(f"{where}.args.{loc}" if loc else f"{where}.args", message))
            continue
        steps.append(Step(index=position + 1, op=op, args=args))
    return steps, errors
