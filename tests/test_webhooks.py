"""Webhooks: the API, signed delivery of run and message events from the log, order per thread,
retries, dead letters, redelivery, isolation between subscriptions, and where they may be sent."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from standardwebhooks import Webhook as StandardWebhook

from service.app import create_app
from service.outbound.policy import AddressPolicy, AddressRefused, allowed_addresses
from service.webhooks.dispatcher import WebhookDispatcher
from service.webhooks.signing import new_secret
from service.webhooks.store import Delivery, Subscription
from conftest import Client, free_port, new_key, test_config as make_config, until

LOOPBACK = "127.0.0.0/8,::1/128"


class Receiver:
    """An HTTP endpoint that records what it receives; per path: answer, delay, failures."""

    def __init__(self):
        self.got: list[tuple[str, dict, bytes]] = []
        self.status: dict[str, int] = {}
        self.delay: dict[str, float] = {}
        self.fail_first: dict[str, int] = {}     # path -> attempts of each event to fail first
        self._seen: dict[tuple[str, str], int] = {}
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.path
        self.got.append((path, dict(request.headers), body))
        if path in self.delay:
            await asyncio.sleep(self.delay[path])       # a slow receiver: behaviour under test, not a wait
        key = (path, request.headers.get("webhook-id", ""))
        self._seen[key] = self._seen.get(key, 0) + 1
        if self._seen[key] <= self.fail_first.get(path, 0):
            return web.Response(status=503)
        return web.Response(status=self.status.get(path, 200))

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.port}{path}"

    def events(self, path: str) -> list[dict]:
        return [json.loads(b) for p, _, b in self.got if p == path]


@pytest.fixture(scope="module")
async def receiver():
    r = Receiver()
    await r.server.start_server()
    yield r
    await r.server.close()


@pytest.fixture(scope="module")
async def hooks_app(own_database):
    """An app on its own database whose webhooks may reach loopback over http, with quick retries."""
    url, _ = own_database
    config = make_config(webhook_allow_http=True, webhook_allow_networks=LOOPBACK, run_sweep_seconds=0.2,
                         webhook_first_retry_seconds=0.05, webhook_max_retry_delay_seconds=0.2,
                         webhook_retry_window_seconds=1.5, webhook_timeout_seconds=8.0)
    client = TestClient(TestServer(create_app(config, url)))
    await client.start_server()
    yield client
    await client.close()


@pytest.fixture
async def hc(hooks_app, own_database):
    """A client of a fresh project on the webhooks app."""
    _, pool = own_database
    return Client(hooks_app, await new_key(pool, f"wh-{uuid.uuid4().hex[:8]}"))


async def run_to_end(c: Client, text: str = "hello", thread_id: str | None = None) -> tuple[str, str]:
    assistant = await c.ok("POST", "/assistants", {"model": "builtin/echo"})
    if thread_id is None:
        thread_id = (await c.ok("POST", "/threads", {}))["id"]
    await c.ok("POST", f"/threads/{thread_id}/messages", {"role": "user", "content": text})
    run = await c.ok("POST", f"/threads/{thread_id}/runs", {"assistant_id": assistant["id"]})
    await until(lambda: _finished(c, thread_id, run["id"]), what="the run to end")
    return thread_id, run["id"]


async def _finished(c: Client, thread_id: str, run_id: str) -> bool:
    run = await c.ok("GET", f"/threads/{thread_id}/runs/{run_id}")
    return run["status"] in ("completed", "failed", "cancelled", "expired", "incomplete")


# -- the API --------------------------------------------------------------------------------------

async def test_secret_is_shown_at_creation_and_rotation_only(hc, receiver):
    created = await hc.ok("POST", "/webhooks", {"url": receiver.url("/crud"), "events": ["thread.run.completed"],
                                                 "description": "billing"})
    assert created["object"] == "webhook" and created["id"].startswith("wh_")
    assert created["secret"].startswith("whsec_") and created["enabled"] is True
    got = await hc.ok("GET", f"/webhooks/{created['id']}")
    assert "secret" not in got and got["description"] == "billing" and got["events"] == ["thread.run.completed"]
    listed = await hc.ok("GET", "/webhooks")
    assert [w["id"] for w in listed["data"]] == [created["id"]] and "secret" not in listed["data"][0]

    rotated = await hc.ok("POST", f"/webhooks/{created['id']}", {"rotate_secret": True})
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
    changed = await hc.ok("POST", f"/webhooks/{created['id']}", {"enabled": False, "events": ["thread.run.*"]})
    assert changed["enabled"] is False and changed["events"] == ["thread.run.*"] and "secret" not in changed

    gone = await hc.ok("DELETE", f"/webhooks/{created['id']}")
    assert gone == {"id": created["id"], "object": "webhook.deleted", "deleted": True}
    status, body = await hc.call("GET", f"/webhooks/{created['id']}")
    assert status == 404 and "webhook" in body["error"]["message"]


@pytest.mark.parametrize("events, param", [
    ([], "events"), (["thread.message.delta"], "events[0]"), (["thread.run.completed", "billing.paid"], "events[1]"),
    (["thread.nothing.*"], "events[0]")])
async def test_unknown_event_types_are_refused(hc, receiver, events, param):
    status, body = await hc.call("POST", "/webhooks", {"url": receiver.url("/x"), "events": events})
    assert status == 400 and body["error"]["param"] == param


@pytest.mark.parametrize("url", [
    "http://example.com/hook",                    # plain http
    "https://127.0.0.1/hook", "https://[::1]/hook", "https://localhost/hook",   # loopback
    "https://10.1.2.3/hook", "https://192.168.0.10/hook", "https://172.16.5.4/hook",  # private
    "https://169.254.169.254/latest/meta-data", "https://[fd00:ec2::254]/",      # cloud metadata
    "https://[::ffff:10.0.0.1]/hook", "https://0.0.0.0/hook", "https://100.64.0.1/hook",
    "ftp://example.com/hook", "not a url", "https://user:pw@example.com/hook",
])
async def test_urls_a_default_server_refuses(client, url):
    """The shared test app runs with the defaults: HTTPS only, public addresses only."""
    status, body = await client.call("POST", "/webhooks", {"url": url, "events": ["*"]})
    assert status == 400, body
    assert body["error"]["param"] == "url" and body["error"]["code"] == "invalid_url"
    assert (await client.ok("GET", "/webhooks"))["data"] == []


async def test_a_webhook_of_another_project_does_not_exist(hc, hooks_app, own_database, receiver):
    created = await hc.ok("POST", "/webhooks", {"url": receiver.url("/tenancy"), "events": ["*"]})
    other = Client(hooks_app, await new_key(own_database[1], "someone-else"))
    wid = created["id"]
    for method, path, body in [("GET", f"/webhooks/{wid}", None), ("POST", f"/webhooks/{wid}", {"enabled": False}),
                               ("DELETE", f"/webhooks/{wid}", None), ("GET", f"/webhooks/{wid}/deliveries", None),
                               ("POST", f"/webhooks/{wid}/deliveries/whd_x/retry", None)]:
        status, answer = await other.call(method, path, body)
        assert status == 404, (method, path, answer)
    assert (await other.ok("GET", "/webhooks"))["data"] == []
    assert (await hc.ok("GET", f"/webhooks/{wid}"))["enabled"] is True
    await hc.ok("DELETE", f"/webhooks/{wid}")


# -- delivery ------------------------------------------------------------------------------------

async def test_run_and_message_events_arrive_signed_with_the_objects(hc, receiver):
    hook = await hc.ok("POST", "/webhooks", {"url": receiver.url("/signed"),
                                              "events": ["thread.run.completed", "thread.message.completed"]})
    thread_id, run_id = await run_to_end(hc, "sign this")
    got = await until(lambda: [e for e in receiver.events("/signed") if e["type"] == "thread.run.completed"],
                      what="thread.run.completed")
    assert got[0]["data"]["id"] == run_id and got[0]["data"]["status"] == "completed"
    assert got[0]["data"]["object"] == "thread.run" and got[0]["data"]["usage"] is not None
    messages = await until(lambda: len([e for e in receiver.events("/signed")
                                        if e["type"] == "thread.message.completed"]) >= 2 and
                           [e for e in receiver.events("/signed") if e["type"] == "thread.message.completed"],
                           what="both messages completed")
    assert [m["data"]["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["data"]["content"][0]["text"]["value"] == "sign this"
    assert {e["type"] for e in receiver.events("/signed")} == {"thread.run.completed", "thread.message.completed"}

    verifier = StandardWebhook(hook["secret"])
    for path, headers, body in receiver.got:
        if path == "/signed":
            payload = verifier.verify(body, headers)       # raises if the signature is wrong
            assert headers["webhook-id"] == payload["id"]
            assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
            assert set(payload) == {"id", "type", "created_at", "data"}
    forged = dict(receiver.got[-1][1], **{"webhook-signature": "v1,AAAA"})
    with pytest.raises(Exception):
        verifier.verify(receiver.got[-1][2], forged)


async def test_a_thread_s_events_arrive_in_order_and_every_event_once(hc, receiver):
    await hc.ok("POST", "/webhooks", {"url": receiver.url("/ordered"), "events": ["*"]})
    threads = [(await hc.ok("POST", "/threads", {}))["id"] for _ in range(3)]
    for round_ in range(3):
        await asyncio.gather(*(run_to_end(hc, f"round {round_}", t) for t in threads))
    thread_events = {t: len(await _log_events(hc, t)) for t in threads}
    await until(lambda: _all_runs_done(receiver, threads, 3), what="every run's completion")
    for t in threads:
        mine = [e for e in receiver.events("/ordered") if _thread_of(e) == t]
        seqs = [tuple(int(x) for x in e["id"].split("_")[1:]) for e in mine]
        assert seqs == sorted(seqs), f"out of order for {t}"
        assert len(set(seqs)) == len(seqs), "a duplicate without a crash"
        assert thread_events[t] > 0
        names = [e["type"] for e in mine]
        assert names[0] == "thread.created" and names.count("thread.run.completed") == 3
        assert "thread.message.delta" not in names


def _all_runs_done(receiver: Receiver, threads: list[str], runs: int) -> bool:
    done = [e for e in receiver.events("/ordered") if e["type"] == "thread.run.completed"]
    return all(sum(1 for e in done if e["data"]["thread_id"] == t) == runs for t in threads)


def _thread_of(event: dict) -> str | None:
    data = event["data"]
    return data.get("thread_id") or (data["id"] if event["type"].startswith("thread.") and
                                     data.get("object") in ("thread", "thread.deleted", "thread.erased") else None)


async def _log_events(c: Client, thread_id: str) -> list[dict]:
    return (await c.ok("GET", f"/threads/{thread_id}/events", params={"limit": "1000"}))["data"]


async def test_failed_attempts_are_retried_and_listed(hc, receiver):
    receiver.fail_first["/flaky"] = 2
    hook = await hc.ok("POST", "/webhooks", {"url": receiver.url("/flaky"), "events": ["thread.run.completed"]})
    _, run_id = await run_to_end(hc)
    await until(lambda: any(e["data"]["id"] == run_id for e in receiver.events("/flaky")), what="the third attempt")

    async def delivered():
        page = await hc.ok("GET", f"/webhooks/{hook['id']}/deliveries")
        return page["data"] if page["data"] and page["data"][0]["status"] == "delivered" else None
    (delivery,) = await until(delivered, what="the delivery to be recorded")
    assert delivery["object"] == "webhook.delivery" and delivery["event_type"] == "thread.run.completed"
    assert delivery["attempt_count"] == 3 and delivery["delivered_at"] is not None
    assert [a["status_code"] for a in delivery["attempts"]] == [503, 503, 200]
    assert [a["error"] for a in delivery["attempts"]] == ["HTTP 503", "HTTP 503", None]
    assert all(a["latency_ms"] >= 0 for a in delivery["attempts"])
    ids = {h["webhook-id"] for p, h, _ in receiver.got if p == "/flaky"}
    assert len(ids) == 1, "a retry is the same message: same webhook-id"
    one = await hc.ok("GET", f"/webhooks/{hook['id']}/deliveries/{delivery['id']}")
    assert one["attempts"] == delivery["attempts"]
    assert (await hc.ok("GET", f"/webhooks/{hook['id']}/deliveries", params={"status": "dead"}))["data"] == []


async def test_a_delivery_that_keeps_failing_is_dead_lettered_and_can_be_sent_again(hc, receiver):
    receiver.status["/down"] = 500
    hook = await hc.ok("POST", "/webhooks", {"url": receiver.url("/down"), "events": ["thread.run.completed"]})
    await run_to_end(hc)

    async def dead():
        page = await hc.ok("GET", f"/webhooks/{hook['id']}/deliveries", params={"status": "dead"})
        return page["data"]
    (delivery,) = await until(dead, what="the dead letter (retry window 1.5 s)")
    assert delivery["attempt_count"] >= 3 and delivery["next_attempt_at"] is None
    assert all(a["status_code"] == 500 for a in delivery["attempts"])
    before = len(receiver.events("/down"))

    receiver.status["/down"] = 200
    again = await hc.ok("POST", f"/webhooks/{hook['id']}/deliveries/{delivery['id']}/retry")
    assert again["status"] == "pending"

    async def delivered():
        d = await hc.ok("GET", f"/webhooks/{hook['id']}/deliveries/{delivery['id']}")
        return d if d["status"] == "delivered" else None
    final = await until(delivered, what="the redelivery")
    assert final["attempt_count"] == delivery["attempt_count"] + 1 and final["attempts"][-1]["status_code"] == 200
    assert len(receiver.events("/down")) == before + 1
    status, body = await hc.call("POST", f"/webhooks/{hook['id']}/deliveries/whd_nothing/retry")
    assert status == 404


async def test_a_slow_endpoint_does_not_delay_another_subscription(hc, receiver):
    receiver.delay["/slow"] = 6.0
    await hc.ok("POST", "/webhooks", {"url": receiver.url("/slow"), "events": ["thread.message.created"]})
    await hc.ok("POST", "/webhooks", {"url": receiver.url("/quick"), "events": ["thread.message.created"]})
    thread_id = (await hc.ok("POST", "/threads", {}))["id"]
    started = time.monotonic()
    ids = [(await hc.ok("POST", f"/threads/{thread_id}/messages", {"role": "user", "content": f"m{i}"}))["id"]
           for i in range(5)]
    await until(lambda: {e["data"]["id"] for e in receiver.events("/quick")} >= set(ids), timeout=3.0,
                what="the quick endpoint to get every message while the slow one is stuck")
    assert time.monotonic() - started < 3.0
    assert len(receiver.events("/slow")) <= 1, "one thread's deliveries go one at a time, in order"


async def test_disabled_webhooks_wait_and_catch_up_when_enabled(hc, receiver):
    hook = await hc.ok("POST", "/webhooks", {"url": receiver.url("/paused"), "events": ["thread.message.created"],
                                              "enabled": False})
    thread_id = (await hc.ok("POST", "/threads", {}))["id"]
    first = await hc.ok("POST", f"/threads/{thread_id}/messages", {"role": "user", "content": "while paused"})
    marker = (await hc.ok("POST", "/webhooks", {"url": receiver.url("/marker"), "events": ["thread.message.created"]}))
    second = await hc.ok("POST", f"/threads/{thread_id}/messages", {"role": "user", "content": "marker"})
    await until(lambda: any(e["data"]["id"] == second["id"] for e in receiver.events("/marker")), what="the marker")
    assert receiver.events("/paused") == [], "a disabled webhook sends nothing"
    await hc.ok("POST", f"/webhooks/{hook['id']}", {"enabled": True})
    got = await until(lambda: len(receiver.events("/paused")) >= 2 and receiver.events("/paused"), what="catch-up")
    assert [e["data"]["id"] for e in got] == [first["id"], second["id"]]
    await hc.ok("DELETE", f"/webhooks/{marker['id']}")


async def test_erasing_a_thread_takes_its_content_out_of_deliveries(hc, receiver, own_database):
    _, pool = own_database
    hook = await hc.ok("POST", "/webhooks", {"url": receiver.url("/erased"), "events": ["thread.message.created",
                                                                                        "thread.erased"]})
    thread_id = (await hc.ok("POST", "/threads", {}))["id"]
    await hc.ok("POST", f"/threads/{thread_id}/messages", {"role": "user", "content": "my secret diagnosis"})
    await until(lambda: receiver.events("/erased"), what="the message event")
    await hc.ok("POST", f"/threads/{thread_id}/erase")
    await until(lambda: any(e["type"] == "thread.erased" for e in receiver.events("/erased")), what="thread.erased")

    async def written():      # a delivery's row is written just after its attempt
        rows = await pool.fetch("SELECT event_type, payload FROM webhook_deliveries WHERE webhook_id = $1",
                                hook["id"])
        return rows if len(rows) == 2 else None
    payloads = await until(written, what="both deliveries written")
    assert {r[0] for r in payloads} == {"thread.message.created", "thread.erased"}
    assert all("diagnosis" not in (r[1] or "") for r in payloads)
    page = await hc.ok("GET", f"/webhooks/{hook['id']}/deliveries")
    message_delivery = next(d for d in page["data"] if d["event_type"] == "thread.message.created")
    status, body = await hc.call("POST", f"/webhooks/{hook['id']}/deliveries/{message_delivery['id']}/retry")
    assert status == 400 and body["error"]["code"] == "delivery_erased"


async def test_an_erasure_learned_after_the_delivery_was_written_still_takes_its_content(
        server_url, receiver, monkeypatch):
    """The race the test above can hit on a loaded machine: the delivery's row is written after the
    erasure's scrub ran, and the dispatcher learns of the erasure (from the log or the notice) only
    after that write. Both are forced here: the write waits for the erasure, the news comes late."""
    from service import database
    from service.webhooks import store, worker
    from conftest import fresh_database

    url = await fresh_database(server_url)      # alone: no other app's dispatcher may take the webhook
    pool = await database.connect(url, 2)
    await database.prepare(pool)
    hook_id, write_allowed = [], asyncio.Event()
    save, drop_thread = store.save, worker.Worker.drop_thread

    async def save_after_the_erasure(db, webhook_id, *args, **kwargs):
        if webhook_id in hook_id:
            await write_allowed.wait()
        return await save(db, webhook_id, *args, **kwargs)

    def learned_late(self, thread_id):
        asyncio.get_running_loop().call_later(1.0, drop_thread, self, thread_id)

    monkeypatch.setattr(store, "save", save_after_the_erasure)
    monkeypatch.setattr(worker.Worker, "drop_thread", learned_late)
    config = make_config(webhook_allow_http=True, webhook_allow_networks=LOOPBACK)
    http = TestClient(TestServer(create_app(config, url)))
    await http.start_server()
    try:
        c = Client(http, await new_key(pool, "late-news"))
        hook = await c.ok("POST", "/webhooks", {"url": receiver.url("/late"), "events": ["thread.message.created"]})
        hook_id.append(hook["id"])
        thread_id = (await c.ok("POST", "/threads", {}))["id"]
        await c.ok("POST", f"/threads/{thread_id}/messages", {"role": "user", "content": "my secret diagnosis"})
        await until(lambda: receiver.events("/late"), what="the message event")
        await c.ok("POST", f"/threads/{thread_id}/erase")
        write_allowed.set()

        async def scrubbed():
            rows = await pool.fetch("SELECT payload FROM webhook_deliveries WHERE webhook_id = $1", hook["id"])
            return rows and all(r[0] is None for r in rows)
        await until(scrubbed, what="the delivery's content gone", timeout=10)
    finally:
        await http.close()
        await pool.close()


async def test_a_delivery_waiting_for_its_first_answer_is_listed_as_pending_then_delivered(hc, receiver):
    """A delivery's row is written with its first attempt; one that waits longer is listed anyway."""
    receiver.delay["/held"] = 6.0           # answered well after RECORD_WITHIN (1 s), even on a slow machine
    hook = await hc.ok("POST", "/webhooks", {"url": receiver.url("/held"), "events": ["thread.message.created"]})
    thread_id = (await hc.ok("POST", "/threads", {}))["id"]
    for i in range(2):
        await hc.ok("POST", f"/threads/{thread_id}/messages", {"role": "user", "content": f"m{i}"})
    await until(lambda: receiver.events("/held"), what="the first attempt under way")

    async def listed(n: int, status: str):
        page = await hc.ok("GET", f"/webhooks/{hook['id']}/deliveries", params={"order": "asc"})
        return page["data"] if [d["status"] for d in page["data"]] == [status] * n else None
    waiting = await until(lambda: listed(2, "pending"), timeout=5.0,
                          what="both deliveries listed while the first attempt is still unanswered")
    assert len(receiver.events("/held")) == 1, "the thread's second delivery waits for the first"
    receiver.delay["/held"] = 0.0           # the second is answered at once
    assert [d["attempt_count"] for d in waiting] == [0, 0] and all(d["attempts"] == [] for d in waiting)
    done = await until(lambda: listed(2, "delivered"), what="both delivered and recorded")
    assert [d["id"] for d in done] == [d["id"] for d in waiting], "the rows written early are the ones updated"
    assert [d["attempt_count"] for d in done] == [1, 1]


