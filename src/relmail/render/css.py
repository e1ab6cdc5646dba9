"""CSS inlining that keeps responsive e-mails responsive.

premailer does the heavy lifting (parsing the stylesheets, matching the
selectors, keeping what cannot be inlined), with three corrections that
templates from the ESP galleries need:

* **No ``!important`` in inlined declarations.** A ``style=`` attribute that
  says ``width:100% !important`` beats every media query of the head, so
  the phone layout never applies. Precedence is resolved while merging
  instead, as a browser does: an ``!important`` rule beats a plain rule of
  any specificity and a plain inline declaration of the template's own
  ``style=``; the result is written without the flag.
* **Leftover rules keep theirs.** Media queries and pseudo-classes stay in
  their ``<style>`` with every declaration ``!important``, so on a phone
  they still override the inlined desktop values.
* **Valid presentational attributes.** ``width``, ``height``, ``bgcolor``,
  ``align`` and ``valign`` (what Outlook's Word engine reads) are derived
  from the final inline style only where HTML allows that attribute on the
  element and only with a value HTML allows (``600``, ``100%``,
  ``#aabbcc``, ``center``, ``top`` ...). A value that does not translate
  (``auto``, ``calc(...)``, ``start``) leaves the template's own attribute
  as it was.

Specificity is CSS's own (cssselect's, ids/classes/elements), not
premailer's count of ``#`` and ``.`` characters.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict

_IMPORTANT = re.compile(r"\s*!\s*important\s*$", re.IGNORECASE)
_LENGTH = re.compile(r"^(\d+(?:\.\d+)?)(px)?$", re.IGNORECASE)
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")
_HEX = re.compile(r"^#([0-9a-f]{3}|[0-9a-f]{6})$", re.IGNORECASE)
_RGB = re.compile(r"^rgb\(\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*\)$", re.IGNORECASE)
_NAMED = re.compile(r"^[a-z]+$", re.IGNORECASE)
_NOT_A_COLOUR = {"transparent", "inherit", "initial", "unset", "currentcolor", "revert", "none"}

#: Where HTML (and the e-mail clients that read these attributes) allow each one.
ATTRIBUTE_TAGS = {
    "width": {"table", "td", "th", "img", "col", "colgroup", "hr", "iframe", "video", "canvas"},
    "height": {"table", "td", "th", "tr", "img", "iframe", "video", "canvas"},
    "bgcolor": {"body", "table", "tr", "td", "th"},
    "align": {"table", "tr", "td", "th", "div", "p", "img", "h1", "h2", "h3", "h4", "h5", "h6", "caption", "col", "hr"},
    "valign": {"tr", "td", "th", "tbody", "thead", "tfoot", "col", "colgroup"},
}
_ALIGN = {"left": "left", "center": "center", "right": "right", "justify": "justify", "start": "left", "end": "right"}
_VALIGN = {"top", "middle", "bottom", "baseline"}

#: premailer options used both at compile time and by the inline-after-render check.
PREMAILER_OPTIONS = dict(
    keep_style_tags=False,  # inlinable rules move into style=, leftovers stay in their <style>
    strip_important=False,  # leftovers keep !important; inlined values lose it in InlineCSS._merge
    disable_validation=True,  # keep e-mail-client CSS cssutils does not know
    allow_network=False,
    disable_link_rewrites=True,
    cssutils_logging_level=logging.CRITICAL,
    remove_classes=False,  # media queries select by class
    # The attributes are derived from the *merged* style (with the template's own style=) below.
    disable_basic_attributes=list(ATTRIBUTE_TAGS),
    align_floating_images=False,
    # premailer would drop "* { ... }" rules (neither inlined nor kept): inlined, they apply as in a browser.
    include_star_selectors=True,
)


def _split(value: str) -> tuple[str, bool]:
    """(the value without ``!important``, whether it had it)."""
    stripped = _IMPORTANT.sub("", value)
    return stripped, stripped != value


def attribute_value(name: str, css_value: str, placeholder: re.Pattern | None = None) -> str | None:
    """The HTML attribute value for a CSS value, or None when it has no valid one.

    A value that is a template placeholder as a whole (``{{ brand.color }}``
    before rendering) is kept: it is checked when it is known, by the
    inline-once equivalence check of ``relmail templates check``.
    """
    value = css_value.strip()
    if placeholder is not None and placeholder.fullmatch(re.sub(r"px$", "", value)):
        return re.sub(r"px$", "", value) if name in ("width", "height") else value
    if name in ("width", "height"):
        m = _LENGTH.match(value)
        if m:
            return str(round(float(m.group(1))))
        m = _PERCENT.match(value)
        return f"{m.group(1)}%" if m else None
    if name == "bgcolor":
        low = value.lower()
        m = _HEX.match(low)
        if m:
            digits = m.group(1)
            return "#" + ("".join(c * 2 for c in digits) if len(digits) == 3 else digits)
        m = _RGB.match(low)
        if m and all(int(g) <= 255 for g in m.groups()):
            return "#" + "".join(f"{int(g):02x}" for g in m.groups())
        return low if _NAMED.match(low) and low not in _NOT_A_COLOUR else None
    if name == "align":
        return _ALIGN.get(value.lower())
    if name == "valign":
        return value.lower() if value.lower() in _VALIGN else None
    return None


_FROM_CSS = {"width": "width", "height": "height", "background-color": "bgcolor", "text-align": "align", "vertical-align": "valign"}


def inline_css(document: str, placeholder: re.Pattern | None = None) -> str:
    """Inline the CSS of ``document`` (starting at ``<html``); returns it without a doctype."""
    import premailer
    from lxml import etree
    from premailer.merge_style import csstext_to_pairs

    class InlineCSS(premailer.Premailer):
        def _parse_style_rules(self, css_body, ruleset_index):
            rules, leftover = super()._parse_style_rules(css_body, ruleset_index)
            return [(_specificity(spec, selector), selector, bulk) for spec, selector, bulk in rules], leftover

    parser = etree.HTMLParser()
    stripped = document.strip()
    tree = etree.fromstring(stripped, parser).getroottree()
    page = tree.getroot()
    root = tree if stripped.startswith(tree.docinfo.doctype) else page
    # The template's own style= is merged after premailer, by the cascade's rules.
    own = {el: el.attrib.pop("style") for el in page.iter() if isinstance(el.tag, str) and "style" in el.attrib}
    InlineCSS(**PREMAILER_OPTIONS).transform(page)
    for el in page.iter():
        if not isinstance(el.tag, str):
            continue
        from_rules = el.attrib.get("style")
        if from_rules is None:
            if el in own:  # no rule matched: the template's style= as it was written
                el.attrib["style"] = own[el]
            continue
        merged = _merge(csstext_to_pairs(from_rules, validate=False) if from_rules else [],
                        csstext_to_pairs(own[el], validate=False) if el in own else [])
        if merged:
            el.attrib["style"] = "; ".join(f"{k}:{v}" for k, v in merged.items())
        else:
            el.attrib.pop("style", None)
        _attributes(el, merged, placeholder)
    return etree.tostring(root, method="html", pretty_print=False, encoding="utf-8").decode("utf-8")


def _specificity(spec: tuple, selector: str) -> tuple:
    """premailer's sort key with CSS's (ids, classes, elements) in the middle."""
    from cssselect import SelectorError, parse

    try:
        a, b, c = max(s.specificity() for s in parse(selector))
    except (SelectorError, ValueError):
        return spec
    return (spec[0], a, b, c, *spec[4:])


def _merge(from_rules: list[tuple[str, str]], own: list[tuple[str, str]]) -> OrderedDict[str, str]:
    """The cascade for one element: rules (sorted, ``!important`` last) then its own style=.

    An ``!important`` rule beats a plain declaration of the element's own
    style; the element's own ``!important`` beats everything. Inlined rule
    values are written without the flag; the template's own flag stays.
    """
    out: OrderedDict[str, tuple[str, bool, bool]] = OrderedDict()
    for name, value in from_rules:
        plain, important = _split(value)
        out[name] = (plain, important, False)
    for name, value in own:
        plain, important = _split(value)
        if name in out and out[name][1] and not important:
            continue
        out[name] = (plain, important, True)
    return OrderedDict(
        (name, f"{value} !important" if important and is_own else value)
        for name, (value, important, is_own) in out.items()
        if value.lower() != "unset"
    )


def _attributes(el, style: OrderedDict[str, str], placeholder: re.Pattern | None) -> None:
    tag = el.tag.lower()
    for prop, attr in _FROM_CSS.items():
        if prop not in style or tag not in ATTRIBUTE_TAGS[attr]:
            continue
        value = attribute_value(attr, _split(style[prop])[0], placeholder)
        if value is not None:
            el.attrib[attr] = value
