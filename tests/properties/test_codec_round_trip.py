"""The codec: every value it writes reads back equal; anything else reads as Corrupt."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tokenbroker import Installation, InstallationStatus, Token, TokenKey
from tokenbroker.backends.codec import (
    EPOCH,
    Corrupt,
    from_micros,
    installation_fields,
    installation_from_fields,
    json_object,
    json_text,
    text,
    to_micros,
    token_fields,
    token_from_fields,
)

CHEAP = settings(max_examples=200, database=None)
RECORDS = settings(max_examples=100, database=None)  # many draws per example
SPOILED = settings(max_examples=25, database=None)  # per field
LAST = datetime.max.replace(tzinfo=UTC)
MAX_MICROS = (LAST - EPOCH) // timedelta(microseconds=1)


# ------------------------------------------------------------------ strategies
offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
zones = st.one_of(st.just(UTC), offsets)


def _shown_in(moment: datetime, zone: timezone) -> datetime:
    try:
        return moment.astimezone(zone)
    except OverflowError:  # the wall time would fall outside datetime's range
        return moment


# Any aware datetime whose instant the codec can hold (the epoch to datetime.max), in
# any fixed-offset zone. (Drawn as integers: st.datetimes is several times slower.)
moments = st.builds(
    _shown_in,
    st.integers(min_value=0, max_value=MAX_MICROS).map(lambda n: EPOCH + timedelta(microseconds=n)),
    zones,
)
optional_moments = st.none() | moments
words = st.text(st.characters(codec="utf-8"), min_size=1)  # what SQL/JSON hold
keys = st.builds(TokenKey, words, words, words)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | words
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(words, inner, max_size=4),
    max_leaves=12,
)
# Whatever a driver or a corrupted JSON document might hand back for a field.
garbage = st.one_of(
    json_scalars,
    st.lists(json_scalars, max_size=2),
    st.dictionaries(words, json_scalars, max_size=2),
    st.just(float("nan")),
    st.binary(),
    st.tuples(st.integers()),
)


@st.composite
def tokens(draw: st.DrawFn) -> Token:
    return Token(
        key=draw(keys),
        access_token=draw(words),
        token_type=draw(words),
        expires_at=draw(moments),
        obtained_at=draw(moments),
        refresh_at=draw(optional_moments),
        must_refresh_at=draw(optional_moments),
    )


@st.composite
def installations(draw: st.DrawFn) -> Installation:
    return Installation(
        app_id=draw(words),
        instance_id=draw(words),
        status=draw(st.sampled_from(InstallationStatus)),
        installed_at=draw(optional_moments),
        removed_at=draw(optional_moments),
        setup_finished_at=draw(optional_moments),
        origin_instance_id=draw(st.none() | words),
        updated_at=draw(optional_moments),
        extra=draw(st.dictionaries(words, json_values, max_size=4)),
    )


TOKEN_FIELDS = sorted(
    token_fields(
        Token(
            key=TokenKey("p", "a", "i"),
            access_token="t",
            token_type="Bearer",
            expires_at=EPOCH,
            obtained_at=EPOCH,
        )
    )
)
INSTALLATION_FIELDS = sorted(installation_fields(Installation(app_id="a", instance_id="i")))


def spoil(fields: dict[str, Any], field: str, data: st.DataObject) -> dict[str, Any]:
    """``fields`` with ``field`` (and maybe some others) missing or replaced by garbage."""
    others = data.draw(st.lists(st.sampled_from(sorted(fields)), max_size=2), "also spoiled")
    for name in dict.fromkeys([field, *others]):
        if data.draw(st.integers(0, 3), f"drop {name}?") == 0:
            del fields[name]
        else:
            fields[name] = data.draw(garbage, name)
    return fields


def through_json(fields: dict[str, Any], ensure_ascii: bool) -> dict[str, Any]:
    """The fields as the Redis backend keeps them: one JSON document."""
    return json_object(json_text(fields, ensure_ascii=ensure_ascii), "the value")


# ------------------------------------------------------------------ micros
class TestMicros:
    @given(moment=moments)
    @CHEAP
    def test_a_moment_comes_back_as_the_same_instant_in_utc(self, moment: datetime) -> None:
        back = from_micros(to_micros(moment), "f")
        assert back == moment
        assert back.utcoffset() == timedelta(0)

    @given(micros=st.integers(min_value=0, max_value=MAX_MICROS))
    @CHEAP
    def test_every_stored_integer_in_range_reads_and_writes_back_unchanged(
        self, micros: int
    ) -> None:
        assert to_micros(from_micros(micros, "f")) == micros

    @given(a=moments, b=moments)
    @CHEAP
    def test_integers_order_like_the_instants_so_stores_can_compare_them(
        self, a: datetime, b: datetime
    ) -> None:
        assert (a < b) == (to_micros(a) < to_micros(b))
        assert (a == b) == (to_micros(a) == to_micros(b))

    @given(
        value=st.one_of(
            st.integers(max_value=-1),
            st.integers(min_value=MAX_MICROS + 1),
            st.booleans(),
            st.floats(),
            st.text(),
            st.binary(),
            st.lists(st.integers()),
            st.builds(object),
        )
    )
    @CHEAP
    def test_negative_boolean_non_integer_or_out_of_range_values_are_corrupt(
        self, value: object
    ) -> None:
        with pytest.raises(Corrupt):
            from_micros(value, "f")

    @given(value=st.one_of(st.just(""), st.none(), st.integers(), st.binary(), st.floats()))
    @CHEAP
    def test_empty_or_non_text_is_corrupt_text(self, value: object) -> None:
        with pytest.raises(Corrupt):
            text(value, "f")


# ------------------------------------------------------------------ tokens
class TestTokens:
    @given(token=tokens(), ensure_ascii=st.booleans())
    @RECORDS
    def test_a_token_reads_back_equal_from_its_fields_and_from_their_json(
        self, token: Token, ensure_ascii: bool
    ) -> None:
        fields = token_fields(token)
        assert token_from_fields(token.key, fields) == token
        assert token_from_fields(token.key, through_json(fields, ensure_ascii)) == token

    @given(token=tokens())
    @RECORDS
    def test_a_token_and_its_read_back_copy_are_stored_as_the_same_bytes(
        self, token: Token
    ) -> None:
        back = token_from_fields(token.key, through_json(token_fields(token), True))
        assert json_text(token_fields(back)) == json_text(token_fields(token))

    @pytest.mark.parametrize("field", TOKEN_FIELDS)
    @given(token=tokens(), data=st.data())
    @SPOILED
    def test_a_token_record_with_garbage_fields_is_corrupt_never_another_error(
        self, field: str, token: Token, data: st.DataObject
    ) -> None:
        fields = spoil(token_fields(token), field, data)
        try:
            back = token_from_fields(token.key, fields)
        except Corrupt:
            return
        # garbage that happens to be valid (another int, another text) reads as a token
        assert isinstance(back.access_token, str)
        assert back.access_token
        assert back.obtained_at.utcoffset() == timedelta(0)


# ------------------------------------------------------------------ installations
class TestInstallations:
    @given(inst=installations(), ensure_ascii=st.booleans())
    @RECORDS
    def test_an_installation_reads_back_equal_from_its_fields_and_from_their_json(
        self, inst: Installation, ensure_ascii: bool
    ) -> None:
        fields = installation_fields(inst)
        assert installation_from_fields(inst.app_id, inst.instance_id, fields) == inst
        back = installation_from_fields(
            inst.app_id, inst.instance_id, through_json(fields, ensure_ascii)
        )
        assert back == inst
        assert json_text(installation_fields(back)) == json_text(fields)

    @given(inst=installations())
    @RECORDS
    def test_equal_installations_are_stored_as_the_same_bytes_whatever_their_key_order(
        self, inst: Installation
    ) -> None:
        reordered = attrs.evolve(inst, extra=dict(reversed(list(inst.extra.items()))))
        assert reordered == inst
        assert json_text(installation_fields(reordered)) == json_text(installation_fields(inst))

    @pytest.mark.parametrize("field", INSTALLATION_FIELDS)
    @given(inst=installations(), data=st.data())
    @SPOILED
    def test_an_installation_record_with_garbage_fields_is_corrupt_never_another_error(
        self, field: str, inst: Installation, data: st.DataObject
    ) -> None:
        fields = spoil(installation_fields(inst), field, data)
        try:
            back = installation_from_fields(inst.app_id, inst.instance_id, fields)
        except Corrupt:
            return
        assert isinstance(back.status, InstallationStatus)
        assert isinstance(back.extra, dict)
        assert back.origin_instance_id is None or isinstance(back.origin_instance_id, str)
        for moment in (back.installed_at, back.removed_at, back.setup_finished_at):
            assert moment is None or moment.utcoffset() == timedelta(0)


# ------------------------------------------------------------------ JSON documents
class TestJsonDocuments:
    @given(raw=st.one_of(st.text(), st.binary(), json_values.map(json.dumps)))
    @CHEAP
    def test_any_stored_text_or_bytes_is_an_object_or_corrupt(self, raw: str | bytes) -> None:
        try:
            document = json_object(raw, "the value")
        except Corrupt:
            return
        assert isinstance(document, dict)

    @given(depth=st.integers(min_value=1, max_value=200_000))
    @example(depth=100_000)  # once escaped as RecursionError (found by this property)
    @settings(max_examples=20, database=None)
    def test_a_deeply_nested_document_is_an_object_or_corrupt(self, depth: int) -> None:
        raw = '{"extra":' + "[" * depth + "]" * depth + "}"
        try:
            document = json_object(raw, "the value")
        except Corrupt:
            return
        assert isinstance(document, dict)
