"""Request bodies, with the limits of the wire contract (§6.4) written as types.

The same types validate requests and generate /openapi.json, so the two cannot disagree.
Unknown fields are refused, as OpenAI refuses them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from events.types import Attachment, ImageFile, ImageUrl
from service.api.errors import ApiError

MetadataKey = Annotated[str, Meta(max_length=64)]
MetadataValue = Annotated[str, Meta(max_length=512)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Meta(
    max_length=16, description="Up to 16 key-value pairs; keys ≤64 chars, values ≤512 chars.")]
Name = Annotated[str, Meta(max_length=256)]
Description = Annotated[str, Meta(max_length=512)]
Instructions = Annotated[str, Meta(max_length=256_000)]
Model = Annotated[str, Meta(min_length=1, max_length=256)]
Tool = Annotated[dict[str, Any], Meta(
    description="A tool definition: function, code_interpreter, file_search, …",
    extra_json_schema={"required": ["type"], "properties": {"type": {"type": "string", "minLength": 1}}})]
Tools = Annotated[list[Tool], Meta(max_length=128)]
ToolResources = dict[str, Any]
Temperature = Annotated[float, Meta(ge=0, le=2)]
TopP = Annotated[float, Meta(ge=0, le=1)]
ResponseFormat = str | dict[str, Any]
# Every value of the current openai SDK's ReasoningEffort; null means "the model's default".
ReasoningEffort = Annotated[Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"], Meta(
    description="Effort a reasoning model spends; sent to the provider as given.")]
Text = Annotated[str, Meta(max_length=256_000)]


class Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class CreateAssistantRequest(Body):
    model: Model
    name: Name | None = None
    description: Description | None = None
    instructions: Instructions | None = None
    tools: Tools = []
    tool_resources: ToolResources | None = None
    metadata: Metadata | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: ReasoningEffort | None = None


class UpdateAssistantRequest(Body):
    model: Model | UnsetType = UNSET
    name: Name | None | UnsetType = UNSET
    description: Description | None | UnsetType = UNSET
    instructions: Instructions | None | UnsetType = UNSET
    tools: Tools | UnsetType = UNSET
    tool_resources: ToolResources | None | UnsetType = UNSET
    metadata: Metadata | None | UnsetType = UNSET
    temperature: Temperature | None | UnsetType = UNSET
    top_p: TopP | None | UnsetType = UNSET
    response_format: ResponseFormat | None | UnsetType = UNSET
    reasoning_effort: ReasoningEffort | None | UnsetType = UNSET


class InputText(msgspec.Struct, tag="text", tag_field="type", forbid_unknown_fields=True):
    text: Text


class InputImageUrl(msgspec.Struct, tag="image_url", tag_field="type", forbid_unknown_fields=True):
    image_url: ImageUrl


class InputImageFile(msgspec.Struct, tag="image_file", tag_field="type", forbid_unknown_fields=True):
    image_file: ImageFile


InputPart = InputText | InputImageUrl | InputImageFile


class CreateMessageRequest(Body):
    role: Literal["user", "assistant"]
    content: Text | Annotated[list[InputPart], Meta(min_length=1, max_length=100)]
    attachments: Annotated[list[Attachment], Meta(max_length=100)] | None = None
    metadata: Metadata | None = None


class UpdateMessageRequest(Body):
    metadata: Metadata | None = None


class CreateThreadRequest(Body):
    messages: Annotated[list[CreateMessageRequest], Meta(max_length=1000)] = []
    metadata: Metadata | None = None
    tool_resources: ToolResources | None = None


class UpdateThreadRequest(Body):
    metadata: Metadata | None | UnsetType = UNSET
    tool_resources: ToolResources | None | UnsetType = UNSET


_RESPONSE_FORMATS = {"text", "json_object", "json_schema"}


def check_response_format(value: Any, param: str = "response_format") -> None:
    if value is None or value == "auto":
        return
    if isinstance(value, dict) and value.get("type") in _RESPONSE_FORMATS:
        if value["type"] == "json_schema" and not isinstance(value.get("json_schema"), dict):
            raise ApiError(400, f"Missing required parameter: '{param}.json_schema'.", param=f"{param}.json_schema")
        return
    raise ApiError(400, f"Invalid value for '{param}': expected 'auto' or an object whose type is one of "
                   "'text', 'json_object', 'json_schema'.", param=param)


# --- runs --------------------------------------------------------------------------------------

RunTools = Annotated[list[Tool], Meta(max_length=20)]
TokenBudget = Annotated[int, Meta(ge=256)]
ToolChoice = str | dict[str, Any]


class TruncationStrategy(Body):
    type: Literal["auto", "last_messages"]
    last_messages: Annotated[int, Meta(ge=1)] | None = None


class RunSettings(Body):
    """What a run may override on its assistant (shared by create run and create thread and run)."""
    assistant_id: Annotated[str, Meta(min_length=1, max_length=128)]
    model: Model | None = None
    instructions: Instructions | None = None
    tools: RunTools | None = None
    tool_resources: ToolResources | None = None
    metadata: Metadata | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    stream: bool | None = None
    max_prompt_tokens: TokenBudget | None = None
    max_completion_tokens: TokenBudget | None = None
    truncation_strategy: TruncationStrategy | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: ReasoningEffort | None = None


class CreateRunRequest(RunSettings):
    additional_instructions: Instructions | None = None
    additional_messages: Annotated[list[CreateMessageRequest], Meta(max_length=1000)] | None = None


class CreateThreadAndRunRequest(RunSettings):
    thread: CreateThreadRequest | None = None


class UpdateRunRequest(Body):
    metadata: Metadata | None = None


class ToolOutput(Body):
    tool_call_id: Annotated[str, Meta(min_length=1, max_length=128)]
    output: Annotated[str, Meta(max_length=1_048_576)] = ""


class SubmitToolOutputsRequest(Body):
    tool_outputs: Annotated[list[ToolOutput], Meta(min_length=1, max_length=128)]
    stream: bool | None = None


def check_tool_choice(value: Any, tools: list[dict[str, Any]]) -> None:
    if value is None or value in ("none", "auto", "required"):
        return
    if isinstance(value, dict) and value.get("type") == "function":
        name = (value.get("function") or {}).get("name")
        names = {(t.get("function") or {}).get("name") for t in tools if t.get("type") == "function"}
        if not isinstance(name, str) or name not in names:
            raise ApiError(400, f"Invalid value for 'tool_choice': no function named '{str(name)[:64]}' among the "
                           "run's tools.", param="tool_choice")
        return
    if isinstance(value, dict) and isinstance(value.get("type"), str) and any(
            t.get("type") == value["type"] for t in tools):
        return
    raise ApiError(400, "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or a tool of the run.",
                   param="tool_choice")


WebhookUrl = Annotated[str, Meta(min_length=1, max_length=2048, description="Where events are POSTed: https:// "
                                 "and a public address, unless the server's configuration allows otherwise.")]
WebhookEventTypes = Annotated[list[Annotated[str, Meta(min_length=1, max_length=64)]], Meta(
    min_length=1, max_length=64,
    description="Event types such as 'thread.run.completed', a prefix such as 'thread.run.*', or '*'.")]


class CreateWebhookRequest(Body):
    url: WebhookUrl
    events: WebhookEventTypes
    description: Description | None = None
    enabled: bool = True


class UpdateWebhookRequest(Body):
    url: WebhookUrl | UnsetType = UNSET
    events: WebhookEventTypes | UnsetType = UNSET
    description: Description | None | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    rotate_secret: Annotated[bool, Meta(description="Make a new signing secret (returned once, in this "
                                        "response); the old one still signs for 24 hours.")] = False


class FileExpiresAfter(Body):
    """A file is deleted `seconds` (1 hour to 30 days) after it was created."""
    anchor: Literal["created_at"]
    seconds: Annotated[int, Meta(ge=3600, le=2_592_000)]


class CreateUploadRequest(Body):
    bytes: Annotated[int, Meta(ge=0)]
    filename: Annotated[str, Meta(min_length=1, max_length=512)]
    mime_type: Annotated[str, Meta(min_length=1, max_length=256)]
    purpose: str
    expires_after: FileExpiresAfter | None = None     # the completed file's; an upload itself expires in 1 hour


class CompleteUploadRequest(Body):
    part_ids: Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=10_000)]
    md5: Annotated[str, Meta(max_length=64)] | None = None
