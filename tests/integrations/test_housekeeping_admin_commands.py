import json
import re
from io import StringIO

import mcp
import pytest
from django.core.management import CommandError, call_command

from integrations import crypto, services
from integrations.mcp.housekeeping import convert, safe_eval, server
from integrations.models import McpServer, McpTool
from integrations.registry import get_registry
from tests.integrations.conftest import chat, set_calls, tool_events


async def call(name: str, **arguments) -> tuple[bool, str]:
    async with mcp.Client(server) as client:
        result = await client.call_tool(name, arguments)
    part = result.content[0]
    assert isinstance(part, mcp.types.TextContent)
    return not result.is_error, part.text


async def test_housekeeping_tools_answer():
    ok, text = await call("calculate", expression="2 * (3 + 4) ^ 2")
    assert ok and text.endswith("= 98")
    ok, text = await call("convert_units", value=100, from_unit="c", to_unit="f")
    assert ok and text == "100 c = 212 f"
    ok, text = await call("current_time", timezone="Europe/Paris")
    assert ok and "Europe/Paris" in text and re.search(r"UTC\+0[12]00", text)
    ok, text = await call("current_time", timezone="Mars/Olympus")
    assert not ok and "Unknown timezone" in text


async def test_housekeeping_tools_are_read_only():
    async with mcp.Client(server) as client:
        tools = (await client.list_tools()).tools
    assert {t.name for t in tools} == {"current_time", "calculate", "convert_units"}
    assert all(t.annotations and t.annotations.read_only_hint for t in tools)


@pytest.mark.parametrize(
    "expression",
    ["__import__('os').system('id')", "().__class__", "9 ** 9 ** 9", "x", "[1, 2]", "'a' * 3",
     "open('/etc/passwd')", "lambda: 1", "1 if True else 2", "True + 1"],
)  # fmt: skip
def test_calculator_refuses_anything_but_arithmetic(expression):
    with pytest.raises((ValueError, SyntaxError)):
        safe_eval(expression)


def test_unit_conversion():
    assert convert(1, "mi", "km") == pytest.approx(1.609344)
    assert convert(32, "F", "C") == pytest.approx(0)
    with pytest.raises(ValueError):
        convert(1, "kg", "m")


@pytest.mark.django_db(transaction=True)
async def test_bundled_server_is_configured_over_stdio_and_works_in_chat(
    aapi, fake_openrouter, settings
):
    settings.MCP_HOUSEKEEPING_DEFAULT = True
    from asgiref.sync import sync_to_async

    assert await sync_to_async(services.ensure_housekeeping_server)() is True
    assert await sync_to_async(services.ensure_housekeeping_server)() is False  # idempotent
    set_calls(fake_openrouter, ("calculate", {"expression": "6*7"}))

    events = await chat(aapi, text="what is 6*7?")

    assert tool_events(events)[-1]["result"] == "6*7 = 42"
    assert get_registry().connections["housekeeping"].config.transport == "stdio"


@pytest.mark.django_db
def test_secrets_are_encrypted_at_rest(settings):
    server = McpServer(server_id="x", url="http://127.0.0.1:9/mcp")
    server.set_secret("tok-123")
    assert "tok-123" not in server.secret_encrypted and server.secret == "tok-123"
    assert crypto.decrypt("garbage") == ""
    settings.FIELD_ENCRYPTION_KEY = "another key"
    assert server.secret == ""  # a rotated key makes old secrets unreadable, not an error


@pytest.mark.django_db
def test_import_and_export_commands(tmp_path):
    McpServer.objects.create(server_id="keep", url="http://127.0.0.1:9/mcp")
    source = tmp_path / "mcp_servers.json"
    source.write_text(
        json.dumps(
            {
                "servers": [
                    {"id": "gcal", "url": "http://127.0.0.1:9001/mcp", "enabled": True,
                     "disabled_tools": ["delete_event"]},
                    {"id": "pdf", "url": "http://127.0.0.1:9002/mcp", "enabled": False,
                     "disabled_tools": []},
                ]
            }
        )
    )  # fmt: skip
    call_command("import_mcp_servers", str(source), stdout=StringIO())
    assert set(McpServer.objects.values_list("server_id", flat=True)) == {"keep", "gcal", "pdf"}

    out = StringIO()
    call_command("export_mcp_servers", stdout=out)
    exported = {s["id"]: s for s in json.loads(out.getvalue())["servers"]}
    assert exported["gcal"] == {
        "id": "gcal",
        "url": "http://127.0.0.1:9001/mcp",
        "enabled": True,
        "disabled_tools": ["delete_event"],
    }
    assert exported["pdf"]["enabled"] is False

    call_command("import_mcp_servers", str(source), "--replace", stdout=StringIO())
    assert set(McpServer.objects.values_list("server_id", flat=True)) == {"gcal", "pdf"}
    source.write_text('{"servers": [{"url": "x"}]}')
    with pytest.raises(CommandError):
        call_command("import_mcp_servers", str(source), stdout=StringIO())


@pytest.mark.django_db
def test_preset_state_round_trip():
    McpServer.objects.create(server_id="a", url="http://127.0.0.1:9/mcp")
    McpServer.objects.create(server_id="b", url="http://127.0.0.1:9/mcp", enabled=False)
    state = services.get_server_state()
    assert state == {
        "a": {"enabled": True, "disabled_tools": []},
        "b": {"enabled": False, "disabled_tools": []},
    }
    services.apply_server_state({"a": {"enabled": False, "disabled_tools": ["x"]}})
    assert services.get_server_state()["a"] == {"enabled": False, "disabled_tools": ["x"]}
    with pytest.raises(ValueError, match="ghost"):
        services.apply_server_state({"b": {"enabled": True}, "ghost": {"enabled": True}})
    assert services.get_server_state()["b"]["enabled"] is False  # nothing applied


@pytest.mark.django_db
def test_admin_lists_servers_hides_secrets_and_toggles_tools(client, user):
    server = McpServer.objects.create(server_id="gcal", url="http://127.0.0.1:9/mcp")
    server.set_secret("tok-secret-123")
    server.save()
    tool = McpTool.objects.create(
        server=server, name="send", fingerprint="v2", approved_fingerprint="v1"
    )
    user.is_superuser = True
    user.save()
    client.force_login(user)

    listing = client.get("/admin/integrations/mcpserver/")
    assert listing.status_code == 200 and b"gcal" in listing.content
    assert b"send" in listing.content  # flagged: changed since approval
    change = client.get(f"/admin/integrations/mcpserver/{server.pk}/change/")
    assert change.status_code == 200
    assert b"tok-secret-123" not in change.content and server.secret_encrypted.encode() not in (
        change.content
    )
    assert b"CHANGED" in change.content

    client.post(
        "/admin/integrations/mcptool/",
        {"action": "disable_tools", "_selected_action": [tool.pk]},
    )
    server.refresh_from_db()
    assert server.disabled_tools == ["send"]
    client.post(
        "/admin/integrations/mcptool/",
        {"action": "enable_tools", "_selected_action": [tool.pk]},
    )
    server.refresh_from_db()
    assert server.disabled_tools == []


async def test_calculator_errors_reach_the_model_as_readable_text():
    ok, text = await call("calculate", expression="1/0")
    assert not ok and text.endswith("Division by zero")
    ok, text = await call("calculate", expression="__import__('os')")
    assert not ok and "Not allowed in an expression" in text
