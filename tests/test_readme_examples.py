"""Every ```python block in README.md runs, unmodified, against the real service.

Each block runs in its own interpreter with THREADLINE_URL / THREADLINE_KEY / THREADLINE_PROJECT
set the way the README tells a user to set them, for a fresh project.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid

import pytest

from tests.conftest import ROOT, ServiceProcess, free_port, new_key

README = ROOT / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_readme_has_an_example_for_each_sdk():
    assert any("from azure.ai.agents import" in block for block in BLOCKS)
    assert any("from openai import" in block for block in BLOCKS)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
async def test_readme_example_runs(code, service, db, tmp_path):
    project = f"readme-{uuid.uuid4().hex[:10]}"
    key = await new_key(db, project)
    env = {**os.environ, "THREADLINE_URL": service.url, "THREADLINE_KEY": key, "THREADLINE_PROJECT": project}
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY",
                 "OPENAI_API_VERSION"):
        env.pop(name, None)
    result = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], env=env, cwd=tmp_path,
                                     capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"example failed:\n{code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    if "builtin/echo" in code:      # the quick start
        assert result.stdout.strip() == "completed: Hello, Threadline!", result.stdout
    else:                           # the SDK examples print the conversation and the downloaded file
        assert "Keep the notes in notes.txt." in result.stdout, result.stdout
        assert "Threadline keeps every event." in result.stdout, result.stdout


def _webhook_example() -> list[str]:
    """The README's webhook example: its three commands (receiver, service, subscription)."""
    block = next(b for b in re.findall(r"^```sh\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)
                 if "# 1. in a second terminal" in b)
    steps = re.split(r"^# \d\. .*\n", block, flags=re.M)[1:]
    return [step.split("\n# →")[0].strip() for step in steps]


async def test_readme_webhook_example_works_as_pasted(own_database, tmp_path):
    """Run as a user pastes it: the receiver, the service with the two settings the example gives,
    the curl subscription; then a run makes the receiver print its deliveries. Only the port moves
    (9000 may be taken on a test machine). A database of its own: another service process on the
    shared one, not allowed to reach loopback, could take the subscription's lease."""
    database_url, db = own_database
    receiver_cmd, serve_cmd, curl_cmd = _webhook_example()
    port = free_port()
    receiver = subprocess.Popen(["bash", "-c", receiver_cmd.replace("9000", str(port))], stdout=subprocess.PIPE,
                                text=True, cwd=tmp_path)
    settings = dict(re.findall(r"(THREADLINE_\w+)=(\S+)", serve_cmd))
    assert set(settings) == {"THREADLINE_WEBHOOK_ALLOW_HTTP", "THREADLINE_WEBHOOK_ALLOW_NETWORKS"}
    service = await asyncio.to_thread(ServiceProcess, database_url, settings)
    try:
        key = await new_key(db, f"readme-{uuid.uuid4().hex[:10]}")
        env = {**os.environ, "THREADLINE_URL": service.url, "THREADLINE_KEY": key}
        made = await asyncio.to_thread(subprocess.run, ["bash", "-c", curl_cmd.replace("9000", str(port))], env=env,
                                       capture_output=True, text=True, timeout=30)
        assert '"object":"webhook"' in made.stdout.replace(" ", "") and '"secret"' in made.stdout, made
        quick_start = next(b for b in BLOCKS if "builtin/echo" in b)
        ran = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", quick_start], env=env, cwd=tmp_path,
                                      capture_output=True, text=True, timeout=60)
        assert ran.stdout.strip() == "completed: Hello, Threadline!", ran
        seen: list[str] = []
        while not any('"thread.run.completed"' in line for line in seen):
            seen.append(await asyncio.wait_for(asyncio.to_thread(receiver.stdout.readline), 30))
        assert any('"thread.message.completed"' in line and line.startswith("evt_") for line in seen), seen
    finally:
        receiver.kill()
        receiver.wait()
        service.stop()
