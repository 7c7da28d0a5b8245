"""The Learn tab: short explanations, each with a one-click preset that fills the Attack tab and runs it."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    attack: str
    eps: str
    steps: int = 10
    restarts: int = 1
    step_size: float = 0.0
    target: str = "none"
    seed: int = 0
    index: int = 0
    prefer: dict = field(default_factory=dict)  # which shipped model fits best: dataset, method, ads
    compare: bool = False  # run on the Compare tab (with and without AdS) instead of the Attack tab


@dataclass(frozen=True)
class Lesson:
    key: str
    title: str
    text: str
    preset: Preset
    button: str


LESSONS = [
    Lesson("adversarial", "Adversarial examples", """
A classifier that is right on a test image can usually be made wrong by a change too small for a person to notice.
The change is found by optimisation: follow the gradient of the loss with respect to the *pixels* (not the weights),
and stay inside a small ball around the original image. For MNIST the usual budget is an L-infinity ball of radius
eps = 0.3 (every pixel may move by at most 0.3 on a 0-1 scale), for CIFAR-10 eps = 8/255.
The preset attacks a standard-trained model: watch the predicted class flip while the image barely changes.
""", Preset("PGD (Linf)", "0.3", steps=20, index=0, prefer={"dataset": "mnist", "method": "st"}),
           "Attack a digit with PGD"),
    Lesson("fgsm", "FGSM: one step", """
The Fast Gradient Sign Method (Goodfellow et al., 2015) takes a single step: x + eps * sign(gradient of the loss).
It is cheap (one forward and one backward pass) and often enough against an undefended model, but it is a weak
attack: a model that resists FGSM may still fall to an iterative attack. Its trace has a single point.
""", Preset("FGSM", "0.1", steps=1, index=1, prefer={"dataset": "mnist", "method": "st"}), "Run FGSM"),
    Lesson("pgd", "PGD: many small steps", """
Projected Gradient Descent (Madry et al., 2018) repeats small signed gradient steps from a random point of the ball
and projects back into the ball after each step. More steps and random restarts make it stronger. PGD-10 (ten steps)
is the attack the paper uses to pick checkpoints and to train adversarially (PGD-AT). The trace shows the loss rising
and the margin (true-class logit minus the best other logit) falling below zero when the attack succeeds. PGD
returns each image's first iterate that fools the model, so its trace stops there: against an undefended model
it often ends at iterate 0 or 1, the random start or one step after it.
""", Preset("PGD (Linf)", "0.3", steps=40, restarts=2, index=2, prefer={"dataset": "mnist", "method": "pgd-at"}),
           "Run PGD-40 with 2 restarts on an adversarially trained model"),
    Lesson("autoattack", "AutoAttack: the reliable yardstick", """
A weak attack makes a model look robust. AutoAttack (Croce & Hein, 2020) runs four complementary attacks with no
tuning: APGD-CE (adaptive step size), APGD-T (targeted, DLR loss), FAB-T (minimal perturbations) and Square
(gradient-free, so it is not fooled by masked gradients). A point counts as robust only if it survives all four.
It also checks for signs of gradient masking and reports them as flags. The preset runs APGD-CE, its first and
usually decisive member; the full ensemble is in the attack menu (it costs more: see the cost line before running).
""", Preset("APGD-CE", "0.3", steps=50, index=3, prefer={"dataset": "mnist", "method": "pgd-at"}), "Run APGD-CE"),
    Lesson("ssm", "What is special about state space models", """
An SSM layer is a linear recurrence, h_t = A h_(t-1) + B x_t, y_t = C h_t + D x_t, run over the image as a sequence of
pixels or patches. With fixed A, B, C (S4, DSS, S5) the whole layer is a convolution with a long kernel, so a small
input change spreads along the entire sequence, and how much the output error can grow is bounded by the parameters
alone. Mamba makes A, B, C depend on the input, which lets errors grow with the input itself ("error explosion");
Mega adds attention, which can rescale the SSM output. The **error-scaling chart** of each attack shows, probe by
probe, how far the clean and adversarial hidden states are apart, and the **error along the sequence** maps that
distance back onto the image, layer by layer.
""", Preset("PGD (Linf)", "0.3", steps=20, index=4, prefer={"dataset": "mnist", "method": "st"}),
           "Attack and show the error-scaling charts"),
    Lesson("ads", "What Adaptive Scaling (AdS) does", """
