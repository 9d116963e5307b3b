"""What counts as a link in free text, and where it ends.

A link is one of
- a URL with a scheme: `http://` or `https://` and what follows;
- a `www.` name: `www.` and what follows (tracked as `https://www....`);
- a bare domain name, with or without a path: `xoxzo.com/en/`, `example.co.uk`
  (tracked as `https://` + it). Its host is two or more dot-separated labels of
  ASCII letters, digits and inner dashes; its last label is letters (or `xn--`
  punycode) written all in lower or all in upper case, and a top-level domain on
  the Public Suffix List's ICANN section (the `publicsuffixlist` package ships the
  list); and the host has a label of its own before the public suffix (`co.uk`
  alone is not a domain). A path starts with `/`, `?` or `#`. So `e.g.`, `3.5`,
  `v1.2`, `file.txt`, `Hello.World` and `user@example.com` are not links. Top-level
  domains better known as file extensions (`readme.md`, `setup.py`, `run.sh`,
  `photos.zip`, `clip.mov`, ...: FILE_EXTENSION_TLDS) count only with a `/` path
  (`get.sh/install`); a `www.` name always counts.

A link ends at whitespace, at `<`, `>` or `"`, or at full-width and CJK
punctuation (`。`, `、`, `」`, ...). Then closing punctuation at its end is left
outside: `.`, `,`, `;`, `:`, `!`, `?`, quotes, `…`, `»`, and their full-width forms;
`)`, `]` and `}` too, unless they close a bracket opened inside the link, so
`https://en.wikipedia.org/wiki/Foo_(bar))` is the link
`https://en.wikipedia.org/wiki/Foo_(bar)` and a `)`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from publicsuffixlist import PublicSuffixList

# ICANN top-level domains that are, in a text message, far more often the end of a
# file name: they need a path to be taken for a domain. The country domains that
# people do write bare (.pl, .ai, .me, .in, .cc) are deliberately not here.
FILE_EXTENSION_TLDS = frozenset(
    {"md", "py", "sh", "zip", "mov", "rs", "pm", "ps", "so", "mk", "pub", "ml"}
)

# Full-width and CJK punctuation: never inside a link as people write one.
_CJK_STOPS = "。、，．！？；：（）「」『』【】〔〕〈〉《》｛｝［］〝〞〟‘’“”"
_STOP = f'\\s<>"{_CJK_STOPS}'
_TRAILING = ".,;:!?'\"»…›" + _CJK_STOPS
_CLOSING = {")": "(", "]": "[", "}": "{"}

_END = re.compile(f"[{_STOP}]")
_PSL = PublicSuffixList(only_icann=True, accept_unknown=False)
_SCHEME_START = re.compile(r"(?i)^(?:https?://|www\.)\S")
_SCHEME_URL = f"(?:[Hh][Tt][Tt][Pp][Ss]?://|[Ww][Ww][Ww]\\.)[^{_STOP}]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_TLD = r"(?:[A-Za-z]{2,63}|[Xx][Nn]--[A-Za-z0-9-]{1,59})"
_PATH = f"[/?#][^{_STOP}]*"
_BARE = re.compile(f"(?P<host>(?:{_LABEL}\\.)+(?P<tld>{_TLD}))(?P<path>{_PATH})?")
# Latin letters with diacritics and combining marks: the rest of a word (an
# internationalised name) an ASCII run inside it belongs to. "münchen.de" holds no
# "nchen.de", "promoção.com.br" no "o.com.br". Other scripts (CJK, Thai) are written
# without spaces and may touch a link: "詳しくはexample.comへ".
_LATIN = "\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u0300-\u036f\u1e00-\u1eff"
# A bare domain found anywhere neither continues nor is continued by a word, a
# number, an address or a path: "user@example.com" and ".../docs/readme.md" hold none.
_ANYWHERE = re.compile(
    f"{_SCHEME_URL}"
    f"|(?<![A-Za-z0-9{_LATIN}.@/\\\\:%+&=~_-])(?:{_LABEL}\\.)+{_TLD}"
    f"(?![A-Za-z0-9{_LATIN}@_-]|\\.[A-Za-z0-9{_LATIN}])(?:{_PATH})?"
)


def trim(candidate: str) -> str:
    """`candidate` without the closing punctuation at its end (brackets opened inside stay)."""
    end = len(candidate)
    # Counted once: what is cut off below is closers and _TRAILING, never an opener, so
    # the openers before `end` stay these, and the closers go down one per closer cut.
    # (Counting again per character made a run of 100,000 ")" take seconds.)
    openers = {closer: candidate.count(opener) for closer, opener in _CLOSING.items()}
    closers = {closer: candidate.count(closer) for closer in _CLOSING}
    while end:
        last = candidate[end - 1]
        if last in _CLOSING:
            if openers[last] >= closers[last]:  # it closes a bracket opened inside
                break
            closers[last] -= 1
        elif last not in _TRAILING:
            break
        end -= 1
    return candidate[:end]


def is_bare_domain(text: str) -> bool:
    """Whether `text`, whole, is a domain name with an optional path (see the module)."""
    match = _BARE.fullmatch(text)
    if match is None:
        return False
    tld = match["tld"]
    if not (tld.islower() or tld.isupper()):
        return False
    host = match["host"].lower()
    if _PSL.privatesuffix(host) is None:
        return False
    path = match["path"] or ""
    return tld.lower() not in FILE_EXTENSION_TLDS or path.startswith("/")


def is_link(text: str) -> bool:
    """Whether `text`, whole, is a link: a URL with a scheme, a www. name or a bare domain."""
    if _SCHEME_START.match(text):
        return True
    return is_bare_domain(text)


def leading_link(word: str) -> str | None:
    """The link `word` starts with (cut where a link ends: whitespace such as a newline,
    `<`, `>`, `"`, CJK punctuation; then trimmed), if it starts with one."""
    stop = _END.search(word)
    url = trim(word[: stop.start()] if stop else word)
    return url if url and is_link(url) else None


def find_all(body: str) -> Iterator[tuple[int, int]]:
    """The (start, end) of every link in `body`, in order."""
    for match in _ANYWHERE.finditer(body):
        url = trim(match.group())
        if url and is_link(url):
            yield match.start(), match.start() + len(url)


def target(link: str) -> str:
    """The URL a link found in text points at: `https://` before a www. name or a domain."""
    if re.match(r"(?i)https?://", link):
        return link
    if link[:4].lower() == "www." or is_bare_domain(link):
        return "https://" + link
    return link
