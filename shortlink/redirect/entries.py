"""Links as a redirect worker keeps them in memory: about 170 bytes a link of a campaign.

Every recipient of a campaign has a link of their own, but the links of one
campaign differ only in four fields: token, id (TrackingUrlId), phone number and
client_ref. Everything else (account, target URL, campaign, creation and expiry
times, the unsafe and disabled flags, where a tap goes once the link expired) is
the same for every link created by one request, so it is kept once, as a
`LinkGroup`, and shared.

Per link there is then one `bytes` object, the *packed* fields:

    group index     3 bytes, little-endian: the LinkGroup in `Groups.items`
    link fields     from byte 3 to the end: id, phone number and client_ref as
                    they appear in a click event, already encoded
                    (shortlink.clickevent.link_fields)

A bytes object costs its payload plus 33 bytes; a dataclass instance with its
own int and str objects costs about four times as much (measured: 67 MiB per
100,000 cached links before, see docs/benchmarks.md). The hit path reads only
the group index, with three byte lookups; the click flusher joins the link
fields into the event without decoding them (shortlink.clickevent.assemble).

A link with a group of its own (a client making one link per request, each with
its own URL) costs about 580 bytes with its group (tracemalloc; 900 when groups
kept their Location and event bytes from the first tap, see LinkGroup).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shortlink import clickevent
from shortlink.links import LinkEntry
from shortlink.redirect.response import encodable
from shortlink.rules import Rules, compiled

MAX_GROUPS = 1 << 24
LINK_FIELDS_AT = 3  # where a packed link's event fields start


@dataclass(frozen=True, slots=True)
class LinkGroup:
    """What the links created by one request share; compared and hashed by value."""

    account_id: int
    target_url: str
    client_identifier: str | None
    created_at_ms: int
    expires_at: float  # Unix seconds, compared with time.time() on every hit
    unsafe: bool
    disabled: bool
    # Where a tap goes once the links expired (their own; None: the account's, else
    # 410). Read only on that path: a link that has not expired never looks at it.
    expired_url: str | None
    # Either flag means the hit path must look closer (warning page, 410).
    special: bool = field(init=False, compare=False, hash=False)
    # Kept from the group's second tap on, not made when cached: most links of a
    # campaign are never tapped, and a client creating one link per request has a
    # group per link, most of them tapped once (keeping these for a link tapped once
    # took 280 bytes a link). target_url as Location header bytes (b"": aiohttp's
    # own path, see response) ...
    location: bytes | None = field(init=False, compare=False, hash=False, repr=False)
    # ... and the group's fields of a click event, encoded (clickevent.group_fields).
    event_fields: clickevent.GroupFields | None = field(
        init=False, compare=False, hash=False, repr=False
    )
    tapped: bool = field(init=False, compare=False, hash=False, repr=False)
    # The request's rules (shortlink.rules.canonical) and this link's variant index:
    # either makes the group special, so a plain link's hit path is unchanged.
    rules: str | None = None
    variant: int | None = None
    # The branded domain the links answer on (None: SHORT_DOMAIN; shortlink.domains).
    domain: str | None = None
    compiled: Rules | None = field(init=False, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "special",
            self.unsafe or self.disabled or self.rules is not None or self.variant is not None,
        )
        object.__setattr__(self, "compiled", compiled(self.rules) if self.rules else None)
        object.__setattr__(self, "location", None)
        object.__setattr__(self, "event_fields", None)
        object.__setattr__(self, "tapped", False)

    def location_bytes(self) -> bytes:
        """`location`, made now if it was not kept (it is kept from the second tap on).

        Called once per tap, usually before the tap's click reaches `encoded_fields`
        (when not, that click's event fields are made once more: the same bytes)."""
        location = self.location
        if location is None:
            location = encodable(self.target_url) or b""
            if self.tapped:
                object.__setattr__(self, "location", location)
            else:
                object.__setattr__(self, "tapped", True)
        return location

    def encoded_fields(self) -> clickevent.GroupFields:
        """`event_fields`, made now if they were not kept (kept once `location` is)."""
        fields = self.event_fields
        if fields is None:
            fields = clickevent.group_fields(
                self.account_id, self.target_url, self.client_identifier, self.created_at_ms
            )
            if self.location is not None:
                object.__setattr__(self, "event_fields", fields)
        return fields


def key_of(entry: LinkEntry) -> GroupKey:
    """The group fields of a link."""
    return (
        entry.account_id,
        entry.target_url,
        entry.client_identifier,
        entry.created_at_ms,
        entry.expires_at,
        entry.unsafe,
        entry.disabled,
        entry.expired_url,
        entry.rules,
        entry.variant,
        entry.domain,
    )


# The fields of a LinkGroup as a plain tuple, in declaration order: cheap to make
# and hash per row while links are stored; the LinkGroup is built once per group.
GroupKey = tuple[
    int, str, str | None, int, float, bool, bool, str | None, str | None, int | None, str | None
]


class Groups:
    """The LinkGroups in use, interned, by index; a slot is reused once no link needs it."""

    def __init__(self) -> None:
        self.items: list[LinkGroup | None] = []  # the hit path indexes this very list
        self._index: dict[GroupKey, int] = {}
        self._keys: list[GroupKey | None] = []
        self._links: list[int] = []  # links referring to each slot
        self._free: list[int] = []
        # One string per client_identifier in use, and the groups using it (sys.intern
        # would do, but some Python 3.12 releases never free interned strings).
        self._texts: dict[str, tuple[str, int]] = {}

    def __len__(self) -> int:
        return len(self._index)

    def acquire(self, key: GroupKey) -> int:
        """The index of the group with these fields, counting one more link that refers to it."""
        index = self._index.get(key)
        if index is None:
            text, users = None, 0
            if key[2] is not None:  # one string for a client_identifier, not one per group
                text, users = self._texts.get(key[2], (key[2], 0))
                key = (key[0], key[1], text, *key[3:])
            group = LinkGroup(*key)
            if self._free:
                index = self._free.pop()
                self.items[index] = group
                self._keys[index] = key
                self._links[index] = 0
            else:
                index = len(self.items)
                if index >= MAX_GROUPS:
                    raise OverflowError("more than 16 million link groups in one cache")
                self.items.append(group)
                self._keys.append(key)
                self._links.append(0)
            self._index[key] = index
            if text is not None:
                self._texts[text] = (text, users + 1)
        self._links[index] += 1
        return index

    def retain(self, index: int) -> None:
        """One more link refers to slot `index` (acquired before, not yet released)."""
        self._links[index] += 1

    def release(self, index: int) -> None:
        """One link fewer refers to slot `index`; the last one frees it."""
        self._links[index] -= 1
        if self._links[index] == 0:
            key = self._keys[index]
            self.items[index] = None
            self._keys[index] = None
            if key is not None:
                if self._index.get(key) == index:  # a retargeted slot may share its key
                    del self._index[key]
                if key[2] is not None:
                    text, users = self._texts[key[2]]
                    if users == 1:
                        del self._texts[text]
                    else:
                        self._texts[text] = (text, users - 1)
            self._free.append(index)

    def retarget(
        self,
        account_id: int,
        campaign: str,
        target_url: str | None,
        url_before_ms: int | None,
        rules: str | None,
        rules_before_ms: int | None,
    ) -> int:
        """Change, in place, the groups of a campaign's links: the target (which drops the
        variant) of those created before `url_before_ms`, the rules of those created before
        `rules_before_ms` (None: that field was never changed). The number changed."""
        changed = 0
        url_before = -1 if target_url is None or url_before_ms is None else url_before_ms
        rules_before = -1 if rules_before_ms is None else rules_before_ms
        for index, key in enumerate(self._keys):
            if key is None or key[0] != account_id or key[2] != campaign:
                continue
            new = list(key)
            if key[3] <= url_before:
                new[1], new[9] = target_url, None
            if key[3] <= rules_before:
                new[8] = rules
            fresh: GroupKey = tuple(new)  # type: ignore[assignment]
            if fresh == key:
                continue
            if self._index.get(key) == index:
                del self._index[key]
            # Two slots may now hold the same fields: both keep working, new links join one.
            self._index.setdefault(fresh, index)
            self._keys[index] = fresh
            self.items[index] = LinkGroup(*fresh)
            changed += 1
        return changed

    def clear(self) -> None:
        """Forget every group (in place: the hit path holds on to `items`)."""
        self.items.clear()
        self._index.clear()
        self._keys.clear()
        self._links.clear()
        self._free.clear()
        self._texts.clear()


def group_index(packed: bytes) -> int:
    return packed[0] | packed[1] << 8 | packed[2] << 16


def packed_prefix(index: int) -> bytes:
    """What every packed link of group slot `index` starts with; clickevent.link_fields follow."""
    return index.to_bytes(3, "little")


def unpack(packed: bytes) -> tuple[int, str | None, str | None]:
    """(link id, phone number, client_ref) of a packed link (tests and tools)."""
    return clickevent.read_link_fields(packed, LINK_FIELDS_AT)
