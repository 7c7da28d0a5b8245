"""The paper's Table 1 and Table 2 from card metrics, and comparisons stated only when their intervals separate."""
from __future__ import annotations

import re

from .catalogue import at_eps

FAMILIES = {"s4": "S4", "dss": "DSS", "s5": "S5", "mega": "Mega", "mamba": "Mamba"}
METHODS = {"st": "ST", "pgd-at": "PGD-AT", "trades": "TRADES", "freeat": "FreeAT", "yopo": "YOPO"}
ADS_VARIANTS = {"none": (None, False), "relu": ("relu", False), "sigmoid": ("sigmoid", False),
                "tanh": ("tanh", False), "relu+bias": ("relu", True)}
TABLE2_FAMILIES = ("s4", "dss")
NOT_TRAINED = "not trained yet"
NO_DIFFERENCE = "no significant difference at this n"


def pct(entry: dict | None) -> str:
    """'30.1% [27.3%, 33.1%] (n=1,000)'; 'not measured' without an entry."""
    if not isinstance(entry, dict) or "ci95" not in entry:
        return "not measured"
    lo, hi = entry["ci95"]
    return f"{entry['accuracy']:.1%} [{lo:.1%}, {hi:.1%}] (n={entry['n']:,})"


def figures(entry: dict) -> dict:
    """A catalogue entry's headline figures at its threat model: clean, AutoAttack, PGD-10 and the masking gap."""
    metrics, eps = entry.get("metrics") or {}, entry.get("threat_eps")
    return {"name": entry["name"], "clean": metrics.get("clean"),
            "autoattack": at_eps(metrics.get("autoattack"), eps) if eps is not None else None,
            "pgd10": at_eps(metrics.get("pgd10"), eps) if eps is not None else None,
            "masking": at_eps(metrics.get("masking"), eps) if eps is not None else None}


def grid(entries: list[dict], dataset: str = "mnist") -> dict[tuple, list[dict]]:
    """Checkpoints by (family, method, AdS activation, AdS bias); several per cell when widths differ."""
    cells: dict[tuple, list[dict]] = {}
    for e in entries:
        if e["dataset"] == dataset and e.get("metrics"):
            key = (e["arch"], e["method"], e["config"].get("ads"), bool(e["config"].get("ads_bias")))
            cells.setdefault(key, []).append(e)
    for found in cells.values():
        found.sort(key=lambda e: (len(e["name"]), e["name"]))  # the grid's own name, not a width variant
    return cells


def cell_text(found: list[dict] | None) -> str:
    if not found:
        return NOT_TRAINED
    f = figures(found[0])
    extra = f" (also: {', '.join(e['name'] for e in found[1:])})" if len(found) > 1 else ""
    return f"{pct(f['clean'])} / **{pct(f['autoattack'])}**<br>`{found[0]['name']}`{extra}"


def table1(entries: list[dict], dataset: str = "mnist") -> list[str]:
    """Rows: families; columns: training methods; each cell clean / AutoAttack with intervals (no AdS)."""
    cells = grid(entries, dataset)
    lines = ["| family | " + " | ".join(METHODS.values()) + " |", "|---|" + "---|" * len(METHODS)]
    for arch, family in FAMILIES.items():
        lines.append(f"| {family} | " + " | ".join(cell_text(cells.get((arch, m, None, False)))
                                                   for m in METHODS) + " |")
    return lines


def table2(entries: list[dict], dataset: str = "mnist", method: str = "pgd-at") -> list[str]:
    """Rows: S4 and DSS; columns: AdS variants (none, ReLU, Sigmoid, Tanh, ReLU with bias) under one method."""
    cells = grid(entries, dataset)
    lines = ["| family | " + " | ".join(ADS_VARIANTS) + " |", "|---|" + "---|" * len(ADS_VARIANTS)]
    for arch in TABLE2_FAMILIES:
        lines.append(f"| {FAMILIES[arch]} | " + " | ".join(cell_text(cells.get((arch, method, act, bias)))
                                                           for act, bias in ADS_VARIANTS.values()) + " |")
    return lines


def comparison(first: str, a: dict | None, second: str, b: dict | None, what: str = "AutoAttack") -> dict | None:
    """One sentence comparing two accuracies, computed from their intervals: 'higher'/'lower' only when the
    95% intervals separate, otherwise 'no significant difference at this n'. None when either is missing."""
    if not (isinstance(a, dict) and isinstance(b, dict) and "ci95" in a and "ci95" in b):
        return None
    claims = a["ci95"][0] > b["ci95"][1] or b["ci95"][0] > a["ci95"][1]
    if claims:
        verb = "is higher than" if a["accuracy"] > b["accuracy"] else "is lower than"
        text = f"{what}: {first} {pct(a)} {verb} {second} {pct(b)} (the 95% intervals do not overlap)."
    else:
        text = f"{what}: {first} {pct(a)} vs {second} {pct(b)}: {NO_DIFFERENCE} (the 95% intervals overlap)."
    return {"text": text, "claims_difference": claims, "first": a["ci95"], "second": b["ci95"]}


