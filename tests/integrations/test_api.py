import pytest
from asgiref.sync import sync_to_async

from attachments.models import Attachment
from attachments.storage import check_download
from chat.services import create_api_token
from integrations import services
from integrations.models import McpServer
from tests.conftest import bearer_client
from tests.integrations.conftest import iter_events, set_calls, tool_events

pytestmark = pytest.mark.django_db(transaction=True)


async def test_list_servers_shows_status_tools_and_errors(aapi, mcp_server, add_server):
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url, disabled_tools=["echo"])
    add_server("down", "http://127.0.0.1:9/mcp", connect_timeout=0.5)
    add_server("off", alpha.url, enabled=False)

    response = await aapi.get("/api/mcp/servers")

    assert response.status_code == 200
    data = response.json()
    servers = {s["id"]: s for s in data["servers"]}
    assert servers["alpha"]["connected"] is True
    assert servers["alpha"]["tool_count"] == len(servers["alpha"]["tools"]) > 5
    tools = {t["name"]: t for t in servers["alpha"]["tools"]}
    assert tools["echo"]["enabled"] is False and tools["add"]["enabled"] is True
    assert servers["alpha"]["disabled_tools"] == ["echo"]
    assert servers["down"]["connected"] is False and servers["down"]["error"]
    assert servers["down"]["tool_count"] == 0
    assert servers["off"]["connected"] is False and alpha.sessions == 1
    assert data["updated_at"]


async def test_patch_toggles_a_server_and_its_tools(aapi, mcp_server, add_server):
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)

    response = await aapi.patch(
        "/api/mcp/servers/alpha", {"disabled_tools": ["add"]}, content_type="application/json"
    )
    assert response.status_code == 200
    assert response.json()["disabled_tools"] == ["add"]
    response = await aapi.patch(
        "/api/mcp/servers/alpha", {"enabled": False}, content_type="application/json"
    )
    assert response.json()["enabled"] is False and response.json()["connected"] is False
    missing = await aapi.patch(
        "/api/mcp/servers/nope", {"enabled": False}, content_type="application/json"
    )
    assert missing.status_code == 404 and "detail" in missing.json()


async def test_put_replaces_all_configs_and_keeps_secrets_write_only(aapi, add_server):
    add_server("old", "http://127.0.0.1:9/mcp", enabled=False)
    body = {
        "servers": [
            {"id": "gcal", "url": "http://127.0.0.1:9/mcp", "enabled": False,
             "disabled_tools": ["delete_event"], "bearer_token": "s3cret-token"},
        ]
    }  # fmt: skip
    response = await aapi.put("/api/mcp/servers", body, content_type="application/json")

    assert response.status_code == 200
    assert [s["id"] for s in response.json()["servers"]] == ["gcal"]
    assert "s3cret-token" not in response.content.decode()
    stored = await McpServer.objects.aget(server_id="gcal")
    assert stored.secret == "s3cret-token" and "s3cret" not in stored.secret_encrypted
    bad = await aapi.put(
        "/api/mcp/servers", {"servers": [{"id": "bad id!"}]}, content_type="application/json"
    )
    assert bad.status_code == 422


async def test_changes_need_a_staff_user(make_user, add_server):
    add_server("alpha", "http://127.0.0.1:9/mcp", enabled=False)
    plain = await sync_to_async(make_user)("bob", staff=False)
    client = bearer_client(await sync_to_async(create_api_token)(plain))

    assert (await client.get("/api/mcp/servers")).status_code == 200
    response = await client.patch(
        "/api/mcp/servers/alpha", {"enabled": True}, content_type="application/json"
    )
    assert response.status_code == 403
    assert (await client.post("/api/mcp/servers/refresh")).status_code == 403


async def test_refresh_reconnects_and_relists(aapi, mcp_server, add_server):
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)
    await aapi.get("/api/mcp/servers")

    response = await aapi.post("/api/mcp/servers/refresh")

    assert response.status_code == 200
    assert response.json()["servers"][0]["connected"] is True
    assert alpha.sessions == 2


async def approve_flow(client, fake, answer):
    """Run a turn that needs approval; `answer(call_id)` is awaited at the approval card."""
    seen = []
    async for event in iter_events(client):
        seen.append(event)
        if event.name == "tool" and event.json["status"] == "approval_required":
            await answer(event.json)
    return seen


async def test_approval_approve_runs_the_tool(aapi, fake_openrouter, mcp_server, add_server):
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)
    set_calls(fake_openrouter, ("write_note", {"text": "milk"}))
    answered = []

    async def approve(card):
        assert card["arguments"] == {"text": "milk"} and card["server"] == "alpha"
        response = await aapi.post(
            f"/api/chat/tool-approvals/{card['call_id']}",
            {"approve": True},
            content_type="application/json",
        )
        answered.append(response.status_code)

    events = await approve_flow(aapi, fake_openrouter, approve)

    assert answered == [200]
    statuses = [t["status"] for t in tool_events(events)]
    assert statuses == ["approval_required", "started", "finished"]
    assert tool_events(events)[-1]["result"] == "saved: milk"
    tool = await McpServer.objects.aget(server_id="alpha")
    row = await tool.tools.aget(name="write_note")
    assert row.approved_fingerprint == row.fingerprint and not row.changed_since_approval


