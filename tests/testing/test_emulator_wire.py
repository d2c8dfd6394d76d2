"""The emulator reads requests as strictly as a real server: raw bytes over loopback.

Every malformed request gets a whole HTTP/1.1 answer (status line, headers, Wix's error
body) and never reaches an endpoint; bodies are bounded however they are framed.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import httpx2
import pytest

from tokenbroker.testing.emulator import WixEmulator

from .raw_http import (
    APP_ID,
    APP_SECRET,
    INSTANCE,
    TOKEN_BODY,
    RawResponse,
    Responses,
    chunked_token_request,
    connect,
    exchange,
    read_response,
    read_until_closed,
    request,
    token_request,
)

MAX_BODY = 1 << 20


@pytest.fixture
def emulator() -> Iterator[WixEmulator]:
    emu = WixEmulator(APP_ID, APP_SECRET, request_timeout=5.0)
    emu.install(INSTANCE)
    with emu:
        yield emu


def assert_refused(response: RawResponse, status: int = 400) -> None:
    """A proper HTTP/1.1 refusal: status line, framing headers, Wix's error shape."""
    assert response.status_line.startswith(b"HTTP/1.1 %d " % status), response
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.body)
    assert response.closes
    body = response.json()
    assert isinstance(body["message"], str)
    assert isinstance(body["details"]["applicationError"]["description"], str)


def hex_size(size: int) -> bytes:
    return b"%x" % size


class TestMalformedRequestLine:
    @pytest.mark.parametrize(
        "line",
        [
            b"GARBAGE",
            b"\x00\x01\x02\xff",
            b"GET /",
            b"POST  /oauth2/token HTTP/1.1",
            b"POST /oauth2/token HTTP/1.1 extra",
            b"POST /oauth2/token http/1.1",
            b"POST oauth2/token HTTP/1.1",
            b"POST /oauth2/t\xffken HTTP/1.1",
        ],
        ids=[
            "one-word",
            "binary",
            "http-0.9-form",
            "double-space",
            "four-words",
            "lower-case-version",
            "relative-target",
            "non-ascii-target",
        ],
    )
    def test_a_garbage_request_line_gets_a_whole_400_and_reaches_no_endpoint(
        self, emulator: WixEmulator, line: bytes
    ) -> None:
        response = exchange(emulator, request(line, body=TOKEN_BODY))

        assert_refused(response, 400)
        assert emulator.calls == {}

    @pytest.mark.parametrize("version", [b"9.0", b"2.0", b"0.9"])
    def test_an_unsupported_http_version_gets_a_whole_505(
        self, emulator: WixEmulator, version: bytes
    ) -> None:
        line = b"POST /oauth2/token HTTP/" + version

        response = exchange(emulator, request(line, body=TOKEN_BODY))

        # 505 HTTP Version Not Supported is HTTP's answer to a well-formed line of
        # another version; what matters is that it comes as a whole HTTP/1.1 answer.
        assert_refused(response, 505)
        assert emulator.calls == {}

    def test_an_unknown_method_gets_a_whole_501(self, emulator: WixEmulator) -> None:
        assert_refused(exchange(emulator, request(b"BREW /oauth2/token HTTP/1.1")), 501)

    def test_an_overlong_request_line_gets_a_whole_414(self, emulator: WixEmulator) -> None:
        line = b"GET /" + b"a" * 10_000 + b" HTTP/1.1"

        assert_refused(exchange(emulator, request(line)), 414)