def _named(arch: str, method: str, ads=None, bias=False) -> str:
    ads_text = "" if ads is None else f" + AdS ({ads}{' with bias' if bias else ''})"
    return f"{FAMILIES[arch]}{ads_text} {METHODS[method]}"


def training_comparisons(entries: list[dict], dataset: str = "mnist") -> list[dict]:
    """Each adversarial training method against standard training per family, then against PGD-AT."""
    cells, out = grid(entries, dataset), []
    for arch in FAMILIES:
        st = cells.get((arch, "st", None, False))
        for method in ("pgd-at", "trades", "freeat", "yopo"):
            trained = cells.get((arch, method, None, False))
            if st and trained:
                out.append(comparison(_named(arch, method), figures(trained[0])["autoattack"], _named(arch, "st"),
                                      figures(st[0])["autoattack"]))
    for arch in FAMILIES:
        base = cells.get((arch, "pgd-at", None, False))
        for method in ("trades", "freeat", "yopo"):
            other = cells.get((arch, method, None, False))
            if base and other:
                out.append(comparison(_named(arch, method), figures(other[0])["autoattack"],
                                      _named(arch, "pgd-at"), figures(base[0])["autoattack"]))
    return [c for c in out if c]


def family_comparisons(entries: list[dict], dataset: str = "mnist") -> list[dict]:
    """The paper's 'Mega gains more than pure SSMs under AT': Mega against every pure SSM, PGD-AT, AutoAttack."""
    cells = grid(entries, dataset)
    mega = cells.get(("mega", "pgd-at", None, False))
    if not mega:
        return []
    out = [comparison(_named("mega", "pgd-at"), figures(mega[0])["autoattack"], _named(arch, "pgd-at"),
                      figures(cells[(arch, "pgd-at", None, False)][0])["autoattack"])
           for arch in FAMILIES if arch != "mega" and (arch, "pgd-at", None, False) in cells]
    return [c for c in out if c]


def ads_comparisons(entries: list[dict], dataset: str = "mnist", what: str = "autoattack") -> list[dict]:
    """Every AdS variant against no AdS, same family and method (Table 2), on AutoAttack or clean accuracy."""
    cells, out = grid(entries, dataset), []
    for (arch, method, ads, bias), found in sorted(cells.items(), key=lambda kv: str(kv[0])):
        plain = cells.get((arch, method, None, False))
        if ads is None or not plain:
            continue
        label = "AutoAttack" if what == "autoattack" else "clean accuracy"
        out.append(comparison(_named(arch, method, ads, bias), figures(found[0])[what], _named(arch, method),
                              figures(plain[0])[what], label))
    return [c for c in out if c]


def masking_rows(entries: list[dict]) -> list[str]:
    """PGD-10 minus AutoAttack on the same images (paired interval) beside Square's extra drop, per checkpoint."""
    lines = ["| checkpoint | AutoAttack | PGD-10 | PGD-10 minus AutoAttack, points (paired 95% interval) | "
             "Square's extra drop (points) |", "|---|---|---|---|---|"]
    for e in entries:
        f = figures(e)
        if f["autoattack"] is None and f["pgd10"] is None:
            continue
        gap = f["masking"]
        gap_text = (f"{100 * gap['gap']:+.1f} [{100 * gap['ci95'][0]:+.1f}, {100 * gap['ci95'][1]:+.1f}]"
                    if gap else "not measured on the same images (card from before the n=1,000 protocol)")
        drop = gap.get("square_extra_drop") if gap else _flagged_square_drop(f["autoattack"])
        lines.append(f"| {e['name']} | {pct(f['autoattack'])} | {pct(f['pgd10'])} | {gap_text} | "
                     f"{'-' if drop is None else f'{drop:.1f}'} |")
    return lines


SQUARE_FLAG = re.compile(r"Square Attack has decreased the robust accuracy of ([0-9.]+)%")


def _flagged_square_drop(autoattack: dict | None) -> float | None:
    """Older cards kept only AutoAttack's own warning, which quotes Square's drop in points of the images
    AutoAttack was handed."""
    for flag in (autoattack or {}).get("flags") or []:
        if found := SQUARE_FLAG.search(flag):
            return float(found.group(1))
    return None


def learn_notes(entries: list[dict], dataset: str = "mnist") -> dict[str, list[str]]:
    """What the lab's own AutoAttack numbers show, for the Learn tab's AdS and AutoAttack lessons."""
    ads = [c["text"] for c in ads_comparisons(entries, dataset)]
    gaps = []
    for e in entries:
        gap = figures(e)["masking"] if e["dataset"] == dataset else None
        if gap and (gap["ci95"][0] > 0 or gap["ci95"][1] < 0):
            gaps.append((gap["gap"], e["name"], gap))
    gaps.sort(reverse=True)
    masking = [f"{name}: PGD-10 overstates AutoAttack by {100 * g:+.1f} points [{100 * gap['ci95'][0]:+.1f}, "
               f"{100 * gap['ci95'][1]:+.1f}] on the same {gap['n']:,} images" for g, name, gap in gaps[:3]]
    return {"ads": ads, "autoattack": masking}
