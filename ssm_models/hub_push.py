"""Upload a classifier to the Hub: the files `save_pretrained` writes, in one commit (composition, no mixin)."""
from __future__ import annotations

import os
import tempfile

from huggingface_hub import CommitInfo, HfApi

from .classifier import SSMClassifier
from .hub import save_pretrained


def push_to_hub(model: SSMClassifier, repo_id: str, *, card: dict | None = None, token: str | None = None,
                private: bool | None = None, branch: str | None = None, create_pr: bool = False,
                commit_message: str = "Upload SSM Robustness Lab classifier") -> CommitInfo:
    """Create the repo if needed and commit config.json, model.safetensors, README.md (and metrics.json with
    `card["metrics"]`), exactly as `save_pretrained` writes them. HF_ENDPOINT is read now, as downloads do."""
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT", "").rstrip("/") or None, token=token)
    repo_id = api.create_repo(repo_id=repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory(prefix="ssm-lab-push-") as folder:
        save_pretrained(model, folder, card=card)
        return api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=folder, revision=branch,
                                 commit_message=commit_message, create_pr=create_pr)
