"""MCP servers that ship with the product."""
