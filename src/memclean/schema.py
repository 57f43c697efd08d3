"""Column names, Arrow schemas and reason codes shared by every stage.

Every table memclean writes is validated against one of the schemas below, so a
later stage can rely on the columns and types without re-checking them.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import pyarrow as pa

#: Version of the on-disk contracts; written into every Parquet file's metadata.
CONTRACT_VERSION = "1"


class Status(StrEnum):
    """Whether an input row could be used."""

    OK = "ok"
    QUARANTINED = "quarantined"


class Reason(StrEnum):
    """Why a row was quarantined at ingest or dropped at cleaning.

    Values are stable strings: reports, tests and downstream users key on them.
    """

    #: The file exists but could not be read or decoded for a reason other than below.
    UNREADABLE = "unreadable"
    #: The file listed by a manifest does not exist.
    MISSING = "missing"
    #: The decoder ran out of data (truncated or cut-off stream).
    TRUNCATED = "truncated"
    #: Not an image at all (text, empty file, unknown signature).
    NOT_AN_IMAGE = "not_an_image"
    #: Pixel count above the decompression-bomb limit.
    TOO_LARGE = "too_large"
    #: A real image in a format outside the allow-list, or a non-image file extension.
    FORMAT_NOT_ALLOWED = "format_not_allowed"
    #: The path resolves outside the dataset root (``..``, absolute path, symlink).
    PATH_ESCAPE = "path_escape"
    #: The label is missing or not in the class list.
    UNKNOWN_LABEL = "unknown_label"
    #: The same file listed again by a manifest (the first occurrence is kept).
    DUPLICATE_PATH = "duplicate_path"
    # -- cleaning-time reasons (used by later stages) --
    EXACT_DUPLICATE = "exact_duplicate"
    NEAR_DUPLICATE = "near_duplicate"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    SPLIT_LEAK = "split_leak"
    SUSPECTED_LABEL_ERROR = "suspected_label_error"
    NONFINITE_SCORE = "nonfinite_score"


#: Reasons the ingest stage can give.
INGEST_REASONS: tuple[Reason, ...] = (
    Reason.UNREADABLE,
    Reason.MISSING,
    Reason.TRUNCATED,
    Reason.NOT_AN_IMAGE,
    Reason.TOO_LARGE,
    Reason.FORMAT_NOT_ALLOWED,
    Reason.PATH_ESCAPE,
    Reason.UNKNOWN_LABEL,
    Reason.DUPLICATE_PATH,
)

SAMPLES_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("label", pa.int32()),
        pa.field("label_name", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("channels", pa.int8()),
        pa.field("orig_mode", pa.string()),
        pa.field("pixel_sha256", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("row", pa.int64()),
    ]
)

DUPLICATES_SCHEMA = pa.schema(
    [
        pa.field("group_id", pa.int64(), nullable=False),
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("distance", pa.int16(), nullable=False),
        pa.field("is_representative", pa.bool_(), nullable=False),
        pa.field("pixel_sha256", pa.string(), nullable=False),
        pa.field("label", pa.int32()),
        pa.field("split", pa.string(), nullable=False),
        pa.field("label_conflict", pa.bool_(), nullable=False),
        pa.field("cross_split", pa.bool_(), nullable=False),
    ]
)

#: ``duplicate_pairs.parquet``: every verified pair (``a`` before ``b`` in dataset order).
#: ``kind``: ``exact`` (identical pixels), ``near`` (one photo, edited) or ``similar`` (same
#: scene, another shot; never grouped). ``hash_distance``: Hamming distance of the perceptual
#: hashes (evidence only: small images get no hash candidates); ``similarity``: the verified
#: score in [-1, 1] (1 for exact pairs); ``local_similarity``: the lowest correlation over the
#: detailed cells of the fine check (equal to ``similarity`` where none ran; 1 for exact pairs);
#: ``colour_gap``: how far the mean colours are apart (0 for exact pairs); ``method``: which candidate source found the pair
#: (``sha256``, the hash name, ``pixel_knn`` or ``<hash>+pixel_knn``).
DUPLICATE_PAIRS_SCHEMA = pa.schema(
    [
        pa.field("a", pa.string(), nullable=False),
        pa.field("b", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("hash_distance", pa.int16(), nullable=False),
        pa.field("similarity", pa.float32(), nullable=False),
        pa.field("local_similarity", pa.float32(), nullable=False),
        pa.field("colour_gap", pa.float32(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("cross_split", pa.bool_(), nullable=False),
    ]
)

NOISY_LABELS_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),
        pa.field("noisy_label", pa.int32(), nullable=False),
        pa.field("is_flipped", pa.bool_(), nullable=False),
        # True: suspected of a label error of its own before injection (never flipped, not measured).
        pa.field("suspected_own", pa.bool_(), nullable=False),
    ]
)


def scores_schema(scorer_names: list[str], extra: Sequence[str] = ()) -> pa.Schema:
    """Schema of ``scores.parquet``: ``sample_id``, one ``<name>_score`` per scorer, ``suggested_label``.

    ``extra`` names more float columns a scorer adds beside its score (``<scorer>_<key>``, e.g.
    ``fz_memorization_se``); they follow ``suggested_label``.
    """
    return pa.schema(
        [pa.field("sample_id", pa.string(), nullable=False)]
        + [pa.field(f"{name}_score", pa.float64()) for name in scorer_names]
        + [pa.field("suggested_label", pa.int32())]
        + [pa.field(name, pa.float64()) for name in extra]
    )


#: ``influence.parquet``: for each held-out row, its strongest influencers (``fz_influence``).
INFLUENCE_SCHEMA = pa.schema(
    [
        pa.field("target_id", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("influence", pa.float64()),
        pa.field("se", pa.float64()),
        pa.field("n_in", pa.int32(), nullable=False),
        pa.field("n_out", pa.int32(), nullable=False),
    ]
)


def validation_scores_schema(scorer_names: list[str]) -> pa.Schema:
    """Schema of ``validation_scores.parquet``: scores on the noisy labels, ``is_flipped`` and ``suspected_own``.

    ``suspected_own`` rows (suspected label errors of the dataset's own, never flipped) are
    not among the rows ``validate`` measures on.
    """
    return pa.schema(
        [
            pa.field("sample_id", pa.string(), nullable=False),
            pa.field("is_flipped", pa.bool_(), nullable=False),
            pa.field("suspected_own", pa.bool_(), nullable=False),
        ]
        + [pa.field(f"{name}_score", pa.float64()) for name in scorer_names]
    )


#: Columns the clean stage adds to the samples columns (scores come in between).
MANIFEST_EXTRA = [
    pa.field("dup_group", pa.int64()),
    pa.field("keep", pa.bool_(), nullable=False),
    pa.field("drop_reason", pa.string()),
    pa.field("suspected", pa.bool_(), nullable=False),
    pa.field("suspicion", pa.string()),
    pa.field("suggested_label", pa.int32()),
    pa.field("suggested_confidence", pa.float64()),
]

#: Splits treated as held-out when a duplicate group spans splits.
HELDOUT_SPLITS = frozenset({"test", "val", "valid", "validation"})


def manifest_schema(scorer_names: list[str]) -> pa.Schema:
    """Schema of ``data/clean/manifest.parquet``: samples columns, scores, cleaning decisions."""
    return pa.schema(
        list(SAMPLES_SCHEMA) + [pa.field(f"{name}_score", pa.float64()) for name in scorer_names] + MANIFEST_EXTRA
    )
