import pytest

from integrations.models import McpServer, McpTool
from integrations.registry import ServerConfig, get_registry, load_configs
from tests.integrations.conftest import chat, eventually, set_calls, tool_events

pytestmark = pytest.mark.django_db(transaction=True)


def names(entries) -> list[str]:
    return sorted(e.exposed for e in entries)


async def test_tools_of_every_transport_are_aggregated_and_collisions_prefixed(
    mcp_server, add_server, add_stdio_server
):
    http, sse = mcp_server("alpha"), mcp_server("gamma", "sse")
    add_server("alpha", http.url)
    add_server("gamma", sse.url, transport=McpServer.Transport.SSE)
    add_stdio_server("local")

    entries = await get_registry().catalogue()

    exposed = names(entries)
    assert len(exposed) == len(set(exposed)) == 3 * 11  # nothing dropped
    # Every name exists on all three servers, so each is prefixed with its server id.
    for server_id in ("alpha", "gamma", "local"):
        assert f"{server_id}_echo" in exposed
    by_name = {e.exposed: e for e in entries}
    assert by_name["gamma_add"].tool.name == "add" and by_name["gamma_add"].tool.read_only
    assert by_name["local_write_note"].tool.read_only is False
    assert http.sessions == 1 and sse.sessions == 1


async def test_names_are_plain_when_unique_and_stable_across_listings(mcp_server, add_server):
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url, disabled_tools=["add"])
    add_server("beta", mcp_server("beta").url, disabled_tools=["echo"])

    first = names(await get_registry().catalogue())
    await get_registry().refresh()
    second = names(await get_registry().catalogue())

    assert first == second
    assert "add" in first and "echo" in first  # each offered by one server only
    assert "alpha_pid" in first and "beta_pid" in first


async def test_a_down_server_costs_only_its_own_tools(mcp_server, add_server):
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)
    add_server("down", "http://127.0.0.1:9/mcp", connect_timeout=0.5)

    entries = await get_registry().catalogue()

    assert {e.config.server_id for e in entries} == {"alpha"}
    down = await McpServer.objects.aget(server_id="down")
    assert down.connected is False and down.last_error
    assert (await McpServer.objects.aget(server_id="alpha")).connected is True


async def test_tool_list_is_stored_for_the_admin(mcp_server, add_server):
    add_server("alpha", mcp_server("alpha").url)

    await get_registry().catalogue()

    tools = {t.name: t async for t in McpTool.objects.filter(server__server_id="alpha")}
    assert len(tools) == 11 and tools["add"].read_only and tools["add"].fingerprint


async def test_list_changed_relists_the_tools(aapi, fake_openrouter, mcp_server, add_server):
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)
    set_calls(fake_openrouter, ("grow", {}))

    events = await chat(aapi)

    assert tool_events(events)[-1]["result"] == "grown"
    conn = get_registry().connections["alpha"]
    assert await eventually(lambda: "extra" in {t.name for t in conn.tools})
    assert "extra" in names(await get_registry().catalogue())
    assert alpha.sessions == 1  # re-listed on the same session


async def test_a_server_that_dies_mid_call_fails_that_call_and_reconnects(
    aapi, fake_openrouter, add_stdio_server
):
    add_stdio_server("local")
    set_calls(fake_openrouter, ("pid", {}))
    first_pid = tool_events(await chat(aapi))[-1]["result"]

    set_calls(fake_openrouter, ("die", {}))
    events = await chat(aapi)

    done = tool_events(events)[-1]
    assert done["status"] == "error" and done["name"] == "die"
    assert events[-1].data == "[DONE]"
    conn = get_registry().connections["local"]
    assert await eventually(lambda: conn.connected and conn.connects == 2, timeout=10)
    set_calls(fake_openrouter, ("pid", {}))
    second_pid = tool_events(await chat(aapi))[-1]["result"]
    assert second_pid.isdigit() and second_pid != first_pid


