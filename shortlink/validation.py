"""Input checks for stored text, link targets and phone numbers.

Each check is a regular expression that the OpenAPI document
(shortlink/api/openapi.json) states word for word as the field's `pattern`, so
what the document allows is what the code accepts; a test holds them equal.

Stored text must not contain NUL (PostgreSQL cannot store it) nor bytes that were
not UTF-8 (headers and URLs arrive as bytes).

Target URLs are absolute http(s) URLs with a host name, an optional port, no
credentials, no spaces or control characters, at most 2,048 characters as sent,
and not on our own short domain. Every label of a host name has 1 to 63
characters, as DNS allows (and the IDNA codec that resolvers apply insists on).
Beyond the pattern, a host may also be an internationalised name (Unicode or
xn-- punycode) or a bracketed IPv6 address. They are normalised (non-ASCII hosts
to punycode, non-ASCII paths percent-encoded), so the Location header is plain
ASCII.

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

from shortlink import phones
from shortlink.exceptions import InvalidInput

MAX_URL_LENGTH = 2048
MAX_TEXT_LENGTH = 200  # client_ref, client_identifier

_CONTROL = re.compile(r"[\x00-\x20\x7f]")

# Text that can be stored: anything but NUL.
TEXT_PATTERN = r"^[^\u0000]*$"

_SEPARATOR = r"[ \u00a0.()/-]"
_SEPARATORS = " \u00a0.()/-"
PHONE_PATTERN = phones.pattern(_SEPARATOR)
MAX_PHONE_LENGTH = 40

MAX_LABEL = 63
# A label of letters, digits and single dashes; the lookahead keeps it to 63 characters.
_LABEL = f"(?![A-Za-z0-9-]{{{MAX_LABEL + 1}}})[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*"
_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_SCHEME = r"[Hh][Tt][Tt][Pp][Ss]?://"
_AFTER_HOST = f"(?::{_PORT})?(?:[/?#][^\\u0000-\\u0020\\u007f]*)?$"
URL_PATTERN = f"^{_SCHEME}{_LABEL}(?:\\.{_LABEL})*\\.?{_AFTER_HOST}"
# Where we connect (an endpoint, a callback): a host made of digits and dots is read by
# the HTTP client as an address (`0`, `127.1`, `2130706433`), so it must be a plain IPv4
# address; any other host name has a label with a letter or a dash.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = f"{_OCTET}(?:\\.{_OCTET}){{3}}"
_NUMERIC_LABEL = f"(?![0-9]{{{MAX_LABEL + 1}}})[0-9]+"
_NAMED_LABEL = (
    f"(?![A-Za-z0-9-]{{{MAX_LABEL + 1}}})"
    "(?:[0-9]*[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*|[0-9]+(?:-[A-Za-z0-9]+)+)"
)
_NAME = f"(?:{_NUMERIC_LABEL}\\.)*{_NAMED_LABEL}(?:\\.{_LABEL})*\\.?"
ENDPOINT_URL_PATTERN = f"^{_SCHEME}(?:{_IPV4}|{_NAME}){_AFTER_HOST}"

_TEXT = re.compile(TEXT_PATTERN)
_PHONE = re.compile(PHONE_PATTERN)
# A bracketed national trunk prefix right after the country code: "+44 (0)7700 ...".
_TRUNK = re.compile(
    f"^{_SEPARATOR}*(?:\\+|00)?{_SEPARATOR}*(?P<code>[1-9][0-9]{{0,2}})"
    f"{_SEPARATOR}*\\((?P<trunk>[0-9]{{1,2}})\\)"
)
_URL = re.compile(URL_PATTERN)
_ENDPOINT_URL = re.compile(ENDPOINT_URL_PATTERN)
# The hosts accepted beyond the pattern: internationalised names and IPv6 literals.
_ANY_HOST = re.compile(f"^{_SCHEME}(?P<host>\\[[0-9A-Fa-f:.]+\\]|[^/?#@:\\[\\]]+){_AFTER_HOST}")


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
    if digits.startswith("00"):
        digits = digits[2:]
    return _without_trunk_prefix(raw, digits)


def _without_trunk_prefix(raw: str, digits: str) -> str:
    """`digits` of `raw` without the national trunk prefix written in brackets after the
    country code ("+44 (0)7700 900123"), if it is that country's own."""
    trunk = _TRUNK.match(raw) if "(" in raw else None
    if trunk is None or not phones.is_trunk_prefix(trunk["code"], trunk["trunk"]):
        return digits
    code = trunk["code"]
    return code + digits[len(code) + len(trunk["trunk"]) :]


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
    code = phones.calling_code(digits)
    if code is None:
        return "does not start with a known country calling code"
    digits = _without_trunk_prefix(raw, digits)
    return (
        f"has {len(digits) - len(code)} digits after the country calling code +{code}, "
        f"whose numbers have {phones.describe_lengths(code)} (with the country code, "
        "7 to 15); the number is mistyped or incomplete"
    )


