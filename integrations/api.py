"""MCP server routes of the JSON API (contract/api.md)."""

from ninja import Router

mcp_router = Router(tags=["mcp"])
# Mounted under /api/chat/ (tool approvals belong to a chat turn).
approvals_router = Router(tags=["chat"])
