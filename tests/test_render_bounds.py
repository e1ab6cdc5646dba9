"""Bounds on every render: a template typo fails fast with file, line and limit, and a send loses only that e-mail."""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update
from tests.sendkit import AS_OF, WINDOW, build, edit_template

from relmail.cli import cli
from relmail.errors import ConfigError, TemplateError
from relmail.project import Project, init_project
from relmail.render import CustomerContext, MessageSpec, Renderer, RenderError
from relmail.render.bounds import LimitExceeded, Limits
from relmail.render.environment import make_environment
from relmail.sending.run import send
from relmail.store.models import Customer, Decision

SUBJECT = "{% block subject %}s{% endblock %}"


@pytest.fixture
def render_project(tmp_path, monkeypatch) -> Project:
    monkeypatch.setenv("RELMAIL_SIGNING_KEY", "test-signing-key-not-secret")
    return init_project(tmp_path / "shop")


def configure(render_project: Project, **render) -> Project:
    with open(render_project.root / "relmail.toml", "a", encoding="utf-8") as f:
        f.write("\n[render]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in render.items()))
    return Project.load(render_project.root)


def render(render_project: Project, body: str, timed: list | None = None, **ctx) -> str:
    """The HTML of ``body`` for one customer; ``timed`` gets the seconds of the render alone (compiled before)."""
    (render_project.templates_dir / "t.html").write_text(SUBJECT + "<html><body>\n" + body + "\n</body></html>", encoding="utf-8")
    spec = MessageSpec(id="t", template="t", topic="promotions", run_id="r")
    renderer = Renderer(render_project)
    renderer.compile(spec, "en_GB")
    started = time.perf_counter()
    try:
        return renderer.render(spec, CustomerContext("C1", "c1@example.com", "Ann", locale="en_GB", **ctx)).html
    finally:
        if timed is not None:
            timed.append(time.perf_counter() - started)


def test_limits_come_from_relmail_toml_with_defaults_and_bad_values_are_config_errors(render_project):
    assert Limits.from_settings(render_project.settings) == Limits(max_email_bytes=1_000_000, max_sequence=100_000, max_range=10_000,
                                                         timeout_seconds=2.0)
    assert Limits.from_settings(configure(render_project, max_range=500, timeout_seconds=1).settings) == Limits(max_range=500, timeout_seconds=1.0)
    for key, value in (("max_range", 0), ("max_sequence", 1.5), ("timeout_seconds", "2"), ("max_email_bytes", True)):
        (render_project.root / "relmail.toml").write_text((render_project.root / "relmail.toml").read_text().split("\n[render]")[0])
        with pytest.raises(ConfigError, match=rf"\[render\]: '{key}' must be a positive"):
            Limits.from_settings(configure(render_project, **{key: value}).settings)


#: (expression, the setting it exceeds): each would otherwise take seconds and gigabytes.
RUNAWAYS = [
    ("{{ 'x' * 10**10 }}", "max_sequence"),
    ("{{ 10**10 * 'x' }}", "max_sequence"),
    ("{{ [1, 2] * 10**9 }}", "max_sequence"),
    ("{{ [('x' * 50000)] * 3 }}", "max_sequence"),
    ("{% for i in range(10**5) %}{% for j in range(10**5) %}{% endfor %}{% endfor %}", "max_range"),
    ("{{ 'x'.ljust(10**10) }}", "max_sequence"),
    ("{{ 'x'|center(10**10) }}", "max_sequence"),
    ("{{ '{:>9999999999}'.format(1) }}", "max_sequence"),
    ("{{ '{:>{w}}'.format(1, w=10**10) }}", "max_sequence"),
    ("{{ '%9999999999s' % 'x' }}", "max_sequence"),
    ("{{ '%*s'|format(10**10, 'x') }}", "max_sequence"),
    ("{{ 2 ** (10**9) }}", "max_sequence"),
    # A width or a repetition that only the arguments give, a number squared again and again, a pretty-printing
    # indent, a translation table: each one step in C that the clock cannot stop.
    ("{{ '{a:{w}}'.format_map({'a': 1, 'w': 10**8}) }}", "max_sequence"),
    ("{{ '{0[0]:{0[1]}}'.format([1, 10**8]) }}", "max_sequence"),
    ("{{ ('{0}' * 30000).format('x' * 9999) }}", "max_sequence"),
    ("{{ ('%(a)s' * 20000) % {'a': 'x' * 9999} }}", "max_sequence"),
    ("{{ ('%(a)s' * 20000)|format(a='x' * 9999) }}", "max_sequence"),
    ("{% set a = 2 ** 33000 %}{% set b = a * a %}{% set c = b * b %}{{ c * c > 1 }}", "max_sequence"),
    ("{{ [1, 2, 3]|tojson(indent=10**8) }}", "max_sequence"),
    ("{{ ('x' * 9999).translate({120: 'y' * 30000}) }}", "max_sequence"),
    ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "max_sequence"),
    ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", "max_sequence"),
    ("{{ range(10000)|join('x' * 90000) }}", "max_sequence"),
    ("{{ range(10000)|map('string')|join('x' * 90000) }}", "max_sequence"),
    ("{{ ('x' * 99999)|replace('', 'yy') }}", "max_sequence"),
    ("{{ ('a\\nb' * 30000)|indent(10**6) }}", "max_sequence"),
    ("{{ ('x' * 90000)|wordwrap(1, wrapstring='y' * 90000) }}", "max_sequence"),
    ("{{ [1]|batch(10**9, 'x')|list }}", "max_sequence"),
    ("{{ lipsum(10**6) }}", "max_sequence"),
    ("{% for i in range(2000) %}{{ 'x' * 1000 }}{% endfor %}", "max_email_bytes"),
]