async def test_erasing_a_thread_whose_deliveries_are_not_written_yet_keeps_its_content_out(
        hc, receiver, own_database):
    _, pool = own_database
    receiver.delay["/erased-early"] = 3.0
    hook = await hc.ok("POST", "/webhooks", {"url": receiver.url("/erased-early"),
                                             "events": ["thread.message.created", "thread.erased"]})
    thread_id = (await hc.ok("POST", "/threads", {}))["id"]
    for i in range(2):
        await hc.ok("POST", f"/threads/{thread_id}/messages", {"role": "user", "content": f"diagnosis {i}"})
    await until(lambda: receiver.events("/erased-early"), what="the first attempt under way")
    await hc.ok("POST", f"/threads/{thread_id}/erase")
    await until(lambda: any(e["type"] == "thread.erased" for e in receiver.events("/erased-early")),
                what="thread.erased, after the attempt in flight")
    got = receiver.events("/erased-early")
    assert [e["type"] for e in got] == ["thread.message.created", "thread.erased"], \
        "the message still waiting when the thread was erased is not sent"

    async def written():
        rows = await pool.fetch("SELECT event_type, status, payload FROM webhook_deliveries WHERE webhook_id = $1 "
                                "ORDER BY seq", hook["id"])
        return rows if len(rows) == 3 and all(r[1] != "pending" for r in rows) else None
    rows = await until(written, what="every delivery written")
    assert [(r[0], r[1]) for r in rows] == [("thread.message.created", "delivered"), ("thread.message.created", "dead"),
                                            ("thread.erased", "delivered")]
    assert all("diagnosis" not in (r[2] or "") for r in rows)