Qi et al. (2024) found that attention helps adversarial training because it can scale the SSM's output error, and
proposed Adaptive Scaling: after the SSM output y, multiply by a learned, input-dependent gate, act(W y) * y, with
act one of ReLU, Sigmoid or Tanh. It adds few parameters and, in the paper, brings adversarially trained S4 and DSS
close to Mega without its robust overfitting. The preset attacks the same image on models with and without AdS on the
Compare tab: look at the change rate of the `ads` component in the error-scaling bars (negative: it shrinks the error).
""", Preset("PGD (Linf)", "0.3", steps=20, index=5, prefer={"dataset": "mnist"}, compare=True),
           "Compare models with and without AdS"),
    Lesson("charts", "How to read each chart", """
- **Clean / adversarial / perturbation**: the perturbation is amplified to full range; red pixels got brighter, blue
  darker, white did not change. All images are served as lossless PNG.
- **Class probabilities**: top classes before (clean) and after (adversarial) the attack.
- **Attack trace**: per iterate (0 is PGD's random start; `r2:3` is restart 2, iterate 3; `end` the point a
  restart returned; `returned` the attack's result; attacks run inside a library show only `clean` and
  `returned`), the loss (rises), the margin (true logit minus best other;
  below 0 means fooled) and the probability of the true class. PGD stops at the first iterate that fools the
  model, and the summary says where.
- **Error scaling**: top, the mean squared error (MSE) and the KL divergence between clean and adversarial features
  at every probe, from the embedding to the logits (log scale); bottom, each component's change rate
  (after - before) / before, from the error at its own input and at its output: above 0 the component amplifies
  the attack's effect, below 0 it damps it.
- **Error along the sequence**: the per-token distance between clean and adversarial features after each layer,
  drawn at the tokens' image positions.
- **Survives 8-bit PNG**: whether the attack still works after rounding to the 256 grey levels a PNG stores.
""", Preset("PGD (Linf)", "0.3", steps=10, index=7, prefer={"dataset": "mnist", "method": "st"}),
           "Run an example to read"),
]


# What the paper says (its Table 2 and AutoAttack values were not recovered: docs/paper-notes), beside the lab's own
PAPER_SAYS = {
    "ads": "The paper reports that AdS brings adversarially trained S4 and DSS close to attention-based Mega, "
           "without Mega's robust overfitting.",
    "autoattack": "The paper reports PGD-10 and AutoAttack side by side for every model it trains.",
}


def lab_note(key: str, entries: list[dict]) -> str:
    """What this lab's own AutoAttack numbers show for a lesson, from the shipped cards through the functions that
    write docs/findings.md (a difference only when the 95% intervals separate); '' for lessons without one."""
    if key not in PAPER_SAYS:
        return ""
    from ssm_lab.findings_tables import learn_notes

    notes = learn_notes(entries)[key]
    if key == "ads":
        intro = ("**This lab's MNIST checkpoints** (AutoAttack at eps 0.3 from the cards; a difference is stated "
                 "only when the 95% intervals do not overlap):")
        empty = "no shipped pair of checkpoints differs only in AdS."
    else:
        intro = ("**This lab's checkpoints:** where PGD-10 overstates AutoAttack most, on the same images (paired "
                 "95% interval):")
        empty = "no shipped card has PGD-10 and AutoAttack on the same images yet, so the gap is not measured."
    lines = [f"**What the paper reports:** {PAPER_SAYS[key]}", "", intro]
    lines += [f"- {text}" for text in notes] or [f"- {empty}"]
    return "\n".join(lines)


def lesson_markdown(lesson: Lesson, entries: list[dict]) -> str:
    """A lesson's text followed by the lab's own figures when it has them."""
    note = lab_note(lesson.key, entries)
    return lesson.text + (f"\n{note}\n" if note else "")


def pick_model(entries: list[dict], prefer: dict, exclude: tuple[str, ...] = ()) -> str | None:
    """The shipped checkpoint that matches the most preferences (ties: catalogue order)."""
    best, best_score = None, -1
    for e in entries:
        if e["name"] in exclude:
            continue
        score = sum(1 for k, v in prefer.items() if e.get(k) == v)
        if score > best_score:
            best, best_score = e["name"], score
    return best


def ads_pair(entries: list[dict], dataset: str = "mnist") -> list[str]:
    """Two or more models that differ in AdS, same dataset (and same arch/method when possible)."""
    same = [e for e in entries if e["dataset"] == dataset] or entries
    with_ads = [e for e in same if e["ads"]]
    without = [e for e in same if not e["ads"]]
    for a in with_ads:
        twin = next((b for b in without if b["arch"] == a["arch"] and b["method"] == a["method"]), None)
        if twin:
            return [twin["name"], a["name"]]
    picked = ([without[0]["name"]] if without else []) + ([with_ads[0]["name"]] if with_ads else [])
    rest = [e["name"] for e in same if e["name"] not in picked]
    return (picked + rest)[:2]
