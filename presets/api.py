"""Models, settings, presets and suggestions routes of the JSON API (contract/api.md)."""

from ninja import Router

catalogue_router = Router(tags=["models"])
settings_router = Router(tags=["settings"])
presets_router = Router(tags=["presets"])
suggestions_router = Router(tags=["suggestions"])
