"""WAL segment names, LSNs and timeline histories: the arithmetic the gap check stands on (S7).

A segment file is named ``TTTTTTTTXXXXXXXXYYYYYYYY``: the timeline, then the segment number
split into a "log id" (``XXXXXXXX``) and a segment within it (``YYYYYYYY``). With the default
16 MiB segments a log id holds 0x100 segments (``...00`` to ``...FF``), since PostgreSQL 9.3
(before it, ``...FF`` was skipped). Everything here is plain and pure; the gap check composes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

#: PostgreSQL's default ``wal_segment_size`` (what ``initdb`` gives without ``--wal-segsize``).
WAL_SEGMENT_SIZE: Final = 16 * 1024 * 1024
#: The WAL address space of one log id: 4 GiB (the low 32 bits of an LSN).
_LOG_ID_BYTES: Final = 0x1_0000_0000

_SEGMENT_NAME = re.compile(r"^[0-9A-F]{24}$")
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def segments_per_log_id(segment_size: int = WAL_SEGMENT_SIZE) -> int:
    """0x100 for 16 MiB segments; PostgreSQL allows powers of two from 1 MiB to 1 GiB."""
    if segment_size <= 0 or segment_size & (segment_size - 1) or segment_size > 1 << 30:
        raise ValueError(f"WAL segment size {segment_size} is not a power of two up to 1 GiB")
    return _LOG_ID_BYTES // segment_size


@dataclass(frozen=True, order=True)
class Segment:
    """One WAL segment: its timeline and its absolute number (PostgreSQL's ``XLogSegNo``)."""

    timeline: int
    number: int

    def __post_init__(self) -> None:
        if not 1 <= self.timeline <= 0xFFFFFFFF:
            raise ValueError(f"timeline {self.timeline} is outside 1..0xFFFFFFFF")
        if self.number < 0:
            raise ValueError(f"segment number {self.number} is negative")

    def name(self, segment_size: int = WAL_SEGMENT_SIZE) -> str:
        per_id = segments_per_log_id(segment_size)
        log_id, within = divmod(self.number, per_id)
        if log_id > 0xFFFFFFFF:
            raise ValueError(f"segment number {self.number} is past the end of the WAL")
        return f"{self.timeline:08X}{log_id:08X}{within:08X}"

    @classmethod
    def parse(cls, name: str, segment_size: int = WAL_SEGMENT_SIZE) -> Segment:
        """``000000010000000A000000FF`` → ``Segment(1, 0xAFF)``; anything else is refused."""
        if not _SEGMENT_NAME.match(name):
            raise ValueError(f"{name!r} is not a WAL segment name (24 upper-case hex digits)")
        timeline, log_id, within = int(name[:8], 16), int(name[8:16], 16), int(name[16:], 16)
        per_id = segments_per_log_id(segment_size)
        if within >= per_id:
            raise ValueError(
                f"{name!r}: segment {within:#x} does not exist with {per_id:#x} segments per log id"
            )
        return cls(timeline, log_id * per_id + within)

    def next(self) -> Segment:
        return Segment(self.timeline, self.number + 1)

    @property
    def position(self) -> tuple[int, int]:
        """Order along one history: by WAL position, the newer timeline last at a switch."""
        return (self.number, self.timeline)


def parse_lsn(text: str) -> int:
    """``0/5000098`` → its 64-bit byte position."""
    match = _LSN.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not an LSN (X/Y in hex)")
    return (int(match[1], 16) << 32) | int(match[2], 16)


def segment_number_of(lsn: int, segment_size: int = WAL_SEGMENT_SIZE) -> int:
    """The segment that holds byte ``lsn`` (PostgreSQL's ``XLByteToSeg``)."""
    return lsn // segment_size


def segment_range(first: Segment, last_number: int) -> Iterator[Segment]:
    """``first`` and every following segment on its timeline up to ``last_number`` included."""
    for number in range(first.number, last_number + 1):
        yield Segment(first.timeline, number)


# --- timelines ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TimelineSwitch:
    """One line of a ``.history`` file: ``timeline`` ended at ``switch_lsn`` (the next began)."""

    timeline: int
    switch_lsn: int
    reason: str = ""


def parse_history(text: str) -> list[TimelineSwitch]:
    """A ``NNNNNNNN.history`` file: one ``parent<TAB>switchpoint<TAB>reason`` line per ancestor."""
    switches: list[TimelineSwitch] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(None, 2)
        if len(fields) < 2 or not fields[0].isdigit():
            raise ValueError(f"history line {number} is not 'timeline<TAB>lsn<TAB>reason': {raw!r}")
        timeline = int(fields[0])
        if switches and timeline <= switches[-1].timeline:
            raise ValueError(f"history line {number}: timelines must increase ({raw!r})")
        switches.append(
            TimelineSwitch(timeline, parse_lsn(fields[1]), fields[2] if len(fields) > 2 else "")
        )
    return switches


@dataclass(frozen=True)
class TimelineSpan:
    """The part of a history one timeline covers: segments ``first`` to ``end`` (excluded)."""

    timeline: int
    first: int
    end: int | None  # None: the newest timeline, open-ended


def timeline_path(
    newest: int, history: Sequence[TimelineSwitch], segment_size: int = WAL_SEGMENT_SIZE
) -> list[TimelineSpan]:
    """The timelines that lead to ``newest``, oldest first, each with its segment span.

    A timeline that ended at switch point ``lsn`` contributes the segments before the one that
    holds ``lsn``; that segment and the following ones come from the next timeline (which
    starts with a copy of the old timeline's WAL up to the switch point).
    """
    if any(s.timeline >= newest for s in history):
        raise ValueError(f"the history of timeline {newest} lists itself or a later timeline")
    spans: list[TimelineSpan] = []
    first = 0
    for switch in history:
        end = segment_number_of(switch.switch_lsn, segment_size)
        spans.append(TimelineSpan(switch.timeline, first, end))
        first = end
    spans.append(TimelineSpan(newest, first, None))
    return spans


def expected_segments(
    path: Sequence[TimelineSpan], start: Segment, newest_number: int
) -> Iterator[Segment]:
    """Every segment a recovery from ``start`` to ``newest_number`` reads, in order.

    ``start`` must lie on ``path`` (see :func:`span_of`); the iteration follows the timeline
    switches.
    """
    started = False
    for span in path:
        if not started:
            if span.timeline != start.timeline:
                continue
            started = True
            first = max(span.first, start.number)
        else:
            first = span.first
        last = newest_number if span.end is None else min(span.end - 1, newest_number)
        for number in range(first, last + 1):
            yield Segment(span.timeline, number)
        if span.end is not None and span.end > newest_number:
            return


def span_of(path: Sequence[TimelineSpan], segment: Segment) -> TimelineSpan | None:
    """The span of ``path`` that holds ``segment``, or None when it lies off this history."""
    for span in path:
        if (
            span.timeline == segment.timeline
            and span.first <= segment.number
            and (span.end is None or segment.number < span.end)
        ):
            return span
    return None
