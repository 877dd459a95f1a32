"""MCP server and integration services (issue 4 builds these out).

Interface used by the presets app (a preset captures which MCP servers and tools are enabled):
`get_server_state()` and `apply_server_state()`.
"""


def get_server_state() -> dict[str, dict]:
    """{server_id: {"enabled": bool, "disabled_tools": [tool names]}} for every configured server."""
    return {}


def apply_server_state(state: dict[str, dict]) -> None:
    """Apply a state from `get_server_state`. Unknown server ids raise ValueError naming them,
    and then nothing is applied (a preset never half-applies)."""
    if state:
        raise ValueError(f"Unknown MCP server(s): {', '.join(sorted(state))}")
