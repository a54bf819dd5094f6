# An MCP client nobody here wrote (the official Python SDK, `mcp` on PyPI) driving `orion mcp`
# over stdio, or the gateway's /mcp over Streamable HTTP. Arguments: the orion binary (or
# `--http` for the gateway's /mcp), the gateway's URL (empty: embedded), a repository to
# analyze, and optionally a remote to develop on (its pull request's diff is read back). The
# token is ORION__CLIENT__TOKEN.
# Prints what it saw as one JSON object. (For tests/e2e/mcp.rs.)
import asyncio, json, os, sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client


def text(result):
    return "".join(getattr(c, "text", "") for c in result.content)


async def main():
    orion, server, repo = sys.argv[1], sys.argv[2], sys.argv[3]
    remote = sys.argv[4] if len(sys.argv) > 4 else None
    args = ["mcp"] + (["--server", server] if server else [])
    params = StdioServerParameters(command=orion, args=args, env=dict(os.environ))
    seen = {}
    if orion == "--http":
        token = os.environ.get("ORION__CLIENT__TOKEN", "")
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        transport = streamable_http_client(f"{server}/mcp", http_client=http)
    else:
        transport = stdio_client(params)
    async with transport as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            seen["server"] = init.server_info.name
            tools = await session.list_tools()
            seen["tools"] = sorted(t.name for t in tools.tools)
            seen["schemas"] = {t.name: t.input_schema for t in tools.tools}
            submitted = await session.call_tool("submit_task", {"kind": "analyze", "repo": repo})
            seen["submitted_error"] = submitted.is_error
            task = json.loads(text(submitted)) if not submitted.is_error else {}
            progress = []

            async def on_progress(value, total, message):
                progress.append(message)

            waited = await session.call_tool(
                "wait_task", {"id": task.get("id", ""), "timeout_secs": 60},
                progress_callback=on_progress,
            )
            seen["waited"] = json.loads(text(waited)) if not waited.is_error else text(waited)
            seen["progress"] = progress
            functions = await session.call_tool("task_functions", {"id": task.get("id", ""), "limit": 3})
            seen["functions"] = json.loads(text(functions)) if not functions.is_error else text(functions)
            juggle = await session.call_tool("submit_task", {"kind": "juggle", "repo": repo})
            seen["juggle"] = [juggle.is_error, text(juggle)]
            pulls = await session.call_tool("list_pulls", {})
            seen["pulls_error"] = pulls.is_error
            seen["pulls_text"] = text(pulls)
            metrics = await session.call_tool("code_metrics", {"path": repo})
            seen["metrics"] = json.loads(text(metrics)) if not metrics.is_error else text(metrics)
            climbing = await session.call_tool("cancel_task", {"id": "../agents/node-a/drain?"})
            seen["climbing_error"] = climbing.is_error
            seen["climbing_text"] = text(climbing)
            templates = await session.list_resource_templates()
            seen["templates"] = sorted(t.uri_template for t in templates.resource_templates)
            if task.get("id"):
                report = await session.read_resource(f"orion://tasks/{task['id']}")
                seen["report_resource"] = json.loads(report.contents[0].text)
            try:
                await session.read_resource("orion://elsewhere/1")
                seen["elsewhere_read"] = True
            except Exception as e:  # the server's error, as the SDK raises it
                seen["elsewhere_read"] = str(e)
            if remote:
                developed = await session.call_tool(
                    "submit_task", {"kind": "develop", "repo": remote, "prompt": "double the helper"})
                dev = json.loads(text(developed))
                waited = await session.call_tool("wait_task", {"id": dev["id"], "timeout_secs": 60})
                seen["developed"] = json.loads(text(waited))["status"]
                listed = json.loads(text(await session.call_tool("list_pulls", {})))
                pull = next(p for p in listed["items"] if p["task_id"] == dev["id"])
                diff = await session.read_resource(f"orion://pulls/{pull['id']}/diff")
                seen["diff"] = diff.contents[0].text
            unknown = await session.call_tool("get_task", {"id": "not-a-task"})
            seen["unknown_error"] = unknown.is_error
            seen["unknown_text"] = text(unknown)
    print(json.dumps(seen))


asyncio.run(main())
