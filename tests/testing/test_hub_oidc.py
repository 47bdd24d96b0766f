"""LocalHub's Trusted Publishing with the real client's exchange (``huggingface_hub._oidc``): tokens
scoped to one repo, enforced on every write; the exchange's refusals; the Actions runtime's id token."""

from __future__ import annotations

import pytest
from huggingface_hub import HfApi
from huggingface_hub._oidc import exchange_oidc_token, oidc_login
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from apto_release.testing.hub import LocalHub
from apto_release.testing.hub import oidc as hub_oidc

REPO = "apto-org/model-a"
OTHER = "apto-org/model-b"
DATA = "apto-org/data-a"
CLAIMS = {"repository": "apto-org/apto-release", "environment": "huggingface"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub(tmp_path_factory.mktemp("hub")) as hub:
        api = hub.api()
        api.create_repo(REPO, private=True)
        api.create_repo(OTHER)
        api.create_repo(DATA, repo_type="dataset", private=True)
        hub.add_trusted_publisher(REPO, **CLAIMS)
        hub.add_trusted_publisher(DATA, "dataset", **CLAIMS)
        hub.add_trusted_publisher(OTHER, repository="apto-org/other-ci")
        yield hub


@pytest.fixture(autouse=True)
def _no_xet(hub, monkeypatch):
    with hub.patch_client(monkeypatch):
        yield


def _exchange(hub, resource, **claims):
    return exchange_oidc_token(subject_token=hub.issue_id_token(**claims), resource=resource, endpoint=hub.url)


def _status(call) -> int:
    with pytest.raises(HfHubHTTPError) as err:
        call()
    return err.value.response.status_code


def test_the_exchange_gives_a_one_hour_token_that_writes_its_repo_only(hub):
    answer = _exchange(hub, REPO)
    assert answer["token_type"] == "bearer" and answer["expires_in"] == 3600
    assert answer["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert answer["access_token"].startswith("hf_jwt_")
    api = HfApi(endpoint=hub.url, token=answer["access_token"])
    info = api.upload_file(path_or_fileobj=b"a\n", path_in_repo="a.txt", repo_id=REPO)
    state = hub.repo_state(REPO)
    assert state["commits"][info.oid]["author"] == "[OIDC]"  # as the Hub attributes such pushes
    assert api.list_repo_files(REPO) == [".gitattributes", "a.txt"]  # it reads its private repo
    # Another repo: no write (403, on every write route), no sight of it when private (404, as the
    # Hub hides a private repo from a token that may not read it), no new repo.
    before = hub.repo_state(OTHER)
    assert _status(lambda: api.upload_file(path_or_fileobj=b"b\n", path_in_repo="b.txt", repo_id=OTHER)) == 403
    assert _status(lambda: api.create_tag(OTHER, tag="v1")) == 403
    assert _status(lambda: api.update_repo_settings(OTHER, gated="auto")) == 403
    assert _status(lambda: api.create_repo("apto-org/new-one")) == 403
    with pytest.raises(RepositoryNotFoundError):
        api.upload_file(path_or_fileobj=b"d\n", path_in_repo="d.txt", repo_id=DATA, repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        api.list_repo_files(DATA, repo_type="dataset")
    assert hub.repo_state(OTHER) == before
    # The dataset resource has its prefix, and its token writes the dataset (not a model of that name).
    data_api = HfApi(endpoint=hub.url, token=_exchange(hub, f"datasets/{DATA}")["access_token"])
    data_api.upload_file(path_or_fileobj=b"d\n", path_in_repo="d.txt", repo_id=DATA, repo_type="dataset")
    assert _status(lambda: data_api.upload_file(path_or_fileobj=b"a\n", path_in_repo="x.txt", repo_id=OTHER)) == 403


@pytest.mark.parametrize("case, error", [
    ("claims differ", "invalid_grant"),
    ("another repo's publisher", "invalid_grant"),
    ("no such repo", "invalid_grant"),
    ("wrong audience", "invalid_grant"),
    ("expired id token", "invalid_grant"),
    ("forged signature", "invalid_grant"),
    ("a user resource", "invalid_request"),
    ("a model resource for a dataset", "invalid_grant"),
])
def test_the_exchange_refuses_with_an_oauth_error(hub, case, error):
    resource, token = REPO, hub.issue_id_token(**CLAIMS)
    if case == "claims differ":
        token = hub.issue_id_token(repository="apto-org/fork")
    elif case == "another repo's publisher":
        resource = OTHER
    elif case == "no such repo":
        resource = "apto-org/missing"
    elif case == "wrong audience":
        token = hub.issue_id_token("https://huggingface.co")
    elif case == "expired id token":
        token = hub.issue_id_token(lifetime=-1)
    elif case == "forged signature":
        token = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    elif case == "a user resource":
        resource = "apto-tester"
    elif case == "a model resource for a dataset":
        resource = DATA
    with pytest.raises(HfHubHTTPError) as err:
        exchange_oidc_token(subject_token=token, resource=resource, endpoint=hub.url)
    assert err.value.response.status_code == 400
    assert err.value.response.json()["error"] == error
    assert token not in str(err.value)


def test_a_read_only_publisher_token_reads_but_cannot_write(hub):
    hub.add_trusted_publisher(REPO, read_only=True, repository="apto-org/reader")
    api = HfApi(endpoint=hub.url, token=_exchange(hub, REPO, repository="apto-org/reader")["access_token"])
    assert ".gitattributes" in api.list_repo_files(REPO)
    assert _status(lambda: api.upload_file(path_or_fileobj=b"r\n", path_in_repo="r.txt", repo_id=REPO)) == 403


def test_an_expired_exchanged_token_is_invalid(hub, monkeypatch):
    monkeypatch.setattr(hub_oidc, "SCOPED_LIFETIME", 0)
    api = HfApi(endpoint=hub.url, token=_exchange(hub, REPO)["access_token"])
    assert _status(lambda: api.list_repo_files(REPO)) == 401


def test_the_client_mints_its_id_token_from_the_actions_runtime(hub, monkeypatch):
    """``oidc_login`` without an id token asks GitHub's runtime, as on a runner with ``id-token: write``."""
    for key, value in hub.actions_env().items():
        monkeypatch.setenv(key, value)
    token = oidc_login(resource=REPO, endpoint=hub.url)["access_token"]
    HfApi(endpoint=hub.url, token=token).upload_file(path_or_fileobj=b"m\n", path_in_repo="m.txt", repo_id=REPO)
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "wrong")
    with pytest.raises(HfHubHTTPError):
        oidc_login(resource=REPO, endpoint=hub.url)
