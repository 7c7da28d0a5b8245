"""Self-contained HTML report (plotly inlined) from evaluate / analyze / curves JSON documents."""
from __future__ import annotations

import html
from pathlib import Path

import plotly.io as pio

from ssm_models.atomic import atomic_write

from .eps import eps_label
from .evaluate import attack_label
from .plots import error_scaling_figure, training_curves_figure


def _kind(doc: dict) -> str:
    if "splits" in doc:
        return "analysis"
    if "attacks" in doc and "clean" in doc:
        return "evaluation"
    if "history" in doc:
        return "curves"
    raise ValueError("unrecognised JSON document: expected the output of `ssm-lab evaluate`, `ssm-lab analyze` "
                     "or a training curves.json")


def _evaluation_table(doc: dict) -> str:
    tm = doc["threat_model"]
    rows = [("clean", doc["clean"])] + [(attack_label(a), a) for a in doc["attacks"]]
    if doc.get("worst_case"):
        rows.append(("worst case over attacks", doc["worst_case"]))
    body = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{e['accuracy']:.2%}</td><td>{e['ci95'][0]:.2%} - {e['ci95'][1]:.2%}</td>"
        f"<td>{e['n']}</td></tr>" for name, e in rows)
    model = doc.get("model") or {}
    name = html.escape(str(model.get("source") or model.get("arch") or "model"))
    data = doc.get("data") or {}
    source = f" of {html.escape(str(data['source']))}" if data.get("source") else ""
    return (f"<h2>Evaluation: {name}</h2><p>threat model {tm['norm']}, eps = {tm['eps']:.6g} ({tm['eps_label']}), "
            f"n = {doc['n']} test images{source}, seed {doc['seed']}, {doc['seconds']} s</p>"
            f"<table><tr><th>metric</th><th>accuracy</th><th>95% Wilson interval</th><th>n</th></tr>{body}</table>")


def write_html_report(docs: list[dict], path: str | Path) -> Path:
    parts = []
    first_plot = True
    for doc in docs:
        kind = _kind(doc)
        if kind == "evaluation":
            parts.append(_evaluation_table(doc))
            continue
        figures = []
        if kind == "analysis":
            parts.append(f"<h2>Error scaling: {html.escape(str(doc.get('checkpoint', 'model')))}</h2>")
            for split, analysis in doc["splits"].items():
                figures.append(error_scaling_figure(
                    analysis, f"{split} split: n={analysis['n']}, {doc['attack']}, eps={eps_label(doc['eps'])}"))
        else:
            figures.append(training_curves_figure(doc))
        for fig in figures:
            parts.append(pio.to_html(fig, full_html=False, include_plotlyjs="inline" if first_plot else False))
            first_plot = False
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>SSM Robustness Lab report</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px}</style></head><body><h1>SSM Robustness Lab report</h1>"
            + "\n".join(parts) + "</body></html>")
    return atomic_write(path, page)
