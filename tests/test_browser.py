"""The browser view at /chat, driven in a real headless Chromium (Debian's `chromium` + Playwright)
against `threadline serve` in a subprocess: streamed text, a reload in the middle of an answer that
shows the complete answer exactly once, and answering requires_action by typing tool outputs.

Skipped when /usr/bin/chromium (or Playwright) is missing, except under CI (env CI set), where that
is a failure: `ops/bootstrap` installs Chromium when it runs as root."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import aiohttp
import pytest

from conftest import ROOT, new_key
from faults import FrameId

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SCREENSHOT = ROOT / "ops" / "screenshots" / "chat.png"
LONG_ANSWER = " ".join(f"word{i}" for i in range(80)) + "."    # 81 chunks, 0.05 s apart: ~4 s
WAIT = 20_000   # ms, for anything a run does

# Every distinct text the (first) assistant message shows, recorded in the page from its first
# moment, so a duplicated or missing chunk at any point shows up, not only in the final text.
RECORD_TEXTS = """
window.__texts = [];
new MutationObserver(() => {
  const body = document.querySelector('.msg.assistant .body');
  const text = body ? body.textContent : null;
  if (text !== null && window.__texts[window.__texts.length - 1] !== text) window.__texts.push(text);
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def _need_browser() -> None:
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (apt-get install chromium; ops/bootstrap does it as root)"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is missing (pip install -e '.[test]')"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run under CI: {problem}", pytrace=False)
        pytest.skip(problem)


@pytest.fixture(scope="module")
async def browser():
    _need_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def chat(browser, service):
    """A fresh browser context (empty localStorage) on /chat; page errors fail the test."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    await context.add_init_script(RECORD_TEXTS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    await context.close()
    assert not errors, errors


def script(tmp_path: Path, *turns: dict) -> str:
    path = tmp_path / f"script-{time.monotonic_ns()}.json"
    path.write_text(json.dumps({"turns": list(turns)}))
    return f"builtin/script:{path}"


async def api(service, key: str, path: str) -> dict:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{service.url}/v1{path}", headers={"Authorization": f"Bearer {key}"}) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


async def sign_in_and_create_agent(page, service, key: str, model: str, tools: str = "") -> None:
    from playwright.async_api import expect

    await page.goto(service.url + "/")
    await expect(page).to_have_url(service.url + "/chat")        # / now opens the chat
    await expect(page.locator("#key-dialog")).to_be_visible()
    await page.fill("#key-input", key)
    await page.click("#key-save")
    await expect(page.locator("#key-dialog")).to_be_hidden()
    await expect(page.locator("#agent-create")).to_have_attribute("open", "")   # a new project has no agent
    await page.fill("#agent-name", "scripted")
    await page.fill("#agent-model", model)
    await page.fill("#agent-instructions", "Follow the script.")
    await page.fill("#agent-tools", tools)
    await page.click("#agent-create-button")
    await expect(page.locator("#agent-select option:checked")).to_have_text(re.compile(r"^scripted · builtin/script"))


async def send(page, text: str) -> None:
    from playwright.async_api import expect

    await page.fill("#composer-input", text)
    await page.click("#send")
    await expect(page.locator("#thread-id")).to_have_text(re.compile(r"^thread_"))


async def test_streamed_answer_survives_a_reload_mid_answer_complete_and_once(chat, service, db, tmp_path):
    from playwright.async_api import expect

    page = chat
    key = await new_key(db)
    await sign_in_and_create_agent(page, service, key, script(tmp_path, {"text": LONG_ANSWER, "chunk_delay": 0.05}))
    await send(page, "Tell me a long story.")
    thread_id = await page.locator("#thread-id").text_content()

    # Tokens arrive live: a few words shown while the run is still in progress.
    await page.wait_for_function("""() => {
        const body = document.querySelector('.msg.assistant .body');
        return body && body.textContent.split(' ').length >= 5;
    }""", timeout=WAIT)
    partial = await page.locator(".msg.assistant .body").text_content()
    assert partial != LONG_ANSWER and LONG_ANSWER.startswith(partial), partial
    await expect(page.locator("#run-status")).to_have_attribute("data-status", "in_progress")

    await page.reload()

    # The same thread reopens from localStorage and is rebuilt from the stream (after=0); the answer
    # is still being written after the reload, so the rest arrives live on the new EventSource.
    await expect(page.locator("#thread-id")).to_have_text(thread_id)
    await page.wait_for_function("""(full) => {
        const body = document.querySelector('.msg.assistant .body');
        const pill = document.getElementById('run-status');
        return body && body.textContent.length > 0 && body.textContent !== full && pill.dataset.status === 'in_progress';
    }""", arg=LONG_ANSWER, timeout=WAIT)
    await expect(page.locator("#run-status")).to_have_attribute("data-status", "completed", timeout=WAIT)

    await expect(page.locator(".msg.assistant")).to_have_count(1)
    assert await page.locator(".msg.assistant .body").text_content() == LONG_ANSWER
    await expect(page.locator(".msg.user")).to_have_count(1)
    await expect(page.locator(".msg.user .body")).to_have_text("Tell me a long story.")
    await expect(page.locator(".msg.assistant")).not_to_have_class(re.compile("streaming"))

    # Every state the answer went through after the reload was a prefix of the answer: nothing
    # repeated or skipped on the way, and it grew live (more than the replay and the final text).
    texts = await page.evaluate("window.__texts")
    assert texts[-1] == LONG_ANSWER
    assert all(LONG_ANSWER.startswith(t) for t in texts), [t for t in texts if not LONG_ANSWER.startswith(t)]
    assert [len(t) for t in texts] == sorted(len(t) for t in texts)
    assert len(texts) > 3, texts

    # The run's status changes are shown, and the timeline saw each frame once.
    await expect(page.locator(".run .history")).to_have_text("queued→ in progress→ completed")
    await page.click("#timeline-toggle")
    await expect(page.locator("#timeline")).to_be_visible()
    rows = await page.eval_on_selector_all("#timeline-rows tr", """rows => rows.map(r =>
        [r.children[1].textContent, r.children[2].querySelector('code').textContent])""")
    assert len(rows) == len({i for i, _ in rows})       # every frame its own id, each shown once
    ids = [FrameId(i) for i, _ in rows]
    assert ids == sorted(ids)
    assert [e for _, e in rows].count("thread.run.completed") == 1
    assert [e for _, e in rows].count("thread.message.completed") == 2

    # What the page shows is what the service stored.
    messages = await api(service, key, f"/threads/{thread_id}/messages?order=asc")
    assert [m["content"][0]["text"]["value"] for m in messages["data"]] == ["Tell me a long story.", LONG_ANSWER]
    await expect(page.locator(f".thread[data-thread-id='{thread_id}']")).to_have_class(re.compile("active"))


async def test_requires_action_is_answered_by_typing_tool_outputs(chat, service, db, tmp_path):
    from playwright.async_api import expect

    page = chat
    key = await new_key(db)
    final = "It is sunny in Paris, and the time there is 12:00."
    model = script(tmp_path,
                   {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}},
                                   {"name": "get_time", "arguments": {"tz": "CET"}}]},
                   {"text": final, "chunk_delay": 0.02})
    await sign_in_and_create_agent(page, service, key, model, tools="get_weather, get_time")
    await send(page, "What is the weather in Paris, and what time is it?")
    thread_id = await page.locator("#thread-id").text_content()

    panel = page.locator("#action-panel")
    await expect(panel).to_be_visible(timeout=WAIT)
    await expect(page.locator("#run-status")).to_have_attribute("data-status", "requires_action")
    await expect(page.locator("#send")).to_be_disabled()

    # The panel is rebuilt from the stream after a reload too.
    await page.reload()
    await expect(panel).to_be_visible(timeout=WAIT)
    await expect(panel.locator(".call .fn")).to_have_text(["get_weather", "get_time"])
    await expect(panel.locator(".call .args")).to_have_text(['{"city": "Paris"}', '{"tz": "CET"}'])
    outputs = panel.locator("textarea.call-output")
    await expect(outputs).to_have_count(2)
    await outputs.nth(0).fill('{"sky": "sunny", "celsius": 21}')
    await outputs.nth(1).fill("12:00")
    await page.click("#submit-outputs")

    await expect(page.locator("#run-status")).to_have_attribute("data-status", "completed", timeout=WAIT)
    await expect(panel).to_be_hidden()
    await expect(page.locator(".msg.assistant")).to_have_count(1)
    await expect(page.locator(".msg.assistant .body")).to_have_text(final)
    await expect(page.locator(".tool-step .tool-output code")).to_have_text(['{"sky": "sunny", "celsius": 21}', "12:00"])
    await expect(page.locator(".run .history")).to_have_text(
        "queued→ in progress→ requires action→ queued→ in progress→ completed")
    await expect(page.locator("#send")).to_be_enabled()

    run_id = await page.locator(".run").get_attribute("data-run-id")
    steps = await api(service, key, f"/threads/{thread_id}/runs/{run_id}/steps?order=asc")
    calls = steps["data"][0]["step_details"]["tool_calls"]
    assert [c["function"]["output"] for c in calls] == ['{"sky": "sunny", "celsius": 21}', "12:00"]

    # The README's screenshot: this conversation with its event timeline open.
    await page.click("#timeline-toggle")
    await expect(page.locator("#timeline")).to_be_visible()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOT))
