"""Input checks for stored text, link targets and phone numbers.

Each check is a regular expression that the OpenAPI document
(shortlink/api/openapi.json) states word for word as the field's `pattern`, so
what the document allows is what the code accepts; a test holds them equal.

Stored text must not contain NUL (PostgreSQL cannot store it) nor bytes that were
not UTF-8 (headers and URLs arrive as bytes).

Target URLs are absolute http(s) URLs with a host name, an optional port, no
credentials, no spaces or control characters, at most 2,048 characters as sent,
and not on our own short domain. Beyond the pattern, a host may also be an
internationalised name (Unicode or xn-- punycode) or a bracketed IPv6 address.
They are normalised (non-ASCII hosts to punycode, non-ASCII paths
percent-encoded), so the Location header is plain ASCII.

Phone numbers are written internationally: an optional "+" or "00", a country
calling code in use (ITU-T E.164) and the rest of the 7 to 15 digits, with
spaces, no-break spaces, dots, dashes, brackets or slashes anywhere between the
digits. They are normalised to the digits alone (what ClickForward's PhoneNumber
carries). A number starting with 0 is national and refused, since its country
cannot be known.
"""

from __future__ import annotations

import re

from yarl import URL

MAX_URL_LENGTH = 2048

# ITU-T E.164 country calling codes in use.
_COUNTRY_CODES = frozenset(
    {"1", "7"}
    | set(
        "20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 "
        "60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98".split()
    )
    | set(
        "211 212 213 216 218 220 221 222 223 224 225 226 227 228 229 230 231 232 233 234 235 "
        "236 237 238 239 240 241 242 243 244 245 246 247 248 249 250 251 252 253 254 255 256 "
        "257 258 260 261 262 263 264 265 266 267 268 269 290 291 297 298 299 350 351 352 353 "
        "354 355 356 357 358 359 370 371 372 373 374 375 376 377 378 379 380 381 382 383 385 "
        "386 387 389 420 421 423 500 501 502 503 504 505 506 507 508 509 590 591 592 593 594 "
        "595 596 597 598 599 670 672 673 674 675 676 677 678 679 680 681 682 683 685 686 687 "
        "688 689 690 691 692 800 808 850 852 853 855 856 870 878 880 881 882 883 886 888 960 "
        "961 962 963 964 965 966 967 968 970 971 972 973 974 975 976 977 979 992 993 994 995 "
        "996 998".split()
    )
)
_CONTROL = re.compile(r"[\x00-\x20\x7f]")

# Text that can be stored: anything but NUL.
TEXT_PATTERN = r"^[^\u0000]*$"

_SEPARATOR = r"[ \u00a0.()/-]"
_SEPARATORS = " \u00a0.()/-"


def _codes(length: int) -> str:
    return "|".join(sorted(code for code in _COUNTRY_CODES if len(code) == length))


def _rest(least: int, most: int) -> str:
    return f"(?:{_SEPARATOR}*[0-9]){{{least},{most}}}"


PHONE_PATTERN = (
    f"^{_SEPARATOR}*(?:\\+|00)?{_SEPARATOR}*"
    f"(?:(?:{_codes(1)}){_rest(6, 14)}|(?:{_codes(2)}){_rest(5, 13)}|(?:{_codes(3)}){_rest(4, 12)})"
    f"{_SEPARATOR}*$"
)
MAX_PHONE_LENGTH = 40

_LABEL = r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*"
_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_SCHEME = r"[Hh][Tt][Tt][Pp][Ss]?://"
_AFTER_HOST = f"(?::{_PORT})?(?:[/?#][^\\u0000-\\u0020\\u007f]*)?$"
URL_PATTERN = f"^{_SCHEME}{_LABEL}(?:\\.{_LABEL})*\\.?{_AFTER_HOST}"

