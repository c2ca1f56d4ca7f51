"""Scraping a runtime's metrics for a rollout's analysis: a runtime that answers no whole reply (it
stops mid-answer, or speaks no HTTP) is a failed scrape, as one that does not answer at all; real
sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from providers.local import scrape

TEXT = b'mlops_requests_total{version="v2",code="2xx"} 7\n'


@pytest.fixture
def answering() -> Iterator[tuple[list[bytes], int]]:
    """A server on 127.0.0.1 that sends each connection the next raw bytes of the list, then closes."""
    replies: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if replies:
                    conn.sendall(replies.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield replies, listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def test_a_whole_reply_is_the_text(answering):
    replies, port = answering
    replies.append(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(TEXT) + TEXT)
    assert scrape.fetch(f"http://127.0.0.1:{port}/metrics") == TEXT.decode()


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n" + TEXT,   # cut short: IncompleteRead
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",                   # a garbled chunk
    b"NOT HTTP AT ALL\r\n\r\n",                                                         # BadStatusLine
    b"",                                                                                 # closed at once
])
def test_a_reply_cut_short_or_garbled_is_a_failed_scrape_as_no_answer_is(answering, reply):
    replies, port = answering
    replies.append(reply)
    assert scrape.fetch(f"http://127.0.0.1:{port}/metrics") is None


def test_no_answer_is_a_failed_scrape():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    assert scrape.fetch(f"http://127.0.0.1:{port}/metrics") is None


def test_each_runtime_speaking_of_a_version_is_its_own_instance():
    """The candidate's runtime and the stable runtime (what it forwarded there without an answer) both speak
    of the candidate. Summed, one failed scrape of either dropped the sum and the analysis read the drop as a
    reset (the whole history counted as one interval); labelled, each is differenced on its own."""
    from planner.rollout.analysis import delta_instances, parse_instances
    from providers.exposition import with_instance_label

    own = 'mlops_requests_total{version="v2",code="2xx"} 500\nmlops_requests_total{version="v2",code="5xx"} 0\n'
    forwarded = 'mlops_requests_total{version="v2",code="5xx"} 3\nmlops_requests_total{version="v1",code="2xx"} 9\n'
    both = scrape.merge([with_instance_label(own, "candidate"), with_instance_label(forwarded, "stable")], "v2")
    assert 'mlops_requests_total{version="v2",code="5xx",instance="stable"} 3' in both
    assert 'version="v1"' not in both
    before = parse_instances(both)["v2"]
    later = 'mlops_requests_total{version="v2",code="2xx"} 510\nmlops_requests_total{version="v2",code="5xx"} 10\n'
    stable_unread = parse_instances(scrape.merge([with_instance_label(later, "candidate")], "v2"))["v2"]
    assert delta_instances(before, stable_unread).codes == {"2xx": 10, "5xx": 10}   # not 510 good answers
