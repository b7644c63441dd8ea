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

from tests.conftest import ROOT, new_key

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
    # the examples print the conversation and the downloaded file
    assert "Keep the notes in notes.txt." in result.stdout, result.stdout
    assert "Threadline keeps every event." in result.stdout, result.stdout