_TEXT = re.compile(TEXT_PATTERN)
_PHONE = re.compile(PHONE_PATTERN)
_URL = re.compile(URL_PATTERN)
# The hosts accepted beyond the pattern: internationalised names and IPv6 literals.
_ANY_HOST = re.compile(f"^{_SCHEME}(?P<host>\\[[0-9A-Fa-f:.]+\\]|[^/?#@:\\[\\]]+){_AFTER_HOST}")


class InvalidInput(ValueError):
    """A value that cannot be used; the message says why, for the client."""


def text(raw: str) -> str:
    """`raw` if it can be stored: no NUL, no undecodable bytes (lone surrogates)."""
    if _TEXT.fullmatch(raw) is None:
        raise InvalidInput("must not contain NUL characters")
    try:
        raw.encode()
    except UnicodeEncodeError:
        raise InvalidInput("is not valid UTF-8") from None
    return raw


def phone_number(raw: str) -> str:
    """International digits of a phone number, or InvalidInput."""
    if _PHONE.fullmatch(raw) is None:
        raise InvalidInput(_phone_problem(raw))
    digits = "".join(c for c in raw if "0" <= c <= "9")
    # A country code never starts with 0, so leading zeros are the "00" prefix.
    return digits[2:] if digits.startswith("00") else digits


def _phone_problem(raw: str) -> str:
    """Why `raw` is not an international phone number, in the client's terms."""
    value = raw.strip(_SEPARATORS)
    if value.startswith("+"):
        value = value[1:]
    if not value:
        return "is empty"
    if any(not ("0" <= c <= "9" or c in _SEPARATORS) for c in value):
        return "may contain only digits, spaces, dashes, dots, brackets, a leading +"
    digits = "".join(c for c in value if c not in _SEPARATORS)
    if digits.startswith("00") and not raw.lstrip(_SEPARATORS).startswith("+"):
        digits = digits[2:]
    if digits.startswith("0"):
        return "is a national number: give it in international format (+44 7700 ...)"
    if not 7 <= len(digits) <= 15:
        return "must have 7 to 15 digits with the country code"
    return "does not start with a known country calling code"


def target_url(raw: str, short_domain: str) -> str:
    """A normalised http(s) target URL, or InvalidInput."""
    url = http_url(raw)
    if (url.host or "").lower().rstrip(".") == short_domain_host(short_domain):
        raise InvalidInput("must not point at the short domain itself")
    return str(url)


def http_url(raw: str) -> URL:
    """An absolute http(s) URL of the accepted form, parsed; or InvalidInput."""
    if not raw:
        raise InvalidInput("is empty")
    if len(raw) > MAX_URL_LENGTH:
        raise InvalidInput(f"is longer than {MAX_URL_LENGTH} characters")
    if _CONTROL.search(raw):
        raise InvalidInput("must not contain spaces or control characters")
    try:
        url = URL(raw)
        host = url.host
    except (ValueError, UnicodeError) as exc:
        raise InvalidInput(f"is not a valid URL ({exc})") from None
    if url.scheme not in ("http", "https"):
        raise InvalidInput("must start with http:// or https://")
    if not host:
        raise InvalidInput("has no host")
    if url.user is not None or url.password is not None:
        raise InvalidInput("must not contain a user name or password")
    if _URL.fullmatch(raw) is None and not _international(raw):
        raise InvalidInput(
            "is not an http(s) URL of the accepted form: a host name of letters, digits "
            "and single dashes, an optional port from 1 to 65535, then /, ? or #"
        )
    return url


def _international(raw: str) -> bool:
    """Whether `raw` has an IDN or IPv6 host (and otherwise the pattern's form)."""
    match = _ANY_HOST.fullmatch(raw)
    if match is None:
        return False
    host = match["host"]
    return host.startswith("[") or not host.isascii() or "xn--" in host.lower()


def short_domain_host(short_domain: str) -> str:
    """The host part of SHORT_DOMAIN (which may carry a port)."""
    return (
        short_domain.rsplit(":", 1)[0].lower()
        if not short_domain.startswith("[")
        else (short_domain[1 : short_domain.index("]")].lower())
    )
