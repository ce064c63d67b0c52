"""The Python MCP SDK's client with its client_credentials OAuth provider.

    tests/peers/.venv/bin/python tests/peers/python_oauth_client.py --url http://127.0.0.1:P/mcp
        [--client-id alice --client-secret alice-secret] [--scope "mcp mcp:tools"]
        [--auth-method client_secret_basic|client_secret_post] [--issuer URL] [--message hi]

Uses `ClientCredentialsOAuthProvider` (mcp.client.auth.extensions.client_credentials)
as the httpx auth of the Streamable HTTP client, so discovery is the SDK's: the
unauthenticated request, the 401's resource_metadata, the protected resource
metadata, the authorization server metadata, then the token endpoint.
Then initialize, tools/list, `echo` if listed, and close (session DELETE).

Prints one JSON line, like oauth-client.mjs:
    {"ok": true, "flow": "client-credentials", "tools": [...], "echo": ..., "sessionId": ...,
     "discovered": {...}, "grants": [...]}
or {"ok": false, "error": "..."} and exit code 1. DEBUG=1 traces HTTP requests on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from urllib.parse import parse_qs

import anyio
import httpx2
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

DEBUG = os.environ.get("DEBUG", "") not in ("", "0")


class MemoryStorage:
    """The SDK's TokenStorage protocol, in memory."""

    def __init__(self) -> None:
        self.tokens = None
        self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens) -> None:
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info) -> None:
        self.client_info = client_info


async def run(args: argparse.Namespace) -> dict:
    discovered: dict = {"resourceMetadataUrl": None, "authorizationServer": None, "authorizationServerMetadataUrl": None}
    grants: list[str] = []
    session_ids: list[str] = []

    # httpx event hooks see every request, the OAuth provider's included.
    async def on_request(request: httpx2.Request) -> None:
        body = request.content if request.method == "POST" else b""
        if body and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            form = parse_qs(body.decode())
            if "grant_type" in form:
                grants.append(form["grant_type"][0])
                if DEBUG:
                    shown = {k: v[0] for k, v in form.items() if k in ("grant_type", "client_id", "resource", "scope")}
                    print(f"python_oauth_client:   token request: {shown}", file=sys.stderr)

    async def on_response(response: httpx2.Response) -> None:
        url = str(response.request.url)
        if DEBUG:
            print(f"python_oauth_client: {response.request.method} {url} -> {response.status_code}", file=sys.stderr)
        if response.is_success and "/.well-known/oauth-protected-resource" in url:
            discovered["resourceMetadataUrl"] = discovered["resourceMetadataUrl"] or url
        if response.is_success and ("/.well-known/oauth-authorization-server" in url or "/.well-known/openid-configuration" in url):
            discovered["authorizationServerMetadataUrl"] = discovered["authorizationServerMetadataUrl"] or url
        if sid := response.headers.get("mcp-session-id"):
            session_ids.append(sid)

    provider = ClientCredentialsOAuthProvider(
        server_url=args.url,
        storage=MemoryStorage(),
        client_id=args.client_id,
        client_secret=args.client_secret or f"{args.client_id}-secret",
        token_endpoint_auth_method=args.auth_method,
        scope=args.scope,
        issuer=args.issuer,
    )
    http = httpx2.AsyncClient(
        auth=provider,
        timeout=httpx2.Timeout(30, read=300),
        event_hooks={"request": [on_request], "response": [on_response]},
        trust_env=False,  # never route loopback test traffic through a proxy
    )
    report: dict = {"ok": True, "flow": "client-credentials"}
    async with http:
        async with streamable_http_client(args.url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = [t.name for t in (await session.list_tools()).tools]
                echo = None
                if "echo" in tools:
                    result = await session.call_tool("echo", {"message": args.message})
                    echo = "".join(c.text for c in result.content if getattr(c, "type", None) == "text")
    discovered["authorizationServer"] = provider.context.auth_server_url
    report.update(tools=tools, echo=echo, sessionId=session_ids[0] if session_ids else None,
                  discovered=discovered, grants=grants)
    return report


async def run_with_timeout(args: argparse.Namespace) -> dict:
    with anyio.fail_after(30):
        return await run(args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--client-id", default="alice")
    parser.add_argument("--client-secret")
    parser.add_argument("--scope")
    parser.add_argument("--auth-method", default="client_secret_basic",
                        choices=["client_secret_basic", "client_secret_post"])
    parser.add_argument("--issuer", help="expected issuer (the SDK's `issuer`); omitting it is deprecated")
    parser.add_argument("--message", default="hi")
    args = parser.parse_args()
    if not DEBUG:
        warnings.simplefilter("ignore")  # the SDK's deprecation warning when --issuer is omitted
    try:
        report = anyio.run(run_with_timeout, args)
    except BaseException as e:  # noqa: BLE001 - report anything, including exception groups
        if isinstance(e, KeyboardInterrupt):
            raise
        while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
            e = e.exceptions[0]
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
