"""Hub downloads through hf_hub_download (HF_ENDPOINT, HF_HUB_OFFLINE and the cache apply), size-capped,
with the Hub's answers checked before they name cache files and every failure explained."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from huggingface_hub import constants as hf_constants
from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import validate_repo_id

try:  # the HTTP client of huggingface_hub; its transport errors (connection refused, peer hung up) are not OSErrors
    from httpx2 import HTTPError as _HTTPClientError
except ImportError:  # older huggingface_hub releases use httpx
    from httpx import HTTPError as _HTTPClientError

from .model_card import LIBRARY_NAME
from .safe_files import WEIGHTS_NAME, CheckpointError, sha256

COMMIT = re.compile(r"[0-9a-f]{40}")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SAFE_ETAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # the Hub sends a git sha1 or a sha256


class HubFetch:
    """hf_hub_download (so HF_ENDPOINT, HF_HUB_OFFLINE and the cache all apply), size-capped, errors explained."""

    def __init__(self, repo_id, revision, cache_dir, local_files_only, token, force_download, repo_type="model"):
        try:
            validate_repo_id(repo_id)
        except HFValidationError as err:
            raise CheckpointError(f"invalid repo id {repo_id!r}: {err}") from None
        if "/" not in repo_id:
            raise CheckpointError(f"invalid repo id {repo_id!r}: expected 'org/name'")
        self.repo_id, self.revision, self.repo_type = repo_id, revision, repo_type
        self.endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None  # read now, not at import
        if local_files_only is None:
            offline_env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
            local_files_only = hf_constants.is_offline_mode() or offline_env
        self.options = {"cache_dir": cache_dir or _cache_dir_from_env(), "local_files_only": bool(local_files_only),
                        "token": token, "force_download": force_download, "endpoint": self.endpoint,
                        "library_name": LIBRARY_NAME, "repo_type": repo_type}

    def fetch(self, filename: str, max_bytes: int) -> str:
        where = f"{self.repo_id}@{self.revision or 'main'}"
        self.announced_etag = None
        try:
            return self._fetch(filename, max_bytes, where)
        except CheckpointError:
            self._remove_partial_download()
            raise

    def _remove_partial_download(self) -> None:
        """A transfer that failed for good leaves `<etag>.incomplete` for a later resume; a half file in the
        cache is what a reader must never find, so it goes (a retry downloads the whole file again)."""
        if self.announced_etag is None:  # the Hub never answered the HEAD, so nothing was transferred
            return
        cache = self.options["cache_dir"] or hf_constants.HF_HUB_CACHE
        blobs = Path(cache) / repo_folder_name(repo_id=self.repo_id, repo_type=self.repo_type) / "blobs"
        (blobs / f"{self.announced_etag}.incomplete").unlink(missing_ok=True)

    def _fetch(self, filename: str, max_bytes: int, where: str) -> str:
        try:
            etag = None if self.options["local_files_only"] else self._preflight(filename, max_bytes, where)
            try:
                path = hf_hub_download(self.repo_id, filename, revision=self.revision, **self.options)
            except HfHubHTTPError as err:
                if not _server_error_on_get(err):
                    raise
                time.sleep(1)  # huggingface_hub retries a failing HEAD but never a failing GET: one more try
                path = hf_hub_download(self.repo_id, filename, revision=self.revision, **self.options)
        except RepositoryNotFoundError:
            raise CheckpointError(f"unknown repo {self.repo_id!r} on {self.endpoint or hf_constants.ENDPOINT} "
                                  "(or it is private or gated: pass token=...)") from None
        except RevisionNotFoundError:
            raise CheckpointError(f"unknown revision {self.revision!r} for repo {self.repo_id!r}") from None
        except LocalEntryNotFoundError as err:
            cause = err.__cause__  # set when the Hub was asked and failed, as opposed to offline mode
            if cause is not None and not self.options["local_files_only"] and type(cause).__name__ != \
                    "OfflineModeIsEnabled":
                reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
                raise CheckpointError(f"download of {filename} from {where} failed and the local cache does not "
                                      f"have it: the Hub failed or could not be reached ({reason}); retry later, "
                                      "or load a local directory") from None
            raise CheckpointError(
                f"{filename} of {where} is offline and not in cache: the local Hugging Face cache does not have it "
                "and the Hub was not reached (HF_HUB_OFFLINE=1 / local_files_only, or no network / Hub down). "
                f"Connect and unset HF_HUB_OFFLINE, or load a local directory. ({err})") from None
        except EntryNotFoundError:
            hint = ("; only safetensors weights are accepted (pickle files such as pytorch_model.bin are never "
                    "loaded)") if filename == WEIGHTS_NAME else ""
            raise CheckpointError(f"file missing: {filename} is not in {where}{hint}") from None
        except (HfHubHTTPError, OSError, _HTTPClientError) as err:
            raise CheckpointError(f"download of {filename} from {where} failed: {err}") from None
        return self._verified(path, filename, etag, where)

    def _preflight(self, filename: str, max_bytes: int, where: str) -> str | None:
        """HEAD the file before hf_hub_download does: the size against the cap, and the commit and ETag, which
        hf_hub_download turns into cache paths without checking them (an ETag of `../../x` writes outside the
        cache). Returns the ETag, or None when the Hub does not answer (hf_hub_download then retries or falls
        back to the cache)."""
        if self.revision and COMMIT.fullmatch(self.revision) and not self.options["force_download"] and isinstance(
                try_to_load_from_cache(self.repo_id, filename, self.options["cache_dir"], self.revision,
                                       repo_type=self.repo_type), str):
            return None  # a pinned commit already in the cache is served without asking the Hub
        url = hf_hub_url(self.repo_id, filename, revision=self.revision, endpoint=self.endpoint,
                         repo_type=self.repo_type)
        try:
            meta = get_hf_file_metadata(url, token=self.options["token"], library_name=LIBRARY_NAME,
                                        endpoint=self.endpoint)
        except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError):
            raise
        except (HfHubHTTPError, OSError, _HTTPClientError):
            return None
        if not isinstance(meta.commit_hash, str) or not COMMIT.fullmatch(meta.commit_hash):
            raise CheckpointError(f"{filename} in {where}: the Hub answered with an invalid commit id "
                                  f"{meta.commit_hash!r}; refusing it")
        if not isinstance(meta.etag, str) or not _SAFE_ETAG.fullmatch(meta.etag):
            raise CheckpointError(f"{filename} in {where}: the Hub answered with an invalid ETag {meta.etag!r} "
                                  "(it would name a file in the cache); refusing it")
        if meta.size is not None and meta.size > max_bytes:
            raise CheckpointError(f"{filename} in {where} is {meta.size} bytes, over the {max_bytes}-byte limit "
                                  "for this file")
        self.announced_etag = meta.etag
        return meta.etag

    def _verified(self, path: str, filename: str, etag: str | None, where: str) -> str:
        """The downloaded file, inside the cache and matching its sha256 when the Hub announced one. A corrupt
        download is evicted (pointer and blob), so the next request downloads it afresh instead of failing again."""
        cache = os.path.realpath(self.options["cache_dir"] or hf_constants.HF_HUB_CACHE)
        if Path(cache) not in Path(os.path.realpath(path)).parents:
            raise CheckpointError(f"{filename} of {where} resolved to {os.path.realpath(path)}, outside the cache "
                                  f"{cache}; refusing it")
        # the repo's blob entry, named after the ETag (one link from the snapshot pointer; it may itself link on
        # into the cache-wide store of Xet blobs, whose names are Xet hashes)
        blob = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path))) if os.path.islink(path) \
            else path
        name = os.path.basename(blob)
        if etag is not None and os.path.islink(path) and name != etag:
            raise CheckpointError(f"{filename} of {where}: the Hub announced ETag {etag} and then {name}; refusing "
                                  "the file")
        if _SHA256.fullmatch(name):
            digest = sha256(path)
            if digest != name:
                for stale in (path, blob):  # entries of this repo only, never the shared store behind them
                    Path(stale).unlink(missing_ok=True)
                raise CheckpointError(f"checksum mismatch: {filename} of {where} has sha256 {digest} but the Hub "
                                      f"announced {name}; the corrupt download was removed from the cache, so "
                                      "loading again downloads it afresh")
        return path


def _server_error_on_get(err: HfHubHTTPError) -> bool:
    response = getattr(err, "response", None)
    return response is not None and response.status_code >= 500 and response.request.method == "GET"


def _cache_dir_from_env() -> str | None:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None  # huggingface_hub's own default


def check_revision(revision: str | None) -> str | None:
    if revision is None:
        return None
    if (not isinstance(revision, str) or len(revision) > 128 or not _REVISION.fullmatch(revision)
            or ".." in revision or revision.endswith((".lock", "."))):
        raise CheckpointError(f"invalid revision {revision!r}: use a branch, a tag or a 40-character commit sha")
    return revision