class TestMalformedHeaders:
    @pytest.mark.parametrize(
        "field",
        [
            b"X-Thing : spaced",
            b"X-Thing: folded\r\n  onto two lines",
            b"X-Thing: a\x00b",
            b"X-Thing: a\x0bb",
            b"no colon here",
            b"X Thing: space in the name",
            b"Host: another",
            b"Content-Type: text/plain",
            b"Authorization: one",
        ],
        ids=[
            "space-before-colon",
            "obs-fold",
            "nul-in-value",
            "vertical-tab-in-value",
            "no-colon",
            "space-in-name",
            "second-host",
            "second-content-type",
            "second-authorization",
        ],
    )
    def test_a_malformed_or_ambiguous_field_gets_a_whole_400_and_reaches_no_endpoint(
        self, emulator: WixEmulator, field: bytes
    ) -> None:
        extra = [field, b"Authorization: two"] if field.startswith(b"Authorization") else [field]

        response = exchange(emulator, token_request(*extra))

        assert_refused(response, 400)
        assert emulator.calls == {}

    def test_an_http_1_1_request_without_host_is_400(self, emulator: WixEmulator) -> None:
        data = request(
            fields=[b"Content-Type: application/json", b"Content-Length: %d" % len(TOKEN_BODY)],
            body=TOKEN_BODY,
        )

        assert_refused(exchange(emulator, data), 400)
        assert emulator.calls == {}

    def test_too_many_fields_are_431(self, emulator: WixEmulator) -> None:
        fields = [b"Host: emulator", *(b"X-Field-%d: x" % i for i in range(101))]

        assert_refused(exchange(emulator, request(b"GET /apps/v1/instance HTTP/1.1", fields)), 431)

    def test_a_field_line_over_the_limit_is_431(self, emulator: WixEmulator) -> None:
        fields = [b"Host: emulator", b"X-Long: " + b"x" * 10_000]

        assert_refused(exchange(emulator, request(b"GET /apps/v1/instance HTTP/1.1", fields)), 431)


