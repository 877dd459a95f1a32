"""MCP server routes of the JSON API (contract/api.md).

Server configurations are deployment-wide (shared by every user): any user may read them;
changing them (PUT, PATCH, refresh) needs a staff user (403 otherwise). Secrets are write-only.
"""

from typing import Any, Literal

from asgiref.sync import sync_to_async
from ninja import Router, Schema
from ninja.errors import HttpError
from pydantic import Field

from integrations import services

mcp_router = Router(tags=["mcp"])
# Mounted under /api/chat/ (tool approvals belong to a chat turn).
approvals_router = Router(tags=["chat"])


class ToolOut(Schema):
    name: str
    enabled: bool
    read_only: bool = False
    description: str = ""
    changed_since_approval: bool = False


class ServerOut(Schema):
    id: str
    name: str
    transport: str
    url: str
    enabled: bool
    connected: bool
    error: str | None
    tool_count: int
    tools: list[ToolOut]
    disabled_tools: list[str]
    approval_policy: str


class ServersOut(Schema):
    servers: list[ServerOut]
    updated_at: str | None


class ServerIn(Schema):
    """One entry of the `mcp_servers.json` format, plus optional fields of this app."""

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")
    url: str = Field("", max_length=500)
    enabled: bool = True
    disabled_tools: list[str] = Field(default_factory=list, max_length=500)
    name: str | None = Field(None, max_length=100)
    transport: Literal["streamable_http", "sse", "stdio"] | None = None
    approval_policy: Literal["never", "unless_read_only", "always"] | None = None
    connect_timeout: float | None = Field(None, gt=0, le=600)
    call_timeout: float | None = Field(None, gt=0, le=3600)
    headers: dict[str, str] | None = None
    command: str | None = Field(None, max_length=300)
    args: list[str] | None = None
    # Write-only: stored encrypted, never returned.
    bearer_token: str | None = Field(None, max_length=4000)


class ServersIn(Schema):
    servers: list[ServerIn] = Field(max_length=200)


class ServerPatch(Schema):
    enabled: bool | None = None
    disabled_tools: list[str] | None = Field(None, max_length=500)


class ApprovalIn(Schema):
    approve: bool


class ApprovalOut(Schema):
    call_id: str
    approved: bool


class DetailOut(Schema):
    detail: str


def _require_staff(request) -> None:
    if not request.auth.is_staff:
        raise HttpError(403, "Only staff users may change MCP servers")


def _document(live: dict[str, dict[str, Any]]) -> dict[str, Any]:
    servers = []
    updated = None
    for server in services.list_servers():
        disabled = set(server.disabled_tools or [])
        status = live.get(server.server_id)
        stored_tools = list(server.tools.all())
        names = status["tools"] if status is not None else [t.name for t in stored_tools]
        by_name = {t.name: t for t in stored_tools}
        tools = []
        for name in names:
            row = by_name.get(name)
            tools.append(
                {
                    "name": name,
                    "enabled": name not in disabled,
                    "read_only": bool(row and row.read_only),
                    "description": row.description if row else "",
                    "changed_since_approval": bool(row and row.changed_since_approval),
                }
            )
        connected = bool(status and status["connected"])
        error = status["error"] if status else (server.last_error or None)
        servers.append(
            {
                "id": server.server_id,
                "name": server.name or server.server_id,
                "transport": server.transport,
                "url": server.url,
                "enabled": server.enabled,
                "connected": connected if server.enabled else False,
                "error": error if server.enabled else None,
                "tool_count": len(names) if server.enabled else 0,
                "tools": tools,
                "disabled_tools": sorted(disabled),
                "approval_policy": server.approval_policy,
            }
        )
        if updated is None or server.updated_at > updated:
            updated = server.updated_at
    return {"servers": servers, "updated_at": updated.isoformat() if updated else None}


async def _servers_document() -> dict[str, Any]:
    live = await services.server_statuses()
    return await sync_to_async(_document, thread_sensitive=True)(live)


@mcp_router.get("/servers", response=ServersOut, summary="MCP servers, their status and tools")
async def list_servers(request):
    return await _servers_document()


@mcp_router.put(
    "/servers",
    response={200: ServersOut, 400: DetailOut, 403: DetailOut},
    summary="Replace every MCP server configuration",
)
async def replace_servers(request, payload: ServersIn):
    _require_staff(request)
    entries = [s.model_dump(exclude_none=True) for s in payload.servers]
    try:
        await sync_to_async(services.replace_servers, thread_sensitive=True)(entries)
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None
    return await _servers_document()


# Before /servers/{server_id}: a literal path must win over the parameter.
@mcp_router.post(
    "/servers/refresh",
    response={200: ServersOut, 403: DetailOut},
    summary="Reconnect every server and re-list its tools",
)
async def refresh_servers(request):
    _require_staff(request)
    await services.refresh_servers()
    return await _servers_document()


@mcp_router.patch(
    "/servers/{server_id}",
    response={200: ServerOut, 403: DetailOut, 404: DetailOut},
    summary="Enable/disable a server or some of its tools",
)
async def patch_server(request, server_id: str, payload: ServerPatch):
    _require_staff(request)
    await sync_to_async(services.update_server, thread_sensitive=True)(
        server_id, enabled=payload.enabled, disabled_tools=payload.disabled_tools
    )
    document = await _servers_document()
    return next(s for s in document["servers"] if s["id"] == server_id)


@approvals_router.post(
    "/tool-approvals/{call_id}",
    response={200: ApprovalOut, 404: DetailOut},
    summary="Approve or deny a tool call waiting for a person",
)
async def answer_approval(request, call_id: str, payload: ApprovalIn):
    if not services.answer_tool_approval(request.auth, call_id, payload.approve):
        raise HttpError(404, "No tool call of yours is waiting for approval with that id")
    return {"call_id": call_id, "approved": payload.approve}
