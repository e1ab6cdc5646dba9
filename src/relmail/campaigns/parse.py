"""Campaign files (``campaigns/*.yml``) → :class:`~relmail.campaigns.model.Campaign`.

Validation names the file, the line and the key of every error.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticError

from ..errors import NotFound, Problem, ValidationError, did_you_mean, likely
from ..importers import fields
from ..rules import HARD, RULES
from ..score.transparent import DEFAULT_WEIGHTS
from ..yaml_keys import compose, data_of, repeated_keys
from .model import Campaign, Message, Policy, Scoring

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Cap = dict[Literal["7d", "30d"], int]


def _check_cap(value: Cap | None) -> Cap | None:
    if value is not None:
        for key, n in value.items():
            if n < 0:
                raise ValueError(f"cap '{key}' must be 0 or more")
        week, month = value.get("7d"), value.get("30d")
        if week is not None and month is not None and week > month:
            # Any 7 days lie within the last 30, so the 30-day cap stops the sends first: the 7-day
            # cap written could never apply, which is not what a marketer who wrote it meant.
            raise ValueError(f"the 7d cap ({week}) is above the 30d cap ({month}): no more than {month} e-mail(s) "
                             "can go in any 7 days, so the 7d cap would never apply; make it at most the 30d cap")
    return value


class _MessagePolicyModel(_Strict):
    min_relevance: float | None = Field(default=None, ge=0, le=1)
    topic_frequency_cap: Cap | None = None
    holdout_share: float | None = Field(default=None, ge=0, lt=1)
    contact_cost: float | None = Field(default=None, ge=0)
    fatigue_threshold: float | None = Field(default=None, ge=0, le=1)
    recent_complaint_days: int | None = Field(default=None, ge=1, le=365)
    consent: Literal["opt-in", "opt-out"] | None = None
    rules: dict[str, bool] | None = None
    model: Literal["auto", "off"] | None = None
    model_outcome: Literal["open", "click", "visit", "conversion"] | None = None
    irritation_cost: float | None = Field(default=None, ge=0)

    _cap = field_validator("topic_frequency_cap")(classmethod(lambda cls, v: _check_cap(v)))


class _PolicyModel(_MessagePolicyModel):
    frequency_cap: Cap | None = None
    max_messages_per_run: int | None = Field(default=None, ge=1)
    soft_bounce_limit: int | None = Field(default=None, ge=1)

    _gcap = field_validator("frequency_cap")(classmethod(lambda cls, v: _check_cap(v)))


class _ScoringModel(_Strict):
    weights: dict[Literal["consent", "affinity", "usage", "engagement", "recency"], float] = {}
    model_weight: float = Field(default=0.0, ge=0, le=1)

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, v: dict) -> dict:
        for key, w in v.items():
            if w < 0:
                raise ValueError(f"weight '{key}' must be 0 or more")
        return v


class _MessageModel(_Strict):
    id: str
    template: str
    subject: str | dict[str, str] | None = None
    topic: str
    segments: list[str] = Field(min_length=1)
    products: list[str] = []
    categories: list[str] = []
    feature: str | None = None
    offer: Literal["promotion", "new-customers-only", "loyalty", "service", "usage-tip"]
    priority: int = 0
    value: float = Field(default=1.0, ge=0)
    repeat_after_days: int | None = Field(default=None, ge=1)
    data: dict[str, Any] = {}
    policy: _MessagePolicyModel = _MessagePolicyModel()

    @model_validator(mode="before")
    @classmethod
    def _singulars(cls, data: Any) -> Any:
        # ``segment: x`` / ``category: x`` / ``product: x`` read as one-element lists.
        if isinstance(data, dict):
            for one, many in (("segment", "segments"), ("category", "categories"), ("product", "products")):
                if one in data and many not in data:
                    data = {**data, many: [data[one]]}
                    del data[one]
        return data

    @field_validator("id")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("use lower-case letters, digits, '-' and '_' (it names feature columns and links)")
        return v

    @model_validator(mode="after")
    def _usage_tip(self) -> _MessageModel:
        if self.offer == "usage-tip" and (not self.products or not self.feature):
            raise ValueError("a usage-tip message needs 'products' (what the customer owns) and 'feature' (what to use)")
        return self


class _CampaignModel(_Strict):
    title: str | None = None
    description: str = ""
    seed: int | None = None
    #: The cadence ``--window auto`` resolves with: the ISO week, the day or the month.
    schedule: Literal["weekly", "daily", "monthly"] = "weekly"
    policy: _PolicyModel = _PolicyModel()
    scoring: _ScoringModel = _ScoringModel()
    messages: list[_MessageModel] = Field(min_length=1)


def _line_map(root: yaml.Node | None) -> dict[tuple, int]:
    """(key, index, ...) path → 1-based line, from the YAML node tree."""
    lines: dict[tuple, int] = {}

    def walk(node: Any, path: tuple) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = path + (key.value,)
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
                lines[sub] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


def line_in_file(path: Path | None, loc: tuple) -> int | None:
    """The line of ``loc`` (``("messages", 1, "segments")``) in a campaign file, for problems found after parsing."""
    if path is None:
        return None
    try:
        lines = _line_map(compose(Path(path).read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    # A message may say 'segment:' for one segment.
    return _line_of(lines, loc) if loc in lines or loc[-1] != "segments" else _line_of(lines, (*loc[:-1], "segment"))


def missing_templates(camp: Campaign, templates_dir: Path) -> list[Problem]:
    """A problem per message whose template is not in ``templates_dir`` (neither its base file nor a locale variant).

    Named where the campaign names it (file, line, ``messages.N.template``): a misspelt name is the
    campaign's error (exit 4), whichever command finds it (``plan``, ``templates check``).
    """
    templates_dir = Path(templates_dir)
    missing = [(i, m) for i, m in enumerate(camp.messages)
               if not (templates_dir / f"{m.template}.html").is_file() and not any(templates_dir.glob(f"{m.template}.*.html"))]
    if not missing:
        return []
    known = ", ".join(sorted({f.name.split(".")[0] for f in templates_dir.glob("*.html")})) or "none"
    return [Problem(str(camp.path or camp.name), line_in_file(camp.path, ("messages", i, "template")), f"messages.{i}.template",
                    f"no template '{m.template}.html' in {templates_dir} (templates: {known})") for i, m in missing]


def missing_templates_error(campaigns: list[Campaign], problems: list[Problem]) -> ValidationError:
    """The error for campaigns naming templates that do not exist, with a problem each (:func:`missing_templates`)."""
    files = {p.file for p in problems}
    names = [c.name for c in campaigns if str(c.path or c.name) in files]
    which = f"campaign '{names[0]}' names" if len(names) == 1 else f"campaigns {', '.join(repr(n) for n in names)} name"
    return ValidationError(f"{which} templates that do not exist", problems)


def _line_of(lines: dict[tuple, int], loc: tuple) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


#: The model of each place a key can be misspelt: (top level | policy | scoring | a message | its policy).
_KEYS_AT: dict[tuple[str, ...], type[BaseModel]] = {
    (): _CampaignModel, ("policy",): _PolicyModel, ("scoring",): _ScoringModel, ("messages",): _MessageModel,
    ("messages", "policy"): _MessagePolicyModel,
}


def _unknown_key(loc: tuple) -> str:
    """An unknown key as a person reads it: the keys allowed there, the likely one, and where a key of another place goes."""
    key = str(loc[-1])
    place = tuple(p for p in loc[:-1] if isinstance(p, str))
    model = _KEYS_AT.get(place)
    if model is None:
        return f"unknown key '{key}'"
    allowed = sorted(model.model_fields)
    message = f"unknown key '{key}' (allowed: {', '.join(allowed)})"
    if model is _MessagePolicyModel and key in _PolicyModel.model_fields:
        return message + f"; '{key}' applies to the whole campaign: set it in the campaign's policy"
    return message + did_you_mean(likely(key, allowed))


def _said(err: dict) -> str:
    """A validation error as a person reads it: without pydantic's "Value error, " and with the value given."""
    if err.get("type") == "extra_forbidden":
        return _unknown_key(tuple(err["loc"]))
    message = err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    if err.get("type") != "missing" and isinstance(given, (str, int, float)) and not isinstance(given, bool):
        message += f" (got {given!r})"
    return message