@pytest.mark.parametrize("expr, setting", RUNAWAYS)
def test_a_runaway_expression_is_a_render_error_naming_file_line_and_limit_well_under_a_second(render_project, expr, setting):
    timed = []
    with pytest.raises(RenderError) as err:
        render(render_project, expr, timed)
    assert timed[0] < 1.0
    assert err.value.file == "t.html" and err.value.line == 2, err.value
    assert f"[render] {setting} in relmail.toml" in err.value.reason


def test_a_long_loop_is_stopped_by_the_clock_with_file_and_line(render_project):
    render_project = configure(render_project, timeout_seconds=0.3)
    # Output in the outer loop only: far under the e-mail limit, so only the clock can stop it.
    body = "{% for i in range(10000) %}{{ i }}\n{% for j in range(10000) %}{% endfor %}{% endfor %}"
    timed = []
    with pytest.raises(RenderError, match=r"the render took longer than 0\.3 s \(\[render\] timeout_seconds") as err:
        render(render_project, body, timed)
    assert 0.3 <= timed[0] < 1.5, timed  # the render, then at most 0.3 s more to find the line
    assert err.value.file == "t.html" and err.value.line in (2, 3)
    # The thread carries nothing over: the next renders run normally.
    for _ in range(50):
        assert "ok" in render(render_project, "ok")


def test_the_clock_works_in_worker_threads_and_stops_only_the_slow_render(render_project):
    render_project = configure(render_project, timeout_seconds=0.3)
    slow = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
    (render_project.templates_dir / "slow.html").write_text(SUBJECT + "<p>" + slow + "</p>")
    (render_project.templates_dir / "fast.html").write_text(SUBJECT + "<p>{{ customer.first_name }}</p>")
    renderer = Renderer(render_project)

    def one(i: int):
        template = "slow" if i % 4 == 0 else "fast"
        try:
            renderer.render(MessageSpec(id=template, template=template, topic="t", run_id="r"), CustomerContext(f"C{i}", "a@b.c", "Ann"))
            return template, threading.current_thread().name, "ok"
        except RenderError as exc:
            return template, threading.current_thread().name, exc.reason

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(40)))
    assert {r[2] for r in results if r[0] == "fast"} == {"ok"}
    assert all("took longer than 0.3 s" in r[2] for r in results if r[0] == "slow")
    assert len({r[1] for r in results}) > 1


