"""The report page's Jinja template and its one script (kept in code: the package ships no data files for it)."""

#: Filters the suppression list as you type; runs under a hash-pinned CSP.
SEARCH_JS = """(function () {
  var box = document.getElementById('search');
  var rows = Array.prototype.slice.call(document.querySelectorAll('#suppressions tbody tr'));
  var shown = document.getElementById('shown');
  box.addEventListener('input', function () {
    var words = box.value.toLowerCase().split(/\\s+/).filter(Boolean);
    var n = 0;
    rows.forEach(function (row) {
      var text = row.getAttribute('data-search');
      var hit = words.every(function (w) { return text.indexOf(w) !== -1; });
      row.hidden = !hit;
      if (hit) { n += 1; }
    });
    shown.textContent = n.toLocaleString('en');
  });
})();"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{{ script_hash }}'; frame-src 'self' about:; base-uri 'none'; form-action 'none'">
<meta name="referrer" content="no-referrer">
<title>relmail · {{ run.id }}</title>
<style>
  :root { --ink:#0f172a; --muted:#64748b; --line:#e2e8f0; --bg:#f8fafc; --card:#fff; }
  * { box-sizing: border-box; }
  body { margin:0; background:var(--bg); color:var(--ink); font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; }
  header { background:#0f172a; color:#fff; padding:28px 40px 24px; }
  header h1 { margin:0 0 4px; font-size:24px; font-weight:650; }
  header p { margin:0; color:#cbd5e1; }
  main { max-width:1120px; margin:0 auto; padding:24px 40px 60px; }
  section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:20px 24px; margin:0 0 20px; }
  h2 { font-size:18px; margin:0 0 4px; }
  .lead { color:var(--muted); margin:0 0 14px; font-size:14px; }
  .cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(150px,1fr)); gap:12px; margin:-44px 0 20px; }
  .card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:14px 16px; box-shadow:0 1px 2px rgba(15,23,42,.06); }
  .card .n { font-size:26px; font-weight:650; font-variant-numeric:tabular-nums; }
  .card .l { color:var(--muted); font-size:13px; }
  .legend { display:flex; gap:16px; flex-wrap:wrap; font-size:13px; color:var(--muted); margin:6px 0 10px; }
  .legend i { display:inline-block; width:11px; height:11px; border-radius:2px; margin-right:5px; vertical-align:-1px; }
  table { border-collapse:collapse; width:100%; font-size:13px; }
  th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line); vertical-align:middle; }
  th { color:var(--muted); font-weight:600; background:#f8fafc; position:sticky; top:0; }
  td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
  .grid { display:grid; grid-template-columns:repeat(auto-fill,minmax(min(320px,100%),1fr)); gap:16px; }
  .grid h3 { font-size:14px; margin:0; }
  .grid .meta { color:var(--muted); font-size:12px; }
  .badge { display:inline-block; padding:1px 7px; border-radius:999px; font-size:11px; font-weight:600; color:#fff; margin:1px 2px 1px 0; }
  .muted { color:var(--muted); }
  .scroll { max-height:460px; overflow:auto; border:1px solid var(--line); border-radius:8px; }
  .wide { overflow-x:auto; }
  .only-narrow { display:none; }
  input[type=search] { width:100%; max-width:420px; padding:8px 12px; border:1px solid #cbd5e1; border-radius:8px; font-size:14px; margin:0 12px 10px 0; }
  iframe { width:100%; height:520px; border:1px solid var(--line); border-radius:8px; background:#fff; }
  .sig { color:#16a34a; font-weight:600; } .neg { color:#dc2626; font-weight:600; }
  .heat td.num { min-width:64px; }
  .rate { display:block; color:var(--muted); font-size:11px; }
  .note { background:#fffbeb; border:1px solid #fde68a; border-radius:10px; padding:12px 16px; margin:0 0 20px; font-size:14px; }
  #trend-summary td, #trend-summary th { padding:5px 6px; white-space:nowrap; }
  #trend-summary td:first-child { white-space:normal; }
  #trend-runs td, #trend-runs th { white-space:nowrap; }
  #trend-summary { max-width:680px; }
  .spark { display:block; }
  footer { color:var(--muted); font-size:12px; text-align:center; margin-top:24px; }
  /* A phone: the page keeps its width, a wide table scrolls inside its own box. */
  @media (max-width:600px) {
    .only-wide { display:none; } .only-narrow { display:block; }
    header { padding:20px 16px 52px; } header h1 { font-size:20px; overflow-wrap:anywhere; }
    main { padding:16px 10px 40px; } section { padding:16px 12px; }
    .cards { grid-template-columns:repeat(2,minmax(0,1fr)); gap:8px; } .card { padding:10px 12px; } .card .n { font-size:22px; }
    #trend-summary { font-size:12px; } #trend-summary td, #trend-summary th { padding:4px 3px; } #trend-summary .before { display:none; }
  }
</style>
</head>
<body>
<header>
  <h1>Run {{ run.id }}</h1>
  <p>Campaign <strong>{{ run.campaign }}</strong> · window {{ run.window }} · as of {{ run.as_of|utc }} · status {{ run.status }}</p>
</header>
<main>
<div class="cards" id="summary">
  {% if run.source == 'events' %}
  <div class="card" data-figure="sent"><div class="n">{{ (totals.sent or 0)|fmt }}</div><div class="l">e-mails sent (events)</div></div>
  <div class="card" data-figure="mailed"><div class="n">{{ (totals.customers_mailed or 0)|fmt }}</div><div class="l">customers mailed</div></div>
  {% else %}
  <div class="card" data-figure="decisions"><div class="n">{{ totals.decisions|fmt }}</div><div class="l">decisions for {{ totals.customers|fmt }} customers</div></div>
  <div class="card" data-figure="send"><div class="n">{{ totals.send|fmt }}</div><div class="l">e-mails to send</div></div>
  <div class="card" data-figure="holdout"><div class="n">{{ totals.holdout|fmt }}</div><div class="l">held out to measure lift</div></div>
  <div class="card" data-figure="suppress"><div class="n">{{ totals.suppress|fmt }}</div><div class="l">suppressed ({{ pct(totals.suppress, totals.decisions) }})</div></div>
  <div class="card" data-figure="accepted"><div class="n">{{ (totals.deliveries.accepted or 0)|fmt }}</div><div class="l">accepted by the mail server or ESP</div></div>
  {% endif %}
  {% if totals.deliveries %}
  <div class="card" data-figure="uncertain"><div class="n">{{ (totals.deliveries.uncertain or 0)|fmt }}</div><div class="l">uncertain: handed over, no reply (not resent)</div></div>
  <div class="card" data-figure="deferred"><div class="n">{{ (totals.deliveries.deferred or 0)|fmt }}</div><div class="l">deferred (retried by the next send)</div></div>
  <div class="card" data-figure="rejected"><div class="n">{{ (totals.deliveries.rejected or 0)|fmt }}</div><div class="l">refused at send: not mailed{% if totals.refused_hard %} ({{ totals.refused_hard|fmt }} hard bounce){% endif %}</div></div>
  <div class="card" data-figure="failed"><div class="n">{{ (totals.deliveries.failed or 0)|fmt }}</div><div class="l">failed: given up, not mailed</div></div>
  <div class="card" data-figure="withdrawn"><div class="n">{{ (totals.deliveries.withdrawn or 0)|fmt }}</div><div class="l">withdrawn: opted out, complained or hard-bounced after the plan (not sent on purpose)</div></div>
  {% endif %}
</div>
{% if run.source == 'events' %}
<p class="note" id="run-source" data-source="events">This run holds no decisions: it is a mailing history that only e-mail events name (a send made outside relmail, such as the demo's past weeks). Its {{ (totals.sent or 0)|fmt }} e-mails to {{ (totals.customers_mailed or 0)|fmt }} customers and what came back are read from those events; there is nothing to show of who was left out or why.</p>
{% elif run.source == 'imported' %}
<p class="note" id="run-source" data-source="imported">This run was imported with <code>relmail runs import</code>: its decisions come from a send made elsewhere, so it has no deliveries of relmail's; its {{ totals.send|fmt }} sends are the customers mailed.</p>
{% endif %}

{% if trend %}
<section id="trend">
  <h2>Week on week</h2>
  <p class="lead">{% if trend|length > 1 %}The last {{ trend|length }} runs of campaign <strong>{{ run.campaign }}</strong> up to this one, and the change from the run before ({{ trend[-2].run }}){% else %}The first run of campaign <strong>{{ run.campaign }}</strong> in the ledger: the change from the run before shows here once there is one{% endif %}. Rates are per customer mailed; conversions and revenue are the purchases of the customers mailed, under any customer id with their address. Each run is measured over its first {{ measured(trend[-1].measured_days) }} (as long as this run has had, at most {{ f.incrementality_window_days|fmt }} days): none is ahead only for having had longer. Green: better for the shop, red: worse; not tested against chance (the lift below is).</p>
  <table id="trend-summary">
    <thead><tr><th>figure</th><th class="num">this run</th><th class="num before">run before</th><th class="num">change</th><th>{{ trend|length }} run{{ "s" if trend|length != 1 }}</th></tr></thead>
    <tbody>
    {% for r in trend_rows %}
      <tr data-metric="{{ r.metric }}"><td>{{ r.label }}</td><td class="num">{{ r.now }}</td><td class="num before">{{ r.before }}</td>
        <td class="num {{ {'better': 'sig', 'worse': 'neg'}.get(r.verdict, '') }}" data-verdict="{{ r.verdict or '' }}">{{ r.change }}</td><td>{{ r.spark }}</td></tr>
    {% endfor %}
    </tbody>
  </table>
  {% if trend|length > 1 %}
  <div class="wide" style="margin-top:14px">
  <table id="trend-runs">
    <thead><tr><th>run</th>{% for m in metrics %}<th class="num">{{ trend_labels[m] }}</th>{% endfor %}</tr></thead>
    <tbody>
    {% for t in trend %}
      <tr data-run="{{ t.run }}"><td>{{ t.window }}</td>{% for m in metrics %}<td class="num" data-metric="{{ m }}">{{ trend_value(m, t[m]) }}</td>{% endfor %}</tr>
    {% endfor %}
    </tbody>
  </table>
  </div>
  {% endif %}
</section>
{% endif %}

{# A run of e-mail events only has no decisions: nothing to show of who got what, why not, or scores. #}
{% if run.source != 'events' %}
<section id="per-message">
  <h2>Who gets what</h2>
  <p class="lead">Every customer in a message's audience is sent it, held out at random, or suppressed.</p>
  <div class="legend"><span><i style="background:{{ colors.send }}"></i>send</span><span><i style="background:{{ colors.holdout }}"></i>hold-out</span><span><i style="background:{{ colors.suppress }}"></i>suppressed</span></div>
  {{ actions_chart }}
  <div class="wide">
  <table>
    <thead><tr><th>message</th><th class="num">audience</th><th class="num">send</th><th class="num">hold-out</th><th class="num">suppressed</th><th class="num">mean score</th><th class="num">threshold</th><th class="num">accepted</th><th class="num">refused at send</th></tr></thead>
    <tbody>
    {% for m in messages %}
      <tr data-message="{{ m.message }}"><td>{{ m.message }}</td><td class="num">{{ m.decisions|fmt }}</td><td class="num">{{ m.send|fmt }}</td><td class="num">{{ m.holdout|fmt }}</td><td class="num">{{ m.suppress|fmt }}</td>
        <td class="num">{{ '%.2f'|format(m.score.mean) if m.score.mean is not none else '–' }}</td><td class="num">{{ m.score.threshold if m.score.threshold is not none else '–' }}</td><td class="num">{{ (m.deliveries.accepted or 0)|fmt }}</td>
        <td class="num" data-figure="rejected">{{ (m.deliveries.rejected or 0)|fmt }}{% if m.refused_hard %}<span class="rate">{{ m.refused_hard|fmt }} hard bounce</span>{% endif %}</td></tr>
    {% endfor %}
    </tbody>
  </table>
  </div>
</section>

{% endif %}

{# Figures saved by a relmail without these counts have no "feedback": no section, rather than zeros. #}
{% if totals.feedback is defined %}
<section id="feedback">
  <h2>What came back</h2>
  <p class="lead">Customers per message whose e-mail the providers, the bounce mailbox or the unsubscribe links reported on so far (“handed over” is relmail's record that the mail server or ESP took the e-mail, or got all of it and its reply was lost: accepted or uncertain; “reported delivered” is the provider's later report that it reached the mailbox), and their share of the customers whose e-mail was handed over (for the whole run, of the {{ (totals.customers_mailed or 0)|fmt }} customers mailed). Hard bounces, complaints and unsubscribes keep these customers out of later plans.{% if totals.deliveries %} A bounce here is of an e-mail the mail server or ESP accepted: one it refused at send was never mailed, and counts under “refused at send” instead (a dead address it was refused for is kept out of later plans as well).{% endif %}</p>
  <div class="wide">
  <table>
    <thead><tr><th>message</th><th class="num">{{ 'handed over' if run.source is not defined or run.source == 'relmail' else 'sent' }}</th>{% for kind in feedback_kinds %}<th class="num">{{ feedback_labels.get(kind, kind|replace('_', ' ')) }}</th>{% endfor %}</tr></thead>
    <tbody>
    {% for m in messages %}
      {% set handed = ((m.deliveries.accepted or 0) + (m.deliveries.uncertain or 0)) if m.deliveries else (m.sent or 0) %}<tr data-message="{{ m.message }}"><td>{{ m.message }}</td><td class="num">{{ handed|fmt }}</td>{% for kind in feedback_kinds %}<td class="num" data-kind="{{ kind }}" data-value="{{ m.feedback[kind] }}">{{ m.feedback[kind]|fmt }}<span class="rate">{{ pct(m.feedback[kind], handed) }}</span></td>{% endfor %}</tr>
    {% endfor %}
      <tr data-message=""><td>whole run (each customer once)</td><td class="num" data-value="{{ totals.customers_mailed or 0 }}">{{ (totals.customers_mailed or 0)|fmt }}<span class="rate">customers</span></td>{% for kind in feedback_kinds %}<td class="num" data-kind="{{ kind }}" data-value="{{ totals.feedback[kind] }}">{{ totals.feedback[kind]|fmt }}<span class="rate">{{ pct(totals.feedback[kind], totals.customers_mailed or 0) }}</span></td>{% endfor %}</tr>
    </tbody>
  </table>
  </div>
</section>
{% endif %}

{% if run.source != 'events' %}
<section id="reasons">
  <h2>Why not</h2>
  <p class="lead">Decisions per reason code. A decision can have several reasons; every rule that fired is counted. Each code is of one kind: what it protects.</p>
  <div class="legend">{% for k in f.reason_kinds %}<span data-kind="{{ k.kind }}"><i style="background:{{ kind_colors[k.kind] }}"></i>{{ k.kind }}: {{ k.means }} — {{ k.decisions|fmt }}</span>{% endfor %}</div>
  {{ reasons_chart }}
  <div class="scroll" style="margin-top:14px">
  <table class="heat">
    <thead><tr><th>reason</th>{% for m in messages %}<th class="num">{{ m.message }}</th>{% endfor %}</tr></thead>
    <tbody>
    {% for code in reason_codes %}
      <tr data-code="{{ code }}"><td><span class="badge" style="background:{{ reason_color(code) }}">{{ code }}</span></td>{% for m in messages %}<td class="num">{{ (m.reasons[code] or 0)|fmt if code in m.reasons else '' }}</td>{% endfor %}</tr>
    {% endfor %}
    </tbody>
  </table>
  </div>
</section>

<section id="scores">
  <h2>Relevance scores</h2>
  <p class="lead">How relevant each message was to its audience. Below the dashed threshold a send is suppressed (LOW_RELEVANCE).</p>
  <div class="legend"><span><i style="background:{{ colors.send }}"></i>send</span><span><i style="background:{{ colors.holdout }}"></i>hold-out</span><span><i style="background:{{ colors.suppress }}"></i>suppressed</span></div>
  <div class="grid">
  {% for m, chart in histograms %}
    <div><h3>{{ m.message }}</h3><div class="meta">mean {{ '%.2f'|format(m.score.mean) if m.score.mean is not none else '–' }} · threshold {{ m.score.threshold if m.score.threshold is not none else 'unknown' }}</div>{{ chart }}</div>
  {% endfor %}
  </div>
</section>

<section id="irritation">
  <h2>Irritation prevented</h2>
  <p class="lead">E-mails each irritation rule stopped (dark: stopped by that rule alone): the rules that spare the customer's patience. Compliance (consent, opt-outs, bounces, complaints), the experiment's hold-outs (HOLDOUT, HELD_OUT: its control group, measured under “Did it work?”) and the expected value (NOT_WORTH_IT) are in “Why not”.</p>
  {{ irritation_chart }}
</section>
{% endif %}

<section id="incrementality">
  <h2>Did it work? Incrementality</h2>
  <p class="lead">Outcome rate of sends against hold-outs within {{ f.incrementality_window_days|fmt }} days, with a {{ '%d'|format(f.confidence * 100) }}% confidence interval (Newcombe). Runs up to this one with hold-outs and a closed outcome window. Customer ids that share an address are one mailbox: it counts once in its arm, with the visits and purchases of all its ids. Green: better for the shop (more visits or purchases, fewer unsubscribes or complaints); red: worse. Hold-outs get no e-mail, so they cannot open or click it: those rows (reach) show how many the e-mail reached, not what it changed.</p>
  {% if lift_rows %}
  <div class="wide">
  <table id="lift">
    <thead><tr><th>run</th><th>message</th><th class="num">sends</th><th class="num">hold-outs</th><th>outcome</th><th class="num">rate sent</th><th class="num">rate held out</th><th class="num">lift (points)</th><th>interval (±{{ '%.1f'|format(lift_scale * 100) }} points)</th></tr></thead>
    <tbody>
    {% for r in lift_rows %}
      <tr data-run="{{ r.entry.run }}" data-message="{{ r.entry.message }}" data-outcome="{{ r.outcome }}"><td>{{ r.entry.run }}{% if r.entry.this_run %} <span class="muted">(this run)</span>{% endif %}</td><td>{{ r.entry.message }}</td>
        <td class="num">{{ r.entry.sends|fmt }}</td><td class="num">{{ r.entry.holdouts|fmt }}</td><td>{{ r.outcome }}{% if r.reach %} <span class="muted">(reach)</span>{% endif %}</td>
        <td class="num">{{ '%.2f%%'|format(r.rate_sent * 100) }}</td><td class="num">{{ '%.2f%%'|format(r.rate_holdout * 100) }}</td>
        <td class="num {{ {'better': 'sig', 'worse': 'neg'}.get(r.verdict, '') }}" data-verdict="{{ r.verdict or '' }}">{{ '%+.2f'|format(r.lift * 100) }}</td><td>{{ r.chart }}</td></tr>
    {% endfor %}
    </tbody>
  </table>
  </div>
  {% if revenue_rows %}
  <h3 style="font-size:15px;margin:16px 0 4px">Revenue per customer</h3>
  <p class="lead">Mean purchase value within the window of a customer sent the e-mail and of one held out, and the difference with a {{ '%d'|format(f.confidence * 100) }}% (Welch) interval.</p>
  <div class="wide">
  <table id="revenue-lift">
    <thead><tr><th>run</th><th>message</th><th class="num">per customer sent</th><th class="num">per customer held out</th><th class="num">lift</th><th>interval (±{{ '%.2f'|format(money_scale) }})</th></tr></thead>
    <tbody>
    {% for r in revenue_rows %}
      <tr data-run="{{ r.entry.run }}" data-message="{{ r.entry.message }}"><td>{{ r.entry.run }}{% if r.entry.this_run %} <span class="muted">(this run)</span>{% endif %}</td><td>{{ r.entry.message }}</td>
        <td class="num">{{ '%.2f'|format(r.sent) }}</td><td class="num">{{ '%.2f'|format(r.holdout) }}</td>
        <td class="num {{ {'better': 'sig', 'worse': 'neg'}.get(r.verdict, '') }}" data-verdict="{{ r.verdict or '' }}">{{ '%+.2f'|format(r.lift) if r.lift is not none else '–' }}</td><td>{{ r.chart }}</td></tr>
    {% endfor %}
    </tbody>
  </table>
  </div>
  {% endif %}
  {% else %}
  <p class="muted" id="no-lift">No run up to this one has hold-outs whose outcome window has closed yet. Lift shows here once it has.</p>
  {% endif %}
</section>

{% if run.source != 'events' %}
<section id="suppression-list">
  <h2>Suppression list</h2>
  <p class="lead">Who was not sent what, and every reason. {% if f.suppressions|length < f.suppression_total %}Showing the first {{ f.suppressions|length|fmt }} of {{ f.suppression_total|fmt }}; <code>relmail report {{ run.id }} --format json --limit 0</code> gives all.{% endif %}</p>
  <input type="search" id="search" placeholder="Search customer, message or reason…" aria-label="Search the suppression list"><span class="muted"><span id="shown">{{ f.suppressions|length|fmt }}</span> of {{ f.suppression_total|fmt }} shown</span>
  <div class="scroll">
  <table id="suppressions">
    <thead><tr><th>customer</th><th>message</th><th class="num">score</th><th>reasons</th></tr></thead>
    <tbody>
    {% for s in f.suppressions %}
      <tr data-search="{{ (s.customer_id ~ ' ' ~ s.message_id ~ ' ' ~ s.reasons|join(' '))|lower }}"><td>{{ s.customer_id }}</td><td>{{ s.message_id }}</td><td class="num">{{ '%.2f'|format(s.score) }}</td>
        <td>{% for c in s.reasons %}<span class="badge" style="background:{{ reason_color(c) }}">{{ c }}</span>{% endfor %}</td></tr>
    {% endfor %}
    </tbody>
  </table>
  </div>
</section>
{% endif %}

{% if previews %}
<section id="previews">
  <h2>Previews</h2>
  <p class="lead">The e-mail of the most relevant recipient of each message, as rendered for them. Shown sandboxed: no scripts, remote images replaced, links signed with a preview key that does not work.</p>
  <div class="grid">
  {% for p in previews %}
    <div class="preview" data-message="{{ p.message }}"><h3>{{ p.message }}</h3>
    {% if p.error %}<p class="neg">{{ p.error }}</p>{% else %}
      <div class="meta">to {{ p.customer_id }} ({{ p.locale }}) · score {{ '%.2f'|format(p.score) }} · “{{ p.subject }}”</div>
      <iframe sandbox srcdoc="{{ p.html }}" title="preview of {{ p.message }}" loading="eager"></iframe>
    {% endif %}</div>
  {% endfor %}
  </div>
</section>
{% endif %}
<footer>relmail report · run {{ run.id }} · planned {{ run.created_at }} · config {{ run.config_hash[:12] }}</footer>
</main>
<script>{{ search_js|safe }}</script>
</body>
</html>
"""
