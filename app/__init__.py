"""SSM Robustness Lab web app: a Gradio UI over the `ssm_lab` engine (`python -m app`)."""
