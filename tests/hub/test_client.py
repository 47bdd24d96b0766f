"""hub.client through the push against LocalHub: the token (missing, invalid, redacted from errors) and
its write access to every repo, checked before anything is written."""

from __future__ import annotations


import pytest

pytest.importorskip("datasets")
pytest.importorskip("huggingface_hub")

from huggingface_hub import HfApi  # noqa: E402

from apto_release.errors import UsageError  # noqa: E402
from apto_release.hub.client import PushError  # noqa: E402
from apto_release.hub.push import push  # noqa: E402
from apto_release.release.manifest import load_manifest  # noqa: E402
from tests.hub.releases import MODEL, _refused_writing_nothing  # noqa: E402

pytestmark = pytest.mark.usefixtures("_no_xet")


# --- the token --------------------------------------------------------------------------------


def test_no_token_is_an_error_for_a_push_but_not_for_a_dry_run(hub, release, monkeypatch):
    anonymous = HfApi(endpoint=hub.url, token=False)
    with pytest.raises(UsageError, match="no Hugging Face token"):
        push(release, api=anonymous)
    results = push(release, api=anonymous, dry_run=True, only=["dataset.sample"])
    assert results[0].status == "planned"


def test_token_is_redacted_from_errors(hub, api, release, monkeypatch):
    from huggingface_hub.errors import HfHubHTTPError

    def leaky(self, *args, **kwargs):
        import httpx2

        response = httpx2.Response(400, request=httpx2.Request("POST", "http://x/commit/main"))
        raise HfHubHTTPError(f"bad request with Authorization: Bearer {hub.token}", response=response)

    monkeypatch.setattr(HfApi, "create_commit", leaky)
    with pytest.raises(PushError) as exc:
        push(release, api=api, only=["dataset.full"], backoff=0)
    assert hub.token not in str(exc.value) and "hf_***" in str(exc.value)


def test_an_invalid_token_is_one_clear_error(hub, release):
    bad = HfApi(endpoint=hub.url, token="hf_" + "x" * 30)
    with pytest.raises(UsageError, match=r"the Hugging Face token is not valid \(whoami answered 401\)") as exc:
        push(release, api=bad, backoff=0)
    assert "hf_xxx" not in str(exc.value)


# --- the token can write every repo (issue 13) ------------------------------------------------


def test_a_release_whose_fourth_repo_is_not_writable_writes_nothing_to_the_first_three(hub, api, release, monkeypatch):
    org = release.organisation
    gguf = f"{org}/{MODEL}-GGUF"
    scoped = [{"entity": {"type": "model" if "sft" not in r else "dataset", "name": f"{org}/{r}"}, "permissions": ["repo.write"]}
              for r in ("ja-safety-sft-40", "ja-safety-sft", MODEL, f"{MODEL}-LoRA")]
    scoped.append({"entity": {"type": "model", "name": gguf}, "permissions": ["repo.content.read"]})
    monkeypatch.setattr(hub, "token_role", "fineGrained")
    monkeypatch.setattr(hub, "fine_grained", scoped)
    error = _refused_writing_nothing(hub, api, release)
    assert str(error) == (f"the token of {hub.user} cannot write every repo of the release: "
                          f"{gguf}: the fine-grained token has no repo.write on it or on {org}")
    # the same token with write on the namespace publishes the whole release
    monkeypatch.setattr(hub, "fine_grained", [{"entity": {"type": "org", "name": org}, "permissions": ["repo.write"]}])
    assert {r.status for r in push(release, api=api, backoff=0)} == {"committed"}


def test_a_repo_in_an_org_where_the_user_only_reads_is_refused_before_any_write(hub, api, release, monkeypatch):
    org = release.organisation
    lora = f"{org}/{MODEL}-LoRA"
    api.create_repo(lora)  # it exists, made while the user could still write there
    monkeypatch.setattr(hub, "org_roles", {org: "read"})
    _refused_writing_nothing(hub, api, release, f"{lora}: {hub.user} has the role 'read' in {org}, which cannot write")


def test_a_read_only_token_is_refused_before_any_write(hub, api, release, monkeypatch):
    monkeypatch.setattr(hub, "token_role", "read")
    _refused_writing_nothing(hub, api, release, f"{release.organisation}/ja-safety-sft-40: the token is read-only")


def test_a_release_across_namespaces_needs_membership_of_each(hub, api, release, monkeypatch):
    lora = f"elsewhere/{MODEL}-LoRA"
    text = release.path.read_text().replace("push_adapter = true", f'push_adapter = true\nadapter_repo = "{lora}"')
    release.path.write_text(text)
    moved = load_manifest(release.path)
    monkeypatch.setattr(hub, "namespaces", {release.organisation})  # a member of the release's org only
    _refused_writing_nothing(hub, api, release, f"{lora}: {hub.user} is not a member of elsewhere$", manifest=moved)
