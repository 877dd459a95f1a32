"""MCP server and tool services: configuration, state for presets, approvals.

Interface used by the presets app (a preset captures which MCP servers and tools are enabled):
`get_server_state()` and `apply_server_state()`. The pages answer approval cards with
`answer_tool_approval()`.
"""

import asyncio
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404
from django.utils import timezone

from integrations.models import McpServer, McpTool

log = logging.getLogger(__name__)

HOUSEKEEPING_ID = "housekeeping"


# Presets interface ---------------------------------------------------------------------------


def get_server_state() -> dict[str, dict]:
    """{server_id: {"enabled": bool, "disabled_tools": [names]}} for every configured server."""
    return {
        s.server_id: {"enabled": s.enabled, "disabled_tools": list(s.disabled_tools or [])}
        for s in McpServer.objects.all()
    }


@transaction.atomic
def apply_server_state(state: dict[str, dict]) -> None:
    """Apply a state from `get_server_state`. Unknown server ids raise ValueError naming them,
    and then nothing is applied (a preset never half-applies)."""
    servers = {s.server_id: s for s in McpServer.objects.select_for_update()}
    unknown = sorted(set(state) - set(servers))
    if unknown:
        raise ValueError(f"Unknown MCP server(s): {', '.join(unknown)}")
    for server_id, entry in state.items():
        server = servers[server_id]
        if "enabled" in entry:
            server.enabled = bool(entry["enabled"])
        if "disabled_tools" in entry:
            server.disabled_tools = sorted({str(t) for t in entry["disabled_tools"] or []})
        server.save(update_fields=["enabled", "disabled_tools", "updated_at"])


# Server configuration ------------------------------------------------------------------------


def get_server(server_id: str) -> McpServer:
    try:
        return McpServer.objects.get(server_id=server_id)
    except McpServer.DoesNotExist:
        raise Http404("MCP server not found") from None


def list_servers() -> list[McpServer]:
    return list(McpServer.objects.prefetch_related("tools"))


def update_server(
    server_id: str, *, enabled: bool | None = None, disabled_tools: list[str] | None = None
) -> McpServer:
    server = get_server(server_id)
    if enabled is not None:
        server.enabled = enabled
    if disabled_tools is not None:
        server.disabled_tools = sorted(set(disabled_tools))
    server.save(update_fields=["enabled", "disabled_tools", "updated_at"])
    return server


@transaction.atomic
def set_tools_enabled(tools: list[McpTool], enabled: bool) -> None:
    """Per-tool toggles (admin): edit each server's disabled-tools list."""
    by_server: dict[int, list[str]] = {}
    for tool in tools:
        by_server.setdefault(tool.server_id, []).append(tool.name)
    for server in McpServer.objects.select_for_update().filter(pk__in=by_server):
        disabled = set(server.disabled_tools or [])
        names = set(by_server[server.pk])
        server.disabled_tools = sorted(disabled - names if enabled else disabled | names)
        server.save(update_fields=["disabled_tools", "updated_at"])


@transaction.atomic
def replace_servers(entries: list[dict[str, Any]]) -> list[McpServer]:
    """Replace every configuration with `entries` (the `mcp_servers.json` shape, plus optional
    transport/name/approval_policy/timeouts/headers/command/args). Servers not listed are removed;
    listed ones keep their stored secret unless a new `bearer_token` is given."""
    seen = upsert_servers(entries)
    McpServer.objects.exclude(server_id__in=seen).delete()
    return list(McpServer.objects.all())


@transaction.atomic
def upsert_servers(entries: list[dict[str, Any]]) -> list[str]:
    """Create or update the listed servers; others are left alone. Returns the ids."""
    seen: list[str] = []
    for entry in entries:
        server_id = str(entry["id"])
        if server_id in seen:
            raise ValueError(f"Duplicate MCP server id: {server_id}")
        seen.append(server_id)
        server = McpServer.objects.filter(server_id=server_id).first() or McpServer(
            server_id=server_id
        )
        for field in (
            "name", "transport", "url", "command", "args", "env", "headers",
            "approval_policy", "connect_timeout", "call_timeout",
        ):  # fmt: skip
            if entry.get(field) is not None:
                setattr(server, field, entry[field])
        server.enabled = bool(entry.get("enabled", True))
        server.disabled_tools = sorted({str(t) for t in entry.get("disabled_tools") or []})
        if entry.get("bearer_token"):
            server.set_secret(str(entry["bearer_token"]))
        try:
            server.full_clean(exclude=["secret_encrypted"])
        except ValidationError as exc:
            raise ValueError(f"MCP server {server_id}: {_messages(exc)}") from None
        server.save()
    return seen


def _messages(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
    return " ".join(exc.messages)


def export_servers() -> dict[str, Any]:
    """The `mcp_servers.json` document (secrets are never exported)."""
    servers = []
    for s in McpServer.objects.all():
        entry: dict[str, Any] = {
            "id": s.server_id,
            "url": s.url,
            "enabled": s.enabled,
            "disabled_tools": list(s.disabled_tools or []),
        }
        if s.transport != McpServer.Transport.STREAMABLE_HTTP:
            entry["transport"] = s.transport
        if s.transport == McpServer.Transport.STDIO:
            entry.update(command=s.command, args=list(s.args or []))
        if s.approval_policy != McpServer.Approval.UNLESS_READ_ONLY:
            entry["approval_policy"] = s.approval_policy
        servers.append(entry)
    return {"servers": servers}


def import_servers(document: str | dict[str, Any], *, replace: bool = False) -> int:
    data = json.loads(document) if isinstance(document, str) else document
    entries = data.get("servers") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and e.get("id") for e in entries
    ):
        raise ValueError('Expected {"servers": [{"id": ..., "url": ...}, ...]}')
    if replace:
        replace_servers(entries)
    else:
        upsert_servers(entries)
    return len(entries)