async def test_an_endpoint_that_does_not_answer_in_time_is_a_failed_attempt(receiver):
    """The response timeout bounds an attempt; what the receiver is doing meanwhile does not matter."""
    receiver.delay["/hang"] = 5.0
    config = make_config(webhook_allow_http=True, webhook_allow_networks=LOOPBACK, webhook_timeout_seconds=0.3)
    dispatcher = WebhookDispatcher(None, None, "", config)
    dispatcher.client = dispatcher.new_client()
    sub = Subscription("wh_timeout", "p", receiver.url("/hang"), ("*",), (new_secret(),))
    try:
        started = time.monotonic()
        status, error, ms = await dispatcher.send(sub, Delivery("whd_t", "evt_1_0", "thread.created", "t", 8, b"{}"))
        took = time.monotonic() - started
        _, closed_error, _ = await dispatcher.send(
            msgspec.structs.replace(sub, url=f"http://127.0.0.1:{free_port()}/nobody"),
            Delivery("whd_u", "evt_2_0", "thread.created", "t", 16, b"{}"))
    finally:
        await dispatcher.client.close()
    assert status is None and error == "timed out" and 250 <= ms and took < 2.0
    # Nothing listening: failed too, and said in words that tell a closed port from no other failure
    # to connect (no port scanning through webhooks).
    assert closed_error == "could not connect to the endpoint"


