"""Typed options of every pipeline stage: the one home of defaults, types, ranges and descriptions.

``params.yaml`` has one section per stage; each section is validated by one
model below (unknown keys, wrong types and out-of-range values are one-line
:class:`~memclean.errors.MemcleanError`\\ s), and :class:`PipelineParams`
validates the whole file, including the checks that span sections (a scorer
named in ``validate`` or ``clean`` must be one that ``score`` runs).

The library takes explicit inputs: :func:`load_params` reads the file it is
given. The README's parameter tables are rendered by :func:`params_markdown`
(a test keeps them in sync).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import fields as dataclass_fields
from dataclasses import is_dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from memclean.ensemble import EnsembleConfig
from memclean.errors import MemcleanError, describe_validation_error
from memclean.hashing import HASH_METHODS, PROCESSES_FROM
from memclean.imaging import DEFAULT_ALLOWED_FORMATS
from memclean.ingest import IngestOptions
from memclean.noise import NOISE_KINDS
from memclean.scores import COMBINED, available, defaults, describe, heldout_scorers, resolve_scorers, scorer_class
from memclean.sources import SOURCES
from memclean.trainconfig import TrainConfig

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
#: Largest image side accepted for ``ingest.image_size`` (a 4096×4096×3 array is 48 MiB per image).
MAX_IMAGE_SIDE = 4096


class Section(BaseModel):
    """Base of every params section: unknown keys are errors; values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _image_size(value: Any) -> Any:
    """``auto``/null, a side, or ``[height, width]``, each side in 1..MAX_IMAGE_SIDE."""
    if value is None or value == "auto":
        return "auto"
    sides = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        isinstance(sides, list | tuple)
        and len(sides) in (1, 2)
        and all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_IMAGE_SIDE for s in sides)
    ):
        return value if isinstance(value, int) else list(value)
    raise ValueError(f"must be 'auto', a side or [height, width], each side from 1 to {MAX_IMAGE_SIDE}")


def _scalar_list(value: Any) -> Any:
    """A YAML list of scalars as strings; a bare string is an error, not a list of characters."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError("must be a list, e.g. [cat, dog]")
    if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in value):
        raise ValueError("must be a list of names")
    return [str(v) for v in value]


class IngestParams(Section):
    """The ``ingest`` section: where the data is and how images are decoded."""

    source: Literal[SOURCES] = Field("digits", description="digits, imagefolder, manifest, idx or hf-parquet")  # type: ignore[valid-type]
    root: str | None = Field(None, description="dataset root (folder, or a .parquet file for hf-parquet)")
    manifest: str | None = Field(None, description="CSV/Parquet with path,label[,split] (source: manifest)")
    classes: Annotated[list[str] | None, pydantic.BeforeValidator(_scalar_list)] = Field(
        None, description="class names in label order; null = infer from the data"
    )
    image_column: str | None = Field(None, description="hf-parquet image column; null = 'img' or 'image'")
    label_column: str = Field("label", min_length=1, description="hf-parquet label column")
    image_size: Annotated[str | int | list[int], pydantic.BeforeValidator(_image_size)] = Field(
        "auto", description="auto (most common size), N, or [height, width]"
    )
    channels: Literal["auto", 1, 3] = Field("auto", description="auto (1 if every image is grey, else 3), 1 or 3")
    max_image_pixels: int = Field(
        IngestOptions.max_image_pixels, ge=1, description="decompression-bomb limit (width*height)"
    )
    allowed_formats: Annotated[list[str], pydantic.BeforeValidator(_scalar_list)] = Field(
        list(DEFAULT_ALLOWED_FORMATS), min_length=1, description="Pillow formats that are decoded"
    )
    alpha_background: int = Field(
        IngestOptions.alpha_background, ge=0, le=255, description="grey level transparent pixels are composited onto"
    )
    max_quarantine_fraction: Fraction = Field(0.05, description="fail the stage above this quarantined fraction")

    @field_validator("allowed_formats")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return [v.upper() for v in value]

    def options(self) -> IngestOptions:
        """The decoding options the library's :func:`memclean.ingest.ingest` takes."""
        size = self.image_size
        shape: tuple[int, int] | None = None
        if isinstance(size, int):
            shape = (size, size)
        elif isinstance(size, list):
            shape = (int(size[0]), int(size[-1]))
        return IngestOptions(
            image_size=shape,
            channels=None if self.channels == "auto" else int(self.channels),
            max_image_pixels=self.max_image_pixels,
            allowed_formats=frozenset(self.allowed_formats),
            alpha_background=self.alpha_background,
        )


