"""The unmodified official Node SDKs (`openai` and `@azure/ai-agents`, pinned in tests/node/package.json
and installed by ops/bootstrap's `npm ci`) against the real `threadline serve`.

Each SDK runs a script under tests/node/ with `node`; the script prints one JSON object with what the
SDK saw, and this module asserts on it. Models are the offline builtins, so there is no network.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import new_key

NODE_DIR = Path(__file__).parent / "node"
ARGUMENTS = '{"city": "Paris", "detail": "hourly forecast for the next three days, in Celsius"}'
PACE = 0.06     # seconds between the script's words: more than the run's 50 ms batching, so several deltas

pytestmark = pytest.mark.skipif(
    not (NODE_DIR / "node_modules").is_dir() and not os.environ.get("CI"),
    reason="tests/node/node_modules is missing: run ops/bootstrap (npm ci --prefix tests/node)")


@pytest.fixture
def tool_script(tmp_path) -> Path:
    path = tmp_path / "weather.json"
    path.write_text(json.dumps({"turns": [
        {"tool_calls": [{"name": "get_weather", "arguments": ARGUMENTS}], "chunk_delay": PACE},
        {"text": "It is sunny in Paris."},
    ]}))
    return path


def run_node(script: str, env: dict) -> dict:
    node = shutil.which("node")
    assert node, "node is not on PATH"
    proc = subprocess.run([node, str(NODE_DIR / script)], cwd=NODE_DIR, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **env})
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check(out: dict):
    assert out["poll"]["status"] == "completed"
    assert "hello from" in out["poll"]["reply"]

    assert out["tools"]["first"] == "requires_action"
    assert out["tools"]["name"] == "get_weather"
    assert out["tools"]["arguments"] == ARGUMENTS
    assert out["tools"]["status"] == "completed"
    assert out["tools"]["reply"] == "It is sunny in Paris."

    stream = out["stream"]
    assert stream["status"] == "requires_action"
    assert "thread.run.step.delta" in stream["events"]
    assert stream["arguments"] == ARGUMENTS == stream["full"]
    print(f"tool-call argument fragments: {stream['fragments']} ({stream.get('toolCallDeltaEvents', '-')} as toolCallDelta)")
    assert stream["fragments"] > 1       # the arguments stream as the model writes them

    assert out["file"]["id"].startswith("file")
    assert out["file"]["filename"] == "notes.txt"
    assert out["file"]["bytes"] == len("hello file")
    assert out["file"]["purpose"] == "assistants"


async def test_openai_node_sdk(service, db, tool_script):
    key = await new_key(db)
    out = await asyncio.to_thread(run_node, "openai_sdk.mjs", {
        "THREADLINE_URL": service.url, "THREADLINE_KEY": key, "THREADLINE_SCRIPT_PATH": str(tool_script)})
    check(out)
    assert out["file"]["content"] == "hello file"
    assert out["upload"]["status"] == "completed" and out["upload"]["bytes"] == 11
    assert out["upload"]["content"] == "hello world" and out["upload"]["fileId"].startswith("file")


async def test_azure_node_sdk(service, db, tool_script):
    project = f"aznode-{uuid.uuid4().hex[:10]}"
    key = await new_key(db, project)
    out = await asyncio.to_thread(run_node, "azure_sdk.mjs", {
        "THREADLINE_URL": service.url, "THREADLINE_KEY": key, "THREADLINE_PROJECT": project,
        "THREADLINE_SCRIPT_PATH": str(tool_script)})
    check(out)
    assert out["file"]["status"] == "processed"
