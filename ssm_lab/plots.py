"""Plotly figures shared by the app and the HTML reports."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .analysis import summarize_by_component


def topk_figure(classes: Sequence[str], p_clean: np.ndarray, p_adv: np.ndarray, k: int = 5) -> go.Figure:
    """Top-k class probabilities before and after the attack (union of both top-k sets)."""
    order = list(dict.fromkeys(list(np.argsort(-p_clean)[:k]) + list(np.argsort(-p_adv)[:k])))
    names = [str(classes[i]) for i in order]
    fig = go.Figure([
        go.Bar(name="clean", x=names, y=[float(p_clean[i]) for i in order]),
        go.Bar(name="adversarial", x=names, y=[float(p_adv[i]) for i in order]),
    ])
    fig.update_layout(barmode="group", title="Class probabilities", yaxis_title="probability",
                      yaxis_range=[0, 1], height=320, margin=dict(t=40, b=30, l=40, r=10))
    return fig


def iterate_labels(trace: dict, steps: int | None = None, iterates: bool = True) -> list[str]:
    """x labels of a trace's rows: the iterate ("r2:3" = restart 2, iterate 3; "r1:end" = the point restart 1
    returned, compared across restarts when `steps` is given) and "returned" for the attack's result. Attacks
    run inside a library (`iterates=False`) trace only their clean start and their result."""
    rows = list(zip(trace.get("restart", []), trace.get("step", []), trace.get("final", [])))
    if not iterates:
        return ["returned" if final else "clean" for _, _, final in rows]
    several = len({int(r) for r, _, final in rows if not final}) > 1
    labels = []
    for restart, step, final in rows:
        iterate = "end" if steps is not None and int(step) == steps else str(int(step))
        labels.append("returned" if final else f"r{int(restart) + 1}:{iterate}" if several else iterate)
    return labels


def trace_figure(trace: dict, steps: int | None = None, iterates: bool = True) -> go.Figure:
    """Per-iteration loss, margin and true-class probability of one image's attack."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("loss", "margin (true - best other)", "p(true class)"))
    labels = iterate_labels(trace, steps, iterates)
    for col, key in enumerate(("loss", "margin", "p_true"), start=1):
        values = trace.get(key)
        if values is not None:
            fig.add_trace(go.Scatter(x=labels, y=list(values), mode="lines+markers", name=key, showlegend=False),
                          1, col)
    fig.update_xaxes(title_text="iterate", type="category")
    fig.update_layout(height=300, margin=dict(t=40, b=40, l=40, r=10))
    return fig


METRIC_NAMES = {"mse": "MSE", "kl": "KL", "rel": "relative error"}


def error_scaling_figure(analysis: dict, title: str = "") -> go.Figure:
    """MSE and KL at every probe (log scale) and the change rate of every component."""
    probes = analysis["probes"]
    names = list(probes)
    fig = make_subplots(rows=2, cols=1, subplot_titles=("clean vs adversarial error at each probe",
                                                        "change rate per component (after - before) / before"),
                        vertical_spacing=0.22)
    for metric in ("mse", "kl"):
        fig.add_trace(go.Scatter(x=names, y=[max(probes[n][metric], 1e-12) for n in names], mode="lines+markers",
                                 name=metric.upper()), 1, 1)
    comps = analysis["components"]
    labels = [row["probe"] for row in comps]
    for metric in ("mse", "kl", "rel"):
        fig.add_trace(go.Bar(x=labels, y=[row.get(f"{metric}_change_rate") for row in comps],
                             name=f"{METRIC_NAMES[metric]} change rate"), 2, 1)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_layout(title=title or "Error scaling", height=620, margin=dict(t=60, b=120, l=50, r=10))
    return fig


def component_bars_figure(analyses: dict[str, dict], metric: str = "mse") -> go.Figure:
    """The paper's bar chart: mean change rate per component type, one bar group per model/split."""
    fig = go.Figure()
    for label, analysis in analyses.items():
        summary = summarize_by_component(analysis["components"], metric)
        fig.add_trace(go.Bar(name=label, x=list(summary), y=list(summary.values()),
                             marker_pattern_shape="/" if "test" in label else ""))
    fig.update_layout(barmode="group", title=f"{METRIC_NAMES[metric]} change rate per component (mean over layers)",
                      yaxis_title="change rate", height=380)
    return fig


