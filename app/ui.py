"""Gradio layout: one function per tab (Attack, Compare, Evaluate, Learn, Script it); every listener has an api_name."""
from __future__ import annotations

import importlib.metadata
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ssm_lab.datasets.info import DATASETS as INFO
from ssm_lab.image_fit import FITS

from . import endpoints as EP
from . import evaluation as E
from . import gradio_compat, opening
from . import handlers as H
from . import learn as L
from .attack_menu import ATTACK_MENU, LINF_ATTACKS, TARGET_LABEL, eps_text
from .common import arm_cancel, cancel_job
from .inputs import DATASETS, SOURCES, class_names
from .limits import LIMITS, cleanup_period

IMAGE = dict(format="png", type="numpy", interactive=False, height=240)  # lossless: perturbations survive display
CSS = ".result-image img { image-rendering: pixelated; }"
README = Path(__file__).resolve().parent.parent / "README.md"
DISTRIBUTION = "ssm-robustness-lab"


def readme_text() -> str:
    """README.md beside the packages in a source checkout, else the copy an installed package keeps in its
    metadata (pyproject's `readme`); empty if neither is there."""
    if README.is_file():
        return README.read_text(encoding="utf-8")
    try:
        return importlib.metadata.metadata(DISTRIBUTION).get_payload() or ""
    except importlib.metadata.PackageNotFoundError:
        return ""


def api_doc() -> str:
    """The README's "Script the app" and "Run and configure" sections, so the tab and the README never disagree."""
    text = readme_text()
    start, end = text.find("## Script the app"), text.find("## Library")
    return text[start:end] if 0 <= start < end else "See the project's README.md, section \"Script the app\"."


def _attack_controls():
    attack = gr.Dropdown(list(ATTACK_MENU), value=opening.ATTACK, label="Attack")
    eps = gr.Textbox(value=opening.EPS, label="eps (budget)", info="a number or k/255, e.g. 0.3 or 8/255")
    eps_note = gr.Markdown(eps_text(opening.EPS))
    steps = gr.Slider(1, LIMITS.steps, value=10, step=1, label="steps (Square: x25 queries)")
    step_size = gr.Number(value=0, label="step size (PGD; 0 = default 2.5 eps / steps)")
    restarts = gr.Slider(1, LIMITS.restarts, value=1, step=1, label="restarts")
    target = gr.Dropdown(["none"], value="none", label=TARGET_LABEL, allow_custom_value=True)
    seed = gr.Number(value=0, precision=0, label="seed")
    return attack, eps, eps_note, steps, step_size, restarts, target, seed


def model_picker() -> gr.Dropdown:
    """Several models by name. Custom values are allowed so that API clients need no `/startup` first (a
    CheckboxGroup would refuse every name its session has not been offered); the handlers check each name."""
    return gr.Dropdown([], multiselect=True, allow_custom_value=True, label="models")


HEAVY = dict(concurrency_id="compute", concurrency_limit=LIMITS.concurrency)  # the compute jobs share the cap


def build_demo() -> gr.Blocks:
    gradio_compat.apply()
    cache = (cleanup_period(LIMITS.file_age), LIMITS.file_age)  # gradio's copies of outputs and uploads
    with gr.Blocks(title="SSM Robustness Lab", delete_cache=cache) as demo:
        gr.Markdown("# SSM Robustness Lab\nAdversarial attacks on deep state space models (S4, DSS, S5, Mega, "
                    "Mamba) for MNIST and CIFAR-10, after Qi et al., *Exploring Adversarial Robustness of Deep "
                    "State Space Models* (NeurIPS 2024).")
        with gr.Tabs(selected="attack") as tabs:
            attack = attack_tab()
            compare = compare_tab(attack)
            evaluate = evaluate_tab()
            learn_tab(attack, compare, tabs)
            with gr.Tab("Script it", id="api"):
                gr.Markdown(api_doc())
        on_startup(demo, attack, compare, evaluate)
    return demo


