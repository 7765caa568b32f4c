"""Subject names an examiner cannot tell apart: the rules the service refuses new names by, and the warnings the
command line gives for names it stores verbatim ("Ann", "Аnn" with a Cyrillic А, "Ａｎｎ" in fullwidth letters).

Look-alike letters are mapped by :data:`CONFUSABLES`, a small explicit map of the Cyrillic and Greek letters that look
like Latin ones (lowercase, as case folding leaves them), not Unicode's full confusables table.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from collections.abc import Iterable

LOOKALIKE_SCRIPTS = {"LATIN", "CYRILLIC", "GREEK"}  # scripts whose letters look alike (A, А, Α)

# Cyrillic and Greek letters (after case folding) -> the Latin letter they look like, in lower or upper case.
CONFUSABLES = str.maketrans({
    "а": "a", "в": "b", "е": "e", "і": "i", "ј": "j", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "һ": "h", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l",
    "α": "a", "β": "b", "ε": "e", "ζ": "z", "η": "h", "ι": "i", "κ": "k", "μ": "m", "ν": "n", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "y", "χ": "x",
})
MAX_POINTS = 6  # code points named per name
# The version of what :func:`lookalike_key` returns: galleries store each subject's key (indexed, to find a new name's
# look-alikes without reading every name) with this number, and recompute the keys on open when it differs. Bump it
# with any change to the key (the function, :data:`CONFUSABLES`).
KEY_VERSION = 2  # 2: runs of white space count as one space (a page shows "Ann  Smith" as "Ann Smith")
ALIKE = ("the same after NFKC, case folding, white space runs taken as one space and mapping Cyrillic and Greek "
         "letters that look Latin")  # lookalike_key


def plain_form(name: str) -> str:
    """``name`` in its plain Unicode form (NFKC): fullwidth letters, ligatures and superscripts replaced."""
    return unicodedata.normalize("NFKC", name)


def mixed_scripts(name: str) -> list[str]:
    """The look-alike scripts (:data:`LOOKALIKE_SCRIPTS`) whose letters ``name`` mixes, sorted; [] for one or none."""
    scripts = {unicodedata.name(c, "").split(" ")[0] for c in name if c.isalpha()} & LOOKALIKE_SCRIPTS
    return sorted(scripts) if len(scripts) > 1 else []


def lookalike_key(name: str) -> str:
    """What ``name`` looks like: its NFKC form, case-folded, with :data:`CONFUSABLES` mapped to Latin letters and each
    run of white space taken as one space (as a page shows it). Names with the same key are shown alike on a candidate
    list."""
    if name.isascii():  # most names: NFKC leaves ASCII as it is and nothing is mapped (a gallery's million, fast)
        key = name.lower()
    else:
        key = plain_form(name).casefold().translate(CONFUSABLES)
    return " ".join(key.split())


def code_points(name: str) -> str:
    """``U+0410 CYRILLIC CAPITAL LETTER A, ...``: the distinct characters of ``name`` beyond ASCII (at most
    :data:`MAX_POINTS`), "" for an ASCII name."""
    odd = list(dict.fromkeys(c for c in name if not c.isascii()))
    points = ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, 'unnamed')}" for c in odd[:MAX_POINTS])
    return points + (", ..." if len(odd) > MAX_POINTS else "")


def shown(name: str) -> str:
    """``name`` quoted, with its code points beyond ASCII in brackets."""
    points = code_points(name)
    return f"{name!r} ({points})" if points else repr(name)


def form_warnings(name: str) -> list[str]:
    """Why ``name`` may look like another: not in its NFKC form, or mixing Latin, Cyrillic and Greek letters."""
    out = []
    if plain_form(name) != name:
        out.append(f"{shown(name)} is not in its plain Unicode form (NFKC: {plain_form(name)!r})")
    scripts = mixed_scripts(name)
    if scripts:
        out.append(f"{shown(name)} mixes {' and '.join(scripts).lower()} letters that look alike")
    return out


def lookalike_groups(names: Iterable[str], existing: Iterable[str] = ()) -> list[list[str]]:
    """Groups (sorted; two or more distinct names each) of ``names`` and ``existing`` names with one
    :func:`lookalike_key`, each holding at least one of ``names``."""
    groups: dict[str, set[str]] = defaultdict(set)
    for name in set(names):
        groups[lookalike_key(name)].add(name)
    for name in set(existing):  # only those that look like one of ``names``
        if (group := groups.get(lookalike_key(name))) is not None:
            group.add(name)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def lookalikes(name: str, existing: Iterable[str]) -> list[str]:
    """The ``existing`` names other than ``name`` itself with its :func:`lookalike_key`, sorted."""
    return [n for group in lookalike_groups([name], existing) for n in group if n != name]


def name_warnings(names: Iterable[str], existing: Iterable[str] = ()) -> list[str]:
    """One line per problem among the subject ``names`` about to be stored (:func:`form_warnings`, then each
    :func:`lookalike_groups` group, naming which of its names the gallery held already: ``existing``)."""
    names, existing = sorted(set(names)), set(existing)
    out = [w for name in names for w in form_warnings(name)]
    for group in lookalike_groups(names, existing):
        held = [repr(n) for n in group if n in existing]
        out.append(f"{', '.join(map(shown, group))} look alike ({ALIKE})"
                   + (f"; in the gallery already: {', '.join(held)}" if held else ""))
    return out