def token_error_figure(maps: dict[str, list], image_size: int) -> go.Figure:
    """Per-layer error along the sequence, mapped onto the image plane."""
    names = [n for n in maps if n.endswith("residual_norm") or n == "embed_norm"]
    cols = max(1, len(names))
    fig = make_subplots(rows=1, cols=cols, subplot_titles=names, horizontal_spacing=0.03)
    for i, name in enumerate(names, start=1):
        fig.add_trace(go.Heatmap(z=np.asarray(maps[name])[::-1], colorscale="Viridis", showscale=i == cols), 1, i)
        fig.update_xaxes(showticklabels=False, row=1, col=i)
        fig.update_yaxes(showticklabels=False, scaleanchor=f"x{i if i > 1 else ''}", row=1, col=i)
    fig.update_layout(title="Error along the sequence (per-token L2 norm, image coordinates)", height=300,
                      margin=dict(t=60, b=10, l=10, r=10))
    return fig


def eps_curve_figure(curves: dict) -> go.Figure:
    fig = go.Figure()
    for label, rows in curves["curves"].items():
        fig.add_trace(go.Scatter(
            x=[r["eps"] for r in rows], y=[r["accuracy"] for r in rows], mode="lines+markers", name=label,
            error_y=dict(type="data", symmetric=False,
                         array=[r["ci95"][1] - r["accuracy"] for r in rows],
                         arrayminus=[r["accuracy"] - r["ci95"][0] for r in rows])))
    fig.update_layout(title=f"Robust accuracy vs eps (n={curves['n']}, 95% Wilson intervals)", xaxis_title="eps",
                      yaxis_title="accuracy", yaxis_range=[0, 1], height=380)
    return fig


def transfer_figure(transfer: dict) -> go.Figure:
    z = [[cell["accuracy"] for cell in row] for row in transfer["matrix"]]
    sources = transfer.get("sources", transfer["models"])  # fewer rows after a cancel
    fig = go.Figure(go.Heatmap(z=z, x=transfer["models"], y=sources, zmin=0, zmax=1, colorscale="RdYlGn",
                               text=[[f"{v:.2f}" for v in row] for row in z], texttemplate="%{text}"))
    fig.update_layout(title=f"Transfer: accuracy of target (column) on examples crafted on source (row), "
                            f"n={transfer['n']}, eps={transfer['eps_label']}",
                      xaxis_title="target", yaxis_title="source", yaxis_autorange="reversed", height=420)
    return fig  # first source on top, as in a printed matrix: the white-box cells run down the diagonal


def confusion_figure(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> go.Figure:
    k = len(classes)
    m = np.zeros((k, k), dtype=int)
    for t, p in zip(y_true, y_pred):
        m[int(t), int(p)] += 1
    fig = go.Figure(go.Heatmap(z=m, x=list(classes), y=list(classes), colorscale="Blues", texttemplate="%{z}"))
    fig.update_layout(title="Adversarial predictions (rows: true class)", xaxis_title="predicted",
                      yaxis_title="true", yaxis_autorange="reversed", height=420)
    return fig


def training_curves_figure(curves: dict, title: str = "") -> go.Figure:
    """The paper's eight curves: train/test x clean/adversarial x accuracy/loss."""
    hist = curves["history"]
    epochs = [r["epoch"] for r in hist]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy", "loss"))
    for split in ("train", "test"):
        for kind in ("clean", "adv"):
            dash = "dash" if kind == "adv" else "solid"
            for col, metric in ((1, "acc"), (2, "loss")):
                fig.add_trace(go.Scatter(x=epochs, y=[r[f"{split}_{kind}_{metric}"] for r in hist],
                                         name=f"{split} {kind}", legendgroup=f"{split}{kind}", showlegend=col == 1,
                                         line=dict(dash=dash)), 1, col)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title=title or "Training curves", height=360)
    return fig
