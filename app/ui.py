"""Gradio layout: Attack, Compare, Evaluate, Learn and API tabs; every listener has an api_name."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from ssm_lab.image_fit import FITS

from . import compare as C
from . import evaluation as E
from . import gradio_patches
from . import handlers as H
from . import learn as L
from .attack_menu import ATTACK_MENU, LINF_ATTACKS, eps_text
from .common import arm_cancel, cancel_job
from .inputs import DATASETS, SOURCES, class_names
from .limits import LIMITS, cleanup_period

IMAGE = dict(format="png", type="numpy", interactive=False, height=240)  # lossless: perturbations survive display
CSS = ".result-image img { image-rendering: pixelated; }"
README = Path(__file__).resolve().parent.parent / "README.md"


def api_doc() -> str:
    """The README's "Script the app" and "Run and configure" sections, so the tab and the README never disagree."""
    text = README.read_text() if README.is_file() else ""
    start, end = text.find("## Script the app"), text.find("## Library")
    return text[start:end] if 0 <= start < end else "See the project's README.md, section \"Script the app\"."


def _attack_controls():
    attack = gr.Dropdown(list(ATTACK_MENU), value="PGD (Linf)", label="Attack")
    eps = gr.Textbox(value="0.3", label="eps (budget)", info="a number or k/255, e.g. 0.3 or 8/255")
    eps_note = gr.Markdown(eps_text("0.3"))
    steps = gr.Slider(1, LIMITS.steps, value=10, step=1, label="steps (Square: x25 queries)")
    step_size = gr.Number(value=0, label="step size (PGD; 0 = default 2.5 eps / steps)")
    restarts = gr.Slider(1, LIMITS.restarts, value=1, step=1, label="restarts")
    target = gr.Dropdown(["none"], value="none", label="target class (FGSM, PGD, CW)", allow_custom_value=True)
    seed = gr.Number(value=0, precision=0, label="seed")
    return attack, eps, eps_note, steps, step_size, restarts, target, seed


def model_picker() -> gr.Dropdown:
    """Several models by name. Custom values are allowed so that API clients need no `/startup` first (a
    CheckboxGroup would refuse every name its session has not been offered); the handlers check each name."""
    return gr.Dropdown([], multiselect=True, allow_custom_value=True, label="models")


