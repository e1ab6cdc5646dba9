"""A rendered e-mail made safe to open offline: no remote images, stylesheets or scripts.

A preview is opened from a CI artifact, a report or a laptop on a train:
remote images would tell a tracker who looked (and show as broken boxes
without a network). ``relmail report`` and ``relmail preview`` both replace
every remote image reference with a grey placeholder the size of the image
(so the layout stays as the recipient sees it), drop remote stylesheets and
scripts, and turn remote ``url(...)`` in styles into ``none``.
"""

from __future__ import annotations

import re

#: A grey box the size of the image, so the layout stays as the recipient sees it.
PLACEHOLDER = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='160' height='40'%3E"
    "%3Crect width='100%25' height='100%25' fill='%23e5e7eb'/%3E%3C/svg%3E"
)

_REMOTE_ATTR = re.compile(r"""(\s(?:src|srcset|background|poster)\s*=\s*)(["'])\s*(?:https?:)?//[^"']*\2""", re.I)
_REMOTE_URL = re.compile(r"""url\(\s*(["']?)\s*(?:https?:)?//[^)"']*\1\s*\)""", re.I)
_LINK_TAG = re.compile(r"<link\b[^>]*>", re.I)
_SCRIPT = re.compile(r"<script\b.*?</script\s*>", re.I | re.S)


def offline_html(html: str) -> str:
    """``html`` with every remote image, stylesheet and script reference removed or replaced."""
    html = _SCRIPT.sub("", html)
    html = _LINK_TAG.sub("", html)
    html = _REMOTE_ATTR.sub(lambda m: f"{m.group(1)}{m.group(2)}{PLACEHOLDER}{m.group(2)}", html)
    return _REMOTE_URL.sub("none", html)
