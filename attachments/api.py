"""Upload routes of the JSON API (contract/api.md)."""

from ninja import Router

router = Router(tags=["attachments"])