def _is_locale(key: str) -> bool:
    """A key of a per-locale subject: a locale in any spelling customers' locales are read in (``pl``, ``de_AT``, ``de-AT``) or ``default``."""
    if key == "default":
        return True
    try:
        fields.locale(key)
    except fields.FieldError:
        return False
    return True


def parse_campaign(text: str, file: str = "<campaign>", name: str | None = None) -> Campaign:
    """Parse and validate a campaign's YAML text; ``name`` defaults to the file's stem."""
    # Composed once: the repeated keys, the lines and the data all come from this tree.
    try:
        root = compose(text)
        repeated = repeated_keys(root, file, lambda path: ".".join(map(str, path)))
        lines = _line_map(root)
        data = data_of(root)  # after the keys are read: a merge key rewrites the node
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ValidationError(f"{file}: invalid YAML", [Problem(file, line, None, str(getattr(exc, "problem", exc)))]) from None
    if not isinstance(data, dict):
        raise ValidationError(f"{file}: invalid campaign", [Problem(file, 1, None, "a campaign file is a mapping (name, policy, messages)")])
    if repeated:
        raise ValidationError(f"{file}: invalid campaign", repeated)
    try:
        model = _CampaignModel.model_validate(data)
    except PydanticError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
            problems.append(Problem(file, _line_of(lines, loc), ".".join(str(p) for p in loc) or None, _said(err)))
        raise ValidationError(f"{file}: invalid campaign", problems) from None
    problems: list[Problem] = []

    def check_rules(rules: dict[str, bool] | None, where: tuple) -> None:
        for code, on in (rules or {}).items():
            loc = where + ("rules", code)
            if code not in RULES:
                problems.append(Problem(file, _line_of(lines, loc), ".".join(map(str, loc)),
                                        f"unknown rule '{code}' (known: {', '.join(sorted(RULES))})"))
            elif code in HARD and not on:
                problems.append(Problem(file, _line_of(lines, loc), ".".join(map(str, loc)), f"'{code}' is a hard rule and cannot be turned off"))

    check_rules(model.policy.rules, ("policy",))
    seen: dict[str, int] = {}
    for i, m in enumerate(model.messages):
        check_rules(m.policy.rules, ("messages", i, "policy"))
        if isinstance(m.subject, dict):
            for key in m.subject:
                if not _is_locale(key):
                    loc = ("messages", i, "subject", key)
                    problems.append(Problem(file, _line_of(lines, loc), ".".join(map(str, loc)),
                                            f"'{key}' is not a locale (de, pl_PL, de-AT ...) or 'default': no customer would get this subject"))
        if m.id in seen:
            loc = ("messages", i, "id")
            problems.append(Problem(file, _line_of(lines, loc), ".".join(map(str, loc)),
                                    f"duplicate message id '{m.id}' (also messages.{seen[m.id]})"))
        seen.setdefault(m.id, i)
    if problems:
        raise ValidationError(f"{file}: invalid campaign", problems)

    base = Policy()
    overrides = {k: v for k, v in model.policy.model_dump().items() if v is not None}
    campaign_policy = replace(base, **overrides)
    messages = []
    for m in model.messages:
        own = {k: v for k, v in m.policy.model_dump().items() if v is not None}
        if "rules" in own:
            own["rules"] = {**campaign_policy.rules, **own["rules"]}
        messages.append(
            Message(
                id=m.id,
                template=m.template,
                subject=m.subject,
                topic=m.topic,
                segments=tuple(m.segments),
                offer=m.offer,
                policy=replace(campaign_policy, **own),
                products=tuple(m.products),
                categories=tuple(m.categories),
                feature=m.feature,
                priority=m.priority,
                value=m.value,
                repeat_after_days=m.repeat_after_days,
                data=dict(m.data),
            )
        )

    return Campaign(
        name=name or Path(file).stem,
        title=model.title or name or Path(file).stem,
        path=None,
        messages=tuple(messages),
        policy=campaign_policy,
        scoring=Scoring(weights={**DEFAULT_WEIGHTS, **model.scoring.weights}, model_weight=model.scoring.model_weight),
        description=model.description,
        seed=model.seed,
        schedule=model.schedule,
        digest=hashlib.sha256(text.encode()).hexdigest(),
    )