def _check_device(value: str) -> str:
    """A torch device name memclean accepts (``auto`` picks CUDA when available)."""
    if not _DEVICE.match(value):
        raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
    return value


#: A torch device name (``auto``, ``cpu``, ``mps``, ``cuda``, ``cuda:N``), checked by :func:`_check_device`.
Device = Annotated[str, pydantic.AfterValidator(_check_device)]


class DedupParams(Section):
    """The ``dedup`` section: exact, near and similar duplicates (pairs first, then chain-free groups)."""

    hash: Literal[HASH_METHODS] = Field("phash", description="phash, dhash, whash or average_hash (64-bit)")  # type: ignore[valid-type]
    max_distance: int = Field(
        4, ge=0, le=32, description="Hamming radius of hash candidates (each verified; 0 = identical hashes)"
    )
    min_pixel_std: float = Field(2.0, ge=0.0, description="flatter images are kept out of near groups")
    knn_k: int = Field(8, ge=0, le=200, description="pixel-space nearest neighbours per image taken as candidates")
    knn_shifts: bool = Field(
        True, description="also query shifted copies of each image in the kNN (finds shifts/crops; 5x kNN time)"
    )
    embedding: Literal["auto"] | bool = Field(
        False,
        description="also take knn_k neighbours in a copy-detection embedding trained on the images "
        "(SimCLR-style): more recall on crops and combined edits, but more different shots called near; "
        "auto = on where CUDA is present (on a CPU: about 3 s per epoch per 1,000 images)",
    )
    embedding_epochs: int = Field(4, ge=1, le=1000, description="training epochs of the copy-detection embedding")
    knn_per_variant: int | None = Field(
        None,
        ge=0,
        le=200,
        description="each kNN query's (image, mirror, shifts) own best N neighbours are candidates too "
        "(at most knn_k; finds shifted/cropped copies that look-alikes outrank); null = 1 under 200,000 images, "
        "else 0",
    )
    near_threshold: float = Field(
        0.70, ge=-1.0, le=1.0, description="verified similarity of a near pair (a copy after edits): grouped"
    )
    similar_threshold: float = Field(
        0.50, ge=-1.0, le=1.0, description="verified similarity of a similar pair (same scene): reported, not grouped"
    )
    max_group_size: int = Field(100, ge=2, description="largest near group; verified partners beyond it are logged")
    min_hash_side: int = Field(
        32, ge=1, description="images with a shorter side get no hash candidates (phash works on 32x32)"
    )
    small_near_threshold: float = Field(
        0.97, ge=-1.0, le=1.0, description="near threshold for images under min_hash_side (look-alikes score high)"
    )
    colour_tolerance: float | None = Field(
        0.12,
        ge=0.0,
        description="colour gap (mean colour; brightness/contrast do not count) above which a pair needs "
        "recoloured_near_threshold to be near; null = no colour check",
    )
    recoloured_near_threshold: float = Field(
        0.85,
        ge=-1.0,
        le=1.0,
        description="near threshold of pairs beyond the colour tolerance (at least near_threshold)",
    )
    local_threshold: float | None = Field(
        0.75,
        ge=-1.0,
        le=1.0,
        description="a near pair also needs every detailed quarter of its fine check to correlate this well "
        "(another shot matches as a whole, not where the subject moved); null = no local check",
    )
    device: Device = Field("cpu", description="torch device of the pixel search: cpu, auto (CUDA when available), cuda")
    executor: Literal["auto", "local", "processes", "dask"] = Field(
        "auto",
        description=f"where hashing runs, sharded by rows (same bytes everywhere): auto = processes from "
        f"{PROCESSES_FROM:,} images on a multi-core machine, else local; processes; dask",
    )
    dask_address: str | None = Field(None, description="Dask scheduler address (executor: dask); null = a LocalCluster")

    @model_validator(mode="after")
    def _thresholds(self) -> DedupParams:
        if self.similar_threshold > self.near_threshold:
            raise ValueError("similar_threshold must not exceed near_threshold")
        return self


