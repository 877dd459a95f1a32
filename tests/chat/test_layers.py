"""The default channel layer (chat/layers.py): Channels' in-memory layer with cheaper sends."""

import asyncio

import pytest

from chat.layers import InMemoryChannelLayer


async def test_a_group_send_reaches_every_member_and_only_them():
    layer = InMemoryChannelLayer()
    members = [await layer.new_channel() for _ in range(3)]
    outsider = await layer.new_channel()
    for channel in members:
        await layer.group_add("chat.1", channel)
    await layer.group_add("chat.2", outsider)

    message = {"type": "chat.frame", "html": "<p>hi</p>"}
    await layer.group_send("chat.1", message)

    for channel in members:
        received = await asyncio.wait_for(layer.receive(channel), 1)
        assert received == message
        assert received is not message, "each member gets its own copy"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive(outsider), 0.05)


async def test_a_full_member_does_not_stop_the_others():
    layer = InMemoryChannelLayer(capacity=1)
    full, other = await layer.new_channel(), await layer.new_channel()
    for channel in (full, other):
        await layer.group_add("chat.1", channel)
    await layer.send(full, {"type": "chat.frame", "html": "waiting"})

    await layer.group_send("chat.1", {"type": "chat.frame", "html": "next"})

    assert (await layer.receive(other))["html"] == "next"
    assert (await layer.receive(full))["html"] == "waiting"  # the extra frame was dropped


async def test_group_names_are_still_checked():
    layer = InMemoryChannelLayer()
    with pytest.raises(TypeError):
        await layer.group_send("not a valid group name!", {"type": "x"})


async def test_a_send_to_an_empty_or_unknown_group_is_a_no_op():
    layer = InMemoryChannelLayer()
    await layer.group_send("chat.nobody", {"type": "chat.frame", "html": ""})
    assert layer.channels == {}