async def test_config_changes_apply_without_a_restart(mcp_server, add_server):
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)
    assert "add" in names(await get_registry().catalogue())

    await McpServer.objects.filter(server_id="alpha").aupdate(disabled_tools=["add"])
    assert "add" not in names(await get_registry().catalogue())
    await McpServer.objects.filter(server_id="alpha").aupdate(enabled=False)
    assert names(await get_registry().catalogue()) == []
    assert "alpha" not in get_registry().connections


async def test_a_dropped_http_server_is_reconnected_when_it_comes_back(mcp_server, add_server):
    first = mcp_server("alpha")
    add_server("alpha", first.url)
    entries = {e.exposed: e for e in await get_registry().catalogue()}
    conn = get_registry().connections["alpha"]
    assert conn.connected and conn.connects == 1

    first.stop()
    outcome = await get_registry().call(entries["add"], {"a": 1, "b": 2})
    assert not outcome.ok  # that call fails, readable; the connection starts over
    assert await eventually(lambda: not conn.connected)
    again = mcp_server("alpha", port=first.port)

    assert await eventually(lambda: conn.connected and conn.connects == 2, timeout=10)
    assert (await get_registry().call(entries["add"], {"a": 1, "b": 2})).text == "3"
    assert again.sessions == 1


def paginating_server():
    """A low-level SDK server listing 5 tools over 3 pages."""
    import mcp_types as types
    from mcp.server.lowlevel import Server

    tools = [
        types.Tool(name=f"tool{i}", description=f"Tool {i}", input_schema={"type": "object"})
        for i in range(5)
    ]

    async def list_tools(ctx, params):
        start = int(params.cursor) if params and params.cursor else 0
        end = start + 2
        return types.ListToolsResult(
            tools=tools[start:end], next_cursor=str(end) if end < len(tools) else None
        )

    async def call_tool(ctx, params):
        return types.CallToolResult(content=[types.TextContent(type="text", text=params.name)])

    return Server("pages", on_list_tools=list_tools, on_call_tool=call_tool)


async def test_tools_list_is_read_across_pages(mcp_server, add_server):
    server = mcp_server("pages", mcp=paginating_server())
    add_server("pages", server.url)

    entries = await get_registry().catalogue()

    assert names(entries) == ["tool0", "tool1", "tool2", "tool3", "tool4"]
    assert (await get_registry().call(entries[4], {})).text == "tool4"


async def test_extra_headers_and_the_bearer_secret_are_sent(mcp_server, add_server):
    alpha = mcp_server("alpha")
    server = add_server("alpha", alpha.url, headers={"X-Tenant": "t-1"})
    server.set_secret("tok-abc")
    await server.asave()

    await get_registry().catalogue()

    assert alpha.app.headers
    for headers in alpha.app.headers:
        assert headers[b"x-tenant"] == b"t-1"
        assert headers[b"authorization"] == b"Bearer tok-abc"


@pytest.mark.django_db
def test_server_configs_are_read_whole_and_in_order_every_time():
    McpServer.objects.all().delete()
    first = McpServer(
        server_id="zeta",
        name="Zeta",
        transport="http",
        url="http://127.0.0.1:9/mcp",
        args=["--flag", 2],
        env={"A": "1"},
        headers={"X-Key": "v"},
        disabled_tools=["drop"],
        connect_timeout=3,
    )
    first.set_secret("s3cret")
    first.save()
    assert load_configs() == [ServerConfig.from_model(s) for s in McpServer.objects.all()]

    # What is read is the rows as they are now: the SQL is kept, never the rows.
    McpServer.objects.create(server_id="alpha", name="Alpha", transport="http", url="http://x/")
    McpServer.objects.filter(server_id="zeta").update(enabled=False, env={"B": "2"})
    configs = load_configs()
    assert [c.server_id for c in configs] == ["alpha", "zeta"]
    assert configs == [ServerConfig.from_model(s) for s in McpServer.objects.all()]
    assert configs[1].enabled is False and configs[1].env == (("B", "2"),)
    assert configs[1].secret == "s3cret" and configs[1].args == ("--flag", "2")
