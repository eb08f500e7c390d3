"""Content blocks of session events, and which blocks each kind of event may carry.

One Struct per wire shape. Where the SDK has several models of identical shape, they
share one Struct here: `TextBlock` is also the SDK's system content block, search-result
content and delta content; `Base64Source`, `URLSource` and `FileSource` serve both images
and documents. The per-context unions below are the contract's rules for which blocks may
appear where (e.g. `search_result` only in tool results), so msgspec enforces them on
decode with its usual `$.path` message.

Blocks do not forbid unknown fields: they are part of stored events, and older code must
read newer logs.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class _Block(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type", gc=False
):
    """Base of every tagged content object (blocks and their sources)."""


# -- sources ------------------------------------------------------------------------------


class Base64Source(_Block, tag="base64", frozen=True, kw_only=True):
    """Inline base64 data of an image or a document."""

    data: str
    media_type: str
    """MIME type, e.g. `image/png` or `application/pdf`."""


class PlainTextSource(_Block, tag="text", frozen=True, kw_only=True):
    """A document given inline as plain text."""

    data: str
    media_type: Literal["text/plain"]


class URLSource(_Block, tag="url", frozen=True, kw_only=True):
    """An image or document the server fetches from a URL."""

    url: str


class FileSource(_Block, tag="file", frozen=True, kw_only=True):
    """An image or document uploaded through the Files API."""

    file_id: str


ImageSource = Base64Source | URLSource | FileSource
DocumentSource = Base64Source | PlainTextSource | URLSource | FileSource


# -- blocks -------------------------------------------------------------------------------


class TextBlock(_Block, tag="text", frozen=True, kw_only=True):
    """Plain text."""

    text: str


class ImageBlock(_Block, tag="image", frozen=True, kw_only=True):
    """An image."""

    source: ImageSource


class DocumentBlock(_Block, tag="document", frozen=True, kw_only=True):
    """A document (PDF, plain text, …) given inline, by URL or by file id."""

    source: DocumentSource
    context: str | None = None
    """Additional context about the document for the model."""
    title: str | None = None


class SearchResultCitations(msgspec.Struct, frozen=True, kw_only=True):
    """Citation settings of a search result."""

    enabled: bool


class SearchResultBlock(_Block, tag="search_result", frozen=True, kw_only=True):
    """A search result returned by a tool (only allowed in tool results)."""

    citations: SearchResultCitations
    content: list[TextBlock]
    source: str
    """The URL the result came from."""
    title: str


class RedactedBlock(_Block, tag="redacted", frozen=True, kw_only=True):
    """Content withheld by policy."""


# -- where each block may appear ----------------------------------------------------------

UserContent = TextBlock | ImageBlock | DocumentBlock | RedactedBlock
"""Content of `user.message`."""

AgentContent = TextBlock | RedactedBlock
"""Content of `agent.message`: text or redacted only."""

ThreadContent = TextBlock | ImageBlock | DocumentBlock | RedactedBlock
"""Content of `agent.thread_message_sent` / `agent.thread_message_received`."""

ToolResultContent = TextBlock | ImageBlock | DocumentBlock | SearchResultBlock
"""Content of tool results (`user.tool_result`, `user.custom_tool_result`,
`agent.tool_result`, `agent.mcp_tool_result`): never redacted, may hold search results."""

SystemContent = TextBlock
"""Content of `system.message`: text only."""

ContentBlock = TextBlock | ImageBlock | DocumentBlock | SearchResultBlock | RedactedBlock
"""Any block, wherever it may appear."""
