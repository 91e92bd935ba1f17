"""The `# type: ignore` budget of pollerd/ (docs/developing.md, "Checks"): at most a handful, each naming its
error code and saying why on the same line. mypy itself (scripts/check) reports unused ignores and, with
ignore-without-code, bare ones; this holds the count and the reasons, which mypy does not."""

from __future__ import annotations

import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "pollerd"
MAX_IGNORES = 5

# "# type: ignore[code]" and then its reason, after "#" or "-"
_IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]*\])?(?P<rest>.*)$")


def _ignores() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            m = _IGNORE.search(line)
            if m:
                out.append((f"{path.relative_to(PKG.parent)}:{no}", m["codes"] or "", m["rest"]))
    return out


def _reason(rest: str) -> str:
    return rest.strip().lstrip("#-").strip()


def test_the_checker_sees_ignores():
    # A checker that found nothing would pass everything: the Mercury test_channel marker is a known one.
    assert any(where.startswith("pollerd/protocols/mercury230/frames.py") for where, _, _ in _ignores())
    assert _reason("  # not a pytest test") == "not a pytest test" and _reason("") == ""


def test_every_type_ignore_names_its_code_and_says_why():
    bad = [f"{where}: {codes or 'no code'} {_reason(rest) or 'no reason'}"
           for where, codes, rest in _ignores() if not codes or not _reason(rest)]
    assert not bad, "type: ignore needs [code] and a reason on its line:\n" + "\n".join(bad)


def test_at_most_a_handful_of_type_ignores():
    found = _ignores()
    assert len(found) <= MAX_IGNORES, (
        f"{len(found)} type: ignore comments in pollerd/ (at most {MAX_IGNORES}); type precisely instead "
        "(docs/developing.md, Checks):\n" + "\n".join(where for where, _, _ in found))
