"""The one upstream ``ClientSession`` and what crosses to it: headers, URL, timeouts, failures."""

from __future__ import annotations

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping

from proxy.config import Settings

# Hop-by-hop fields (RFC 9110 §7.6.1: Connection, Proxy-Connection, Keep-Alive, TE,
# Transfer-Encoding, Upgrade; RFC 2616 §13.5.1 adds Proxy-Authenticate/-Authorization and Trailer),
# plus every field the Connection header names: none of them is ever forwarded, either way.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Request headers aiohttp recomputes for the body it actually sends.
REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "accept-encoding"}
# Response headers we must not copy: the body we send is decompressed and re-framed by aiohttp.
RESPONSE_DROP = HOP_BY_HOP | {"content-encoding", "content-length", "date", "server"}
# Our own request headers, never forwarded upstream.
PROXY_ONLY = frozenset({"x-cache-ttl", "x-cache-namespace", "cache-control"})


def connection_named(headers: MultiMapping[str]) -> frozenset[str]:
    """Field names listed in the Connection header(s), lower-cased (RFC 9110 §7.6.1)."""
    return frozenset(
        name.strip().lower() for value in headers.getall("Connection", ()) for name in value.split(",")
    ) - {""}


def make_session(settings: Settings) -> aiohttp.ClientSession:
    """Pooled session; ``auto_decompress`` stays on so cached bytes are always plain JSON."""
    connector = aiohttp.TCPConnector(limit=512, limit_per_host=256, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=min(30.0, settings.upstream_timeout),
        sock_read=settings.upstream_timeout,
    )
    return aiohttp.ClientSession(
        connector=connector,
        # A proxy must not keep one caller's upstream cookies for the next caller; and the jar's
        # per-request filtering was measurable on the miss path.
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=timeout,
        auto_decompress=True,
        skip_auto_headers=("User-Agent",),
    )


def forward_headers(incoming: MultiMapping[str], authorization: str | None) -> CIMultiDict[str]:
    """Request headers for the upstream: hop-by-hop and proxy-only dropped, auth as decided."""
    dropped = REQUEST_DROP | PROXY_ONLY | connection_named(incoming) | {"authorization"}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        if name.lower() not in dropped:
            out.add(name, value)
    if authorization:
        out["Authorization"] = authorization
    return out


def response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Upstream response headers safe to copy to the client."""
    dropped = RESPONSE_DROP | connection_named(upstream)
    return CIMultiDict((k, v) for k, v in upstream.items() if k.lower() not in dropped)
