"""Matching structure names across vocabularies (coarse TotalSegmentator names -> final names)."""

from __future__ import annotations

from collections.abc import Callable


def final_name_map(final_labels: dict[int, str], *, keep_unmapped: bool = True) -> Callable[[str], str | None]:
    """A function mapping a coarse/refined structure name onto a name of the final label table.

    Names already in the final table map to themselves; others go through the fusion vocabulary
    (:func:`ctsam.labels.default_vocabulary`, loaded only when needed). Returns None for names
    without a counterpart in the final table.
    """
    final_names = set(final_labels.values())
    cache: dict[str, str | None] = {}
    vocab: list = []

    def name_map(name: str) -> str | None:
        if name in final_names:
            return name
        if name not in cache:
            if not vocab:
                from ctsam.labels import default_vocabulary

                vocab.append(default_vocabulary(keep_unmapped=keep_unmapped))
            out = vocab[0].output_name(name)
            cache[name] = out if out in final_names else None
        return cache[name]

    return name_map