def test_partials_that_include_each_other_many_times_stop_at_the_e_mail_limit_before_any_render(render_project):
    # Seven files, 46,656 includes: flattened before the render (and its clock), so the source's size is bounded.
    folder = render_project.templates_dir / "partials"
    for i in range(1, 7):
        (folder / f"p{i}.html").write_text(f'{{% include "partials/p{i + 1}.html" %}}' * 6, encoding="utf-8")
    (folder / "p7.html").write_text("<p>{{ customer.first_name }}</p>", encoding="utf-8")
    (render_project.templates_dir / "t.html").write_text('{% block subject %}x{% endblock %}<html><body>{% include "partials/p1.html" %}'
                                                         "</body></html>", encoding="utf-8")
    started = time.perf_counter()
    with pytest.raises(TemplateError, match=r"with its includes the template is over 1,000,000 characters \(\[render\] max_email_bytes"):
        Renderer(render_project).render(MessageSpec(id="t", template="t", topic="news"), CustomerContext(id="C1", email="a@b.example"))
    assert time.perf_counter() - started < 3
    # The same partial included a hundred times is flattened once and renders as before.
    for i in range(1, 7):
        (folder / f"p{i}.html").write_text('{% include "partials/p7.html" %}' * 100 if i == 1 else "", encoding="utf-8")
    html = Renderer(render_project).render(MessageSpec(id="t", template="t", topic="news"),
                                           CustomerContext(id="C1", email="a@b.example", first_name="Ann")).html
    assert html.count("<p>Ann</p>") == 100


def test_the_checked_steps_still_make_what_python_makes():
    env = make_environment(None)
    source = ("{{ '{:>5}|{:,.2f}|{name}'.format('a', 1234.5, name='<b>') }} {{ ('<i>{}</i>'|safe).format('<b>') }} "
              "{{ '{a}{a}'.format_map({'a': 'x'}) }} {{ '%(a)s-%(b)05d' % {'a': 'x', 'b': 7} }} {{ [1, {'a': 2}]|tojson(indent=1) }} "
              "{{ 'abc'.translate({97: 'zz', 98: none}) }} {{ 12345 * 678 }} {{ 'ab' * 3 }}")
    assert env.from_string(source).render() == ('    a|1,234.50|&lt;b&gt; <i>&lt;b&gt;</i> xx x-00007 [\n 1,\n {\n  "a": 2\n }\n] '
                                                'zzc 8369910 ababab')


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="ab€", min_size=0, max_size=40), st.integers(min_value=-5, max_value=20_000))
def test_repetition_is_allowed_exactly_up_to_the_limit(text, n):
    env = make_environment(None, limits=Limits(max_sequence=50_000))
    template = env.from_string("{{ s * n }}")
    if len(text) * max(n, 0) <= 50_000:
        assert template.render(s=text, n=n) == text * n
    else:
        with pytest.raises(LimitExceeded):
            template.render(s=text, n=n)


def test_the_complete_e_mail_is_held_to_max_email_bytes(render_project):
    render_project = configure(render_project, max_email_bytes=20_000)
    # HTML and text part together over the limit: stopped while rendering (the text part, so no line).
    with pytest.raises(RenderError, match=r"t.html: the e-mail is over 20,000 bytes \(\[render\] max_email_bytes"):
        render(render_project, "<p>" + "lorem ipsum " * 1000 + "</p>")
    # The parts fit, the encoded e-mail does not (every é two bytes, base64 four of every three).
    with pytest.raises(RenderError, match=r"the e-mail is [\d,]+ bytes, over the limit of 20,000 \(\[render\] max_email_bytes"):
        render(render_project, "<p>" + "é " * 3000 + "</p>")
    assert "lorem" in render(render_project, "<p>" + "lorem ipsum " * 200 + "</p>")


def test_cli_render_and_templates_check_name_the_limit(render_project):
    (render_project.templates_dir / "big.html").write_text("<p>\n{{ 'x' * 10**10 }}</p>\n")
    runner = CliRunner()
    started = time.perf_counter()
    out = runner.invoke(cli, ["-p", str(render_project.root), "render", "big.html"])
    assert out.exit_code == 6 and "big.html:2:" in out.output and "[render] max_sequence" in out.output
    assert time.perf_counter() - started < 1.0
    (render_project.templates_dir / "big.html").unlink()
    (render_project.templates_dir / "loop.html").write_text(
        SUBJECT + "<html><body>\n{% for i in range(10**5) %}{{ i }}{% endfor %}</body></html>\n")
    (render_project.campaigns_dir / "loop.yml").write_text(
        "messages:\n  - {id: loop, template: loop, topic: newsletter, segments: [everyone], offer: loyalty}\n")
    out = runner.invoke(cli, ["-p", str(render_project.root), "templates", "check", "--generated", "--json"])
    assert out.exit_code == 6
    found = [f for f in json.loads(out.stdout)["findings"] if f["file"] == "loop.html"]
    assert found and all(f["line"] == 2 and "[render] max_range" in f["message"] for f in found)