def on_startup(demo: gr.Blocks, attack: SimpleNamespace, compare: SimpleNamespace, evaluate: SimpleNamespace):
    """The model menus of every tab, the preselected checkpoint and the checkpoint table, once the page is open."""

    def startup():
        info = H.startup()
        choices, group = info["choices"], info["group"]
        note = "" if choices else ("No shipped checkpoints found: load a model from the Hub, or set "
                                   "SSM_LAB_CHECKPOINTS to a directory of checkpoints.")
        return (gr.update(choices=choices, value=info["value"]), info["table"],
                gr.update(choices=choices, value=group), gr.update(choices=choices, value=info["value"]),
                gr.update(choices=choices, value=group), note,
                gr.update(choices=["any"] + class_names(opening.DATASET), value="any"))

    demo.load(startup, None, [attack.model, attack.table, compare.models, evaluate.model, evaluate.curve_models,
                              attack.card, attack.klass], api_name="startup")


def attack_tab() -> SimpleNamespace:
    """Model, image and attack settings; the attack's images, summary, figures, downloads and run card."""
    with gr.Tab("Attack", id="attack"):
        with gr.Row():
            with gr.Column():
                model = gr.Dropdown([], label="Model", allow_custom_value=True,
                                    info="shipped checkpoint (dataset · arch · training · AdS), or a Hub "
                                         "repo id org/name[@revision]")
                with gr.Accordion("Load a model from the Hugging Face Hub", open=False):
                    hub_repo = gr.Textbox(label="repo id", placeholder="org/name")
                    hub_rev = gr.Textbox(label="revision (branch, tag or commit; empty = main)")
                    hub_btn = gr.Button("Download and load")
                card = gr.Markdown("Loading the model list ...", elem_id="model-card")
                with gr.Accordion("Training curves (shipped checkpoints)", open=False):
                    curves_plot = gr.Plot(label="training curves")
                with gr.Accordion("All shipped checkpoints and their card metrics", open=False):
                    table = gr.Dataframe(interactive=False, wrap=True)
            with gr.Column():
                image = _image_controls()
            with gr.Column():
                attack, eps, eps_note, steps, step_size, restarts, target, seed = _attack_controls()
                cost = gr.Markdown()
                with gr.Row():
                    run_btn = gr.Button("Run attack", variant="primary", elem_id="run-attack")
                    cancel_btn = gr.Button("Cancel", variant="stop")
                status = gr.Markdown()
        with gr.Row():
            clean_img = gr.Image(label="clean", elem_classes="result-image", **IMAGE)
            adv_img = gr.Image(label="adversarial", elem_id="adv-image", elem_classes="result-image", **IMAGE)
            delta_img = gr.Image(label="perturbation (amplified; red +, blue -)", elem_classes="result-image",
                                 **IMAGE)
        summary = gr.Markdown(elem_id="attack-summary")
        with gr.Row():
            topk_plot = gr.Plot(label="top-k probabilities", elem_id="topk-plot")
            trace_plot = gr.Plot(label="attack trace", elem_id="trace-plot")
        scaling_plot = gr.Plot(label="error scaling per layer and component", elem_id="scaling-plot")
        token_plot = gr.Plot(label="error along the sequence, per layer", elem_id="token-plot")
        files = gr.File(label="downloads: adversarial PNG (8-bit), lossless NPY (float32), run card (JSON)",
                        file_count="multiple", interactive=False)
        with gr.Accordion("Run card (everything needed to reproduce this attack)", open=False):
            run_card = gr.JSON(label="run card")

    ui = SimpleNamespace(model=model, card=card, table=table, klass=image.klass, dataset=image.dataset,
                         source=image.source, index=image.index, image_inputs=image.inputs,
                         knobs=SimpleNamespace(attack=attack, eps=eps, steps=steps, restarts=restarts, seed=seed),
                         attack_inputs=[attack, eps, steps, step_size, restarts, target, seed],
                         outputs=[clean_img, adv_img, delta_img, summary, topk_plot, trace_plot, scaling_plot,
                                  token_plot, files, run_card])
    preview_io = dict(fn=EP.preview, inputs=[model] + image.inputs, outputs=[image.preview, image.preview_note])
    model.change(EP.select_model, [model, image.dataset], [card, eps, target, image.dataset, curves_plot],
                 api_name="select_model").then(api_name=False, **preview_io)
    hub_btn.click(H.load_hub_model, [hub_repo, hub_rev], model, api_name="load_hub_model")
    _wire_image(image, preview_io)
    eps.change(eps_text, eps, eps_note, api_name="eps_text")
    gr.on([c.change for c in [model] + ui.attack_inputs], EP.cost, [model] + ui.attack_inputs, cost,
          api_name="cost", trigger_mode="always_last")
    _armed(run_btn, "attack").then(EP.run_attack, [model] + ui.image_inputs + ui.attack_inputs, ui.outputs,
                                   api_name="attack", **HEAVY)
    cancel_btn.click(_canceller("attack"), None, status, queue=False, api_name="cancel_attack")
    return ui