async def test_approval_deny_and_other_users_cannot_answer(
    aapi, fake_openrouter, mcp_server, add_server, other_user
):
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)
    set_calls(fake_openrouter, ("write_note", {"text": "milk"}))
    mallory = bearer_client(await sync_to_async(create_api_token)(other_user))
    codes = []

    async def deny(card):
        url = f"/api/chat/tool-approvals/{card['call_id']}"
        codes.append((await mallory.post(url, {"approve": True}, "application/json")).status_code)
        codes.append((await aapi.post(url, {"approve": False}, "application/json")).status_code)
        codes.append((await aapi.post(url, {"approve": True}, "application/json")).status_code)

    events = await approve_flow(aapi, fake_openrouter, deny)

    assert codes == [404, 200, 404]  # another user's call, then answered, then already answered
    done = tool_events(events)[-1]
    assert done["status"] == "error" and done["denied"] is True
    assert "denied" in fake_openrouter.requests[1]["body"]["messages"][-1]["content"]
    unknown = await aapi.post(
        "/api/chat/tool-approvals/nope", {"approve": True}, "application/json"
    )
    assert unknown.status_code == 404


async def test_approval_timeout_counts_as_denied(
    aapi, fake_openrouter, mcp_server, add_server, settings, user
):
    owner = user
    settings.MCP_APPROVAL_TIMEOUT = 0.2
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)
    set_calls(fake_openrouter, ("write_note", {"text": "milk"}))

    async def ignore(card):
        return None

    events = await approve_flow(aapi, fake_openrouter, ignore)

    done = tool_events(events)[-1]
    assert done["status"] == "error" and done.get("denied") is True
    assert services.pending_approvals_for(owner) == []  # the expired card is forgotten


async def test_policy_never_and_always(aapi, fake_openrouter, mcp_server, add_server):
    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url, approval_policy="never")
    set_calls(fake_openrouter, ("write_note", {"text": "x"}))
    events = [e async for e in iter_events(aapi)]
    assert [t["status"] for t in tool_events(events)] == ["started", "finished"]

    await McpServer.objects.filter(server_id="alpha").aupdate(approval_policy="always")
    set_calls(fake_openrouter, ("add", {"a": 1, "b": 1}))
    cards = []

    async def approve(card):
        cards.append(card["name"])
        await aapi.post(
            f"/api/chat/tool-approvals/{card['call_id']}", {"approve": True}, "application/json"
        )

    events = await approve_flow(aapi, fake_openrouter, approve)
    assert cards == ["add"]  # read-only, but the policy says always
    assert tool_events(events)[-1]["result"] == "2"


async def test_a_tool_changed_since_approval_is_flagged(add_server):
    server = await sync_to_async(add_server)("alpha", "http://127.0.0.1:9/mcp", enabled=False)
    tool = await server.tools.acreate(name="send", fingerprint="v1", approved_fingerprint="v1")
    assert not tool.changed_since_approval
    tool.fingerprint = "v2"
    assert tool.changed_since_approval


async def test_stop_while_waiting_for_approval_leaves_a_consistent_history(
    aapi, fake_openrouter, mcp_server, add_server, user
):
    from chat import turns
    from chat.models import Conversation, Message

    alpha = mcp_server("alpha")
    add_server("alpha", alpha.url)
    set_calls(fake_openrouter, ("write_note", {"text": "milk"}))
    session_id = card = None
    async for event in iter_events(aapi):
        if event.name == "session":
            session_id = event.json["session_id"]
        if event.name == "tool" and event.json["status"] == "approval_required":
            card = event.json
            conversation = await Conversation.objects.aget(session_id=session_id)
            assert turns.cancel_turn(conversation.pk)
    assert card is not None
    assert services.pending_approvals_for(user) == []
    late = await aapi.post(
        f"/api/chat/tool-approvals/{card['call_id']}", {"approve": True}, "application/json"
    )
    assert late.status_code == 404
    assert not await Message.objects.filter(role="tool").aexists()

    events = [e async for e in iter_events(aapi, "fake/ok", "and now?", session_id=session_id)]
    assert events[-1].data == "[DONE]" and len(fake_openrouter.requests) == 2
    sent = fake_openrouter.requests[-1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "user"]  # the unanswered call is not
    assert sent[-1]["content"] == "and now?"


async def test_tool_cards_for_the_page(aapi, user, fake_openrouter, mcp_server, add_server):
    from chat.models import Message
    from tests.integrations.conftest import chat

    add_server("alpha", mcp_server("alpha").url)
    set_calls(fake_openrouter, ("picture", {}))
    await chat(aapi)

    messages = [m async for m in Message.objects.order_by("id")]
    cards = await sync_to_async(services.tool_cards)(messages)
    (card,) = cards.values()
    assert card["name"] == "picture" and card["server"] == "alpha"
    assert card["status"] == "finished" and card["arguments"] == {}
    assert card["result_html"].startswith("<p>here is a pixel")
    # The image is an attachment of the result, shown through its signed download URL.
    image = await Attachment.objects.aget()
    (url,) = card["images"]
    path, _, query = url.partition("?token=")
    assert path == f"/attachments/{image.public_id}/"
    assert check_download(query, image.public_id, user.pk)