def test_the_plan_render_gate_reports_the_limit(project):
    from relmail.campaigns import load_campaign
    from relmail.planning.gate import render_sample
    from relmail.planning.run import plan

    engine = build(project, customers=40)
    edit_template(project, "newsletter", "{% block content %}", "{% block content %}{{ '=' * 10**9 }}")
    result = plan(project, engine, "sendtest", WINDOW, as_of=AS_OF, dry_run=True)
    problems = render_sample(project, engine, load_campaign(project, "sendtest"), result, sample=2)
    assert len(problems) >= 2 and all(re.search(r"newsletter(\.nl)?\.html:4:", str(p)) and "[render] max_sequence" in str(p) for p in problems)


def test_in_a_send_a_limit_is_a_render_error_for_that_e_mail_only(project):
    engine = build(project)
    with open(project.root / "relmail.toml", "a", encoding="utf-8") as f:
        f.write("\n[render]\ntimeout_seconds = 0.5\n")
    edit_template(project, "newsletter", "{% block content %}",
                  "{% block content %}{{ '*' * (customer.attributes.stars|default(1)|int) }}"
                  "{% for i in range(customer.attributes.loops|default(0)|int) %}{% for j in range(10000) %}{% endfor %}{% endfor %}")
    C = Customer.__table__
    with engine.begin() as conn:
        ids = conn.execute(select(C.c.id).order_by(C.c.id).limit(2)).scalars().all()
        conn.execute(update(C).where(C.c.id == ids[0]).values(attributes={"stars": 10**8}))
        conn.execute(update(C).where(C.c.id == ids[1]).values(attributes={"loops": 10000}))
    result = send(project, engine, "sendtest", WINDOW, now=lambda: AS_OF)
    errors = {c: reason for c, _, reason in result.render_errors}
    assert set(errors) == set(ids)
    assert "max_sequence" in errors[ids[0]] and "timeout_seconds" in errors[ids[1]]
    assert result.done["accepted"] > 50 and not result.done.get("failed_other")
    D = Decision.__table__
    with engine.connect() as conn:
        rows = dict(conn.execute(select(D.c.customer_id, D.c.reasons).where(D.c.customer_id.in_(ids))).all())
    assert all("RENDER_ERROR" in rows[c] for c in ids)


def test_preview_names_the_limit_and_exits_6(project):
    engine = build(project, customers=20)
    edit_template(project, "newsletter", "{% block content %}", "{% block content %}{{ '=' * 10**9 }}")
    C = Customer.__table__
    with engine.connect() as conn:
        cid = conn.execute(select(C.c.id).order_by(C.c.id).limit(1)).scalar_one()
    out = CliRunner().invoke(cli, ["-p", str(project.root), "preview", "sendtest-news", "--customer", cid])
    assert out.exit_code == 6
    assert re.search(rf"sendtest-news for {cid}: newsletter(\.nl)?\.html:4: the template would make a string or list", out.output)
    assert "[render] max_sequence in relmail.toml" in out.output


def test_an_interrupt_dropped_where_python_cannot_raise_it_comes_again():
    """A finalizer run by the garbage collector prints and drops an exception raised in it: the clock must not rely
    on its one interrupt arriving, or such a render would run unbounded."""
    import time

    from relmail.render.bounds import LimitExceeded, Limits, RenderTimeout, run_bounded

    dropped = []

    def render_that_loses_the_first_interrupt():
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                while time.monotonic() < end:
                    pass
            except RenderTimeout:
                if dropped:
                    raise
                dropped.append(time.monotonic())  # as a finalizer would: swallowed, the loop goes on
        return "finished"

    started = time.monotonic()
    with pytest.raises(LimitExceeded, match="took longer than 0.2 s"):
        run_bounded(Limits(timeout_seconds=0.2), render_that_loses_the_first_interrupt)
    assert dropped and time.monotonic() - started < 3