def _image_controls() -> SimpleNamespace:
    """Where the image comes from (test set, upload, drawing) and what the model sees of it."""
    source = gr.Radio(list(SOURCES), value="dataset", label="Image source")
    with gr.Tab("Test set"):
        dataset = gr.Radio(list(DATASETS), value=opening.DATASET, label="dataset")
        klass = gr.Dropdown(["any"], value="any", label="class")
        with gr.Row():
            index = gr.Number(value=0, precision=0, minimum=0, label="index in the test set")
            random_btn = gr.Button("Random image")
    with gr.Tab("Upload"):
        # image_mode=None hands over the file itself: digit framing reads its alpha and its full size; a mirrored
        # webcam shot would turn a digit held up to the camera into its mirror image
        upload = gr.Image(label="image: a file (PNG, JPEG, BMP, GIF, TIFF, WebP), the webcam or the clipboard",
                          type="filepath", image_mode=None, format="png", sources=["upload", "webcam", "clipboard"],
                          webcam_options=gr.WebcamOptions(mirror=False), elem_id="upload-image")
        fit = gr.Radio([(FITS[k], k) for k in ("auto", "squash", "crop")], value="auto",
                       label="how the upload becomes the model's input")
    with gr.Tab("Draw a digit"):
        sketch = gr.Sketchpad(label="draw a digit: pick the brush on the left, then draw", type="numpy",
                              image_mode="RGBA", canvas_size=(280, 280), fixed_canvas=True,
                              brush=gr.Brush(default_size=20, colors=["#000000"], color_mode="fixed"))
    preview = gr.Image(label="What the model sees", elem_classes="result-image", **IMAGE)
    preview_note = gr.Markdown(elem_id="preview-note")
    return SimpleNamespace(source=source, dataset=dataset, klass=klass, index=index, random_btn=random_btn,
                           upload=upload, sketch=sketch, fit=fit, preview=preview, preview_note=preview_note,
                           inputs=[source, dataset, index, upload, sketch, fit])


def _wire_image(image: SimpleNamespace, preview_io: dict) -> None:
    """The preview follows every change of the image; picking a class, a random image, an upload or a drawing
    switches the source to it."""
    gr.on([image.source.change, image.index.change, image.dataset.change, image.upload.change, image.fit.change],
          api_name="preview", trigger_mode="always_last", **preview_io)
    image.dataset.change(lambda d: gr.update(choices=["any"] + class_names(d), value="any"), image.dataset,
                         image.klass, api_name="dataset_classes")
    image.klass.input(H.pick_class, [image.dataset, image.klass], image.index, api_name="first_of_class")
    image.random_btn.click(H.pick_random, [image.dataset, image.klass], image.index, api_name="random_image").then(
        lambda: "dataset", None, image.source, api_name=False)
    # a file, a webcam shot and a pasted image all arrive as a change of value
    image.upload.change(lambda value, current: "upload" if value else current, [image.upload, image.source],
                        image.source, api_name="use_upload")
    image.sketch.change(lambda sk, current: "drawing" if _drawn(sk) else current, [image.sketch, image.source],
                        image.source, api_name="use_drawing", trigger_mode="always_last").then(
        api_name=False, **preview_io)