class ScoreParams(Section):
    """The ``score`` section: the proxy network and the scorers computed on its training run."""

    device: Device = Field("auto", description="auto (CUDA when available), cpu, cuda, cuda:N or mps")
    trainer: TrainConfig = Field(default_factory=TrainConfig, description="the proxy CNN")
    ensemble: EnsembleConfig = Field(
        default_factory=EnsembleConfig, description="subset ensemble, trained only when an enabled scorer needs it"
    )
    scorers: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: resolve_scorers(None),
        description="every registered scorer runs; name: {params} overrides its defaults, name: false skips it",
    )
    combine: list[str] | None = Field(None, description="inputs of `combined`; null = every other scorer")

    @field_validator("trainer", "ensemble", mode="before")
    @classmethod
    def _trainer(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("scorers", mode="before")
    @classmethod
    def _scorers(cls, value: Any) -> dict[str, dict[str, Any]]:
        if value is not None and not isinstance(value, Mapping):
            raise ValueError("must map scorer names to their params (or false to skip one)")
        try:
            return resolve_scorers(value)
        except MemcleanError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _combine(self) -> ScoreParams:
        if self.combine is not None:
            if not self.combine:
                raise ValueError("score.combine must name at least one scorer, or be null")
            missing = [n for n in self.combine if n not in self.scorers or n == COMBINED]
            if missing:
                raise ValueError(f"score.combine names scorers that score.scorers does not run: {missing}")
        return self

    @property
    def scorer_names(self) -> list[str]:
        """Names of the scorers this section runs (``combined`` included)."""
        return list(self.scorers)


class InjectParams(Section):
    """The ``inject`` section: synthetic mislabels for validation."""

    kind: Literal[NOISE_KINDS] = Field(  # type: ignore[valid-type]
        "symmetric", description="symmetric, asymmetric or instance (towards the class the score ensemble confuses)"
    )
    rate: float = Field(
        0.1, ge=0.0, lt=1.0, description="exact fraction of ok rows flipped (only rows not suspected beforehand flip)"
    )
    seed: int = Field(0, ge=0, description="seed of the flips")
    pairs: dict[int, int] | None = Field(None, description="asymmetric: {from_class: to_class}; null = c -> c+1 mod K")


class ValidateParams(Section):
    """The ``validate`` section: the gate on the injected noise."""

    scorer: str = Field("best", min_length=1, description="scorer cleaning will use; best = highest AUROC")
    min_auroc: Fraction = Field(
        0.9, description="gate: AUROC among rows not suspected beforehand; below this, cleaning drops nothing by score"
    )
    mode: Literal["auto", "retrain", "heldout"] = Field(
        "auto",
        description="retrain: train and score again on the noisy labels (every scorer); heldout: no training, "
        "the out-of-sample ensemble scorers (cscore, confident_learning) rescored from score's ensemble; "
        "auto: heldout on a CPU when those scorers run (and validate.scorer/clean.scorer allow it), else retrain",
    )


class CleanParams(Section):
    """The ``clean`` section: the cleaning rules (see :mod:`memclean.policy`)."""

    scorer: str = Field("gate", min_length=1, description="scorer whose score drops samples; gate = the one validated")
    score_action: Literal["drop", "flag"] = Field("drop", description="drop, or flag (keep and mark suspected)")
    target_precision: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="threshold = lowest score whose rows are estimated to reach this precision on this data "
        "(false positives estimated from validate's unflipped rows)",
    )
    likely_rule: Literal["disagreement", "confident_learning"] = Field(
        "disagreement",
        description="a suspected row is likely mislabeled when the ensemble's out-of-sample prediction is another "
        "class (disagreement) or when confident learning marks it (stricter); otherwise atypical, kept",
    )
    max_drop_fraction: Fraction = Field(0.05, description="cap on samples dropped by score (fraction of ok rows)")
    drop_heldout_by_score: bool = Field(
        False, description="also drop rows of held-out splits (test, val...) by score; false = only flag them"
    )
    drop_exact_duplicates: bool = Field(True, description="keep one of each set of identical images")
    drop_near_duplicates: Literal["auto"] | bool = Field(
        "auto",
        description="keep one of each near-duplicate group within a split (edited copies of one photo); auto: on "
        "when dedup verified the images as photos (at least dedup.min_hash_side), off for smaller ones; false: "
        "near groups are only reported",
    )
    drop_conflicting_duplicates: bool = Field(True, description="drop duplicate groups whose labels disagree")
    drop_split_leaks: bool = Field(True, description="drop the train side of groups that reach a held-out split")
    export: Literal["none", "imagefolder", "parquet"] = Field(
        "none", description="none, imagefolder or parquet (kept samples under data/clean/export)"
    )


