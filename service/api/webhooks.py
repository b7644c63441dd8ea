"""Webhook subscriptions and their deliveries (project-scoped)."""

from __future__ import annotations

import msgspec
from aiohttp import web

from service.api.errors import ApiError, not_found
from service.api.http import ctx_of, json_ok, page_request, project_object, project_page, raw_ok, services
from service.api.requests import CreateWebhookRequest, UpdateWebhookRequest
from service.ids import new_id, now
from service.webhooks import store
from service.outbound.policy import AddressRefused
from service.webhooks.payloads import valid_pattern
from service.webhooks.signing import new_secret

DELIVERY_STATUSES = ("pending", "delivered", "dead")


class Webhook(msgspec.Struct):
    """A subscription as the API shows it; `secret` only when it was just made."""
    id: str
    url: str
    events: list[str]
    enabled: bool
    created_at: int
    description: str | None = None
    secret: str | None = None
    object: str = "webhook"


class WebhookAttempt(msgspec.Struct):
    at: int
    status_code: int | None
    latency_ms: float
    error: str | None


class WebhookDelivery(msgspec.Struct):
    id: str
    webhook_id: str
    event_id: str
    event_type: str
    thread_id: str
    status: str
    attempt_count: int
    created_at: int
    next_attempt_at: int | None
    delivered_at: int | None
    attempts: list[WebhookAttempt]
    object: str = "webhook.delivery"


async def _checked_url(request: web.Request, url: str) -> str:
    policy = services(request).webhooks.policy      # the rules the deliveries themselves follow
    try:
        _, host = policy.check_url(url)
        await policy.check_resolves(host)
    except AddressRefused as exc:
        raise ApiError(400, f"Invalid 'url': the URL {exc}.", param="url", code="invalid_url") from None
    return url


def _checked_events(events: list[str]) -> list[str]:
    for i, pattern in enumerate(events):
        if not valid_pattern(pattern):
            raise ApiError(400, f"Invalid 'events[{i}]': '{pattern[:64]}' is not an event type webhooks deliver "
                                "(see GET /openapi.json; deltas are for streams only).", param=f"events[{i}]")
    return list(dict.fromkeys(events))


def _with_secret(data: str, secret: str) -> web.Response:
    return json_ok({**msgspec.json.decode(data), "secret": secret})


async def create_webhook(request: web.Request, body: CreateWebhookRequest) -> web.Response:
    ctx = ctx_of(request)
    url = await _checked_url(request, body.url)
    secret = new_secret()
    data = await store.create(services(request).db, new_id("wh_"), ctx.project, url, _checked_events(body.events),
                              body.description, body.enabled, secret, now())
    return _with_secret(data, secret)


list_webhooks = project_page("webhooks", store.list_page)
get_webhook = project_object("webhook", "webhook_id", store.get)


async def update_webhook(request: web.Request, body: UpdateWebhookRequest) -> web.Response:
    webhook_id = request.match_info["webhook_id"]
    changes: dict = {}
    if body.url is not msgspec.UNSET:
        changes["url"] = await _checked_url(request, body.url)
    if body.events is not msgspec.UNSET:
        changes["event_types"] = _checked_events(body.events)
    if body.description is not msgspec.UNSET:
        changes["description"] = body.description
    if body.enabled is not msgspec.UNSET:
        changes["enabled"] = body.enabled
    secret = new_secret() if body.rotate_secret else None
    data = await store.update(services(request).db, ctx_of(request).project, webhook_id, changes, secret)
    if data is None:
        raise not_found("webhook", webhook_id)
    return _with_secret(data, secret) if secret else raw_ok(data)


async def delete_webhook(request: web.Request) -> web.Response:
    webhook_id = request.match_info["webhook_id"]
    if not await store.delete(services(request).db, ctx_of(request).project, webhook_id):
        raise not_found("webhook", webhook_id)
    return json_ok({"id": webhook_id, "object": "webhook.deleted", "deleted": True})


async def _require_webhook(request: web.Request) -> str:
    webhook_id = request.match_info["webhook_id"]
    if await store.get(services(request).db, ctx_of(request).project, webhook_id) is None:
        raise not_found("webhook", webhook_id)
    return webhook_id


async def list_deliveries(request: web.Request) -> web.Response:
    webhook_id = await _require_webhook(request)
    status = request.query.get("status") or None
    if status is not None and status not in DELIVERY_STATUSES:
        raise ApiError(400, f"Invalid 'status': expected one of {', '.join(DELIVERY_STATUSES)}.", param="status")
    page = await store.list_deliveries(services(request).db, webhook_id, status, page_request(request))
    return raw_ok(page.to_json())


async def get_delivery(request: web.Request) -> web.Response:
    webhook_id = await _require_webhook(request)
    delivery_id = request.match_info["delivery_id"]
    data = await store.get_delivery(services(request).db, webhook_id, delivery_id)
    if data is None:
        raise not_found("delivery", delivery_id)
    return raw_ok(data)


async def retry_delivery(request: web.Request) -> web.Response:
    webhook_id = await _require_webhook(request)
    delivery_id = request.match_info["delivery_id"]
    db = services(request).db
    data = await store.retry_delivery(db, webhook_id, delivery_id)
    if data is None:
        if await store.get_delivery(db, webhook_id, delivery_id) is None:
            raise not_found("delivery", delivery_id)
        raise ApiError(400, "This delivery's content was erased with its thread; it cannot be sent again.",
                       code="delivery_erased")
    return raw_ok(data)