def compare_tab(attack: SimpleNamespace) -> SimpleNamespace:
    """The Attack tab's image and settings on several models side by side, and their transfer matrix."""
    with gr.Tab("Compare", id="compare"):
        gr.Markdown("Attack the image chosen on the Attack tab with the attack settings of the Attack tab on "
                    f"up to {LIMITS.compare_models} models, side by side.")
        models = model_picker()
        with gr.Row():
            compare_btn = gr.Button("Attack on every model", variant="primary")
            cancel_btn = gr.Button("Cancel", variant="stop")
        status = gr.Markdown()
        gallery = gr.Gallery(label="adversarial images and perturbations", columns=4, format="png", height=320,
                             elem_id="compare-gallery")
        table = gr.Dataframe(interactive=False, label="results", elem_id="compare-table")
        plot = gr.Plot(label="error-scaling change rate per component (MSE)")
        gr.Markdown("### Transfer matrix\nAdversarial examples crafted on each model (rows), accuracy of "
                    "each model (columns) on them. Uses the attack, eps, steps and seed above.")
        with gr.Row():
            transfer_dataset = gr.Radio(list(DATASETS), value=opening.DATASET, label="test set")
            transfer_n = gr.Slider(1, LIMITS.eval_n, value=min(32, LIMITS.eval_n), step=1, label="images")
        transfer_btn = gr.Button("Compute the transfer matrix")
        transfer_plot = gr.Plot(label="transfer matrix")
        with gr.Accordion("Transfer result (JSON)", open=False):
            transfer_json = gr.JSON(label="transfer result")

    ui = SimpleNamespace(models=models, inputs=[models] + attack.image_inputs + attack.attack_inputs,
                         outputs=[gallery, table, plot])
    _armed(compare_btn, "compare").then(EP.compare, ui.inputs, ui.outputs, api_name="compare", **HEAVY)
    knobs = attack.knobs  # the transfer matrix uses the Attack tab's attack, eps, steps, restarts and seed
    _armed(transfer_btn, "compare").then(EP.transfer, [models, transfer_dataset, transfer_n, knobs.attack, knobs.eps,
                                                       knobs.steps, knobs.restarts, knobs.seed],
                                         [transfer_plot, transfer_json], api_name="transfer", **HEAVY)
    cancel_btn.click(_canceller("compare"), None, status, queue=False, api_name="cancel_compare")
    return ui


def evaluate_tab() -> SimpleNamespace:
    """Robust accuracy of one model on n test images, and accuracy-vs-eps curves of several."""
    with gr.Tab("Evaluate", id="evaluate"):
        with gr.Row():
            model = gr.Dropdown([], label="model", allow_custom_value=True)
            dataset = gr.Radio(list(DATASETS), value=opening.DATASET, label="test set")
            n = gr.Slider(1, LIMITS.eval_n, value=min(64, LIMITS.eval_n), step=1, label="images")
        with gr.Row():
            attacks = gr.CheckboxGroup(list(ATTACK_MENU), value=["FGSM", "PGD (Linf)"], label="attacks")
            eps = gr.Textbox(value=opening.EPS, label="eps", info="a number or k/255")
            steps = gr.Slider(1, LIMITS.steps, value=10, step=1, label="steps")
            restarts = gr.Slider(1, LIMITS.restarts, value=1, step=1, label="restarts")
            seed = gr.Number(value=0, precision=0, label="seed")
        with gr.Row():
            eval_btn = gr.Button("Evaluate robust accuracy", variant="primary")
            cancel_btn = gr.Button("Cancel", variant="stop")
        status = gr.Markdown()
        report = gr.Markdown(elem_id="eval-report")
        with gr.Row():
            confusion_plot = gr.Plot(label="confusion matrix under the last attack", elem_id="confusion-plot")
            with gr.Column():
                report_file = gr.File(label="full report (JSON)", interactive=False)
                with gr.Accordion("Report (JSON)", open=False):
                    report_json = gr.JSON(label="report")
        gr.Markdown("### Accuracy vs eps")
        with gr.Row():
            curve_models = model_picker()
            curve_attack = gr.Dropdown(LINF_ATTACKS, value=opening.ATTACK, label="attack (Linf)")
            curve_eps = gr.Textbox(value=E.CURVE_EPS[opening.DATASET], label="eps values",
                                   info=f"comma-separated, at most {LIMITS.eps_points}")
        curve_btn = gr.Button("Plot accuracy vs eps (same images and settings as above)")
        curve_plot = gr.Plot(label="accuracy vs eps", elem_id="curve-plot")
        with gr.Accordion("Curves (JSON)", open=False):
            curve_json = gr.JSON(label="curves")

    model.change(EP.follow_evaluate_model, [model, dataset], [dataset, eps, curve_eps], api_name=False)
    _armed(eval_btn, "evaluate").then(EP.evaluate, [model, dataset, n, attacks, eps, steps, restarts, seed],
                                      [report, confusion_plot, report_file, report_json], api_name="evaluate",
                                      **HEAVY)
    _armed(curve_btn, "evaluate").then(EP.eps_curves, [curve_models, dataset, n, curve_attack, curve_eps, steps,
                                                       restarts, seed], [curve_plot, curve_json],
                                       api_name="eps_curves", **HEAVY)
    cancel_btn.click(_canceller("evaluate"), None, status, queue=False, api_name="cancel_evaluate")
    return SimpleNamespace(model=model, curve_models=curve_models)


