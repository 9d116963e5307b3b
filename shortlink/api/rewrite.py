"""Message rewriting: where in a body the tracked links go.

A body is cut into fixed text and link slots; each recipient's message is the
text with a short URL of their own in every slot. Modes (from the providers'
documents in ../shared/seeds):

- `track`:    every `#track("URL")` directive (quotes may arrive escaped, `\\"`) is
              replaced by the short URL.
- `first`:    the first URL standing between ASCII spaces (or at the start or end)
              is replaced. A URL is a word starting with http://, https:// or www.
- `last`:     only the last URL anywhere in the body is replaced.
- `template`: a DLT template with `{#var#}` slots and a value for each; a value
              that is a URL becomes a link, the others are put in as they are. The
              template's fixed text is never changed.

Trailing punctuation is not part of a URL: "see https://x.example/a." tracks
`https://x.example/a` and keeps the full stop after the short URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MODES = ("track", "first", "last", "template")
SLOT = "{#var#}"

_TRACK = re.compile(r'#track\(\s*(\\?["\'])(.*?)\1\s*\)', re.DOTALL)
_URL_ANYWHERE = re.compile(r"(?i)(?:https?://|www\.)[^\s<>\"]+")
_URL_START = re.compile(r"(?i)^(?:https?://|www\.)\S")
_TRAILING = ".,;:!?)]}'\"»…"


class NothingToTrack(ValueError):
    """The body has no link to track in the chosen mode."""


@dataclass(frozen=True)
class Plan:
    """A body cut into fixed text and link slots: text[0] slot[0] text[1] ... text[n]."""

    texts: tuple[str, ...]
    targets: tuple[str, ...]  # one target per slot, as written (not yet validated)

    def render(self, short_urls: list[str]) -> str:
        pieces = [self.texts[0]]
        for short_url, text in zip(short_urls, self.texts[1:], strict=True):
            pieces += (short_url, text)
        return "".join(pieces)


def _target(raw: str) -> str:
    return "https://" + raw if raw[:4].lower() == "www." else raw


def _strip_punctuation(word: str) -> str:
    while word and word[-1] in _TRAILING:
        word = word[:-1]
    return word


def _cut(body: str, spans: list[tuple[int, int]]) -> Plan:
    texts, targets, at = [], [], 0
    for start, end in spans:
        texts.append(body[at:start])
        targets.append(_target(body[start:end]))
        at = end
    texts.append(body[at:])
    return Plan(tuple(texts), tuple(targets))


def plan(body: str, mode: str) -> Plan:
    """Cut a shared body (modes track, first, last); NothingToTrack if it has no link."""
    if mode == "track":
        pieces: list[str] = []
        targets: list[str] = []
        at = 0
        for match in _TRACK.finditer(body):
            pieces.append(body[at : match.start()])
            targets.append(_target(match.group(2).strip()))
            at = match.end()
        if not targets:
            raise NothingToTrack('no #track("URL") directive in the body')
        pieces.append(body[at:])
        return Plan(tuple(pieces), tuple(targets))
    if mode == "first":
        position = 0
        for word in body.split(" "):
            url = _strip_punctuation(word)
            if _URL_START.match(url):
                return _cut(body, [(position, position + len(url))])
            position += len(word) + 1
        raise NothingToTrack("no URL between spaces in the body")
    if mode == "last":
        matches = list(_URL_ANYWHERE.finditer(body))
        for match in reversed(matches):
            url = _strip_punctuation(match.group())
            if _URL_START.match(url):
                return _cut(body, [(match.start(), match.start() + len(url))])
        raise NothingToTrack("no URL in the body")
    raise ValueError(f"mode {mode!r} needs a template and values")


def plan_template(template: str, values: list[str]) -> Plan:
    """Fill a DLT template's slots; values that are URLs become link slots."""
    fixed = template.split(SLOT)
    if len(fixed) - 1 != len(values):
        raise ValueError(
            f"the template has {len(fixed) - 1} {SLOT} slots but {len(values)} values were given"
        )
    texts = [fixed[0]]
    targets = []
    for value, after in zip(values, fixed[1:], strict=True):
        candidate = value.strip()
        url = _strip_punctuation(candidate)
        if candidate and _URL_START.match(url) and not any(c.isspace() for c in url):
            lead = value[: len(value) - len(value.lstrip())]
            trail = value[len(value.rstrip()) :]
            texts[-1] += lead
            targets.append(_target(url))
            texts.append(candidate[len(url) :] + trail + after)
        else:
            texts[-1] += value + after
    if not targets:
        raise NothingToTrack("no template value is a URL")
    return Plan(tuple(texts), tuple(targets))
