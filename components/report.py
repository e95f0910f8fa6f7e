"""The self-contained HTML report of a calibration, and the plain facts a result states.

`build_report(result, meta)` returns one HTML document: the optimizer's status first, where the data came
from, the parameters with standard errors and intervals, the metrics, the segments, the diagnostics figures
and the config itself. plotly.js is inlined once and every figure is static JSON drawn by it, so the file
opens offline, without a server or a CDN, and can be mailed or archived as it is. Pure: a result in, a
string out (no Dash); the figures and tables are the Diagnostics panel's own builders
(`execal.components.impact_figures`), so the report shows what the panel shows. Scatters are drawn from at most
`REPORT_POINTS` rows (extremes kept) so a report of a million fills stays a few megabytes.

`optimizer_status(result)` is what the optimizer said, as a dict; the Calibrate panel's banner and the
report's both read it.
"""
from __future__ import annotations

import datetime as dt
import html
import json
from typing import Any, Mapping, Sequence

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from execal.components import impact_figures as F
from execal.components.figures import plain_verdict

REPORT_POINTS = 5_000
ALPHA = 0.05


@plain_verdict
def optimizer_status(result) -> dict:
    """What the optimizer said: badge text and colour, message, status code, counts, bounds hit, warnings
    (pooled fit, plus every segment that did not converge or sits at a bound)."""
    pooled = getattr(result, "pooled", result)
    rep = pooled.report
    segments = getattr(result, "segments", ())
    not_converged = [f"{F.segment_name(s.key)} (status {s.result.report.status}: {s.result.report.message})"
                     for s in segments if not s.result.report.converged]
    active = list(rep.active_bounds) + [f"{F.segment_name(s.key)}: {b}" for s in segments
                                         for b in s.result.report.active_bounds]
    if pooled.status == "fixed":
        badge, color, converged = "Parameters set by hand", "secondary", None
    elif rep.converged and not not_converged:
        badge, color, converged = "Converged", "success", True
    else:
        badge, color, converged = "NOT converged", "danger", False
    n_rows = int(pooled.is_train.shape[0])
    return {"badge": badge, "color": color, "converged": converged, "status": rep.status,
            "message": rep.message, "method": rep.method, "loss": rep.loss, "f_scale": rep.f_scale,
            "weights": rep.weights, "iterations": rep.iterations, "nfev": rep.nfev, "njev": rep.njev,
            "cost": rep.cost, "active_bounds": active, "warnings": list(rep.warnings),
            "segments_not_converged": not_converged, "n_train": pooled.n_train,
            "n_test": n_rows - pooled.n_train, "segments": len(segments)}


def report_figures(result, max_points: int = REPORT_POINTS) -> list[tuple[str, go.Figure]]:
    """(caption, figure) pairs of the report: the Diagnostics panel's figures of `result`."""
    view = F.view_of(result)
    index = F.scatter_index(view, max_points=max_points)
    p_bins = F.log_bins(view.participation)
    label = F.participation_label(view.participation_kind)
    figs = [
        ("Predicted vs actual cost per order (45° line = perfect)", F.predicted_vs_actual_figure(view, index)),
        ("Cost vs participation: binned mean ± s.e. and the fitted curve",
         F.cost_vs_participation_figure(F.participation_series(view, p_bins), participation_label=label)),
        ("Residuals vs participation", F.residual_scatter_figure(view.participation, view.residual_bps, index,
                                                                 log_x=True, x_title=f"{label} (log)", bins=p_bins)),
        ("Residual histogram with the noise model", F.residual_histogram_figure(view)),
        ("QQ plot of the standardised residuals", F.qq_figure(view)),
    ]
    if hasattr(result, "segments"):
        figs.append(("Parameters per segment", F.segment_parameter_figure(result)))
    return figs