def target_url(raw: str, short_domain: str) -> str:
    """A normalised http(s) target URL, or InvalidInput."""
    url = http_url(raw)
    host, ports = short_domain_address(short_domain)
    if (url.host or "").lower().rstrip(".") == host and url.port in ports:
        raise InvalidInput("must not point at the short domain itself")
    return str(url)


def http_url(raw: str) -> URL:
    """An absolute http(s) URL of the accepted form, parsed; or InvalidInput."""
    return _http_url(raw, _URL)


def endpoint_url(raw: str) -> URL:
    """An http(s) URL to connect to (an endpoint's, a callback's): of the accepted form,
    with a host of digits and dots only if it is a plain IPv4 address; or InvalidInput."""
    return _http_url(raw, _ENDPOINT_URL)


def _http_url(raw: str, form: re.Pattern[str]) -> URL:
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
    if (label := long_label(url.raw_host or "")) is not None:
        raise InvalidInput(f"has a host name label longer than {MAX_LABEL} characters ({label})")
    if form.fullmatch(raw) is None and not _international(raw):
        if form is _ENDPOINT_URL and (url.raw_host or "").replace(".", "").isdigit():
            raise InvalidInput(
                f"has the host {url.raw_host!r}: digits and dots that are not an IPv4 "
                "address (four numbers from 0 to 255 without leading zeros), which the "
                "HTTP client would read as some address all the same"
            )
        raise InvalidInput(
            "is not an http(s) URL of the accepted form: a host name of letters, digits "
            "and single dashes, an optional port from 1 to 65535, then /, ? or #"
        )
    return url


def long_label(host: str) -> str | None:
    """The first label of `host` (as encoded for DNS: punycode) longer than DNS allows,
    shortened for a message; None when there is none."""
    for label in host.split("."):
        if len(label) > MAX_LABEL:
            return f"{label[:20]}... of {len(label)}"
    return None


def _international(raw: str) -> bool:
    """Whether `raw` has an IDN or IPv6 host (and otherwise the pattern's form)."""
    match = _ANY_HOST.fullmatch(raw)
    if match is None:
        return False
    host = match["host"]
    return host.startswith("[") or not host.isascii() or "xn--" in host.lower()


def short_domain_pattern(short_domain: str) -> str | None:
    """The pattern of the http(s) URLs on SHORT_DOMAIN's host and port (the host in any
    case): the targets `target_url` refuses for that short domain. None for a host no
    target pattern can name (an IPv6 address)."""
    host, ports = short_domain_address(short_domain)
    if re.fullmatch(r"[a-z0-9.-]+", host) is None:
        return None
    letters = "".join(
        f"[{c.upper()}{c}]" if c.isalpha() else "\\." if c == "." else c for c in host
    )
    on_host = f"{letters}\\.?"
    alternatives = [f"{_SCHEME}{on_host}:(?:{'|'.join(str(p) for p in sorted(ports))})"]
    if 80 in ports:  # no port given: the scheme's own
        alternatives.append(f"[Hh][Tt][Tt][Pp]://{on_host}")
    if 443 in ports:
        alternatives.append(f"[Hh][Tt][Tt][Pp][Ss]://{on_host}")
    return f"^(?:{'|'.join(alternatives)})(?:[/?#]|$)"


def short_domain_address(short_domain: str) -> tuple[str, frozenset[int]]:
    """The host of SHORT_DOMAIN (lower case) and the ports its short URLs are opened on:
    the port it names, or, when it names none, 80 and 443 (a short URL sent without its
    scheme may be opened over either; so is one whose port is not a number, which no
    short URL can be opened on)."""
    if short_domain.startswith("["):
        end = short_domain.index("]")
        host, port = short_domain[1:end], short_domain[end + 1 :].removeprefix(":")
    else:
        host, _, port = short_domain.partition(":")
    numeric = port.isascii() and port.isdigit()
    return host.lower(), frozenset({int(port)} if numeric else {80, 443})
