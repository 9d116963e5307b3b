"""Answers rendered once per form: the same bytes as rendering and measuring each recipient."""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from shortlink import tokens
from shortlink.api import render, rewrite, sms
from shortlink.links import CreatedLink

NOW = datetime(2026, 1, 2, tzinfo=UTC)
PHONES = ["447700900001", "14155550100", "919812345678"]
REFS: list[str | None] = [None, 'ref "1" %s \\ é', "m-3"]

# (mode, body, template values): ASCII, the GSM extension table, an emoji (a surrogate
# pair in UCS-2), CJK, JSON escapes and % (the templates are %-formats), and bodies that
# end near a segment's edge with pairs about it.
CASES: list[tuple[str, str, list[str] | None]] = [
    ("track", 'Sale #track("https://ab.co/x")', None),
    ("track", 'Only €5 [today] {now} ~ ^ | \\ #track("https://ab.co/x") ok', None),
    ("track", 'Autumn \U0001f342 sale #track("https://ab.co/x") ' + "x" * 120, None),
    ("track", '詳細は #track("https://a.example/ü") へ。', None),
    (
        "track",
        'Quote " back \\ new\nline tab\t bell\x07 50% %s %d %% #track("https://a.ex/%25")',
        None,
    ),
    (
        "track",
        '#track("https://a.ex/1") and #track("www.b.example") and #track(\'c.example\')',
        None,
    ),
    ("track", "€" * 70 + ' #track("https://ab.co/x") ' + "€" * 3, None),
    ("track", "\U0001f600" * 20 + ' #track("https://ab.co/x") ' + "\U0001f600" * 3, None),
    ("track", "a" * 120 + '#track("https://ab.co/x")' + "a" * 9, None),
    ("first", "Buy at https://a.example/1 or https://b.example/2. Thanks €", None),
    ("first", "Open xoxzo.com/en/ now \U0001f381 100%", None),
    ("last", "Buy at https://a.example/1 or https://b.example/2. Thanks", None),
    ("last", "詳細は(see https://en.wikipedia.org/wiki/Foo_(bar))。", None),
    ("template", "Dear {#var#}, your order: {#var#} - Shop €", ["Asha %s", "https://shop.ex/a"]),
    ("template", "{#var#}{#var#} \U0001f642 {#var#}", [" https://a.ex/1 ", "x\ny", "b.example"]),
]


def old_answer(
    plans: list[rewrite.Plan],
    prefix: str,
    phones: list[str],
    refs: list[str | None],
    created: list[CreatedLink],
) -> bytes:
    """POST /v1/messages's answer as it was made before forms: each recipient rendered and
    measured on its own, then orjson over dicts."""
    made = iter(created)
    messages = []
    for plan, phone, ref in zip(plans, phones, refs, strict=True):
        links = [next(made) for _ in plan.targets]
        urls = [prefix + link.token for link in links]
        text = plan.render(urls)
        measured = sms.measure(text)
        messages.append(
            {
                "to": phone,
                "client_ref": ref,
                "body": text,
                "links": [
                    {
                        "tracking_url_id": link.id,
                        "token": link.token,
                        "short_url": url,
                        "target_url": target,
                    }
                    for link, url, target in zip(links, urls, plan.targets, strict=True)
                ],
                "length": measured.length,
                "encoding": measured.encoding,
                "segments": measured.segments,
            }
        )
    return orjson.dumps({"messages": messages})


def made_links(count: int, token_length: int, first_id: int = 1) -> list[CreatedLink]:
    return [
        CreatedLink(first_id + i, token, NOW, NOW)
        for i, token in enumerate(tokens.generate(count, token_length))
    ]


def plan_of(mode: str, body: str, values: list[str] | None) -> rewrite.Plan:
    return rewrite.plan_template(body, values) if values is not None else rewrite.plan(body, mode)


@pytest.mark.parametrize("prefix", ["https://sl.test/", "sl.test/"])
@pytest.mark.parametrize(("mode", "body", "values"), CASES)
async def test_each_mode_renders_the_bytes_of_the_per_recipient_way(
    mode: str, body: str, values: list[str] | None, prefix: str
) -> None:
    """Every mode, with and without https://: the answer is byte for byte the old one, and
    each message's length, encoding and segments are sms.measure's of its body."""
    plan = plan_of(mode, body, values)
    for token_length in (tokens.MIN_LENGTH, tokens.DEFAULT_LENGTH, tokens.MAX_LENGTH):
        plans = [plan] * len(PHONES)
        created = made_links(len(PHONES) * len(plan.targets), token_length)
        forms = render.Forms(prefix, token_length)
        answer = await render.messages_answer(forms, plans, PHONES, REFS, created)
        assert answer == old_answer(plans, prefix, PHONES, REFS, created)
        for message in orjson.loads(answer)["messages"]:
            measured = sms.measure(message["body"])
            assert (message["length"], message["encoding"], message["segments"]) == (
                measured.length,
                measured.encoding,
                measured.segments,
            )


