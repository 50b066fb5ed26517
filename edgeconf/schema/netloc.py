"""The port of a URI's network location (``[user[:pass]@]host[:port]``, the host possibly a bracketed IPv6 address),
and why it is not a port: one check for the stream, telemetry and remote-stage URIs."""
from __future__ import annotations

from typing import Optional


def port_text(netloc: str) -> str:
    """What follows the host's ``:`` in ``netloc`` ("" when no port is given); user info and an IPv6 host's
    brackets are skipped."""
    hostport = netloc.rpartition("@")[2]
    if hostport.startswith("["):
        hostport = hostport.partition("]")[2]
    return hostport.partition(":")[2]


def port_problem(text: str) -> Optional[str]:
    """Why ``text`` is no TCP/UDP port, in words (``port 'abc' is not a number``, ``port 0 is out of range; a port
    is 1..65535``), or None for a port 1..65535 or an empty text (no port given)."""
    if not text:
        return None
    if not (text.isascii() and text.isdigit()):
        return "port %r is not a number" % text
    if not 1 <= int(text) <= 65535:
        return "port %d is out of range; a port is 1..65535" % int(text)
    return None


__all__ = ["port_text", "port_problem"]
