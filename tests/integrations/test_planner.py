import pytest

from tests.integrations.conftest import chat

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def planning(user, settings, fake_openrouter, mcp_server, add_server):
    """Planning on for the user, the planner pointed at the fake, one real MCP server."""
    from presets.models import UserModelSettings

    UserModelSettings.objects.update_or_create(user=user, defaults={"planning_enabled": True})
    settings.PLANNER_MODEL = "fake/planner"
    add_server("alpha", mcp_server("alpha").url)
    return fake_openrouter


def planner_notice(events) -> dict:
    (notice,) = [e.json for e in events if e.name == "notice" and e.json["type"] == "planner"]
    return notice


def offered(fake) -> list[str]:
    main = next(r for r in fake.requests if r["body"].get("stream"))
    return [t["function"]["name"] for t in main["body"].get("tools", [])]


async def test_planner_picks_the_tools_to_offer(aapi, planning):
    planning.planner_reply = '```json\n{"tools": ["add", "echo"]}\n```'

    events = await chat(aapi, model="fake/ok", text="what is 2+2?")

    notice = planner_notice(events)
    assert notice["message"] == "planner picked 2 of 11 tools"
    assert notice["cost"] == 0.00002 and notice["fallback"] is False
    assert sorted(offered(planning)) == ["add", "echo"]
    planner_request = planning.requests[0]["body"]
    assert planner_request["model"] == "fake/planner" and not planner_request.get("stream")
    catalogue = planner_request["messages"][1]["content"]
    assert "what is 2+2?" in catalogue and "- add: Add two integers." in catalogue


async def test_planner_may_pick_no_tools(aapi, planning):
    planning.planner_reply = '{"tools": []}'

    events = await chat(aapi, model="fake/ok")

    assert planner_notice(events)["message"] == "planner picked 0 of 11 tools"
    assert offered(planning) == []


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("I think you need the calculator", "invalid planner output"),
        ('{"tools": ["add", "rm_rf"]}', "unknown tools: rm_rf"),
        ('{"tools": "add"}', "invalid planner output"),
    ],
)
async def test_invalid_planner_output_falls_back_to_all_tools(aapi, planning, reply, reason):
    planning.planner_reply = reply

    events = await chat(aapi, model="fake/ok")

    notice = planner_notice(events)
    assert notice["fallback"] is True and reason in notice["message"]
    assert len(offered(planning)) == 11


async def test_planner_error_and_timeout_fall_back(aapi, planning, settings):
    settings.PLANNER_MODEL = "fake/500"
    events = await chat(aapi, model="fake/ok")
    assert planner_notice(events)["fallback"] is True
    assert "500" in planner_notice(events)["message"]

    planning.reset()
    settings.PLANNER_MODEL = "fake/planner"
    settings.PLANNER_TIMEOUT = 0.2
    planning.planner_delay = 1.0
    events = await chat(aapi, model="fake/ok")
    notice = planner_notice(events)
    assert notice["fallback"] is True and "timed out" in notice["message"]
    assert len(offered(planning)) == 11


async def test_no_planning_when_the_user_has_it_off(aapi, fake_openrouter, mcp_server, add_server):
    add_server("alpha", mcp_server("alpha").url)

    events = await chat(aapi, model="fake/ok")

    assert not [e for e in events if e.name == "notice"]
    assert all(r["body"].get("stream") for r in fake_openrouter.requests)
