"""The console summary every command prints at the end: what was used, what was left out and why, and the
file that lists each group."""

from __future__ import annotations

import sys
from typing import TextIO


def one_line(text: str) -> str:
    """``text`` for a console line: a line break or other control character in a file or folder name written as its
    escape (``\\n``), so that one name cannot split the line or send a terminal's escape codes."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def counted(n: int, word: str, plural: str | None = None) -> str:
    """``1 photo``, ``2 photos``: ``n`` and ``word``, in its plural (``plural``, else with an s) unless ``n`` is 1."""
    return f"{n} {word if n == 1 else plural or word + 's'}"


def format_summary(counts: dict, files: dict[str, str] | None = None, title: str = "summary") -> str:
    """Lines for ``counts``: ``{label: int}`` or ``{label: {reason: int}}`` (a group counted by reason).

    ``files`` maps a label to the file that lists those items. Zero counts are shown only for the first
    label (what was used), so a clean run prints one short block.
    """
    files = files or {}
    lines = [f"{title}:"]
    for i, (label, value) in enumerate(counts.items()):
        if isinstance(value, dict):
            value = {k: int(v) for k, v in value.items() if v}
            total = sum(value.values())
            detail = f" ({', '.join(f'{k} {v}' for k, v in sorted(value.items()))})" if value else ""
        else:
            total, detail = int(value), ""
        if total == 0 and i > 0:
            continue
        where = f"; listed in {files[label]}" if label in files and total else ""
        lines.append(f"  {label}: {total}{detail}{where}")
    return "\n".join(lines)


def print_summary(counts: dict, files: dict[str, str] | None = None, title: str = "summary",
                  stream: TextIO | None = None) -> None:
    """Print :func:`format_summary` to ``stream`` (default: standard error, leaving stdout to results)."""
    print(format_summary(counts, files, title), file=stream or sys.stderr)


def print_fallback_hint(faces: dict[str, int], aligner, where: str = "", stream: TextIO | None = None) -> None:
    """:func:`~lookalike.matchers.align.fallback_hint` for these counts of faces by detection method, when there is
    one, to ``stream`` (default: standard error)."""
    from lookalike.matchers.align import fallback_hint

    hint = fallback_hint(faces, aligner, where)
    if hint:
        print(hint, file=stream or sys.stderr)


def names_line(n: int, done: str) -> str:
    """The count of :func:`~lookalike.data.names.name_warnings` listed above as ``name:`` lines; the names were
    ``done`` (enrolled; taken, to train on) as given."""
    return (f"names: {counted(n, 'warning')} (subject names that look alike or are not in plain "
            f"Unicode form, listed as name:; {done} as given: rename the folders or CSV labels to merge or tell them "
            "apart)")
