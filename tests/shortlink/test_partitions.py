"""Time partitions: periods, tags, id windows, and the partitions made ahead."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from shortlink import partitions, tokens
from shortlink.exceptions import PartitionError
from shortlink.links import NewLink, create_links, fetch_entry

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def test_a_period_is_a_week_since_the_epoch() -> None:
    """Periods are whole weeks since 1970-01-01 UTC; an id's high bits are its period."""
    period = partitions.period_of(NOW)
    assert partitions.period_start(period) <= NOW < partitions.period_start(period + 1)
    assert partitions.period_start(period + 1) - partitions.period_start(period) == partitions.WEEK
    link_id = partitions.first_id(period) | 12345
    assert partitions.period_of_id(link_id) == period
    assert partitions.period_of_id(12345) == partitions.LEGACY


def test_a_token_is_looked_up_in_its_tags_period_for_its_whole_life() -> None:
    """From the week before it is made to 60 weeks after, a token's tag names its period."""
    made = partitions.period_of(NOW)
    token = partitions.tag(made) + "abcdef"
    for weeks in range(-1, 61):
        read_at = NOW + weeks * partitions.WEEK
        assert partitions.token_periods(token, read_at) == [made, partitions.LEGACY]
    # 62 weeks on, the tag belongs to a new period.
    later = NOW + 62 * partitions.WEEK
    assert partitions.token_periods(token, later)[0] == made + partitions.TAGS


def test_the_longest_life_fits_the_tag_cycle() -> None:
    """A week's partition, holding links of the longest life, is dropped (two weeks after
    its end at the earliest, plus the grace) before the week with its tag is made ahead,
    and before a token of it could be looked for in that later week."""
    longest = timedelta(days=7 + partitions.MAX_LIFETIME_DAYS + partitions.GRACE_DAYS_MAX)
    made_ahead = (partitions.TAGS - partitions.LINK_WEEKS_AHEAD) * partitions.WEEK
    assert longest < made_ahead
    assert longest < (partitions.TAGS - 2) * partitions.WEEK


def test_a_token_outside_the_alphabet_is_looked_up_in_the_legacy_partition_only() -> None:
    """A token that starts with no tag cannot be a partitioned link's."""
    assert partitions.token_periods("", NOW) == [partitions.LEGACY]
    assert partitions.token_periods("-abcdef", NOW) == [partitions.LEGACY]


def test_id_windows_stay_inside_the_periods() -> None:
    """Windows over ids of two periods cover the same sequence numbers in each, not 2**40 ids."""
    low = partitions.first_id(2900) | 1_000
    assert partitions.id_windows(low, low + 24, 10) == [
        (low, low + 9),
        (low + 10, low + 19),
        (low + 20, low + 24),
    ]
    high = partitions.first_id(2901) | 1_015
    windows = partitions.id_windows(low, high, 10)
    assert windows == [
        (low, low + 9),
        (low + 10, low + 15),
        (partitions.first_id(2901) | 1_000, partitions.first_id(2901) | 1_009),
        (partitions.first_id(2901) | 1_010, high),
    ]


def test_id_windows_skip_periods_without_partitions() -> None:
    """From a legacy id to one of this week, only the periods that exist are read, over the
    sequence numbers between; either order of the numbers gives the same windows."""
    legacy, recent = 5_000, partitions.first_id(2970) | 5_002
    assert partitions.id_windows(legacy, recent, 10, [0, 2969, 2970]) == [
        (5_000, 5_002),
        (partitions.first_id(2969) | 5_000, partitions.first_id(2969) | 5_002),
        (partitions.first_id(2970) | 5_000, recent),
    ]
    skewed = partitions.id_windows(partitions.first_id(2969) | 9, partitions.first_id(2970) | 7, 10)
    assert skewed == [
        (partitions.first_id(2969) | 7, partitions.first_id(2969) | 9),
        (partitions.first_id(2970) | 7, partitions.first_id(2970) | 9),
    ]


def test_generated_tokens_start_with_the_tag() -> None:
    """Every token made for a period starts with its tag; the rest is random."""
    made = tokens.generate(500, 7, "Q")
    assert all(token[0] == "Q" and len(token) == 7 for token in made)
    assert len({token[1:] for token in made}) == 500
    with pytest.raises(ValueError, match="tag"):
        tokens.generate(1, 7, "-")