def learn_tab(attack: SimpleNamespace, compare: SimpleNamespace, tabs: gr.Tabs) -> None:
    """Short lessons; each button fills the Attack (or Compare) tab with a preset and runs it."""
    from .models import catalogue

    with gr.Tab("Learn", id="learn"):
        buttons, shipped = [], catalogue()  # the AdS and AutoAttack lessons quote the shipped cards
        for lesson in L.LESSONS:
            with gr.Accordion(lesson.title, open=lesson.key == "adversarial"):
                gr.Markdown(L.lesson_markdown(lesson, shipped))
                buttons.append((lesson, gr.Button(lesson.button, variant="primary", size="sm")))
    fill = [attack.model, attack.dataset, attack.source, attack.index, *attack.attack_inputs, tabs]
    for lesson, button in buttons:
        if lesson.preset.compare:
            button.click(_preset_values(lesson), None, fill + [compare.models],
                         api_name=f"preset_{lesson.key}").then(
                EP.compare, compare.inputs, compare.outputs, api_name=False, **HEAVY)
        else:
            button.click(_preset_values(lesson), None, fill, api_name=f"preset_{lesson.key}").then(
                EP.run_attack, [attack.model] + attack.image_inputs + attack.attack_inputs, attack.outputs,
                api_name=False, **HEAVY)


def _canceller(kind: str):
    def cancel(request: gr.Request):
        return cancel_job(kind, request)

    return cancel


def _armed(button: gr.Button, kind: str):
    """A click that first registers this session's cancel event (unqueued), so Cancel reaches a queued job too."""

    def arm(request: gr.Request):
        arm_cancel(kind, request)

    return button.click(arm, None, None, queue=False, api_name=False)


def _drawn(sketch) -> bool:
    from .inputs import sketch_array

    try:
        arr = sketch_array(sketch)
    except ValueError:
        return False
    return arr is not None and arr.size > 0 and int(arr.max()) > 0 and int(arr.min()) != int(arr.max())


def _preset_values(lesson: L.Lesson):
    def values():
        from .models import catalogue

        p = lesson.preset
        entries = catalogue()
        name = L.pick_model(entries, p.prefer)
        out = [name, INFO[p.prefer.get("dataset", "mnist")].display_name, "dataset", p.index,
               p.attack, p.eps, p.steps, p.step_size, p.restarts, p.target, p.seed,
               gr.Tabs(selected="compare" if p.compare else "attack")]
        if p.compare:
            out.append(L.ads_pair(entries, p.prefer.get("dataset", "mnist")))
        return out

    return values