class ReportParams(Section):
    """The ``report`` section: what the audit report shows."""

    top_suspects: int = Field(48, ge=0, le=2000, description="images in the top-suspects grid")
    duplicate_groups: int = Field(12, ge=0, le=500, description="duplicate groups shown side by side")


def _section(value: Any) -> Any:
    """An empty section (``ingest:`` with nothing under it) means all defaults."""
    return {} if value is None else value


class PipelineParams(Section):
    """The whole ``params.yaml``: one section per stage, plus the checks that span sections."""

    ingest: Annotated[IngestParams, pydantic.BeforeValidator(_section)] = Field(default_factory=IngestParams)
    dedup: Annotated[DedupParams, pydantic.BeforeValidator(_section)] = Field(default_factory=DedupParams)
    score: Annotated[ScoreParams, pydantic.BeforeValidator(_section)] = Field(default_factory=ScoreParams)
    inject: Annotated[InjectParams, pydantic.BeforeValidator(_section)] = Field(default_factory=InjectParams)
    validate_: Annotated[ValidateParams, pydantic.BeforeValidator(_section)] = Field(
        default_factory=ValidateParams, alias="validate"
    )
    clean: Annotated[CleanParams, pydantic.BeforeValidator(_section)] = Field(default_factory=CleanParams)
    report: Annotated[ReportParams, pydantic.BeforeValidator(_section)] = Field(default_factory=ReportParams)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def _heldout_allowed(self) -> list[str]:
        """Scorers that ``validate.mode: heldout`` measures: the out-of-sample ones (and ``combined`` of them)."""
        runs = self.score.scorer_names
        fast = heldout_scorers(runs)
        return [*fast, COMBINED] if len(fast) > 1 and COMBINED in runs else fast

    def _named_scorers(self) -> list[tuple[str, str]]:
        """``validate.scorer`` and ``clean.scorer`` when they name a scorer (not ``best``/``gate``)."""
        named = (("validate.scorer", self.validate_.scorer), ("clean.scorer", self.clean.scorer))
        return [(key, name) for key, name in named if name not in ("best", "gate")]

    def validate_mode(self, device_type: str) -> Literal["retrain", "heldout"]:
        """The validation that runs: ``validate.mode``, with ``auto`` resolved for ``device_type``.

        ``device_type`` is the type (``cpu``, ``cuda``, ``mps``) of the device the score stage
        trained on, as its report records it.

        ``auto`` is ``heldout`` on a CPU when an out-of-sample ensemble scorer runs and
        ``validate.scorer``/``clean.scorer`` name none outside them: there a second scoring run
        costs as much as the first (minutes to hours) while ``heldout`` costs seconds. On CUDA,
        where training again is cheap, it is ``retrain``, which also measures the in-sample scorers.
        """
        mode = self.validate_.mode
        if mode != "auto":
            return mode
        allowed = self._heldout_allowed()
        fits = bool(allowed) and all(name in allowed for _, name in self._named_scorers())
        return "heldout" if device_type == "cpu" and fits else "retrain"

    @model_validator(mode="after")
    def _scorer_names(self) -> PipelineParams:
        runs = self.score.scorer_names
        if self.validate_.scorer != "best" and self.validate_.scorer not in runs:
            raise ValueError(
                f"validate.scorer {self.validate_.scorer!r} is not run by score.scorers ({', '.join(runs)})"
            )
        if self.validate_.mode == "heldout":
            allowed = self._heldout_allowed()
            if not allowed:
                raise ValueError(
                    "validate.mode: heldout rescores the out-of-sample ensemble scorers, but score.scorers runs "
                    "none: enable cscore or confident_learning, or use validate.mode: retrain"
                )
            for key, name in self._named_scorers():
                if name not in allowed:
                    raise ValueError(
                        f"{key} {name!r} is not validated in validate.mode: heldout (only {', '.join(allowed)})"
                    )
        if self.clean.scorer != "gate" and self.clean.scorer not in runs:
            raise ValueError(f"clean.scorer {self.clean.scorer!r} is not run by score.scorers ({', '.join(runs)})")
        if self.inject.kind == "instance" and not any(
            name != COMBINED and scorer_class(name).needs == "ensemble" for name in runs
        ):
            raise ValueError(
                "inject.kind: instance follows the subset ensemble's confusions, but score.scorers runs no "
                "ensemble scorer: enable one (e.g. cscore: {}) or pick symmetric/asymmetric"
            )
        return self

    def section(self, name: str) -> dict[str, Any]:
        """One section as plain JSON-ready values (what the stage's digest and ``dvc.lock`` see)."""
        return getattr(self, "validate_" if name == "validate" else name).model_dump(mode="json")


