"""Pushing a built folder to a Hub dataset repo with huggingface_hub."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tracemill.publish.errors import PublishError
from tracemill.publish.tables import DATA_DIR


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    revision: str
    commit: str
    changed: bool  # False: the Hub already had these files, no commit was made
    url: str


def hf_token() -> str:
    """The Hub token (HF_TOKEN, or the one `hf auth login` saved); checked before any work is done."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise PublishError(
            "no Hugging Face token — set HF_TOKEN to a write token (https://huggingface.co/settings/tokens)"
            " or run `hf auth login`"
        )
    return token


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise PublishError(f"--repo-id '{repo_id}' is not a Hub repo id: {exc}") from None
    if repo_id.count("/") != 1:
        raise PublishError(f"--repo-id '{repo_id}' must be ORG/NAME (the dataset repo to create or update)")


def push(folder: Path, repo_id: str, *, token: str, private: bool = False, revision: str | None = None) -> PushResult:
    """Upload `folder` to the dataset repo `repo_id`, creating the repo (and branch) when missing.

    `upload_folder` hashes every local file and asks the Hub for the remote file's hash; unchanged files
    are dropped from the commit and, when nothing is left, no commit is made and the branch head is
    returned. Remote shards under data/ that the folder no longer has are deleted in the same commit,
    so a config with fewer shards than before never serves stale rows. The head before and after tells
    whether a commit was made.
    """
    from huggingface_hub import HfApi

    # HTTPError is the HTTP client's base error as the library re-exports it (connection refused, timeouts)
    from huggingface_hub.errors import HfHubHTTPError, HTTPError

    api = HfApi(token=token)
    branch = revision or "main"
    failed = f"pushing '{folder}' to dataset repo '{repo_id}' failed"
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
        before = api.repo_info(repo_id, repo_type="dataset", revision=branch).sha
        info = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=folder,
            revision=branch,
            commit_message=f"Publish {folder.name} with tracemill",
            delete_patterns=[f"{DATA_DIR}/*"],
        )
    except HfHubHTTPError as exc:  # the Hub answered: a permission, name or quota problem
        raise PublishError(f"{failed}: {exc} — check HF_TOKEN has write access to '{repo_id}'") from exc
    except (HTTPError, OSError) as exc:  # the Hub was not reached
        raise PublishError(f"{failed}: {exc} — check the network can reach the Hub") from exc
    return PushResult(
        repo_id, branch, info.oid, info.oid != before, f"https://huggingface.co/datasets/{repo_id}/tree/{branch}"
    )
