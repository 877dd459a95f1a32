"""Per-user model settings, presets and suggestions (issue 5 builds these out).

Interface used by the chat turn and the MCP orchestrator: `planning_enabled_for(user)`.
"""


def planning_enabled_for(user) -> bool:
    """Whether the tool-planning step runs for this user's turns."""
    return False
