"""Drive an MCP server with the Python SDK's Streamable HTTP client.

    tests/peers/.venv/bin/python tests/peers/python_client.py URL [--message TEXT]

Initializes a session, lists tools, calls `echo` (checking the echo) or else the
first tool that needs no arguments, then closes the session, which sends the
session DELETE. Prints one JSON line, e.g.
    {"protocolVersion": "2025-11-25", "tools": 15, "echo": "Echo: hi", "deleteStatus": 200}
and exits 0; on failure prints the reason to stderr and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys

import anyio
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client


def text_of(result) -> str:
    return "".join(c.text for c in result.content if getattr(c, "type", None) == "text")


async def run(url: str, message: str) -> dict:
    delete_status: list[int] = []

    async def on_response(response: httpx2.Response) -> None:
        if response.request.method == "DELETE":
            delete_status.append(response.status_code)

    http = httpx2.AsyncClient(
        timeout=httpx2.Timeout(30, read=300),
        event_hooks={"response": [on_response]},
        trust_env=False,  # never route loopback test traffic through a proxy
    )
    report: dict = {}
    async with http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                report["protocolVersion"] = init.protocol_version
                report["server"] = init.server_info.name

                tools = (await session.list_tools()).tools
                report["tools"] = len(tools)
                names = [t.name for t in tools]

                if "echo" in names:
                    result = await session.call_tool("echo", {"message": message})
                    echoed = text_of(result)
                    if result.is_error or message not in echoed:
                        raise RuntimeError(f"echo failed: is_error={result.is_error} text={echoed!r}")
                    report["echo"] = echoed
                else:
                    no_args = [t for t in tools if not (t.input_schema or {}).get("required")]
                    if not no_args:
                        raise RuntimeError(f"no echo tool and no tool without required arguments: {names}")
                    result = await session.call_tool(no_args[0].name, {})
                    if result.is_error:
                        raise RuntimeError(f"{no_args[0].name} returned is_error: {text_of(result)!r}")
                    report["called"] = no_args[0].name
                    report["text"] = text_of(result)
    if not delete_status:
        raise RuntimeError("session was not closed: no DELETE was sent")
    if delete_status[0] not in (200, 202, 204, 405):
        raise RuntimeError(f"session DELETE answered HTTP {delete_status[0]}")
    report["deleteStatus"] = delete_status[0]
    return report


async def run_with_timeout(url: str, message: str) -> dict:
    with anyio.fail_after(60):
        return await run(url, message)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--message", default="hello from the python sdk")
    args = parser.parse_args()
    try:
        report = anyio.run(run_with_timeout, args.url, args.message)
    except BaseException as e:  # noqa: BLE001 - report anything, including exception groups
        if isinstance(e, KeyboardInterrupt):
            raise
        while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
            e = e.exceptions[0]
        print(f"python_client: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