async def test_random_bodies_measure_as_their_rendering() -> None:
    """Random bodies of GSM, extension, BMP and astral characters, a link anywhere and
    lengths about the segment edges: the form's measure is the rendered body's."""
    rng = random.Random(21)
    alphabets = ["ab c", "ab €[", "ab ✓", "a 😀", "€😀 a", "éü ~"]
    for _ in range(400):
        alphabet = rng.choice(alphabets)
        length = rng.choice([rng.randrange(0, 60), rng.randrange(120, 170), rng.randrange(300)])
        text = "".join(rng.choice(alphabet) for _ in range(length))
        at = rng.randrange(len(text) + 1)
        body = f'{text[:at]} #track("https://ab.co/{rng.randrange(99)}") {text[at:]}'
        prefix = rng.choice(["https://sl.test/", "sl.test/", "http://tx1.in:8080/"])
        token_length = rng.randrange(tokens.MIN_LENGTH, tokens.MAX_LENGTH + 1)
        plan = rewrite.plan(body, "track")
        [link] = made_links(1, token_length)
        form = render.Form.of(plan, prefix, token_length)
        assert form.measure == sms.measure(plan.render([prefix + link.token])), body
        message = orjson.loads(form.message(b'"1"', b"null", [link]))
        assert message["body"] == plan.render([prefix + link.token])


async def test_the_size_counted_before_is_the_answer_with_the_longest_ids() -> None:
    """messages_size is exact when every id has 19 digits, and an upper bound otherwise."""
    plans = [plan_of(mode, body, values) for mode, body, values in CASES]
    phones = [PHONES[i % 3] for i in range(len(plans))]
    refs = [REFS[i % 3] for i in range(len(plans))]
    count = sum(len(plan.targets) for plan in plans)
    forms = render.Forms("https://sl.test/", 7)
    size = await render.messages_size(forms, plans, phones, refs)
    longest = made_links(count, 7, first_id=10**18)
    assert size == len(await render.messages_answer(forms, plans, phones, refs, longest))
    assert size > len(
        await render.messages_answer(forms, plans, phones, refs, made_links(count, 7))
    )


async def test_links_answer_is_the_dicts_of_old_and_sized_before() -> None:
    """POST /v1/links's answer is byte for byte the old orjson one; its size is counted
    before as for messages (exact with 19-digit ids)."""
    phones: list[str | None] = [*PHONES, None]
    refs: list[str | None] = [*REFS, "x"]
    for prefix in ("https://sl.test/", "sl.test/"):
        created = made_links(len(phones), 7, first_id=10**18)
        answer = await render.links_answer(prefix, phones, refs, created)
        old: dict[str, Any] = {
            "links": [
                {
                    "tracking_url_id": link.id,
                    "token": link.token,
                    "short_url": prefix + link.token,
                    "phone_number": phone,
                    "client_ref": ref,
                }
                for link, phone, ref in zip(created, phones, refs, strict=True)
            ]
        }
        assert answer == orjson.dumps(old)
        assert await render.links_size(prefix, 7, phones, refs) == len(answer)


async def test_one_form_per_plan_object() -> None:
    """Recipients sharing a plan share its form: it is made and measured once."""
    forms = render.Forms("https://sl.test/", 7)
    shared = rewrite.plan('Hi #track("https://ab.co/x")', "track")
    same_text = rewrite.plan('Hi #track("https://ab.co/x")', "track")
    assert forms[shared] is forms[shared]
    assert forms[same_text] == forms[shared]


async def test_long_renders_give_the_loop_turns() -> None:
    """Rendering and sizing many recipients let other tasks run every SLICE recipients."""
    count = 10 * render.SLICE
    plan = rewrite.plan('Sale #track("https://ab.co/x")', "track")
    plans, phones, refs = [plan] * count, ["447700900001"] * count, [None] * count
    forms = render.Forms("https://sl.test/", 7)
    created = made_links(count, 7)
    turns = 0
    started = asyncio.Event()

    async def other() -> None:
        nonlocal turns
        started.set()
        while True:
            turns += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(other())
    await started.wait()
    for work in (
        render.messages_size(forms, plans, phones, refs),
        render.messages_answer(forms, plans, phones, refs, created),
        render.links_size("https://sl.test/", 7, phones, refs),
        render.links_answer("https://sl.test/", phones, refs, created),
    ):
        before = turns
        await work
        assert turns - before >= 9, work
    ticker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ticker
