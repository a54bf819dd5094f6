# An MCP client nobody here wrote (the official Python SDK, `mcp` on PyPI) driving `orion mcp`
# over stdio. Arguments: the orion binary, the gateway's URL, a repository to analyze.
# Prints what it saw as one JSON object. (For tests/e2e/mcp.rs.)
import asyncio, json, os, sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def text(result):
    return "".join(getattr(c, "text", "") for c in result.content)


async def main():
    orion, server, repo = sys.argv[1], sys.argv[2], sys.argv[3]
    args = ["mcp"] + (["--server", server] if server else [])
    params = StdioServerParameters(command=orion, args=args, env=dict(os.environ))
    seen = {}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            seen["server"] = init.server_info.name
            tools = await session.list_tools()
            seen["tools"] = sorted(t.name for t in tools.tools)
            seen["submit_schema"] = next(t.input_schema for t in tools.tools if t.name == "submit_task")
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
            pulls = await session.call_tool("list_pulls", {})
            seen["pulls_error"] = pulls.is_error
            seen["pulls_text"] = text(pulls)
            metrics = await session.call_tool("code_metrics", {"path": repo})
            seen["metrics"] = json.loads(text(metrics)) if not metrics.is_error else text(metrics)
            climbing = await session.call_tool("cancel_task", {"id": "../agents/node-a/drain?"})
            seen["climbing_error"] = climbing.is_error
            seen["climbing_text"] = text(climbing)
            unknown = await session.call_tool("get_task", {"id": "not-a-task"})
            seen["unknown_error"] = unknown.is_error
            seen["unknown_text"] = text(unknown)
    print(json.dumps(seen))


asyncio.run(main())
