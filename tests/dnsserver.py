"""A small real DNS server on 127.0.0.1 for tests: UDP, answers TXT records from a dict.

Built with dnspython's message API in a thread of its own (so any test's event loop,
and synchronous fixtures, can use it). A name not in `records` is NXDOMAIN.
"""

from __future__ import annotations

import contextlib
import socketserver
import threading
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DnsServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.records: dict[str, list[str]] = {}  # lower-case name, no trailing dot -> TXT
        self.queries: list[str] = []

    @property
    def resolvers(self) -> str:
        """The DNS_RESOLVERS value that points at this server."""
        return f"127.0.0.1:{self.port}"

    def answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        self.queries.append(name)
        values = self.records.get(name)
        if values is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.TXT:
            # A TXT record is strings of at most 255 bytes each; longer values are split.
            texts = [
                " ".join(
                    '"' + value[i : i + 255].replace('"', '\\"') + '"'
                    for i in range(0, max(len(value), 1), 255)
                )
                for value in values
            ]
            response.answer.append(
                dns.rrset.from_text_list(question.name, 60, dns.rdataclass.IN, "TXT", texts)
            )
        return response.to_wire()


@contextlib.contextmanager
def dns_server() -> Iterator[DnsServer]:
    """Serve on a free UDP port of 127.0.0.1 until the block ends."""
    holder: list[DnsServer] = []

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            with contextlib.suppress(Exception):  # a malformed query is not answered
                sock.sendto(holder[0].answer(data), self.client_address)

    server = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Handler)
    holder.append(DnsServer(server.server_address[1]))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
