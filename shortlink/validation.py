"""Input checks for link targets and phone numbers.

Target URLs must be absolute http(s) URLs with a host, no credentials, not our
own short domain, at most 2,048 characters once normalised (non-ASCII hosts to
punycode, non-ASCII paths percent-encoded, so the Location header is plain ASCII).

Phone numbers are normalised to international digits (what ClickForward's
PhoneNumber carries): spaces, dots, dashes and brackets are dropped, a leading
"+" or "00" is the international prefix. The result must be 7 to 15 digits
(E.164) starting with an assigned ITU country calling code; a number starting
with 0 is national and refused, since the country cannot be known.
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
_SEPARATORS = str.maketrans("", "", " \t.-()/\u00a0")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


class InvalidInput(ValueError):
    """A value that cannot be used; the message says why, for the client."""


def phone_number(raw: str) -> str:
    """International digits of a phone number, or InvalidInput."""
    value = raw.strip().translate(_SEPARATORS)
    if value.startswith("+"):
        value = value[1:]
    elif value.startswith("00"):
        value = value[2:]
    if not value.isascii() or not value.isdigit():
        raise InvalidInput("may contain only digits, spaces, dashes, dots, brackets, a leading +")
    if value.startswith("0"):
        raise InvalidInput("is a national number: give it in international format (+44 7700 ...)")
    if not 7 <= len(value) <= 15:
        raise InvalidInput("must have 7 to 15 digits with the country code")
    if not any(value[:n] in _COUNTRY_CODES for n in (1, 2, 3)):
        raise InvalidInput("does not start with a known country calling code")
    return value


def target_url(raw: str, short_domain: str) -> str:
    """A normalised http(s) target URL, or InvalidInput."""
    value = raw.strip()
    if not value:
        raise InvalidInput("is empty")
    if _CONTROL.search(value):
        raise InvalidInput("must not contain spaces or control characters")
    try:
        url = URL(value)
        host = url.host
    except (ValueError, UnicodeError) as exc:
        raise InvalidInput(f"is not a valid URL ({exc})") from None
    if url.scheme not in ("http", "https"):
        raise InvalidInput("must start with http:// or https://")
    if not host:
        raise InvalidInput("has no host")
    if url.user is not None or url.password is not None:
        raise InvalidInput("must not contain a user name or password")
    if host.lower().rstrip(".") == short_domain_host(short_domain):
        raise InvalidInput("must not point at the short domain itself")
    normalised = str(url)
    if len(normalised) > MAX_URL_LENGTH:
        raise InvalidInput(f"is longer than {MAX_URL_LENGTH} characters")
    return normalised


def short_domain_host(short_domain: str) -> str:
    """The host part of SHORT_DOMAIN (which may carry a port)."""
    return (
        short_domain.rsplit(":", 1)[0].lower()
        if not short_domain.startswith("[")
        else (short_domain[1 : short_domain.index("]")].lower())
    )
