"""The findings' tables follow the paper's layout, and no comparison claims a difference its intervals do not show."""
import re
from pathlib import Path

from ssm_lab.findings_tables import (
    NO_DIFFERENCE,
    NOT_TRAINED,
    ads_comparisons,
    comparison,
    family_comparisons,
    learn_notes,
    table1,
    table2,
    training_comparisons,
)

FINDINGS = Path(__file__).resolve().parent.parent / "docs" / "findings.md"
INTERVAL = re.compile(r"\[(-?[0-9.]+)%, (-?[0-9.]+)%\]")


def acc(p, half=0.03, n=1000):
    return {"accuracy": p, "ci95": [max(0.0, p - half), min(1.0, p + half)], "n": n}


def entry(name, arch, method, aa, clean=0.9, ads=None, bias=False, gap=None):
    metrics = {"clean": acc(clean, 0.005, 10000), "autoattack": {"0.3": {**acc(aa), "eps": 0.3}},
               "pgd10": {"0.3": {**acc(aa + 0.1), "eps": 0.3}}}
    if gap is not None:
        metrics["masking"] = {"0.3": {"eps": 0.3, "gap": gap, "ci95": [gap - 0.02, gap + 0.02], "n": 1000}}
    return {"name": name, "dataset": "mnist", "arch": arch, "method": method, "ads": ads, "threat_eps": 0.3,
            "config": {"ads": ads, "ads_bias": bias}, "metrics": metrics}


ENTRIES = [
    entry("mnist-s4-st", "s4", "st", 0.0, 0.97),
    entry("mnist-s4-pgdat", "s4", "pgd-at", 0.30, 0.8, gap=0.18),
    entry("mnist-s4-ads-pgdat", "s4", "pgd-at", 0.32, ads="relu"),  # overlaps S4 PGD-AT
    entry("mnist-s4-ads-pgdat-w128", "s4", "pgd-at", 0.49, ads="relu"),  # a width variant of the same cell
    entry("mnist-dss-pgdat", "dss", "pgd-at", 0.20),
    entry("mnist-dss-ads-tanh-pgdat", "dss", "pgd-at", 0.42, ads="tanh"),  # separated from DSS PGD-AT
    entry("mnist-mega-pgdat", "mega", "pgd-at", 0.05),
]


def test_table1_has_a_row_per_family_and_a_column_per_training_method():
    lines = table1(ENTRIES)
    assert lines[0] == "| family | ST | PGD-AT | TRADES | FreeAT | YOPO |"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| S4", "| DSS", "| S5", "| Mega", "| Mamba"]


def test_table1_cells_give_clean_and_autoattack_with_intervals_and_empty_cells_say_not_trained_yet():
    s4 = table1(ENTRIES)[2].split(" | ")
    assert s4[2].startswith("80.0% [79.5%, 80.5%] (n=10,000) / **30.0% [27.0%, 33.0%] (n=1,000)**"), s4[2]
    assert s4[3] == NOT_TRAINED


def test_table2_has_s4_and_dss_rows_and_the_five_ads_variants():
    lines = table2(ENTRIES)
    assert lines[0] == "| family | none | relu | sigmoid | tanh | relu+bias |"
    assert "`mnist-s4-ads-pgdat` (also: mnist-s4-ads-pgdat-w128)" in lines[2]  # the grid's own name leads
    assert lines[3].split(" | ")[4].startswith("90.0%"), lines[3]


def test_overlapping_intervals_give_no_significant_difference_at_this_n():
    c = comparison("A", acc(0.32), "B", acc(0.30))
    assert not c["claims_difference"]
    assert NO_DIFFERENCE in c["text"]


def test_separated_intervals_state_the_direction():
    c = comparison("A", acc(0.20), "B", acc(0.42))
    assert c["claims_difference"]
    assert "A 20.0% [17.0%, 23.0%] (n=1,000) is lower than B" in c["text"]


def test_no_generated_comparison_claims_a_difference_with_overlapping_intervals():
    generated = training_comparisons(ENTRIES) + family_comparisons(ENTRIES) + ads_comparisons(ENTRIES)
    assert len(generated) >= 4
    for c in generated:
        separated = c["first"][0] > c["second"][1] or c["second"][0] > c["first"][1]
        assert c["claims_difference"] == separated, c["text"]
        assert ("higher than" in c["text"] or "lower than" in c["text"]) == separated, c["text"]


def test_learn_notes_quote_the_ads_comparisons_and_the_largest_masking_gaps():
    notes = learn_notes(ENTRIES)
    assert any("DSS + AdS (tanh) PGD-AT" in text and "is higher than" in text for text in notes["ads"]), notes
    assert notes["autoattack"] == ["mnist-s4-pgdat: PGD-10 overstates AutoAttack by +18.0 points [+16.0, +20.0] "
                                   "on the same 1,000 images"]


def test_no_sentence_of_the_committed_findings_claims_a_difference_its_intervals_do_not_show():
    for line in FINDINGS.read_text().splitlines():
        if "higher than" in line or "lower than" in line:
            found = [(float(lo), float(hi)) for lo, hi in INTERVAL.findall(line)]
            assert len(found) >= 2, line
            (lo1, hi1), (lo2, hi2) = found[:2]
            assert lo1 > hi2 or lo2 > hi1, line


def test_the_learn_lessons_say_what_the_lab_shows_beside_what_the_paper_reports():
    from app.learn import LESSONS, lesson_markdown

    lessons = {lesson.key: lesson for lesson in LESSONS}
    ads = lesson_markdown(lessons["ads"], ENTRIES)
    assert "**What the paper reports:** The paper reports that AdS brings" in ads
    assert "- AutoAttack: DSS + AdS (tanh) PGD-AT 42.0% [39.0%, 45.0%] (n=1,000) is higher than" in ads
    autoattack = lesson_markdown(lessons["autoattack"], ENTRIES)
    assert "- mnist-s4-pgdat: PGD-10 overstates AutoAttack by +18.0 points" in autoattack
    assert lesson_markdown(lessons["fgsm"], ENTRIES) == lessons["fgsm"].text
