"""Restoring from one repository (S7 point in time; S8 uses it for drills and recovery).

A restore into a new data directory gets ``archive_mode=off`` by default, so a restored copy
never pushes WAL into the production repositories; an in-place recovery of the database host
keeps archiving (``archive_mode_off=False``), and its new timeline's ``.history`` file goes to the
repositories like any WAL.
"""

from __future__ import annotations

from collections.abc import Mapping

from backups.pgbackrest import (
    BACKUP_TIMEOUT_SECONDS,
    CommandResult,
    PgBackRest,
    PgBackRestError,
)


def restore(
    runner: PgBackRest,
    repo: int,
    data_dir: str,
    *,
    target_time: str | None = None,
    archive_mode_off: bool = True,
    delta: bool = False,
    target_action: str = "promote",
    target_name: str | None = None,
    backup_set: str | None = None,
    recovery_options: Mapping[str, str] | None = None,
    process_max: int | None = None,
) -> CommandResult:
    """``pgbackrest restore`` from repository ``repo`` into ``data_dir``.

    With ``target_time`` (e.g. ``2026-11-23 09:39:30.123+00``) the database replays WAL up to that
    moment, from the newest backup finished before it, then ``target_action``; with
    ``target_name``, up to that restore point (``pg_create_restore_point``); without either, to
    the end of the archive. ``backup_set`` names the backup to restore (default: pgBackRest's
    choice); ``recovery_options`` go to ``postgresql.auto.conf`` (e.g. a ``restore_command``);
    ``process_max`` overrides the configuration's parallelism for this restore.
    """
    if target_time is not None and target_name is not None:
        raise ValueError("a restore has one target: a time or a restore point name, not both")
    args = [f"--repo={repo}", f"--pg1-path={data_dir}"]
    if backup_set is not None:
        args.append(f"--set={backup_set}")
    if target_time is not None:
        args += ["--type=time", f"--target={target_time}", f"--target-action={target_action}"]
    if target_name is not None:
        args += ["--type=name", f"--target={target_name}", f"--target-action={target_action}"]
    for key, value in (recovery_options or {}).items():
        args.append(f"--recovery-option={key}={value}")
    if archive_mode_off:
        args.append("--archive-mode=off")
    if delta:
        args.append("--delta")
    if process_max is not None:
        args.append(f"--process-max={process_max}")
    result = runner.run(*args, "restore", timeout=BACKUP_TIMEOUT_SECONDS)
    if not result.ok:
        raise PgBackRestError(result)
    return result
