"""The validation gate: may cleaning drop samples by score on this dataset?

The ``validate`` stage measures, per scorer, how well the scores find the
injected mislabels. The gate passes when the scorer cleaning will use reaches
``validate.min_auroc``. This module is the one home of that rule: the
``validate`` stage records the gate, ``clean`` re-applies it when told to use a
different scorer, and every view (report, summary, flow) reads the recorded one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

#: ``validate.scorer`` value that picks the highest-AUROC scorer.
BEST = "best"
#: ``clean.scorer`` value that uses the scorer the gate was decided on.
GATED = "gate"


@dataclass(frozen=True)
class Gate:
    """The gate's decision.

    Attributes
    ----------
    scorer
        The scorer the gate was decided on (``None``: no scorer produced scores).
    passed
        Whether cleaning may drop samples by this scorer's score.
    auroc, min_auroc
        Its AUROC on the injected noise, and the bar.
    reason
        One sentence for people.
    """

    scorer: str | None
    passed: bool
    auroc: float | None
    min_auroc: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``gate`` object of ``validation.json`` and ``clean.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Gate:
        """Read back :meth:`to_dict`'s form; missing keys mean a failed gate."""
        return cls(
            scorer=data.get("scorer"),
            passed=bool(data.get("passed", False)),
            auroc=data.get("auroc"),
            min_auroc=float(data.get("min_auroc", 1.0)),
            reason=str(data.get("reason") or "no gate recorded"),
        )


def best_scorer(results: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The label-error scorer with the highest AUROC (ties: the later name in sort order); ``None`` if none.

    Scorers whose result says ``ranks_label_errors: false`` (e.g. ``fz_influence``) are not candidates.
    """
    ranked = sorted((r.get("auroc") or 0.0, name) for name, r in results.items() if r.get("ranks_label_errors", True))
    return ranked[-1][1] if ranked else None


def decide_gate(
    results: Mapping[str, Mapping[str, Any]],
    choice: str,
    min_auroc: float,
    failures: Mapping[str, str] | None = None,
) -> Gate:
    """Apply the rule: the chosen scorer's AUROC must reach ``min_auroc``.

    Parameters
    ----------
    results
        Scorer name → detection metrics (at least ``auroc``, possibly ``None``).
    choice
        A scorer name, or :data:`BEST`.
    min_auroc
        The bar.
    failures
        Scorer name → why it produced no scores.
    """
    scorer = best_scorer(results) if choice == BEST else choice
    if scorer is None or scorer not in results:
        why = (failures or {}).get(scorer or "", "not configured") if scorer else "no scorer produced scores"
        return Gate(scorer, False, None, min_auroc, f"scorer {scorer!r} produced no scores ({why})")
    auroc = results[scorer].get("auroc")
    passed = auroc is not None and auroc >= min_auroc
    if passed:
        reason = "AUROC reaches the minimum"
    elif auroc is None:
        reason = "no AUROC: the injected noise flipped no label (or every label)"
    else:
        reason = f"AUROC {auroc:.4f} is below validate.min_auroc {min_auroc}"
    return Gate(scorer, passed, auroc, min_auroc, reason)


def cleaning_gate(validation: Mapping[str, Any], clean_scorer: str) -> Gate:
    """The gate for the scorer ``clean`` uses: the recorded one, or the same bar applied to another scorer."""
    recorded = Gate.from_dict(validation.get("gate") or {})
    if clean_scorer in (GATED, recorded.scorer):
        return recorded
    return decide_gate(validation.get("scorers") or {}, clean_scorer, recorded.min_auroc)
