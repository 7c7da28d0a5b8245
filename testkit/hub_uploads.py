"""The local Hub's write side: create a repo and commit files to "main", as `HfApi.create_repo`/`upload_folder` ask."""
from __future__ import annotations

import base64
import json
import re
import urllib.parse

_WRITE = re.compile(r"^/api/models/(?P<org>[^/]+)/(?P<name>[^/]+)/(?P<op>preupload|commit)/(?P<revision>[^/]+)$")


def handle_post(handler) -> None:
    """Answer one POST of the local Hub's request handler (`handler.server.hub` is the HubServer)."""
    hub = handler.server.hub
    path = urllib.parse.urlsplit(handler.path).path
    body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
    if path == "/api/repos/create":
        request = json.loads(body)
        repo_id = "/".join(filter(None, (request.get("organization"), request["name"])))
        (hub.root / repo_id).mkdir(parents=True, exist_ok=True)
        return _json(handler, {"url": f"{hub.url}/{repo_id}", "name": repo_id})
    if path == "/api/validate-yaml":  # a README's front matter, checked by huggingface_hub's own card parser
        from huggingface_hub import RepoCard

        try:
            RepoCard(json.loads(body)["content"])
        except ValueError as err:
            return _json(handler, {"errors": [{"message": str(err)}]}, status=400)
        return _json(handler, {"warnings": []})
    match = _WRITE.match(path)
    if match is None:
        return handler._error("POST", 404, None, "not served by the local hub")
    repo_id = f"{urllib.parse.unquote(match['org'])}/{urllib.parse.unquote(match['name'])}"
    folder = hub.root / repo_id
    if urllib.parse.unquote(match["revision"]) != "main" or ".." in repo_id or not folder.is_dir():
        return handler._error("POST", 404, "RepoNotFound", "the local hub writes to an existing repo's main only")
    if match["op"] == "preupload":  # every file inline in the commit: no LFS or Xet transfer to serve
        files = json.loads(body)["files"]
        return _json(handler, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                         for f in files]})
    for line in body.splitlines():
        item = json.loads(line)
        if item.get("key") == "file":
            target = (folder / item["value"]["path"]).resolve()
            if folder.resolve() not in target.parents:
                return handler._error("POST", 400, None, f"path outside the repo: {item['value']['path']}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(base64.b64decode(item["value"]["content"]))
    commit = hub.commit_of(repo_id)
    return _json(handler, {"commitUrl": f"{hub.url}/{repo_id}/commit/{commit}", "commitOid": commit,
                           "pullRequestUrl": None})


def _json(handler, payload: dict, status: int = 200) -> None:
    handler._reply("POST", status, {"Content-Type": "application/json"}, json.dumps(payload).encode())