#: Section names in pipeline order, as they appear in ``params.yaml``.
SECTIONS: tuple[str, ...] = ("ingest", "dedup", "score", "inject", "validate", "clean", "report")


def parse_params(raw: Any, source: str = "params.yaml") -> PipelineParams:
    """Validate already-loaded params (a mapping of sections).

    Raises
    ------
    MemcleanError
        One line naming every bad key, e.g.
        ``params.yaml: score.trainer.epochs: Input should be a valid integer (got 'ten')``.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise MemcleanError(f"{source}: must be a mapping of sections ({', '.join(SECTIONS)})")
    try:
        return PipelineParams.model_validate(dict(raw))
    except pydantic.ValidationError as exc:
        raise MemcleanError(
            f"{source}: {describe_validation_error(exc, '').replace('validate_', 'validate')}"
        ) from None


def read_params_yaml(path: str | Path) -> Any:
    """Load a params file as YAML (PyYAML's safe loader, as DVC reads it); one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise MemcleanError(f"{path} not found: run from the project folder, or pass the params file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise MemcleanError(f"{path}: invalid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise MemcleanError(f"{path}: not UTF-8 text") from None


def load_params(path: str | Path) -> PipelineParams:
    """Read and validate a whole params file (every section, before any stage runs)."""
    return parse_params(read_params_yaml(path), str(path))


# --------------------------------------------------------------------------- documentation


def _rows(prefix: str, model: Any) -> Iterator[tuple[str, Any, str]]:
    """``(dotted key, default, description)`` for every field of a model or pydantic dataclass."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        for name, info in model.model_fields.items():
            key = f"{prefix}.{info.alias or name}"
            if is_dataclass(info.annotation):
                yield from _rows(key, info.annotation)
            elif name == "scorers":
                yield key, None, info.description or ""
                for scorer in available():
                    yield from _rows(f"{key}.{scorer}", scorer_class(scorer).Params)
            else:
                default = info.get_default(call_default_factory=True)
                yield key, default, info.description or ""
    elif is_dataclass(model):
        infos = getattr(model, "__pydantic_fields__", {})
        for f in dataclass_fields(model):
            text = getattr(infos.get(f.name), "description", None) or ""
            yield f"{prefix}.{f.name}", f.default, text


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def params_markdown() -> str:
    """The README's parameter tables (one per section), rendered from the models."""
    out: list[str] = []
    for name in SECTIONS:
        model = PipelineParams.model_fields["validate_" if name == "validate" else name].annotation
        model = getattr(model, "__origin__", model)
        out += [f"**`{name}`**", "", "| key | default | meaning |", "|---|---|---|"]
        for key, default, text in _rows(name, model):
            out.append(f"| `{key}` | `{_yaml_value(default)}` | {text} |")
        out.append("")
    shown = [f"`{n}` ({describe(n)}{'' if n in defaults() else '; opt-in'})" for n in available()]
    out.append("Scorers: " + ", ".join([*shown, f"`{COMBINED}` ({describe(COMBINED)})"]) + ".")
    return "\n".join(out) + "\n"