def build_demo() -> gr.Blocks:
    gradio_patches.apply()
    cache = (cleanup_period(LIMITS.file_age), LIMITS.file_age)  # gradio's copies of outputs and uploads
    with gr.Blocks(title="SSM Robustness Lab", delete_cache=cache) as demo:
        gr.Markdown("# SSM Robustness Lab\nAdversarial attacks on deep state space models (S4, DSS, S5, Mega, "
                    "Mamba) for MNIST and CIFAR-10, after Qi et al., *Exploring Adversarial Robustness of Deep "
                    "State Space Models* (NeurIPS 2024).")
        with gr.Tabs(selected="attack") as tabs:
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
                        source = gr.Radio(list(SOURCES), value="dataset", label="Image source")
                        with gr.Tab("Test set"):
                            dataset = gr.Radio(list(DATASETS), value="MNIST", label="dataset")
                            klass = gr.Dropdown(["any"], value="any", label="class")
                            with gr.Row():
                                index = gr.Number(value=0, precision=0, minimum=0, label="index in the test set")
                                random_btn = gr.Button("Random image")
                        with gr.Tab("Upload"):
                            # image_mode=None hands over the file itself: framing reads its alpha and full size
                            upload = gr.Image(label="image: a file (PNG, JPEG, BMP, GIF, TIFF, WebP), the webcam "
                                                    "or the clipboard", type="filepath", image_mode=None,
                                              format="png", sources=["upload", "webcam", "clipboard"],
                                              elem_id="upload-image")
                            upload_fit = gr.Radio([(FITS[k], k) for k in ("auto", "squash", "crop")], value="auto",
                                                  label="how the upload becomes the model's input")
                        with gr.Tab("Draw a digit"):
                            sketch = gr.Sketchpad(label="draw a digit: pick the brush on the left, then draw",
                                                  type="numpy", image_mode="RGBA", canvas_size=(280, 280),
                                                  fixed_canvas=True, brush=gr.Brush(default_size=20,
                                                                                    colors=["#000000"],
                                                                                    color_mode="fixed"))
                        preview = gr.Image(label="What the model sees", elem_classes="result-image", **IMAGE)
                        preview_note = gr.Markdown(elem_id="preview-note")
                    with gr.Column():
                        attack, eps, eps_note, steps, step_size, restarts, target, seed = _attack_controls()
                        cost = gr.Markdown()
                        with gr.Row():
                            run_btn = gr.Button("Run attack", variant="primary", elem_id="run-attack")
                            cancel_btn = gr.Button("Cancel", variant="stop")
                        status = gr.Markdown()
                with gr.Row():
                    clean_img = gr.Image(label="clean", elem_classes="result-image", **IMAGE)
                    adv_img = gr.Image(label="adversarial", elem_id="adv-image", elem_classes="result-image",
                                       **IMAGE)
                    delta_img = gr.Image(label="perturbation (amplified; red +, blue -)",
                                         elem_classes="result-image", **IMAGE)
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

            with gr.Tab("Compare", id="compare"):
                gr.Markdown("Attack the image chosen on the Attack tab with the attack settings of the Attack tab on "
                            f"up to {LIMITS.compare_models} models, side by side.")
                compare_models = model_picker()
                with gr.Row():
                    compare_btn = gr.Button("Attack on every model", variant="primary")
                    compare_cancel = gr.Button("Cancel", variant="stop")
                compare_status = gr.Markdown()
                compare_gallery = gr.Gallery(label="adversarial images and perturbations", columns=4, format="png",
                                             height=320, elem_id="compare-gallery")
                compare_table = gr.Dataframe(interactive=False, label="results", elem_id="compare-table")
                compare_plot = gr.Plot(label="error-scaling change rate per component (MSE)")
                gr.Markdown("### Transfer matrix\nAdversarial examples crafted on each model (rows), accuracy of "
                            "each model (columns) on them. Uses the attack, eps, steps and seed above.")
                with gr.Row():
                    transfer_dataset = gr.Radio(list(DATASETS), value="MNIST", label="test set")
                    transfer_n = gr.Slider(1, LIMITS.eval_n, value=min(32, LIMITS.eval_n), step=1, label="images")
                transfer_btn = gr.Button("Compute the transfer matrix")
                transfer_plot = gr.Plot(label="transfer matrix")
                with gr.Accordion("Transfer result (JSON)", open=False):
                    transfer_json = gr.JSON(label="transfer result")

            with gr.Tab("Evaluate", id="evaluate"):
                with gr.Row():
                    eval_model = gr.Dropdown([], label="model", allow_custom_value=True)
                    eval_dataset = gr.Radio(list(DATASETS), value="MNIST", label="test set")
                    eval_n = gr.Slider(1, LIMITS.eval_n, value=min(64, LIMITS.eval_n), step=1, label="images")
                with gr.Row():
                    eval_attacks = gr.CheckboxGroup(list(ATTACK_MENU), value=["FGSM", "PGD (Linf)"], label="attacks")
                    eval_eps = gr.Textbox(value="0.3", label="eps", info="a number or k/255")
                    eval_steps = gr.Slider(1, LIMITS.steps, value=10, step=1, label="steps")
                    eval_restarts = gr.Slider(1, LIMITS.restarts, value=1, step=1, label="restarts")
                    eval_seed = gr.Number(value=0, precision=0, label="seed")
                with gr.Row():
                    eval_btn = gr.Button("Evaluate robust accuracy", variant="primary")
                    eval_cancel = gr.Button("Cancel", variant="stop")
                eval_status = gr.Markdown()
                eval_report = gr.Markdown(elem_id="eval-report")
                with gr.Row():
                    confusion_plot = gr.Plot(label="confusion matrix under the last attack", elem_id="confusion-plot")
                    with gr.Column():
                        eval_file = gr.File(label="full report (JSON)", interactive=False)
                        with gr.Accordion("Report (JSON)", open=False):
                            eval_json = gr.JSON(label="report")
                gr.Markdown("### Accuracy vs eps")
                with gr.Row():
                    curve_models = model_picker()
                    curve_attack = gr.Dropdown(LINF_ATTACKS, value="PGD (Linf)", label="attack (Linf)")
                    curve_eps = gr.Textbox(value=E.CURVE_EPS["MNIST"], label="eps values",
                                           info=f"comma-separated, at most {LIMITS.eps_points}")
                curve_btn = gr.Button("Plot accuracy vs eps (same images and settings as above)")
                curve_plot = gr.Plot(label="accuracy vs eps", elem_id="curve-plot")
                with gr.Accordion("Curves (JSON)", open=False):
                    curve_json = gr.JSON(label="curves")

            with gr.Tab("Learn", id="learn"):
                lesson_buttons = []
                for lesson in L.LESSONS:
                    with gr.Accordion(lesson.title, open=lesson.key == "adversarial"):
                        gr.Markdown(lesson.text)
                        lesson_buttons.append((lesson, gr.Button(lesson.button, variant="primary", size="sm")))

            with gr.Tab("Script it", id="api"):
                gr.Markdown(api_doc())

        image_inputs = [source, dataset, index, upload, sketch]
        attack_inputs = [attack, eps, steps, step_size, restarts, target, seed]
        run_inputs = image_inputs + attack_inputs + [upload_fit]  # the fit last: API callers may leave it out
        attack_outputs = [clean_img, adv_img, delta_img, summary, topk_plot, trace_plot, scaling_plot, token_plot,
                          files, run_card]
        heavy = dict(concurrency_id="compute", concurrency_limit=LIMITS.concurrency)

        # ----- start: model list, preselected checkpoint -------------------------------------------------
        def startup():
            info = H.startup()
            choices, group = info["choices"], info["group"]
            note = "" if choices else ("No shipped checkpoints found: load a model from the Hub, or set "
                                       "SSM_LAB_CHECKPOINTS to a directory of checkpoints.")
            return (gr.update(choices=choices, value=info["value"]), info["table"],
                    gr.update(choices=choices, value=group), gr.update(choices=choices, value=info["value"]),
                    gr.update(choices=choices, value=group), note,
                    gr.update(choices=["any"] + class_names("MNIST"), value="any"))

        demo.load(startup, None, [model, table, compare_models, eval_model, curve_models, card, klass],
                  api_name="startup")

        # ----- model -------------------------------------------------------------------------------------
        def on_model(model, current_dataset):
            if not model:
                return gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
            text, eps_value, classes, data, curves = H.select_model(model)
            # the budget follows the model only across datasets, so a preset's own eps is not overwritten
            eps_update = eps_value if data != current_dataset else gr.update()
            return text, eps_update, gr.update(choices=classes, value="none"), data, curves

        def on_preview(model, source, dataset, index, upload, sketch, fit):
            if not model:
                return None, "Choose a model to see what it sees."
            return H.preview(model, source, dataset, index, upload, sketch, fit)

        preview_io = dict(fn=on_preview, inputs=[model] + image_inputs + [upload_fit],
                          outputs=[preview, preview_note])
        model.change(on_model, [model, dataset], [card, eps, target, dataset, curves_plot],
                     api_name="select_model").then(
            api_name=False, **preview_io)
        hub_btn.click(H.load_hub_model, [hub_repo, hub_rev], model, api_name="load_hub_model")

        # ----- image -------------------------------------------------------------------------------------
        gr.on([source.change, index.change, dataset.change, upload.change, upload_fit.change], api_name="preview",
              trigger_mode="always_last", **preview_io)
        dataset.change(lambda d: gr.update(choices=["any"] + class_names(d), value="any"), dataset, klass,
                       api_name="dataset_classes")
        klass.input(H.pick_class, [dataset, klass], index, api_name="first_of_class")
        random_btn.click(H.pick_random, [dataset, klass], index, api_name="random_image").then(
            lambda: "dataset", None, source, api_name=False)
        # a file, a webcam shot and a pasted image all arrive as a change of value
        upload.change(lambda value, current: "upload" if value else current, [upload, source], source,
                      api_name="use_upload")
        sketch.change(lambda sk, current: "drawing" if _drawn(sk) else current, [sketch, source], source,
                      api_name="use_drawing", trigger_mode="always_last").then(api_name=False, **preview_io)

        # ----- cost, attack, cancel ------------------------------------------------------------------------
        eps.change(eps_text, eps, eps_note, api_name="eps_text")

        def on_cost(model, attack, eps, steps, step_size, restarts, target, seed):
            if not model:
                return ""
            try:
                return H.estimate_cost(model, attack, eps, steps, step_size, restarts, target, seed)
            except gr.Error as exc:  # shown in place while the user is still typing, not as a pop-up
                return f"**Cannot run yet:** {exc.message}"

        gr.on([c.change for c in [model] + attack_inputs], on_cost, [model] + attack_inputs, cost, api_name="cost",
              trigger_mode="always_last")

        def do_attack(model, source, dataset, index, upload, sketch, attack, eps, steps, step_size, restarts, target,
                      seed, fit, request: gr.Request, progress=gr.Progress()):
            return H.run_attack(model, source, dataset, index, upload, sketch, attack, eps, steps, step_size,
                                restarts, target, seed, progress=progress, request=request, fit=fit)

        def cancel_attack(request: gr.Request):
            return cancel_job("attack", request)

        _armed(run_btn, "attack").then(
            do_attack, [model] + run_inputs, attack_outputs, api_name="attack", **heavy)
        cancel_btn.click(cancel_attack, None, status, queue=False, api_name="cancel_attack")

        # ----- compare -------------------------------------------------------------------------------------
        def do_compare(models, source, dataset, index, upload, sketch, attack, eps, steps, step_size, restarts,
                       target, seed, fit, request: gr.Request, progress=gr.Progress()):
            return C.compare_models(models, source, dataset, index, upload, sketch, attack, eps, steps, step_size,
                                    restarts, target, seed, progress=progress, request=request, fit=fit)

        def do_transfer(models, dataset, n, attack, eps, steps, restarts, seed, request: gr.Request,
                        progress=gr.Progress()):
            return C.transfer(models, dataset, n, attack, eps, steps, restarts, seed, progress=progress,
                              request=request)

        _armed(compare_btn, "compare").then(do_compare, [compare_models] + run_inputs,
                                            [compare_gallery, compare_table, compare_plot], api_name="compare",
                                            **heavy)
        _armed(transfer_btn, "compare").then(do_transfer, [compare_models, transfer_dataset, transfer_n, attack, eps,
                                                           steps, restarts, seed], [transfer_plot, transfer_json],
                                             api_name="transfer", **heavy)

        def cancel_compare(request: gr.Request):
            return cancel_job("compare", request)

        compare_cancel.click(cancel_compare, None, compare_status, queue=False, api_name="cancel_compare")

        # ----- evaluate ------------------------------------------------------------------------------------
        def do_evaluate(model, dataset, n, attacks, eps, steps, restarts, seed, request: gr.Request,
                        progress=gr.Progress()):
            return E.evaluate_model(model, dataset, n, attacks, eps, steps, restarts, seed, progress=progress,
                                    request=request)

        def do_curves(models, dataset, n, attack, eps_values, steps, restarts, seed, request: gr.Request,
                      progress=gr.Progress()):
            return E.eps_curves(models, dataset, n, attack, eps_values, steps, restarts, seed, progress=progress,
                                request=request)

        def cancel_evaluate(request: gr.Request):
            return cancel_job("evaluate", request)

        eval_model.change(E.follow_model, [eval_model, eval_dataset], [eval_dataset, eval_eps, curve_eps],
                          api_name=False)
        evaluate_inputs = [eval_model, eval_dataset, eval_n, eval_attacks, eval_eps, eval_steps, eval_restarts,
                           eval_seed]
        _armed(eval_btn, "evaluate").then(do_evaluate, evaluate_inputs,
                                          [eval_report, confusion_plot, eval_file, eval_json], api_name="evaluate",
                                          **heavy)
        curve_inputs = [curve_models, eval_dataset, eval_n, curve_attack, curve_eps, eval_steps, eval_restarts,
                        eval_seed]
        _armed(curve_btn, "evaluate").then(do_curves, curve_inputs, [curve_plot, curve_json], api_name="eps_curves",
                                           **heavy)
        eval_cancel.click(cancel_evaluate, None, eval_status, queue=False, api_name="cancel_evaluate")

        # ----- learn: presets fill the Attack (or Compare) tab and run ---------------------------------------
        for lesson, button in lesson_buttons:
            preset = lesson.preset
            fill = [model, dataset, source, index, *attack_inputs, tabs]
            if preset.compare:
                button.click(_preset_values(lesson), None, fill + [compare_models],
                             api_name=f"preset_{lesson.key}").then(
                    do_compare, [compare_models] + run_inputs,
                    [compare_gallery, compare_table, compare_plot], api_name=False, **heavy)
            else:
                button.click(_preset_values(lesson), None, fill, api_name=f"preset_{lesson.key}").then(
                    do_attack, [model] + run_inputs, attack_outputs, api_name=False, **heavy)
    return demo


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
        out = [name, "MNIST" if p.prefer.get("dataset", "mnist") == "mnist" else "CIFAR-10", "dataset", p.index,
               p.attack, p.eps, p.steps, p.step_size, p.restarts, p.target, p.seed,
               gr.Tabs(selected="compare" if p.compare else "attack")]
        if p.compare:
            out.append(L.ads_pair(entries, p.prefer.get("dataset", "mnist")))
        return out

    return values
