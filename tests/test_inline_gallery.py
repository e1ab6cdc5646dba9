"""CSS inlining on gallery-style templates: no !important inlined, valid attributes, phones still get their layout.

The templates in tests/data/gallery have the shape of the free ESP gallery
templates (see its README). Each is rendered through the real inline-once
renderer; the checks read the e-mail's HTML, and headless Chromium shows
the inlined e-mail and the same e-mail without inlining at a phone's and a
desktop's width: every measured element must come out the same, and the
media queries' phone layout must really apply.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import lxml.html
import pytest

from relmail.project import Project, init_project
from relmail.render import CustomerContext, MessageSpec, Renderer
from relmail.render.css import ATTRIBUTE_TAGS, attribute_value
from relmail.render.environment import template_from_source

GALLERY = Path(__file__).parent / "data" / "gallery"
TEMPLATES = ("wrapper", "columns", "receipt")
PRODUCTS = [
    {"id": "EB-200", "name": "E-bike Stad 200", "price": 2499.0, "url": "https://fietsenwinkel.example/p/EB-200", "category": "e-bikes"},
    {"id": "LOCK-S1", "name": "SlimSlot S1 smart lock", "price": 129.0, "url": "https://fietsenwinkel.example/p/LOCK-S1", "category": "accessories"},
]


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Renderer:
    project = init_project(tmp_path_factory.mktemp("gallery") / "shop")
    for path in GALLERY.glob("*.html"):
        shutil.copy(path, project.templates_dir / path.name)
    return Renderer(Project.load(project.root), signing_key="gallery-test")


def spec(template: str) -> MessageSpec:
    return MessageSpec(id=template, template=template, topic="promotions", campaign_id="gallery", run_id="gallery:1")


CUSTOMER = CustomerContext("C0000001", "jan@example.nl", "Jan", "de Vries", "en_GB", recommended_products=PRODUCTS)


def inlined(renderer: Renderer, template: str) -> str:
    return renderer.render(spec(template), CUSTOMER).html


def not_inlined(renderer: Renderer, template: str) -> str:
    """The same e-mail rendered from the template as written: the stylesheet in the head, nothing inlined."""
    compiled = renderer.compile(spec(template), CUSTOMER.locale)
    variables = renderer.context(compiled, CUSTOMER, renderer.links.token(CUSTOMER.id, "promotions", "gallery:1"))
    return template_from_source(renderer.html_env, compiled.flat_source, compiled.html_file).render(variables)


def probes(html: str) -> dict[str, lxml.html.HtmlElement]:
    doc = lxml.html.document_fromstring(html)
    return {el.get("data-probe"): el for el in doc.iter() if isinstance(el.tag, str) and el.get("data-probe")}


def styles(el) -> dict[str, str]:
    return dict(tuple(p.strip() for p in d.split(":", 1)) for d in (el.get("style") or "").split(";") if ":" in d)


# -- the inlined HTML ------------------------------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATES)
def test_no_important_in_inline_styles_or_attributes_and_every_attribute_is_valid_for_its_element(gallery, template):
    html = inlined(gallery, template)
    assert "!important" in not_inlined(gallery, template)  # the template relies on it
    doc = lxml.html.document_fromstring(html)
    derived = 0
    for el in doc.iter():
        if not isinstance(el.tag, str):
            continue
        for name, value in el.attrib.items():
            assert "important" not in value.lower(), (el.tag, name, value)
            if name in ATTRIBUTE_TAGS:
                assert el.tag in ATTRIBUTE_TAGS[name], f"{name} on <{el.tag}>"
                assert attribute_value(name, value) == value, f"{el.tag} {name}={value!r}"
                derived += 1
    assert derived >= 8


def test_wrapper_template_attributes_and_styles(gallery):
    p = probes(inlined(gallery, "wrapper"))
    assert (p["wrapper"].get("width"), styles(p["wrapper"])["width"]) == ("100%", "100%")
    assert p["body"].get("bgcolor") == "#eceff1" and styles(p["body"])["margin"] == "0"
    assert (p["container"].get("width"), styles(p["container"])["width"]) == ("600", "600px")
    # width: auto !important has no HTML attribute value: the attribute is left out, the style stays.
    assert p["button"].get("width") is None and styles(p["button"])["width"] == "auto"
    assert (p["header"].get("align"), p["header"].get("bgcolor")) == ("center", "#263238")
    assert (p["footer"].get("align"), p["footer"].get("valign")) == ("center", "top")
    assert p["spacer"].get("height") is None and styles(p["spacer"])["height"] == "24px"  # no height= on a <div>


def test_columns_template_resolves_important_against_specificity_and_the_templates_own_style(gallery):
    p = probes(inlined(gallery, "columns"))
    assert p["body-wrap"].get("bgcolor") == "#f5f5f0"  # rgb(245, 245, 240)
    assert p["column-1"].get("bgcolor") is None  # transparent is no colour
    assert p["column-1"].get("valign") is None and "valign" not in p["column-cell-1"].attrib  # text-top has none
    assert p["column-cell-1"].get("align") == "left"  # text-align: start
    price = styles(p["price-1"])
    # td.price {text-align:center !important} beats both the more specific plain rule and style="text-align:left".
    assert price["text-align"] == "center" and p["price-1"].get("align") == "center"
    assert price["padding"] == "4px 24px"  # the element's own style= beats a plain rule
    assert styles(p["muted"])["padding"] == "30px"
    assert p["hero"].get("width") == "640" and p["hero"].get("height") is None  # height: auto


def test_receipt_template_attributes(gallery):
    p = probes(inlined(gallery, "receipt"))
    assert p["container"].get("width") == "580" and styles(p["container"])["display"] == "block"
    assert p["invoice"].get("width") == "80%"
    assert (p["title"].get("height"), p["title"].get("valign"), p["title"].get("align")) == ("40", "middle", "center")
    assert p["line-1"].get("align") == "right" and p["total"].get("align") == "right"
    assert "align" not in p["content"].attrib  # a <div> with text-align gets no align=


@pytest.mark.parametrize("template", TEMPLATES)
def test_media_queries_stay_in_the_head_with_important_and_mso_conditionals_are_untouched(gallery, template):
    html = inlined(gallery, template)
    source = (GALLERY / f"{template}.html").read_text()
    head = html[: html.index("</head>")]
    media = head[head.index("@media"):]
    declarations = re.findall(r"[a-z-]+\s*:\s*[^;{}]+", media[media.index("{") + 1:])
    assert declarations and all("!important" in d for d in declarations), declarations
    # Every conditional comment comes out as written (with two products, the one between columns once).
    blocks = re.findall(r"<!--\[if [^\]]+\]>.*?<!\[endif\]-->", source, re.S)
    assert blocks and html.count("<!--[if") == len(blocks)
    for block in blocks:
        assert block in html


# -- in a browser ------------------------------------------------------------------------------

MEASURE = """(() => {
  const out = {};
  document.querySelectorAll('[data-probe]').forEach(el => {
    const cs = getComputedStyle(el), r = el.getBoundingClientRect();
    out[el.dataset.probe] = {width: Math.round(r.width * 10) / 10, display: cs.display, paddingLeft: cs.paddingLeft,
      paddingTop: cs.paddingTop, fontSize: cs.fontSize, textAlign: cs.textAlign};
  });
  return out;
})()"""


def test_every_media_query_override_still_applies_on_a_phone_in_chromium(gallery, browser, tmp_path):
    seen = {}
    for template in TEMPLATES:
        (tmp_path / f"{template}.inlined.html").write_text(inlined(gallery, template))
        (tmp_path / f"{template}.source.html").write_text(not_inlined(gallery, template))
        for width in (375, 800):
            measured = {}
            for kind in ("source", "inlined"):
                browser.show(tmp_path / f"{template}.{kind}.html", width)
                measured[kind] = browser.evaluate(MEASURE)
            assert measured["inlined"] == measured["source"], (template, width)
            seen[(template, width)] = measured["inlined"]
    # The phone layout really is the phone layout (so the equality above is not two equal desktop layouts).
    phone, desktop = seen[("wrapper", 375)], seen[("wrapper", 800)]
    assert desktop["container"]["width"] == 600 and phone["container"]["width"] == 375
    assert (desktop["content"]["paddingLeft"], phone["content"]["paddingLeft"]) == ("48px", "16px")
    assert (desktop["content"]["fontSize"], phone["content"]["fontSize"]) == ("16px", "15px")
    assert (desktop["header"]["paddingTop"], phone["header"]["paddingTop"]) == ("32px", "20px")
    assert phone["button"]["width"] > desktop["button"]["width"]
    assert (desktop["thumb-1"]["display"], phone["thumb-1"]["display"]) == ("table-cell", "none")
    phone, desktop = seen[("columns", 375)], seen[("columns", 800)]
    assert desktop["column-1"]["width"] == 320 and phone["column-1"]["width"] == phone["main"]["width"]
    assert (desktop["column-1"]["display"], phone["column-1"]["display"]) == ("inline-block", "block")
    assert (desktop["column-cell-1"]["paddingLeft"], phone["column-cell-1"]["paddingLeft"]) == ("24px", "16px")
    assert desktop["hero"]["width"] == 640 and phone["hero"]["width"] == phone["main"]["width"]
    assert desktop["price-1"]["textAlign"] == "center"
    phone, desktop = seen[("receipt", 375)], seen[("receipt", 800)]
    assert phone["invoice"]["width"] > desktop["invoice"]["width"] * 0.9 * 375 / 800
    assert (desktop["content"]["paddingLeft"], phone["content"]["paddingLeft"]) == ("20px", "10px")