# -- where webhooks may go (pure and resolver) ---------------------------------------------------

def test_address_policy():
    strict = AddressPolicy.parse(False, "")
    assert strict.check_url("https://example.com/hook") == ("https", "example.com")
    with pytest.raises(AddressRefused, match="https"):
        strict.check_url("http://example.com/hook")
    loose = AddressPolicy.parse(True, "127.0.0.0/8, ::1/128")
    assert loose.check_url("http://127.0.0.1:9/x") == ("http", "127.0.0.1")
    import ipaddress
    assert loose.address_allowed(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert not loose.address_allowed(ipaddress.ip_address("10.0.0.1"))
    assert not strict.address_allowed(ipaddress.ip_address("224.0.0.1"))
    assert strict.address_allowed(ipaddress.ip_address("8.8.8.8"))


async def test_a_refused_name_does_not_say_what_it_resolved_to(client):
    """Creating a webhook must not become a DNS oracle for names inside the server's network."""
    status, body = await client.call("POST", "/webhooks", {"url": "https://localhost:8443/hook", "events": ["*"]})
    assert status == 400 and body["error"]["param"] == "url"
    assert "127.0.0.1" not in body["error"]["message"] and "::1" not in body["error"]["message"]
    assert "refused address" in body["error"]["message"]


@pytest.mark.parametrize("address,reaches", [
    ("::127.0.0.1", "loopback, IPv4-compatible form"),
    ("::ffff:127.0.0.1", "loopback, IPv4-mapped form"),
    ("64:ff9b::7f00:1", "loopback through NAT64"),
    ("64:ff9b::a9fe:a9fe", "the metadata service through NAT64"),
    ("64:ff9b:1::a00:1", "a site's own NAT64 prefix"),
    ("2002:7f00:1::1", "loopback through 6to4"),
    ("2002:a9fe:a9fe::1", "the metadata service through 6to4"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback as a Teredo client"),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "10.0.0.1 as a Teredo client"),
])
async def test_ipv6_transition_forms_are_judged_by_the_ipv4_address_they_reach(address, reaches):
    strict = AddressPolicy.parse(False, "")
    with pytest.raises(AddressRefused, match="refused address"):
        strict.check_url(f"https://[{address}]/hook")
    with pytest.raises(AddressRefused, match="refused"):
        await allowed_addresses(strict, address, 443)
    # the same forms of a public address still go through
    import ipaddress
    assert strict.address_allowed(ipaddress.ip_address("64:ff9b::808:808"))
    assert strict.address_allowed(ipaddress.ip_address("2002:808:808::1"))


async def test_the_resolver_drops_refused_addresses_at_connect_time():
    """A name that resolves to an internal address (DNS rebinding, or `localhost`) never connects."""
    with pytest.raises(AddressRefused, match="refused"):
        await allowed_addresses(AddressPolicy.parse(False, ""), "localhost", 443)
    assert set(await allowed_addresses(AddressPolicy.parse(False, LOOPBACK), "localhost", 443)) <= {"127.0.0.1", "::1"}


# -- pure parts ----------------------------------------------------------------------------------

def test_backoff_grows_with_jitter_and_gives_up_after_the_window():
    from service.webhooks.retry import RetryPolicy, next_attempt_at
    policy = RetryPolicy(first_delay=2.0, max_delay=60.0, window=600.0)
    delays = [next_attempt_at(policy, n, 0.0, 0.0, 0.999999) for n in range(1, 9)]
    assert delays == pytest.approx([2, 4, 8, 16, 32, 60, 60, 60], rel=1e-5)
    assert next_attempt_at(policy, 3, 0.0, 0.0, 0.0) == pytest.approx(4.0)      # jitter: half to full delay
    assert next_attempt_at(policy, 10, 0.0, 590.0, 0.0) is None                 # past the window: dead
    assert next_attempt_at(policy, 10, 0.0, 500.0, 0.0) == pytest.approx(530.0)
    assert next_attempt_at(policy, 10_000, 0.0, 0.0, 0.5) == pytest.approx(45.0)  # no overflow


def test_event_type_patterns():
    from service.webhooks.payloads import matches, valid_pattern
    assert valid_pattern("*") and valid_pattern("thread.run.*") and valid_pattern("thread.message.completed")
    assert not valid_pattern("thread.message.delta") and not valid_pattern("thread.*x") and not valid_pattern("")
    assert matches(["thread.run.*"], "thread.run.step.completed") and matches(["*"], "thread.created")
    assert not matches(["thread.run.completed"], "thread.run.failed")
    assert not matches(["thread.message.*"], "thread.run.completed")