# --- html ---------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#212529;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:1.5rem}
h1{font-size:1.5rem;margin:0 0 .25rem}h2{font-size:1.1rem;margin:1.75rem 0 .5rem}
section{background:#fff;border:1px solid #dee2e6;border-radius:.5rem;padding:1rem 1.25rem;margin-bottom:1rem}
table{border-collapse:collapse;width:100%;font-size:.875rem}th,td{text-align:left;padding:.3rem .5rem;
border-bottom:1px solid #e9ecef;vertical-align:top}th{background:#f8f9fa}
.badge{display:inline-block;padding:.3rem .6rem;border-radius:.4rem;color:#fff;font-weight:600;margin-right:.5rem}
.success{background:#198754}.danger{background:#dc3545}.secondary{background:#6c757d}
.warn{background:#fff3cd;border:1px solid #ffe69c;padding:.4rem .6rem;border-radius:.3rem;margin:.3rem 0;font-size:.875rem}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.8rem}
pre{white-space:pre-wrap;word-break:break-word;max-height:30rem;overflow:auto;background:#f8f9fa;padding:.75rem}
figure{margin:0 0 1.25rem}figcaption{font-size:.875rem;color:#495057;margin-bottom:.25rem}
.muted{color:#6c757d;font-size:.875rem}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(rows: Sequence[Mapping[str, Any]], table_id: str | None = None) -> str:
    if not rows:
        return '<p class="muted">Nothing to show.</p>'
    columns = list(rows[0])
    head = "".join(f"<th scope=\"col\">{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    ident = f' id="{_e(table_id)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _facts(items: Sequence[tuple[str, Any]]) -> str:
    return _table([{"": k, " ": v} for k, v in items]).replace("<thead><tr><th scope=\"col\"></th>"
                                                               "<th scope=\"col\"> </th></tr></thead>", "")


def _script_json(fig: go.Figure) -> str:
    # JSON inside <script>: "</" would end the script element early
    return pio.to_json(fig, validate=False).replace("</", "<\\/")


def _fmt(v: Any, digits: int = 6) -> str:
    return F.format_number(v, digits)


def build_report(result, meta: Mapping | None = None, *, config: Mapping | None = None,
                 figures: Sequence[tuple[str, go.Figure]] | None = None, title: str | None = None,
                 plotlyjs: str | None = None) -> str:
    """The report as one HTML string (self-contained: plotly.js inline, figures as static JSON).

    `meta` is the ResultStore meta (source, filters, provenance, elapsed time); `config` the exported
    config dict, embedded verbatim; `figures` defaults to `report_figures(result)`.
    """
    meta = dict(meta or {})
    pooled = getattr(result, "pooled", result)
    model = pooled.model
    s = optimizer_status(result)
    figures = report_figures(result) if figures is None else list(figures)
    title = title or f"execal calibration report: {model.label} on {meta.get('source') or 'fills'}"
    prov = dict(meta.get("provenance") or {})
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    parts = [f"<h1>{_e(title)}</h1>",
             f'<p class="muted">Generated {_e(created)} by execal · {_e(model.label)} ({_e(model.name)}): '
             f"<code>{_e(model.formula)}</code></p>"]

    status_rows = [("Optimizer", f"{s['method']}, loss {s['loss']} (f_scale {s['f_scale']:g}), weights {s['weights']}"),
                   ("Message", s["message"]), ("Status code", "–" if s["status"] is None else s["status"]),
                   ("Iterations", _fmt(s["iterations"])), ("Function evaluations", _fmt(s["nfev"])),
                   ("Final cost", _fmt(s["cost"])), ("Active bounds", "; ".join(s["active_bounds"]) or "none"),
                   ("Rows", f"{s['n_train']:,} in-sample, {s['n_test']:,} held out")]
    if meta.get("origin") == "import":
        status_rows.insert(0, ("Origin", f"imported config {meta.get('config_file', '')}: parameters set by hand"))
    elif meta.get("origin") == "hand-set":
        status_rows.insert(0, ("Parameters", "HAND-SET in the Tweak panel, not fitted: starting from the fitted "
                                             f"values {meta.get('fitted') or {}}"))
    warn = "".join(f'<div class="warn">{_e(w)}</div>' for w in s["segments_not_converged"] + s["warnings"])
    parts.append(f'<section id="status"><h2>Optimizer status</h2><p><span class="badge {s["color"]}">'
                 f'{_e(s["badge"])}</span>{_e(s["message"])}</p>{_facts(status_rows)}{warn}</section>')

    data_rows = [("File", prov.get("file") or meta.get("source")), ("sha256", prov.get("sha256")),
                 ("Rows after filters", _fmt(prov.get("rows") if prov.get("rows") is not None else meta.get("rows"))),
                 ("Rows used by the model", _fmt(int(pooled.features.n))),
                 ("From", prov.get("start")), ("To", prov.get("end")),
                 ("Filters", json.dumps(meta.get("filters") or prov.get("filters") or {}, ensure_ascii=False))]
    drops = "".join(f'<div class="warn">dropped {d.count:,} rows: {_e(d.reason)} (column {_e(d.column)})</div>'
                    for d in pooled.validation.dropped)
    parts.append(f'<section id="data"><h2>Data</h2>{_facts(data_rows)}{drops}</section>')

    parts.append(f'<section id="parameters"><h2>Parameters</h2>'
                 f'{_table(F.parameter_rows(result, ALPHA), "parameters-table")}</section>')
    parts.append(f'<section id="metrics"><h2>Fit quality</h2>'
                 f'{_table(F.metrics_rows(F.result_metric_columns(result)), "metrics-table")}</section>')
    if hasattr(result, "segments"):
        parts.append(f'<section id="segments"><h2>Segments by {_e(", ".join(result.by))}</h2>'
                     f'{_table(F.segment_rows(result, ALPHA), "segments-table")}'
                     f'{_table(F.segment_test_rows(result.test or {}))}</section>')

    figs = []
    for i, (caption, fig) in enumerate(figures):
        div = f"execal-fig-{i}"
        figs.append(f'<figure><figcaption>{_e(caption)}</figcaption><div id="{div}" style="height:360px"></div>'
                    f'<script>(function(){{var f={_script_json(fig)};Plotly.newPlot("{div}",f.data,f.layout,'
                    f'{{responsive:true,displaylogo:false}});}})();</script></figure>')
    if figs:
        parts.append('<section id="figures"><h2>Diagnostics</h2>' + "".join(figs) + "</section>")
    if config is not None:
        text = json.dumps(config, indent=2, ensure_ascii=False, allow_nan=False)
        parts.append('<section id="config"><h2>Config</h2><details><summary>The config this report describes '
                     f"(JSON, as exported)</summary><pre>{html.escape(text, quote=False)}</pre></details></section>")
    js = get_plotlyjs() if plotlyjs is None else plotlyjs
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style>"
            f"<script>{js}</script></head><body><main>" + "".join(parts) + "</main></body></html>\n")
