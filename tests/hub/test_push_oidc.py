"""hub.push with Trusted Publishing against LocalHub: one exchange (the real client's) per repo, each
repo written with its own scoped token; the refusals before any write; no token in any output."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from huggingface_hub import HfApi

from apto_release.errors import UsageError
from apto_release.hub.client import PushError, redact
from apto_release.hub.push import push, summary_line
from apto_release.hub.targets import targets
from apto_release.hub.tokens import oidc_resource, use_trusted_publishing
from tests.hub.releases import _blobs, _writes

pytestmark = pytest.mark.usefixtures("_no_xet")

CLAIMS = {"repository": "apto-org/apto-release", "environment": "huggingface"}
OIDC_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_OIDC_ID_TOKEN", "GITHUB_ACTIONS",
             "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN")


@pytest.fixture(autouse=True)
def _no_ci(monkeypatch):
    for key in OIDC_VARS:
        monkeypatch.delenv(key, raising=False)


def _trust(hub, release, *, untrusted=(), read_only=()):
    """Every repo of the release created (Trusted Publishing needs it) with a publisher for this CI."""
    api = hub.api()
    for t in targets(release):
        api.create_repo(t.repo_id, repo_type=t.repo_type, private=t.private, exist_ok=True)
        if t.repo_id not in untrusted:
            hub.add_trusted_publisher(t.repo_id, t.repo_type, read_only=t.repo_id in read_only, **CLAIMS)
    return {t.repo_id: len(hub.repo_state(t.repo_id, t.repo_type)["commits"]) for t in targets(release)}


def _anonymous(hub):
    return HfApi(endpoint=hub.url, token=False)


def test_each_repo_is_pushed_with_its_own_exchanged_token(hub, release, monkeypatch):
    _trust(hub, release)
    for key, value in hub.actions_env().items():  # a job with id-token: write, and no HF_TOKEN
        monkeypatch.setenv(key, value)
    hub.clear_requests()
    results = push(release, api=_anonymous(hub), backoff=0)
    assert [(r.status, r.tag_action) for r in results] == [("committed", "created")] * 5
    for r in results:  # written with the repo's token: the Hub attributes such commits to [OIDC]
        assert hub.repo_state(r.repo_id, r.plan.repo_type)["commits"][r.commit]["author"] == "[OIDC]"
    assert len(hub.log("POST", r"^/oauth/token$")) == 5 and hub.log("GET", "whoami") == []
    assert all(r.authenticated for r in hub.requests if r.path.startswith("/api/") and "validate-yaml" not in r.path)
    assert [r.status for r in push(release, api=_anonymous(hub), backoff=0)] == ["unchanged"] * 5
    # No token in what the push tells: the results' lines hold none of them.
    secrets = list(hub._scoped)
    assert secrets and not any(s in summary_line(r) for r in results for s in secrets)


def test_a_repo_without_a_trusted_publisher_is_refused_before_any_write(hub, release, monkeypatch):
    org = release.organisation
    before = _trust(hub, release, untrusted=[f"{org}/Tiny-Safety-GGUF"])
    id_token = hub.issue_id_token()
    monkeypatch.setenv("HF_OIDC_ID_TOKEN", id_token)
    hub.clear_requests()
    blobs = _blobs(hub)
    with pytest.raises(UsageError, match=rf"no token for the GGUF repo {org}/Tiny-Safety-GGUF \(resource "
                                         rf"{org}/Tiny-Safety-GGUF\): the Hub refused the exchange") as exc:
        push(release, api=_anonymous(hub), backoff=0)
    assert f"{hub.url}/{org}/Tiny-Safety-GGUF/settings" in exc.value.hint
    assert _writes(hub) == [] and _blobs(hub) == blobs
    assert {t.repo_id: len(hub.repo_state(t.repo_id, t.repo_type)["commits"]) for t in targets(release)} == before
    assert id_token not in str(exc.value) + str(exc.value.hint)


def test_a_read_only_token_gets_the_hubs_403_named_with_the_repo_and_its_scope(hub, release, monkeypatch):
    org = release.organisation
    sample = f"{org}/ja-safety-sft-40"
    before = _trust(hub, release, read_only=[sample])
    monkeypatch.setenv("HF_OIDC_ID_TOKEN", hub.issue_id_token())
    with pytest.raises(PushError, match=rf"HTTP 403.*exchanged for datasets/{sample} only") as exc:
        push(release, api=_anonymous(hub), only=["dataset.sample"], backoff=0)
    assert exc.value.repo == sample
    assert len(hub.repo_state(sample, "dataset")["commits"]) == before[sample]
    assert not any(s in str(exc.value) for s in [*hub._scoped, os.environ["HF_OIDC_ID_TOKEN"]])


def test_asking_for_trusted_publishing_without_an_id_token_is_one_clear_error(hub, release):
    with pytest.raises(UsageError, match="Trusted Publishing needs an OIDC id token") as exc:
        push(release, api=_anonymous(hub), trusted_publishing=True, backoff=0)
    assert "id-token: write" in exc.value.hint


def test_trusted_publishing_is_the_default_only_when_an_id_token_is_at_hand_and_no_token_is_given(hub):
    ci = {"ACTIONS_ID_TOKEN_REQUEST_URL": "u", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "t"}
    anonymous, with_token = _anonymous(hub), hub.api()
    assert use_trusted_publishing(None, anonymous, ci)
    assert use_trusted_publishing(None, anonymous, {"HF_OIDC_ID_TOKEN": "x"})
    assert not use_trusted_publishing(None, anonymous, {})
    assert not use_trusted_publishing(None, anonymous, {**ci, "HF_TOKEN": "hf_x"})  # the fallback: the secret
    assert not use_trusted_publishing(None, anonymous, {**ci, "HF_OIDC_RESOURCE": "a/b"})  # the client's own
    assert not use_trusted_publishing(None, with_token, ci)
    assert use_trusted_publishing(True, with_token, {}) and not use_trusted_publishing(False, anonymous, ci)


def test_token_shapes_cover_exchanged_tokens_and_id_tokens(hub):
    id_token, scoped = hub.issue_id_token(), "hf_jwt_" + "Ab3-_x.9" * 6
    text = redact(f"a {id_token} b {scoped} c hf_oauth_abcdefghij d", [], token_shapes=True)
    assert text == "a hf_*** b hf_*** c hf_*** d"


def test_the_cli_refuses_repo_b_with_the_token_of_repo_a_and_writes_nothing(hub, release, tmp_path):
    """HF_OIDC_RESOURCE: the client exchanges the id token for that one repo itself; a push of
    another repo is refused before any write, naming the repo and the resource; no token is shown."""
    org = release.organisation
    before = _trust(hub, release)
    id_token = hub.issue_id_token()
    env = {**os.environ, **hub.client_env(tmp_path / "hf_home"), "HF_OIDC_ID_TOKEN": id_token,
           "HF_OIDC_RESOURCE": f"datasets/{org}/ja-safety-sft-40"}
    for key in ("HF_TOKEN", "GITHUB_STEP_SUMMARY", "GITHUB_ACTIONS"):
        env.pop(key, None)

    def cli(*args):
        hub.clear_requests()
        return subprocess.run([sys.executable, "-m", "apto_release", "push", "--manifest", str(release.path), *args],
                              env=env, capture_output=True, text=True, timeout=120)

    proc = cli("--only", "dataset.full")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[0] == (
        f"Error: the token cannot write the dataset full repo {org}/ja-safety-sft: it was exchanged for "
        f"datasets/{org}/ja-safety-sft-40 (HF_OIDC_RESOURCE), and a Trusted Publishing token writes only the repo "
        "it was exchanged for")
    assert _writes(hub) == [] and len(hub.repo_state(f"{org}/ja-safety-sft", "dataset")["commits"]) == before[f"{org}/ja-safety-sft"]
    proc2 = cli("--only", "dataset.sample")  # the repo it was exchanged for: published
    assert proc2.returncode == 0, proc2.stderr
    for out in (proc.stdout + proc.stderr, proc2.stdout + proc2.stderr):
        assert id_token not in out and "hf_jwt_" not in out and hub.token not in out
    state = hub.repo_state(f"{org}/ja-safety-sft-40", "dataset")
    assert state["commits"][state["branches"]["main"]]["author"] == "[OIDC]"
    assert oidc_resource(targets(release, ["dataset.sample"])[0]) == env["HF_OIDC_RESOURCE"]


@pytest.mark.parametrize("command", [["push"], ["release", "--stages", "push", "--only", "dataset.sample"]])
def test_the_commands_pass_trusted_publishing_on(release, capsys, command):
    from apto_release.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--manifest", str(release.path), "--trusted-publishing"])
    err = capsys.readouterr().err
    assert exit_info.value.code != 0 and "Trusted Publishing needs an OIDC id token" in err, err


def test_a_token_that_runs_out_is_exchanged_again(hub, release, monkeypatch):
    """The Hub's tokens last an hour with no refresh: an old one is exchanged again before its repo
    is published, and one that runs out during the upload is renewed and the commit tried again."""
    from apto_release.hub import tokens

    full = f"{release.organisation}/ja-safety-sft"
    before = _trust(hub, release)
    monkeypatch.setenv("HF_OIDC_ID_TOKEN", hub.issue_id_token())
    monkeypatch.setattr(tokens, "RENEW_AFTER", 0.0)  # every token counts as old before its repo's publish
    hub.clear_requests()
    hub.before("POST", rf"^/api/datasets/{full}/preupload/", hub.expire_exchanged_tokens)  # runs out mid-commit
    (result,) = push(release, api=_anonymous(hub), only=["dataset.full"], backoff=0)
    assert result.status == "committed" and result.tag_action == "created"
    assert len(hub.repo_state(full, "dataset")["commits"]) == before[full] + 1
    assert [r.status for r in hub.requests if r.status == 401] and len(hub.log("POST", "^/oauth/token$")) == 3