async def test_partitions_are_made_ahead_once(own_database_url: str) -> None:
    """Migrating makes this week's links partition and the next ones, and the months of
    clicks ahead; ensuring again makes nothing more."""
    conn = await asyncpg.connect(own_database_url)
    try:
        now = datetime.now(UTC)
        current = partitions.period_of(now)
        links = {p.name for p in await partitions.partitions(conn, "links")}
        for period in range(current - 1, current + partitions.LINK_WEEKS_AHEAD + 1):
            assert partitions.link_partition_name(period) in links
        assert "links_legacy" in links
        clicks = await partitions.partitions(conn, "clicks")
        assert clicks[0].name == "clicks_legacy"
        assert clicks[0].low is None
        ahead = partitions.add_months(partitions.month_start(now), partitions.CLICK_MONTHS_AHEAD)
        assert partitions.click_partition_name(ahead) in {p.name for p in clicks}
        # Contiguous: each month starts where the one before ends.
        for before, after in itertools.pairwise(clicks):
            assert before.high == after.low
        assert await partitions.ensure(conn) == []
    finally:
        await conn.close()


async def test_a_partition_is_not_made_while_its_tag_is_in_use(own_database_url: str) -> None:
    """The week 62 weeks after a partition that still exists would share its tokens' tag."""
    conn = await asyncpg.connect(own_database_url)
    try:
        later = datetime.now(UTC) + partitions.TAGS * partitions.WEEK
        with pytest.raises(PartitionError, match="same token tag"):
            await partitions.ensure(conn, later)
    finally:
        await conn.close()


async def test_links_go_to_their_weeks_partition(db: asyncpg.Connection, account_id: int) -> None:
    """A new link is stored in this week's partition, its id and token carry the week."""
    [created] = await create_links(db, account_id, [NewLink("https://example.com/w")])
    period = partitions.period_of(created.created_at)
    assert partitions.period_of_id(created.id) == period
    assert created.token[0] == partitions.tag(period)
    where = await db.fetchval(
        "SELECT tableoid::regclass::text FROM links WHERE id = $1 AND period = $2",
        created.id,
        period,
    )
    assert where == partitions.link_partition_name(period)


async def test_a_link_lives_at_most_a_year(db: asyncpg.Connection, account_id: int) -> None:
    """An expiry beyond MAX_LIFETIME_DAYS is cut to it, so the link fits its tag's cycle."""
    far = datetime.now(UTC) + timedelta(days=900)
    [created] = await create_links(
        db, account_id, [NewLink("https://example.com/y", expires_at=far)]
    )
    assert created.expires_at - created.created_at == timedelta(days=partitions.MAX_LIFETIME_DAYS)
    stored = await db.fetchval(
        "SELECT expires_at - created_at FROM links WHERE id = $1 AND period = $2",
        created.id,
        partitions.period_of_id(created.id),
    )
    assert stored == timedelta(days=partitions.MAX_LIFETIME_DAYS)


async def test_clicks_ahead_go_to_their_months_partition(
    db: asyncpg.Connection, account_id: int
) -> None:
    """A click next month is stored in that month's partition, not the legacy one."""
    [created] = await create_links(db, account_id, [NewLink("https://example.com/c")])
    at = partitions.add_months(partitions.month_start(datetime.now(UTC)), 1) + timedelta(days=3)
    await db.execute(
        """
        INSERT INTO clicks (event_id, link_id, account_id, clicked_at, method)
        VALUES (gen_random_uuid(), $1, $2, $3, 'GET')
        """,
        created.id,
        account_id,
        at,
    )
    where = await db.fetchval(
        "SELECT tableoid::regclass::text FROM clicks WHERE link_id = $1", created.id
    )
    assert where == partitions.click_partition_name(partitions.month_start(at))


async def test_fetch_entry_finds_links_of_either_kind(
    database_url: str, db: asyncpg.Connection, account_id: int
) -> None:
    """A token is found in its week's partition; an unknown token of any tag is not."""
    [created] = await create_links(db, account_id, [NewLink("https://example.com/f")])
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        entry = await fetch_entry(pool, created.token)
        assert entry is not None
        assert entry.id == created.id
        for character in {"0", "a", "Z"} - {created.token[0]}:
            assert await fetch_entry(pool, character + created.token[1:]) is None
    finally:
        await pool.close()
