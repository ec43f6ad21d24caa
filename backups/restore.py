"""Restoring from one repository (S7 point in time; S8 uses it for drills and recovery).

A restore into a new data directory gets ``archive_mode=off`` by default, so a restored copy
never pushes WAL into the production repositories; an in-place recovery of the database host
keeps archiving (``archive_mode_off=False``), and its new timeline's ``.history`` file goes to the
repositories like any WAL.
"""

from __future__ import annotations

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
) -> CommandResult:
    """``pgbackrest restore`` from repository ``repo`` into ``data_dir``.

    With ``target_time`` (e.g. ``2026-11-23 09:39:30.123+00``) the database replays WAL up to that
    moment, from the newest backup finished before it, then ``target_action``; without it, to the
    end of the archive.
    """
    args = [f"--repo={repo}", f"--pg1-path={data_dir}"]
    if target_time is not None:
        args += ["--type=time", f"--target={target_time}", f"--target-action={target_action}"]
    if archive_mode_off:
        args.append("--archive-mode=off")
    if delta:
        args.append("--delta")
    result = runner.run(*args, "restore", timeout=BACKUP_TIMEOUT_SECONDS)
    if not result.ok:
        raise PgBackRestError(result)
    return result
