"""The OpenRouter model catalogue: fetched, cached, enriched (issue 5 builds this out).

Interface used by other apps: `input_modalities(model_id)`.
"""


def input_modalities(model_id: str) -> set[str] | None:
    """The input modalities ("text", "image", "file", ...) of a model from the cached catalogue,
    or None when the model is unknown or the catalogue has not been fetched yet."""
    return None
