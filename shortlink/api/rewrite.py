"""Message rewriting: where in a body the tracked links go.

A body is cut into fixed text and link slots; each recipient's message is the
text with a short URL of their own in every slot. Modes (from the providers'
documents the project started from, summarised in docs/design.md#contracts):

- `track`:    every `#track("URL")` directive (quotes may arrive escaped, `\\"`) is
              replaced by the short URL.
- `first`:    the first link standing between ASCII spaces (or at the start or end)
              is replaced: a word that starts with a link (seed 001: "the first
              URL/domain name").
- `last`:     only the last link anywhere in the body is replaced.
- `template`: a DLT template with `{#var#}` slots and a value for each; a value
              that is a link becomes a tracked link, the others are put in as they
              are. The template's fixed text is never changed.

What a link is (a URL with a scheme, a www. name, a bare domain such as
`xoxzo.com/en/`) and where it ends is shortlink.api.linkfind's: trailing
punctuation is not part of it, so "see https://x.example/a." tracks
`https://x.example/a` and keeps the full stop after the short URL; a `)` stays
in the URL only when it closes a `(` opened inside it. A bare domain's target is
`https://` + it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from shortlink.api import linkfind
from shortlink.exceptions import NothingToTrack

MODES = ("track", "first", "last", "template")
SLOT = "{#var#}"

# A directive: #track( and a quote (\" too), the URL, the same quote and ). One regular
# expression (`#track\(\s*(\\?["'])(.*?)\1\s*\)`) would read on to the end of the body
# for every unclosed directive: quadratic, 80 ms for a 10,000-character body of them.
_TRACK_OPEN = re.compile(r'#track\(\s*(\\?["\'])')
_TRACK_CLOSE = {q: re.compile(re.escape(q) + r"\s*\)") for q in ('"', "'", '\\"', "\\'")}


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


def _cut(body: str, spans: list[tuple[int, int]]) -> Plan:
    texts, targets, at = [], [], 0
    for start, end in spans:
        texts.append(body[at:start])
        targets.append(linkfind.target(body[start:end]))
        at = end
    texts.append(body[at:])
    return Plan(tuple(texts), tuple(targets))


def directives(body: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, URL as written) of each #track("URL") directive, in order, in linear
    time: a quote that closes nowhere after one directive closes nowhere after a later one."""
    at = 0
    unclosed: set[str] = set()
    while (opened := _TRACK_OPEN.search(body, at)) is not None:
        quote = opened.group(1)
        closed = None if quote in unclosed else _TRACK_CLOSE[quote].search(body, opened.end())
        if closed is None:
            unclosed.add(quote)
            at = opened.start() + 1
            continue
        yield opened.start(), closed.end(), body[opened.end() : closed.start()]
        at = closed.end()


def plan(body: str, mode: str) -> Plan:
    """Cut a shared body (modes track, first, last); NothingToTrack if it has no link."""
    if mode == "track":
        pieces: list[str] = []
        targets: list[str] = []
        at = 0
        for start, end, written in directives(body):
            pieces.append(body[at:start])
            targets.append(linkfind.target(written.strip()))
            at = end
        if not targets:
            raise NothingToTrack('no #track("URL") directive in the body')
        pieces.append(body[at:])
        return Plan(tuple(pieces), tuple(targets))
    if mode == "first":
        position = 0
        for word in body.split(" "):
            url = linkfind.leading_link(word)
            if url is not None:
                return _cut(body, [(position, position + len(url))])
            position += len(word) + 1
        raise NothingToTrack("no URL or domain name between spaces in the body")
    if mode == "last":
        found = list(linkfind.find_all(body))
        if found:
            return _cut(body, [found[-1]])
        raise NothingToTrack("no URL or domain name in the body")
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
        url = linkfind.trim(candidate)
        if url and linkfind.is_link(url) and not any(c.isspace() for c in url):
            lead = value[: len(value) - len(value.lstrip())]
            trail = value[len(value.rstrip()) :]
            texts[-1] += lead
            targets.append(linkfind.target(url))
            texts.append(candidate[len(url) :] + trail + after)
        else:
            texts[-1] += value + after
    if not targets:
        raise NothingToTrack("no template value is a URL or domain name")
    return Plan(tuple(texts), tuple(targets))