def campaign_path(project: Any, name: str) -> Path:
    """The file of campaign ``name`` (a name under ``campaigns/`` or a path to a .yml file)."""
    given = Path(name)
    if given.suffix in (".yml", ".yaml") and given.is_file():
        return given
    for ext in (".yml", ".yaml"):
        path = project.campaigns_dir / f"{name}{ext}"
        if path.is_file():
            return path
    have = sorted(p.stem for p in project.campaigns_dir.glob("*.y*ml")) if project.campaigns_dir.is_dir() else []
    raise NotFound(f"no campaign '{name}' in {project.campaigns_dir} (have: {', '.join(have) or 'none'})")


def load_campaign(project: Any, name: str) -> Campaign:
    """Load ``campaigns/<name>.yml`` of the project (or a campaign file path)."""
    path = campaign_path(project, name)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValidationError(f"{path}: not UTF-8 text") from None
    campaign = parse_campaign(text, file=str(path), name=path.stem)
    return replace(campaign, path=path)


def load_campaigns(project: Any) -> dict[str, Campaign]:
    """Every campaign of the project, by name."""
    folder = project.campaigns_dir
    if not folder.is_dir():
        return {}
    return {p.stem: load_campaign(project, str(p)) for p in sorted(folder.glob("*.y*ml"))}


def declared_messages(project: Any) -> dict[str, tuple[str, ...]]:
    """The message ids each campaign file declares, by campaign name.

    A file that does not load is left out: its problems are the plan's to
    report, and a look at a segment (``relmail segments show``) should not
    fail on them.
    """
    folder = project.campaigns_dir
    out: dict[str, tuple[str, ...]] = {}
    for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
        try:
            out[path.stem] = tuple(m.id for m in load_campaign(project, str(path)).messages)
        except ValidationError:
            continue
    return out
