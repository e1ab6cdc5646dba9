"""Check the project's own page templates (``templates/pages/``) before a customer opens them.

A page template that fails would otherwise be found by the first customer
who clicks "unsubscribe". :func:`check_pages` reports the translations of
``templates/pages/locale/`` that Babel's checkers refuse, compiles every file of
``templates/pages/`` and renders every page in every language with a
catalogue, in each state the app renders it in (a topic link and an
"everything" link, each ``refused.html`` reason, the preference page empty,
saved with changes, saved without and with an error). It returns one
:class:`~relmail.web.pages.PageTemplateError` per problem, naming the file
and line; ``relmail templates check`` reports them and ``relmail serve``
warns about them at start.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..feedback.consent import Change, PreferenceState
from .pages import Pages, PageTemplateError

if TYPE_CHECKING:
    from ..project import Project

def sample_contexts(pages: Pages, lang: str, slugs: list[str]) -> Iterator[tuple[str, dict]]:
    """(page, context) for every state the app renders each page in."""
    topics = pages.topics(slugs or ["newsletter"], lang)
    first = topics[0]
    url = "../preferences/sample"
    for topic in (first, None):
        yield "unsubscribe.html", {"topic": topic, "preferences_url": url}
        yield "unsubscribed.html", {"topic": topic, "preferences_url": url}
        for reason in ("not-one-click", "trial"):
            yield "refused.html", {"topic": topic, "preferences_url": url, "reason": reason}
    yield "refused.html", {"preferences_url": url, "reason": "not-the-form"}
    labels = {t.slug: t.label for t in topics}
    state = PreferenceState("sample", topics={t.slug: i % 2 == 0 for i, t in enumerate(topics)}, max_per_week=3)
    changes = [Change("topic", first.slug, on=True), Change("topic", first.slug, on=False), Change("all", on=False),
               Change("all", on=True), Change("limit", limit=1), Change("limit", limit=5), Change("limit", limit=None)]
    for saved, error, done in ((False, False, []), (True, False, changes), (True, False, []), (False, True, [])):
        yield "preferences.html", {"topics": topics, "labels": labels, "state": state, "changes": done, "saved": saved, "error": error}
    yield "invalid.html", {}
    yield "unavailable.html", {}


def check_pages(project: Project) -> list[PageTemplateError]:
    """Problems of the project's page templates and translations, each naming file and line (none without ``templates/pages/``)."""
    from ..feedback.consent import topic_defaults

    pages = Pages(project)
    pages.log_problems = False
    own = pages.own_templates()
    if not own and not (pages.overrides / "locale").is_dir():
        return []
    found: dict[str, PageTemplateError] = {}
    for lang in pages.languages() or ["en"]:
        env = pages.environment(lang)
        for problem in pages.catalog_problems:
            found.setdefault(str(problem), problem)
        for path in own:
            try:
                env.get_template(path.name)
            except Exception as exc:  # syntax errors, with file and line
                err = pages.template_error(exc, path.name)
                found.setdefault(str(err), err)
        for name, context in sample_contexts(pages, lang, list(topic_defaults(project))):
            try:
                pages._render(env, name, lang, context)
            except Exception as exc:
                err = pages.template_error(exc, name)
                found.setdefault(str(err), err)
    return list(found.values())
