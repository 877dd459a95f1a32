"""Prompt tokens with and without tool planning, for a 60-tool catalogue (issue 4, item 6).

Builds 60 realistic tool definitions (calendar, mail, drive, PDF, finance and housekeeping-like
tools with JSON schemas), then computes, with the exact request bodies the app sends
(integrations.toolloop / chat.orchestrator):
  - without planning: the main request offers all 60 tools;
  - with planning: the planner request (compact catalogue + message) plus the main request
    offering only the tools the planner picked (3 here).
Tokens are estimated as characters / 4 (the usual rule of thumb for English + JSON); the ratio
between the two is what matters and does not depend on the tokenizer much.

Run: uv run python bench/planner_tokens.py
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from integrations.registry import RemoteTool, ServerConfig, ToolEntry  # noqa: E402
from integrations.toolloop import planner_body  # noqa: E402

AREAS = {
    "calendar": ["list_events", "create_event", "update_event", "delete_event", "find_free_time",
                 "list_calendars", "respond_to_invite", "get_event", "search_events", "move_event",
                 "add_attendee", "remove_attendee"],
    "gmail": ["search_messages", "get_message", "send_message", "draft_message", "reply",
              "forward", "list_labels", "add_label", "remove_label", "archive", "trash",
              "get_thread"],
    "drive": ["search_files", "get_file", "create_file", "update_file", "share_file",
              "list_folder", "move_file", "delete_file", "export_file", "get_permissions"],
    "pdf": ["extract_text", "extract_tables", "page_count", "render_page", "search_pdf",
            "get_metadata"],
    "monarch": ["list_accounts", "get_transactions", "get_budgets", "get_cashflow",
                "categorize_transaction", "get_net_worth", "list_categories", "get_recurring",
                "get_holdings", "search_merchants", "update_transaction", "get_goals",
                "get_institutions", "refresh_accounts"],
    "housekeeping": ["current_time", "calculate", "convert_units", "days_between",
                     "timezone_of", "world_clock"],
}  # fmt: skip


def catalogue() -> list[ToolEntry]:
    entries = []
    for server_id, names in AREAS.items():
        config = ServerConfig(
            server_id=server_id, transport="streamable_http", url="", command="", args=(),
            env=(), headers=(), secret="", connect_timeout=10, call_timeout=60,
            approval_policy="unless_read_only", enabled=True, disabled_tools=frozenset(), key="",
        )  # fmt: skip
        for name in names:
            words = name.replace("_", " ")
            schema = {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": f"What to {words} (free text)."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                    "start": {"type": "string", "format": "date-time",
                              "description": "Start of the time range, ISO 8601."},
                    "end": {"type": "string", "format": "date-time",
                            "description": "End of the time range, ISO 8601."},
                    "id": {"type": "string", "description": "Identifier of the item."},
                },
                "required": ["query"],
            }  # fmt: skip
            description = (
                f"{words.capitalize()} in the user's {server_id}. Use this when the user asks to "
                f"{words}. Returns JSON with the matching items, their ids and a short summary; "
                "results are paginated and limited by `limit`."
            )
            tool = RemoteTool(server_id, name, description, schema, True, "")
            entries.append(ToolEntry(name, tool, config))
    return entries[:60]


def tokens(document) -> int:
    return len(json.dumps(document, ensure_ascii=False)) // 4


def main() -> None:
    entries = catalogue()
    assert len(entries) == 60
    message = "What's on my calendar tomorrow afternoon, and do I have time for a 1h meeting?"
    history = [{"role": "system", "content": "You are a helpful assistant."},
               {"role": "user", "content": message}]  # fmt: skip
    picked = [e for e in entries if e.exposed in {"list_events", "find_free_time", "current_time"}]

    without = tokens({"messages": history, "tools": [e.openai_schema() for e in entries]})
    planner = tokens(planner_body(message, entries)["messages"])
    main_planned = tokens({"messages": history, "tools": [e.openai_schema() for e in picked]})
    with_planning = planner + main_planned

    print("Prompt tokens for one message, 60-tool catalogue (chars/4 estimate)")
    print(f"  without planning: main request            {without:>6}")
    print(f"  with planning:    planner request         {planner:>6}")
    print(f"                    main request (3 tools)  {main_planned:>6}")
    print(f"                    total                   {with_planning:>6}")
    print(f"  ratio with/without: {with_planning / without:.2f} "
          f"(main model sees {main_planned / without:.0%} of the tokens)")  # fmt: skip


if __name__ == "__main__":
    main()