class TestContentLength:
    @pytest.mark.parametrize(
        "length",
        [
            b"+%d" % len(TOKEN_BODY),
            b"%d_%d" % (len(TOKEN_BODY) // 10, len(TOKEN_BODY) % 10),
            b"%d %d" % (len(TOKEN_BODY) // 10, len(TOKEN_BODY) % 10),
            b"0x%x" % len(TOKEN_BODY),
            b"-1",
            b"",
            b"%d, %d" % (len(TOKEN_BODY), len(TOKEN_BODY)),
        ],
        ids=["plus-sign", "underscore", "inner-space", "hex", "negative", "empty", "list"],
    )
    def test_a_length_that_is_not_plain_digits_is_400(
        self, emulator: WixEmulator, length: bytes
    ) -> None:
        response = exchange(emulator, token_request(length=length))

        assert_refused(response, 400)
        assert emulator.token_requests == 0

    def test_two_lengths_are_400(self, emulator: WixEmulator) -> None:
        data = token_request(b"Content-Length: %d" % len(TOKEN_BODY))

        assert_refused(exchange(emulator, data), 400)
        assert emulator.token_requests == 0

    def test_whitespace_around_the_value_is_http_syntax_and_accepted(
        self, emulator: WixEmulator
    ) -> None:
        # RFC 9110 5.5: optional whitespace around a field value is not part of it.
        response = exchange(emulator, token_request(length=b" %d \t" % len(TOKEN_BODY)))

        assert response.status == 200

    def test_a_length_over_the_limit_is_413_without_reading_the_body(
        self, emulator: WixEmulator
    ) -> None:
        with connect(emulator) as sock:
            # Headers only: an emulator that waited for the body would never answer.
            sock.sendall(token_request(length=b"%d" % (300 * MAX_BODY), body=b""))
            response = read_response(sock)

        assert_refused(response, 413)
        assert emulator.token_requests == 0

    def test_a_length_with_more_digits_than_any_int_parser_likes_is_413(
        self, emulator: WixEmulator
    ) -> None:
        response = exchange(emulator, token_request(length=b"9" * 5000, body=b""))

        assert_refused(response, 413)

    def test_a_body_over_the_limit_with_expect_100_continue_is_413_not_100(
        self, emulator: WixEmulator
    ) -> None:
        with connect(emulator) as sock:
            sock.sendall(
                token_request(b"Expect: 100-continue", length=b"%d" % (MAX_BODY + 1), body=b"")
            )
            response = read_response(sock)

        assert_refused(response, 413)

    def test_a_body_within_the_limit_with_expect_100_continue_is_served(
        self, emulator: WixEmulator
    ) -> None:
        with connect(emulator) as sock:
            answers = Responses(sock)
            length = b"%d" % len(TOKEN_BODY)
            sock.sendall(token_request(b"Expect: 100-continue", length=length, body=b""))
            interim = answers.next()
            sock.sendall(TOKEN_BODY)
            final = answers.next()

        assert interim.status == 100
        assert final.status == 200


class TestChunkedBodies:
    @pytest.mark.parametrize(
        "size",
        [
            b"+%x" % len(TOKEN_BODY),
            b"0x%x" % len(TOKEN_BODY),
            b"%x_%x" % (len(TOKEN_BODY) // 16, len(TOKEN_BODY) % 16),
            b" %x" % len(TOKEN_BODY),
            b"%x %x" % (len(TOKEN_BODY) // 16, len(TOKEN_BODY) % 16),
            b"g",
            b"",
        ],
        ids=[
            "plus-sign",
            "0x-prefix",
            "underscore",
            "leading-space",
            "inner-space",
            "not-hex",
            "empty",
        ],
    )
    def test_a_chunk_size_that_is_not_plain_hex_is_400(
        self, emulator: WixEmulator, size: bytes
    ) -> None:
        data = chunked_token_request([size + b"\r\n", TOKEN_BODY, b"\r\n0\r\n\r\n"])

        assert_refused(exchange(emulator, data), 400)
        assert emulator.token_requests == 0

    def test_a_negative_chunk_size_is_400_not_a_read_to_end_of_stream(
        self, emulator: WixEmulator
    ) -> None:
        with connect(emulator) as sock:
            # The connection stays open: reading "to the end" would wait forever.
            sock.sendall(chunked_token_request([b"-1\r\n", b"x" * 1000]))
            response = read_response(sock)

        assert_refused(response, 400)
        assert emulator.token_requests == 0

    def test_a_chunk_size_over_the_limit_is_413_without_reading_it(
        self, emulator: WixEmulator
    ) -> None:
        with connect(emulator) as sock:
            sock.sendall(chunked_token_request([hex_size(300 * MAX_BODY) + b"\r\n"]))
            response = read_response(sock)

        assert_refused(response, 413)

    def test_chunks_that_add_up_to_more_than_the_limit_are_413(self, emulator: WixEmulator) -> None:
        chunk = hex_size(MAX_BODY // 2) + b"\r\n" + b"x" * (MAX_BODY // 2) + b"\r\n"

        response = exchange(emulator, chunked_token_request([chunk, chunk, chunk]))

        assert_refused(response, 413)

    def test_a_chunk_not_followed_by_crlf_is_400(self, emulator: WixEmulator) -> None:
        data = chunked_token_request([hex_size(5) + b"\r\n", TOKEN_BODY, b"\r\n0\r\n\r\n"])

        assert_refused(exchange(emulator, data), 400)

    @pytest.mark.parametrize(
        "encoding",
        [b"xchunkedx", b"chunked, gzip", b"chunked, chunked", b"identity"],
        ids=["not-chunked", "chunked-not-last", "chunked-twice", "identity"],
    )
    def test_a_transfer_encoding_that_does_not_end_in_one_chunked_is_400(
        self, emulator: WixEmulator, encoding: bytes
    ) -> None:
        body = hex_size(len(TOKEN_BODY)) + b"\r\n" + TOKEN_BODY + b"\r\n0\r\n\r\n"
        fields = [b"Host: emulator", b"Content-Type: application/json"]

        data = request(fields=[*fields, b"Transfer-Encoding: " + encoding], body=body)

        assert_refused(exchange(emulator, data), 400)
        assert emulator.token_requests == 0

    def test_a_coding_other_than_chunked_before_it_is_501(self, emulator: WixEmulator) -> None:
        fields = [b"Host: emulator", b"Content-Type: application/json"]
        data = request(fields=[*fields, b"Transfer-Encoding: gzip, chunked"], body=b"0\r\n\r\n")

        assert_refused(exchange(emulator, data), 501)
        assert emulator.token_requests == 0

    def test_chunked_and_content_length_together_are_400(self, emulator: WixEmulator) -> None:
        chunks = [hex_size(len(TOKEN_BODY)) + b"\r\n", TOKEN_BODY, b"\r\n0\r\n\r\n"]
        data = chunked_token_request(chunks, b"Content-Length: %d" % len(TOKEN_BODY))

        assert_refused(exchange(emulator, data), 400)
        assert emulator.token_requests == 0

    def test_chunked_in_an_http_1_0_request_is_400(self, emulator: WixEmulator) -> None:
        chunks = [hex_size(len(TOKEN_BODY)) + b"\r\n", TOKEN_BODY, b"\r\n0\r\n\r\n"]
        data = chunked_token_request(chunks).replace(b"HTTP/1.1", b"HTTP/1.0", 1)

        assert_refused(exchange(emulator, data), 400)

    def test_a_well_formed_chunked_body_with_extensions_and_trailers_is_served(
        self, emulator: WixEmulator
    ) -> None:
        half = len(TOKEN_BODY) // 2
        chunks = [
            hex_size(half) + b" ;name=value\r\n",
            TOKEN_BODY[:half] + b"\r\n",
            hex_size(len(TOKEN_BODY) - half).upper() + b"\r\n",
            TOKEN_BODY[half:] + b"\r\n",
            b"0\r\nX-Trailer: yes\r\n\r\n",
        ]

        assert exchange(emulator, chunked_token_request(chunks)).status == 200


class TestAnswersOnOneConnection:
    def test_pipelined_requests_are_answered_in_order_on_one_connection(
        self, emulator: WixEmulator
    ) -> None:
        instance = request(b"GET /apps/v1/instance HTTP/1.1", [b"Host: emulator"])
        with connect(emulator) as sock:
            sock.sendall(token_request() + instance + token_request())
            answers = Responses(sock)
            statuses = [answers.next().status for _ in range(3)]

        assert statuses == [200, 401, 200]

    def test_a_refusal_closes_the_connection_after_the_answer(self, emulator: WixEmulator) -> None:
        with connect(emulator) as sock:
            sock.sendall(token_request(length=b"+1") + token_request())
            response = read_response(sock)
            rest = read_until_closed(sock)

        assert_refused(response, 400)
        assert rest == b""

    def test_http_1_0_closes_unless_asked_to_keep_alive(self, emulator: WixEmulator) -> None:
        data = token_request().replace(b"HTTP/1.1", b"HTTP/1.0", 1)
        with connect(emulator) as sock:
            sock.sendall(data)
            response = read_response(sock)
            rest = read_until_closed(sock)

        assert (response.status, response.closes, rest) == (200, True, b"")

    def test_head_gets_headers_without_a_body(self, emulator: WixEmulator) -> None:
        with connect(emulator) as sock:
            sock.sendall(request(b"HEAD /oauth2/token HTTP/1.1", [b"Host: emulator"]))
            sock.shutdown(socket.SHUT_WR)
            raw = read_until_closed(sock)

        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 405 ")
        assert body == b""


class TestBodiesTheEndpointsCannotParse:
    @pytest.mark.parametrize("nesting", [b"[", b'{"a":'], ids=["arrays", "objects"])
    def test_deeply_nested_json_is_a_400_json_error(
        self, emulator: WixEmulator, nesting: bytes
    ) -> None:
        with httpx2.Client(base_url=emulator.url, timeout=10) as client:
            response = client.post(
                "/oauth2/token",
                content=nesting * 200_000,
                headers={"Content-Type": "application/json"},
            )

        assert response.status_code == 400
        assert response.json()["details"]["applicationError"]["code"] == "INVALID_JSON"

    def test_deeply_nested_json_in_a_bi_event_is_a_400_json_error(
        self, emulator: WixEmulator
    ) -> None:
        with httpx2.Client(base_url=emulator.url, timeout=10) as client:
            token = client.post(
                "/oauth2/token", content=TOKEN_BODY, headers={"Content-Type": "application/json"}
            ).json()["access_token"]
            response = client.post(
                "/apps/v1/bi-event",
                content=b'{"eventName": ' + b"[" * 200_000,
                headers={"Authorization": token, "Content-Type": "application/json"},
            )
            after = client.get("/apps/v1/instance", headers={"Authorization": token})

        assert response.status_code == 400
        assert response.json()["details"]["applicationError"]["code"] == "INVALID_JSON"
        assert after.status_code == 200


class TestFailuresInsideTheEmulator:
    def test_an_exception_in_a_handler_is_a_500_and_a_warning(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        def broken_clock() -> float:
            raise RuntimeError("the clock broke")

        emu = WixEmulator(APP_ID, APP_SECRET, clock=broken_clock)
        emu.install(INSTANCE)
        caplog.set_level(logging.WARNING, logger="tokenbroker.emulator")
        with emu, httpx2.Client(base_url=emu.url, timeout=10) as client:
            response = client.post(
                "/oauth2/token", content=TOKEN_BODY, headers={"Content-Type": "application/json"}
            )
            again = client.get("/nowhere")

        assert response.status_code == 500
        assert response.json()["details"]["applicationError"]["code"] == "INTERNAL_SERVER_ERROR"
        assert again.status_code == 404  # the connection survived it
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "POST /oauth2/token" in warnings[0].getMessage()
        assert warnings[0].exc_info is not None
        assert APP_SECRET not in caplog.text
