"""A FastMCP tool that runs as a background task on docket.

FastMCP's tasks extension (``pip install 'fastmcp[tasks]'``) runs ``task=True`` tools
through a docket: the call is enqueued, a docket worker inside the server runs it, and
the client polls the task until docket has its result. This script plays both sides in
one process: it starts a task, watches its status, lets it finish, and checks the result.

    python examples/fastmcp_background_task.py

It uses the in-process ``memory://`` docket, so it needs no Redis. FastMCP reads
``FASTMCP_DOCKET_URL`` (e.g. ``redis://localhost:6379/9``) to put the docket on Redis.
Exit status 0 means the task ran through docket and returned the right answer.
"""

from __future__ import annotations

import asyncio
import sys

from fastmcp import Client, Context, FastMCP
from fastmcp_tasks import TasksExtension, call_tool_task

TEXT = "the quick brown fox jumps over the lazy dog"
EXPECTED_WORDS = 9

mcp = FastMCP("word-counter")
# No url= here on purpose: the extension then honours FASTMCP_DOCKET_URL and falls
# back to memory://.
mcp.add_extension(TasksExtension())

# Held shut until the client has seen the task running, so the script proves the call
# returned before the tool finished (it really is in the background) and that the
# progress the tool reported travelled through docket to the client.
go_ahead = asyncio.Event()


@mcp.tool(task=True)
async def count_words(text: str, ctx: Context) -> dict[str, object]:
    """Count the words in ``text``."""
    # In a worker this lands on the docket execution's progress record, which is
    # where the server's tasks/get reads the status message from.
    await ctx.report_progress(0, 1, "waiting for the go-ahead")
    await go_ahead.wait()
    # ctx.task_id is only set when FastMCP rebuilt the context from the docket
    # execution the worker is running, so echoing it back shows where we ran.
    return {"words": len(text.split()), "task_id": ctx.task_id}


async def main() -> int:
    async with Client(mcp) as client:
        task = await call_tool_task(client, "count_words", {"text": TEXT})
        print(f"started task {task.task_id}")

        status = await task.status()
        while status.status == "working" and not status.status_message:
            await asyncio.sleep(0.05)
            status = await task.status()
        print(f"status while running: {status.status} ({status.status_message})")
        if status.status != "working":
            print(f"FAILED: the task was {status.status} before it was released")
            return 1

        go_ahead.set()
        result = await task.result()
        print(f"status at the end: {(await task.status()).status}")
        print(f"result: {result.data}")

    if result.data != {"words": EXPECTED_WORDS, "task_id": task.task_id}:
        print(f"FAILED: expected {EXPECTED_WORDS} words from task {task.task_id}")
        return 1
    print("OK: the tool ran as a docket background task and returned its result")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(asyncio.wait_for(main(), timeout=30)))
    except TimeoutError:
        print("FAILED: the background task did not finish within 30 s")
    except Exception as error:
        # The server side's traceback (the one naming the docket call that broke) has
        # already been logged above; the client only sees a generic MCP error.
        print(f"FAILED: {type(error).__name__}: {error}")
    sys.exit(1)