def ensure_housekeeping_server() -> bool:
    """Configure the bundled housekeeping server (stdio) once, so tools work out of the box.
    Idempotent; a deleted one comes back only if MCP_HOUSEKEEPING_DEFAULT is on at startup."""
    import sys

    from django.conf import settings

    if not settings.MCP_HOUSEKEEPING_DEFAULT:
        return False
    _, created = McpServer.objects.get_or_create(
        server_id=HOUSEKEEPING_ID,
        defaults={
            "name": "Housekeeping (bundled)",
            "transport": McpServer.Transport.STDIO,
            "command": sys.executable,
            "args": ["-m", "integrations.mcp.housekeeping"],
            "approval_policy": McpServer.Approval.UNLESS_READ_ONLY,
        },
    )
    return created


# Registry actions ----------------------------------------------------------------------------


async def refresh_servers() -> None:
    from integrations.registry import get_registry

    await get_registry().refresh()


async def server_statuses() -> dict[str, dict[str, Any]]:
    """Live status of every server this process connects to, for the API."""
    from integrations.registry import get_registry

    registry = get_registry()
    await registry.catalogue()
    out: dict[str, dict[str, Any]] = {}
    for server_id, conn in registry.connections.items():
        out[server_id] = {
            "connected": conn.connected,
            "error": conn.error or None,
            "tools": [t.name for t in conn.tools],
        }
    return out


# Approvals -----------------------------------------------------------------------------------


@dataclass
class PendingApproval:
    user_id: int
    future: "asyncio.Future[bool]"
    loop: asyncio.AbstractEventLoop


_pending: dict[str, PendingApproval] = {}
_pending_lock = threading.Lock()


def needs_approval(policy: str, read_only: bool) -> bool:
    if policy == McpServer.Approval.NEVER:
        return False
    if policy == McpServer.Approval.ALWAYS:
        return True
    return not read_only


def register_approval(user_id: int, call_id: str) -> "asyncio.Future[bool]":
    loop = asyncio.get_running_loop()
    future: asyncio.Future[bool] = loop.create_future()
    with _pending_lock:
        _pending[call_id] = PendingApproval(user_id, future, loop)
    return future


def forget_approval(call_id: str) -> None:
    with _pending_lock:
        _pending.pop(call_id, None)


def answer_tool_approval(user, call_id: str, approve: bool) -> bool:
    """Answer a pending approval card. False when the call is unknown, already answered or not
    the user's (callers answer 404 for all of these). Callable from any thread."""
    with _pending_lock:
        pending = _pending.get(call_id)
        if pending is None or pending.user_id != user.pk or pending.future.done():
            return False
        del _pending[call_id]

    def settle() -> None:
        if not pending.future.done():
            pending.future.set_result(approve)

    pending.loop.call_soon_threadsafe(settle)
    return True


def pending_approvals_for(user) -> list[str]:
    with _pending_lock:
        return [cid for cid, p in _pending.items() if p.user_id == user.pk]


def record_approval(server_id: str, tool_name: str, fingerprint: str) -> None:
    """Remember what a person approved, so a later change to the tool is flagged in the admin."""
    McpTool.objects.filter(server__server_id=server_id, name=tool_name).update(
        approved_fingerprint=fingerprint, approved_at=timezone.now()
    )


# Tool cards (pages) --------------------------------------------------------------------------


def tool_cards(messages) -> dict[int, dict[str, Any]]:
    """Card data for stored tool results, keyed by tool message id: what the page shows for a
    finished call (the live equivalent is the `tool` SSE/WebSocket events).

    `arguments` comes from the assistant message that asked (the result's parent); `result_html`
    is the stored, sanitised rendering of the result (never render `result` unescaped);
    `images` are the signed, owner-checked display URLs of the images the tool returned (kept
    as attachments of the result, like a user's uploads; one query for all cards).
    """
    from attachments.services import attachments_for_messages
    from chat.models import Message

    tools = [m for m in messages if m.role == Message.Role.TOOL]
    attached = attachments_for_messages(tools)
    parents = {m.pk: m for m in messages if m.role == Message.Role.ASSISTANT}
    missing = {m.parent_id for m in tools if m.parent_id and m.parent_id not in parents}
    if missing:
        parents.update({m.pk: m for m in Message.objects.filter(pk__in=missing)})
    cards: dict[int, dict[str, Any]] = {}
    for message in tools:
        parent = parents.get(message.parent_id) if message.parent_id else None
        call = next(
            (c for c in (parent.tool_calls or []) if c.get("id") == message.tool_call_id),
            None,
        ) if parent else None  # fmt: skip
        try:
            arguments = json.loads(call["function"].get("arguments") or "{}") if call else {}
        except ValueError:
            arguments = {"_raw": call["function"].get("arguments")} if call else {}
        cards[message.pk] = {
            "message_id": message.pk,
            "call_id": message.tool_call_id,
            "name": message.tool_name,
            "server": (message.routing or {}).get("mcp_server"),
            "status": "finished" if message.status == Message.Status.COMPLETE else "error",
            "duration_ms": message.duration_ms,
            "arguments": arguments,
            "result": message.content,
            "result_html": message.html,
            "images": [a.url for a in attached.get(message.pk, []) if a.kind == "image"],
        }
    return cards
