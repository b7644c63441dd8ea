"""Every API route in one table: the router and /openapi.json are both built from it."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import web

from projections.objects import Assistant, DeletionStatus, File, ListPage, Message, Run, RunStep, Thread
from service.api import assistants, audit, files, messages, runs, streams, threads, uploads, webhooks
from service.api.http import read_body
from service.api.requests import (
    CompleteUploadRequest, CreateAssistantRequest, CreateMessageRequest, CreateRunRequest,
    CreateThreadAndRunRequest, CreateThreadRequest, CreateUploadRequest, CreateWebhookRequest, SubmitToolOutputsRequest, UpdateAssistantRequest,
    UpdateMessageRequest, UpdateRunRequest, UpdateThreadRequest, UpdateWebhookRequest,
)

PREFIXES = ("", "/v1", "/openai", "/api/projects/{project}")
LIST_PARAMS = ("limit", "order", "after", "before")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Callable
    summary: str
    tag: str
    body: type | None = None
    response: Any = None
    query: tuple[str, ...] = ()
    multipart: bool = False
    binary: bool = False
    sse: bool = False
    versioned: bool = False     # `after` is an event version of the thread's stream, not an object id


ROUTES: tuple[Route, ...] = (
    Route("POST", "/assistants", assistants.create_assistant, "Create an assistant (agent)", "Assistants",
          CreateAssistantRequest, Assistant),
    Route("GET", "/assistants", assistants.list_assistants, "List assistants", "Assistants",
          response=ListPage, query=LIST_PARAMS),
    Route("GET", "/assistants/{assistant_id}", assistants.get_assistant, "Get an assistant", "Assistants",
          response=Assistant),
    Route("POST", "/assistants/{assistant_id}", assistants.update_assistant, "Update an assistant", "Assistants",
          UpdateAssistantRequest, Assistant),
    Route("DELETE", "/assistants/{assistant_id}", assistants.delete_assistant, "Delete an assistant", "Assistants",
          response=DeletionStatus),

    # Before /threads/{thread_id}: under /api/projects/{project} both are dynamic and the first wins.
    Route("POST", "/threads/runs", runs.create_thread_and_run, "Create a thread and run it", "Runs",
          CreateThreadAndRunRequest, Run),
    Route("POST", "/threads", threads.create_thread, "Create a thread, optionally with messages", "Threads",
          CreateThreadRequest, Thread),
    Route("GET", "/threads", threads.list_threads, "List threads", "Threads", response=ListPage, query=LIST_PARAMS),
    Route("GET", "/threads/{thread_id}", threads.get_thread, "Get a thread (as it was, with as_of)", "Threads",
          response=Thread, query=("as_of",)),
    Route("GET", "/threads/{thread_id}/events", audit.list_events,
          "The thread's raw events in order (audit): after, limit, type, run_id", "Audit",
          response=audit.EventList, query=("after", "limit", "type", "run_id"), versioned=True),
    Route("POST", "/threads/{thread_id}/erase", audit.erase_thread,
          "Erase a thread's content for good (crypto-shredding; also for a deleted thread)", "Audit",
          response=audit.Erasure),
    Route("POST", "/threads/{thread_id}", threads.update_thread, "Update a thread", "Threads",
          UpdateThreadRequest, Thread),
    Route("DELETE", "/threads/{thread_id}", threads.delete_thread, "Delete a thread", "Threads",
          response=DeletionStatus),

    Route("POST", "/threads/{thread_id}/messages", messages.create_message, "Add a message to a thread",
          "Messages", CreateMessageRequest, Message),
    Route("GET", "/threads/{thread_id}/messages", messages.list_messages,
          "List a thread's messages (as they were, with as_of)", "Messages",
          response=ListPage, query=(*LIST_PARAMS, "run_id", "as_of")),
    Route("GET", "/threads/{thread_id}/messages/{message_id}", messages.get_message, "Get a message", "Messages",
          response=Message),
    Route("POST", "/threads/{thread_id}/messages/{message_id}", messages.update_message, "Update a message's metadata",
          "Messages", UpdateMessageRequest, Message),
    Route("DELETE", "/threads/{thread_id}/messages/{message_id}", messages.delete_message, "Delete a message",
          "Messages", response=DeletionStatus),

    Route("POST", "/threads/{thread_id}/runs", runs.create_run, "Create a run", "Runs", CreateRunRequest, Run,
          query=("include[]",)),
    Route("GET", "/threads/{thread_id}/runs", runs.list_runs, "List a thread's runs", "Runs",
          response=ListPage, query=LIST_PARAMS),
    Route("GET", "/threads/{thread_id}/runs/{run_id}", runs.get_run, "Get a run", "Runs", response=Run),
    Route("POST", "/threads/{thread_id}/runs/{run_id}", runs.update_run, "Update a run's metadata", "Runs",
          UpdateRunRequest, Run),
    Route("POST", "/threads/{thread_id}/runs/{run_id}/cancel", runs.cancel_run, "Cancel a run", "Runs",
          response=Run),
    Route("POST", "/threads/{thread_id}/runs/{run_id}/submit_tool_outputs", runs.submit_tool_outputs,
          "Submit the outputs of every pending tool call, in one request", "Runs", SubmitToolOutputsRequest, Run),
    Route("GET", "/threads/{thread_id}/runs/{run_id}/stream", streams.run_events,
          "Replay and follow a run's events (SSE; resume with Last-Event-ID or ?after=)", "Streams",
          query=("after", "api_key"), sse=True, versioned=True),
    Route("GET", "/threads/{thread_id}/stream", streams.thread_events,
          "Every event of a thread, live (SSE; resume with Last-Event-ID or ?after=)", "Streams",
          query=("after", "api_key"), sse=True, versioned=True),
    Route("GET", "/threads/{thread_id}/runs/{run_id}/steps", runs.list_steps, "List a run's steps", "Runs",
          response=ListPage, query=(*LIST_PARAMS, "include[]")),
    Route("GET", "/threads/{thread_id}/runs/{run_id}/steps/{step_id}", runs.get_step, "Get a run step", "Runs",
          response=RunStep, query=("include[]",)),

    Route("POST", "/files", files.upload_file, "Upload a file (multipart: purpose, file)", "Files",
          response=File, multipart=True),
    Route("GET", "/files", files.list_files, "List files", "Files", response=ListPage,
          query=(*LIST_PARAMS, "purpose")),
    Route("GET", "/files/{file_id}", files.get_file, "Get a file's description", "Files", response=File),
    Route("DELETE", "/files/{file_id}", files.delete_file, "Delete a file", "Files", response=DeletionStatus),
    Route("GET", "/files/{file_id}/content", files.download_file, "Download a file's bytes", "Files", binary=True),

    Route("POST", "/uploads", uploads.create_upload,
          "Start an upload of a large file in parts (pending for an hour)", "Uploads",
          CreateUploadRequest, uploads.Upload),
    Route("POST", "/uploads/{upload_id}/parts", uploads.add_part,
          "Add a part (multipart field 'data', at most 64 MB)", "Uploads", response=uploads.UploadPart,
          multipart=True),
    Route("POST", "/uploads/{upload_id}/complete", uploads.complete_upload,
          "Complete an upload: its parts, in order, become a File", "Uploads", CompleteUploadRequest,
          uploads.Upload),
    Route("POST", "/uploads/{upload_id}/cancel", uploads.cancel_upload, "Cancel a pending upload", "Uploads",
          response=uploads.Upload),

    Route("POST", "/webhooks", webhooks.create_webhook,
          "Subscribe a URL to event types (the signing secret is in this response only)", "Webhooks",
          CreateWebhookRequest, webhooks.Webhook),
    Route("GET", "/webhooks", webhooks.list_webhooks, "List webhooks", "Webhooks", response=ListPage,
          query=LIST_PARAMS),
    Route("GET", "/webhooks/{webhook_id}", webhooks.get_webhook, "Get a webhook", "Webhooks",
          response=webhooks.Webhook),
    Route("POST", "/webhooks/{webhook_id}", webhooks.update_webhook,
          "Update a webhook: url, events, description, enable or disable, rotate its secret", "Webhooks",
          UpdateWebhookRequest, webhooks.Webhook),
    Route("DELETE", "/webhooks/{webhook_id}", webhooks.delete_webhook, "Delete a webhook", "Webhooks",
          response=DeletionStatus),
    Route("GET", "/webhooks/{webhook_id}/deliveries", webhooks.list_deliveries,
          "A webhook's deliveries and their attempts (status: pending, delivered, dead); a delivery is "
          "listed once attempted, or about a second after its event", "Webhooks",
          response=ListPage, query=(*LIST_PARAMS, "status")),
    Route("GET", "/webhooks/{webhook_id}/deliveries/{delivery_id}", webhooks.get_delivery, "Get a delivery",
          "Webhooks", response=webhooks.WebhookDelivery),
    Route("POST", "/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", webhooks.retry_delivery,
          "Send a delivery again (dead-lettered, or lost by the receiver)", "Webhooks",
          response=webhooks.WebhookDelivery),
)


def _with_body(handler: Callable, body_type: type) -> Callable:
    @functools.wraps(handler)
    async def decode_then_handle(request: web.Request):
        return await handler(request, await read_body(request, body_type))
    return decode_then_handle


def add_routes(app: web.Application) -> None:
    """Mount every route under every prefix the SDKs use."""
    for prefix in PREFIXES:
        for route in ROUTES:
            handler = _with_body(route.handler, route.body) if route.body else route.handler
            app.router.add_route(route.method, prefix + route.path, handler)
