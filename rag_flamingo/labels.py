"""An item's labels, as its manifest row gives them."""

from __future__ import annotations


def item_labels(item: dict) -> list[str]:
    """The labels of an item: ``labels`` if present, else ``[label]``, else []."""
    if item.get("labels"):
        return list(item["labels"])
    return [item["label"]] if item.get("label") not in (None, "") else []
