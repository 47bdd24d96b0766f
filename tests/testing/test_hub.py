"""The real huggingface_hub client (and datasets) against apto_release.testing.hub.LocalHub."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    HfFileSystem,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import get_session

from apto_release.testing.hub import LFS_THRESHOLD, LocalHub, validate_card_metadata

CARD = textwrap.dedent(
    """\
    ---
    license: apache-2.0
    language:
    - ja
    tags:
    - safety
    configs:
    - config_name: default
      data_files:
      - split: train
        path: data/train-*.parquet
    ---
    # Test dataset

    A card.
    """
)
ROWS = {"id": ["a", "b", "c"], "text": ["こんにちは", "安全", "テスト"], "score": [1, 2, 3]}
BIG = bytes(range(256)) * (LFS_THRESHOLD // 256 + 17)  # a little over 1 MiB: goes through LFS


def _parquet_bytes() -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(ROWS), buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub(tmp_path_factory.mktemp("hub")) as hub:
        yield hub


@pytest.fixture(autouse=True)
def _no_xet(hub, monkeypatch):
    with hub.patch_client(monkeypatch):
        yield


@pytest.fixture
def api(hub) -> HfApi:
    return hub.api()


def _dataset_folder(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "data" / "train-00000-of-00001.parquet").write_bytes(_parquet_bytes())
    (root / "README.md").write_text(CARD, encoding="utf-8")
    (root / "blob.bin").write_bytes(BIG)
    return root


@pytest.fixture(scope="module")
def published(hub, tmp_path_factory):
    """A dataset repo with a parquet shard, a card and a > 1 MiB binary, tagged v1.0.0."""
    from huggingface_hub import constants

    old, constants.HF_HUB_DISABLE_XET = constants.HF_HUB_DISABLE_XET, True
    try:
        api = hub.api()
        folder = _dataset_folder(tmp_path_factory.mktemp("ds"))
        api.create_repo("org/published", repo_type="dataset")
        info = api.upload_folder(repo_id="org/published", repo_type="dataset", folder_path=folder, commit_message="v1")
        api.create_tag("org/published", tag="v1.0.0", repo_type="dataset")
    finally:
        constants.HF_HUB_DISABLE_XET = old
    return {"repo_id": "org/published", "folder": folder, "commit": info.oid}


def test_upload_and_list(hub, api, tmp_path):
    folder = _dataset_folder(tmp_path / "ds")
    url = api.create_repo("org/ds", repo_type="dataset")
    assert url.repo_id == "org/ds" and url.repo_type == "dataset"
    model = api.create_repo("org/model", private=True)
    assert model.repo_id == "org/model"
    hub.clear_requests()
    info = api.upload_folder(repo_id="org/ds", repo_type="dataset", folder_path=folder, commit_message="Add data")
    assert len(info.oid) == 40 and info.commit_url.endswith(info.oid)
    puts = [r for r in hub.requests if r.method == "PUT"]
    # the parquet file (extension) and blob.bin (size) went through LFS, the card did not
    assert sorted(r.received for r in puts) == sorted([len(_parquet_bytes()), len(BIG)])
    assert [r.path for r in hub.requests if r.path.endswith("/commit/main")] == ["/api/datasets/org/ds/commit/main"]

    files = api.list_repo_files("org/ds", repo_type="dataset")
    assert sorted(files) == [".gitattributes", "README.md", "blob.bin", "data/train-00000-of-00001.parquet"]

    paths = {p.path: p for p in api.get_paths_info("org/ds", ["README.md", "blob.bin", "data", "missing"], repo_type="dataset")}
    assert set(paths) == {"README.md", "blob.bin", "data"}
    assert paths["README.md"].lfs is None and paths["README.md"].size == len(CARD.encode())
    assert paths["blob.bin"].lfs.sha256 == __import__("hashlib").sha256(BIG).hexdigest()
    assert paths["blob.bin"].size == len(BIG)
    assert type(paths["data"]).__name__ == "RepoFolder"

    tree = {e.path: e for e in api.list_repo_tree("org/ds", repo_type="dataset", recursive=True)}
    assert set(tree) == {".gitattributes", "README.md", "blob.bin", "data", "data/train-00000-of-00001.parquet"}
    top = [e.path for e in api.list_repo_tree("org/ds", repo_type="dataset")]
    assert sorted(top) == [".gitattributes", "README.md", "blob.bin", "data"]
    expanded = list(api.list_repo_tree("org/ds", path_in_repo="data", repo_type="dataset", expand=True))
    assert [e.path for e in expanded] == ["data/train-00000-of-00001.parquet"]
    assert expanded[0].last_commit.oid == info.oid and expanded[0].last_commit.title == "Add data"

    ds = api.dataset_info("org/ds", files_metadata=True)
    assert ds.sha == info.oid and ds.private is False and ds.gated is False
    siblings = {s.rfilename: s for s in ds.siblings}
    assert siblings["blob.bin"].lfs.sha256 == paths["blob.bin"].lfs.sha256 and siblings["blob.bin"].size == len(BIG)
    assert siblings["data/train-00000-of-00001.parquet"].lfs is not None and siblings["README.md"].lfs is None
    assert ds.card_data.license == "apache-2.0" and ds.card_data.configs[0]["config_name"] == "default"
    assert "license:apache-2.0" in ds.tags
    # as on the Hub, file details come only with files_metadata=True
    assert api.dataset_info("org/ds").siblings[0].size is None

    # a model repo: a GGUF file and a card, with create_commit
    gguf = b"GGUF" + bytes(2000)
    api.create_commit(
        "org/model",
        operations=[
            CommitOperationAdd("model.gguf", gguf),
            CommitOperationAdd("README.md", b"---\nlicense: apache-2.0\nlibrary_name: gguf\n---\n# Model\n"),
        ],
        commit_message="Add model",
    )
    m = api.model_info("org/model", files_metadata=True)
    assert m.private is True and m.library_name == "gguf"
    lfs_by_name = {s.rfilename: s.lfs is not None for s in m.siblings}
    assert lfs_by_name == {".gitattributes": False, "README.md": False, "model.gguf": True}
    assert [c.title for c in api.list_repo_commits("org/model")] == ["Add model", "initial commit"]


def test_create_repo_conflicts_whoami_and_delete(hub, api):
    api.create_repo("org/twice")
    assert api.create_repo("org/twice", exist_ok=True).repo_id == "org/twice"
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("org/twice")
    assert err.value.response.status_code == 409
    assert api.whoami()["name"] == hub.user
    api.delete_repo("org/twice")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/twice")
    api.delete_repo("org/twice", missing_ok=True)


def test_tags_refs_and_errors(hub, api, published):
    repo = published["repo_id"]
    refs = api.list_repo_refs(repo, repo_type="dataset")
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", published["commit"])]
    assert [(t.name, t.ref, t.target_commit) for t in refs.tags] == [("v1.0.0", "refs/tags/v1.0.0", published["commit"])]
    with pytest.raises(HfHubHTTPError) as err:
        api.create_tag(repo, tag="v1.0.0", repo_type="dataset")
    assert err.value.response.status_code == 409
    api.create_tag(repo, tag="v1.0.0", repo_type="dataset", exist_ok=True)
    api.create_tag(repo, tag="tmp", repo_type="dataset")
    api.delete_tag(repo, tag="tmp", repo_type="dataset")
    assert [t.name for t in api.list_repo_refs(repo, repo_type="dataset").tags] == ["v1.0.0"]
    assert api.dataset_info(repo, revision="v1.0.0").sha == published["commit"]

    with pytest.raises(RevisionNotFoundError):
        api.dataset_info(repo, revision="nope")
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info("org/does-not-exist")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo, "missing.txt", repo_type="dataset", endpoint=hub.url, token=hub.token,
                        cache_dir=str(published["folder"].parent / "cache-missing"))


def test_stale_parent_commit_is_412(hub, api):
    api.create_repo("org/race", repo_type="dataset")
    first = api.create_commit("org/race", repo_type="dataset", operations=[CommitOperationAdd("a.txt", b"a")],
                              commit_message="one")
    api.create_commit("org/race", repo_type="dataset", operations=[CommitOperationAdd("b.txt", b"b")], commit_message="two",
                      parent_commit=first.oid)
    hub.clear_requests()
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit("org/race", repo_type="dataset", operations=[CommitOperationAdd("c.txt", b"c")],
                          commit_message="three", parent_commit=first.oid)
    assert err.value.response.status_code == 412
    assert [(r.path, r.status) for r in hub.requests if "/commit/" in r.path] == [("/api/datasets/org/race/commit/main", 412)]
    assert sorted(api.list_repo_files("org/race", repo_type="dataset")) == [".gitattributes", "a.txt", "b.txt"]


def test_a_hook_commits_for_another_writer_before_the_matching_request(hub, api):
    """``before``: another writer's commit lands between a client's look at the head and its commit."""
    api.create_repo("org/hooked", repo_type="dataset")
    head = api.dataset_info("org/hooked").sha
    hub.before("POST", "^/api/datasets/org/hooked/commit/", lambda: hub.api().upload_file(
        path_or_fileobj=b"theirs", path_in_repo="NOTICE.md", repo_id="org/hooked", repo_type="dataset"))
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit("org/hooked", repo_type="dataset", operations=[CommitOperationAdd("ours.txt", b"ours")],
                          commit_message="ours", parent_commit=head)
    assert err.value.response.status_code == 412  # the hook's commit moved the head first
    api.create_commit("org/hooked", repo_type="dataset", operations=[CommitOperationAdd("ours.txt", b"ours")],
                      commit_message="ours")  # the hook ran once: this one is not preceded by another
    assert [c.title for c in api.list_repo_commits("org/hooked", repo_type="dataset")] == [
        "ours", "Upload NOTICE.md with huggingface_hub", "initial commit"]


def test_identical_upload_sends_no_bytes(hub, api, tmp_path):
    folder = _dataset_folder(tmp_path / "ds")
    api.create_repo("org/again", repo_type="dataset")
    first = api.upload_folder(repo_id="org/again", repo_type="dataset", folder_path=folder)
    hub.clear_requests()
    second = api.upload_folder(repo_id="org/again", repo_type="dataset", folder_path=folder)
    log = hub.requests
    assert not [r for r in log if r.method == "PUT"], log  # no LFS bytes
    assert not [r for r in log if "/commit/" in r.path], log  # the client skipped the empty commit
    assert second.oid == first.oid

    # the same LFS content under a new path: the batch API says it is there, so no upload either
    hub.clear_requests()
    api.upload_file(path_or_fileobj=BIG, path_in_repo="copy/blob.bin", repo_id="org/again", repo_type="dataset")
    assert not [r for r in hub.requests if r.method == "PUT"]
    batches = [r.path for r in hub.requests if r.path.endswith("/objects/batch")]
    assert batches == ["/datasets/org/again.git/info/lfs/objects/batch"]


def test_delete_operations(api):
    api.create_repo("org/del", repo_type="dataset")
    api.create_commit("org/del", repo_type="dataset", commit_message="add", operations=[
        CommitOperationAdd("keep.txt", b"k"), CommitOperationAdd("dir/a.txt", b"a"), CommitOperationAdd("dir/sub/b.txt", b"b")])
    api.create_commit("org/del", repo_type="dataset", commit_message="del", operations=[CommitOperationDelete("dir/")])
    assert sorted(api.list_repo_files("org/del", repo_type="dataset")) == [".gitattributes", "keep.txt"]
    with pytest.raises(EntryNotFoundError) as err:
        api.delete_file("nope.txt", repo_id="org/del", repo_type="dataset")
    assert "A file with this name doesn't exist" in str(err.value)


def test_invalid_card_yaml_is_rejected_before_upload(hub, api):
    api.create_repo("org/badcard")
    hub.clear_requests()
    with pytest.raises(ValueError, match="license"):
        api.upload_file(path_or_fileobj=b"---\nlicense: [a, b]\n---\n", path_in_repo="README.md", repo_id="org/badcard")
    assert [r.path for r in hub.requests] == ["/api/validate-yaml"]
    assert validate_card_metadata(["x"], "model") == ["YAML metadata must be a mapping (key: value pairs)"]
    assert validate_card_metadata({"model-index": [{"name": "m", "results": [{}]}]}, "model")
    assert validate_card_metadata({"language": ["ja", "en"], "license": "mit"}, "dataset") == []


def test_private_repo_needs_the_token(hub, api, tmp_path):
    api.create_repo("org/secret", repo_type="dataset", private=True)
    api.upload_file(path_or_fileobj=b"hidden", path_in_repo="x.txt", repo_id="org/secret", repo_type="dataset")
    anonymous = HfApi(endpoint=hub.url, token=False)
    with pytest.raises(RepositoryNotFoundError):
        anonymous.dataset_info("org/secret")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/secret", "x.txt", repo_type="dataset", endpoint=hub.url, token=False, cache_dir=str(tmp_path))
    with pytest.raises(HfHubHTTPError) as err:  # a wrong token is refused as such, not as "not found"
        HfApi(endpoint=hub.url, token="hf_wrong").dataset_info("org/secret")
    assert err.value.response.status_code == 401 and not isinstance(err.value, RepositoryNotFoundError)
    assert err.value.response.headers["X-Error-Message"] == "Invalid credentials in Authorization header"
    with pytest.raises(RepositoryNotFoundError):  # writes need the token, even to public repos
        anonymous.create_commit("org/secret", repo_type="dataset", operations=[CommitOperationAdd("y", b"y")], commit_message="x")
    assert api.dataset_info("org/secret").private is True
    assert hub.token not in json.dumps([r.__dict__ for r in hub.requests])


def test_gated_setting(hub, api, tmp_path):
    api.create_repo("org/gated", repo_type="dataset")
    api.upload_file(path_or_fileobj=b"data", path_in_repo="x.txt", repo_id="org/gated", repo_type="dataset")
    api.update_repo_settings("org/gated", repo_type="dataset", gated="auto")
    assert api.dataset_info("org/gated").gated == "auto"
    anonymous = HfApi(endpoint=hub.url, token=False)
    assert anonymous.dataset_info("org/gated").gated == "auto"  # metadata stays public
    with pytest.raises(GatedRepoError):
        hf_hub_download("org/gated", "x.txt", repo_type="dataset", endpoint=hub.url, token=False, cache_dir=str(tmp_path))
    api.update_repo_settings("org/gated", repo_type="dataset", gated=False, private=True)
    info = api.dataset_info("org/gated")
    assert info.gated is False and info.private is True


def test_downloads_give_back_the_bytes(hub, published, tmp_path):
    repo, folder = published["repo_id"], published["folder"]
    local = snapshot_download(repo, repo_type="dataset", revision="v1.0.0", local_dir=tmp_path / "snap", endpoint=hub.url,
                              token=hub.token)
    for name in ["README.md", "blob.bin", "data/train-00000-of-00001.parquet"]:
        assert (Path(local) / name).read_bytes() == (folder / name).read_bytes(), name
    cached = hf_hub_download(repo, "blob.bin", repo_type="dataset", revision="v1.0.0", endpoint=hub.url, token=hub.token,
                             cache_dir=str(tmp_path / "cache"))
    assert Path(cached).read_bytes() == BIG
    assert f"snapshots/{published['commit']}/blob.bin" in Path(cached).as_posix()

    url = f"{hub.url}/datasets/{repo}/resolve/v1.0.0/blob.bin"
    auth = {"authorization": f"Bearer {hub.token}"}
    r = get_session().get(url, headers={**auth, "Range": "bytes=1000-1099"})
    assert r.status_code == 206 and r.content == BIG[1000:1100]
    assert r.headers["Content-Range"] == f"bytes 1000-1099/{len(BIG)}"
    assert r.headers["X-Repo-Commit"] == published["commit"]
    assert get_session().get(url, headers={**auth, "Range": "bytes=-10"}).content == BIG[-10:]
    assert get_session().get(url, headers={**auth, "Range": f"bytes={len(BIG)}-"}).status_code == 416
    head = get_session().head(url, headers=auth)
    assert head.headers["X-Linked-Size"] == str(len(BIG)) and head.headers["Content-Length"] == str(len(BIG))

    fs = HfFileSystem(endpoint=hub.url, token=hub.token, skip_instance_cache=True)
    with fs.open(f"datasets/{repo}@v1.0.0/blob.bin", "rb", block_size=4096) as f:
        f.seek(5000)
        assert f.read(300) == BIG[5000:5300]
    assert fs.glob(f"datasets/{repo}/data/*.parquet") == [f"datasets/{repo}/data/train-00000-of-00001.parquet"]


def test_load_dataset_in_a_subprocess(hub, published, tmp_path):
    code = textwrap.dedent(
        f"""
        import json, datasets
        ds = datasets.load_dataset({published['repo_id']!r})
        print(json.dumps({{"splits": list(ds), "rows": ds["train"].to_dict()}}))
        """
    )
    env = {**os.environ, **hub.env(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"splits": ["train"], "rows": ROWS}


def test_injected_failures(hub, api):
    """The client retries preupload and the LFS calls (http_backoff: 408/429/5xx) but not the commit itself."""
    api.create_repo("org/flaky", repo_type="dataset")
    hub.inject("POST", r"/commit/", 429, headers={"Retry-After": "0"})
    hub.clear_requests()
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="org/flaky", repo_type="dataset")
    assert err.value.response.status_code == 429
    assert [(r.path, r.status) for r in hub.requests if "/commit/" in r.path] == [("/api/datasets/org/flaky/commit/main", 429)]
    assert api.list_repo_files("org/flaky", repo_type="dataset") == [".gitattributes"]

    hub.inject("POST", r"/commit/", 503)
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="org/flaky", repo_type="dataset")
    assert err.value.response.status_code == 503

    hub.inject("POST", r"/preupload/", 503)
    hub.clear_requests()
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="org/flaky", repo_type="dataset")
    assert [r.status for r in hub.requests if "/preupload/" in r.path] == [503, 200]  # retried after 1 s
    assert "x.txt" in api.list_repo_files("org/flaky", repo_type="dataset")


def test_state_survives_a_restart(hub, published):
    with LocalHub(hub.root, token=hub.token) as again:
        info = again.api().dataset_info(published["repo_id"], revision="v1.0.0")
        assert info.sha == published["commit"]


def test_pages_follow_the_link_header(tmp_path, monkeypatch):
    """Tree and commit listings come in pages linked by ``Link: <...>; rel="next"``, as on the Hub."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    with LocalHub(tmp_path / "paged", page_size=2, page_size_expand=1) as small:
        api = small.api()
        api.create_repo("org/paged")
        for i in range(3):
            api.upload_file(path_or_fileobj=f"{i}".encode(), path_in_repo=f"d/f{i}.txt", repo_id="org/paged")
        small.clear_requests()
        tree = [e.path for e in api.list_repo_tree("org/paged", recursive=True)]
        assert tree == ["d", ".gitattributes", "d/f0.txt", "d/f1.txt", "d/f2.txt"]
        assert len(small.log("GET", "/tree/")) == 3
        expanded = list(api.list_repo_tree("org/paged", path_in_repo="d", expand=True))
        assert [e.last_commit.title for e in expanded] == ["Upload d/f0.txt with huggingface_hub",
                                                           "Upload d/f1.txt with huggingface_hub",
                                                           "Upload d/f2.txt with huggingface_hub"]
        commits = api.list_repo_commits("org/paged")
        assert len(commits) == 4 and commits[-1].title == "initial commit" and commits[-1].authors == ["system"]


def test_copies_and_server_side_checks(hub, api, published):
    """In-repo copies (regular and LFS), and what the server refuses even when the client lets it through."""
    from huggingface_hub import CommitOperationCopy

    repo = "org/copies"
    api.create_repo(repo, repo_type="dataset")
    api.create_commit(repo, repo_type="dataset", commit_message="add", operations=[
        CommitOperationAdd("a.txt", b"hello"), CommitOperationAdd("big.bin", BIG)])
    hub.clear_requests()
    api.create_commit(repo, repo_type="dataset", commit_message="copy", operations=[
        CommitOperationCopy("a.txt", "b.txt"), CommitOperationCopy("big.bin", "big2.bin")])
    assert not hub.log("PUT")  # an LFS copy names the object; nothing is uploaded again
    infos = {p.path: p for p in api.get_paths_info(repo, ["a.txt", "b.txt", "big.bin", "big2.bin"], repo_type="dataset")}
    assert infos["b.txt"].blob_id == infos["a.txt"].blob_id and infos["big2.bin"].lfs.sha256 == infos["big.bin"].lfs.sha256

    session, auth = get_session(), {"authorization": f"Bearer {hub.token}"}
    commit_url = f"{hub.url}/api/datasets/{repo}/commit/main"

    def ndjson(*ops):
        lines = [{"key": "header", "value": {"summary": "raw"}}, *ops]
        return "".join(json.dumps(line) + "\n" for line in lines).encode()

    bad_card = {"key": "file", "value": {"path": "README.md", "encoding": "base64",
                                         "content": __import__("base64").b64encode(b"---\nlanguage: 3\n---\n").decode()}}
    r = session.post(commit_url, headers=auth, content=ndjson(bad_card))
    assert r.status_code == 400 and "language" in r.json()["error"]
    unknown_lfs = {"key": "lfsFile", "value": {"path": "x.bin", "algo": "sha256", "oid": "0" * 64, "size": 3}}
    assert session.post(commit_url, headers=auth, content=ndjson(unknown_lfs)).status_code == 400
    assert session.post(f"{hub.url}/api/datasets/{repo}/commit/nope", headers=auth, content=ndjson()).status_code == 404
    before = api.dataset_info(repo).sha
    r = session.post(commit_url, headers=auth, content=ndjson())  # no operations: a commit all the same
    assert r.status_code == 200 and r.json()["commitOid"] != before and api.dataset_info(repo).sha == r.json()["commitOid"]


def test_xet_must_be_off(hub, api, monkeypatch):
    """With hf_xet installed and Xet on, the client uploads through Xet, which LocalHub refuses at once (501)."""
    pytest.importorskip("hf_xet")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    api.create_repo("org/xet")
    hub.clear_requests()
    with pytest.raises(Exception, match="501"):
        api.upload_file(path_or_fileobj=BIG, path_in_repo="big.bin", repo_id="org/xet")
    assert [r.status for r in hub.log(path_regex="xet-write-token")] == [501]
    assert not hub.log("POST", "/commit/")


def test_token_roles_org_roles_and_fine_grained_scopes_show_in_whoami_and_are_enforced(tmp_path):
    with LocalHub(tmp_path / "perm", token_role="fineGrained", org_roles={"viewers": "read"},
                  fine_grained=[{"entity": {"type": "org", "name": "team"}, "permissions": ["repo.write"]},
                                {"entity": {"type": "model", "name": "other/one"}, "permissions": ["repo.content.read"]}]) as hub, \
            hub.xet_off():
        api = hub.api()
        me = api.whoami()
        assert me["auth"]["accessToken"]["role"] == "fineGrained"
        assert me["auth"]["accessToken"]["fineGrained"]["scoped"][0]["permissions"] == ["repo.write"]
        assert {o["name"]: o["roleInOrg"] for o in me["orgs"]} == {"viewers": "read"}
        api.create_repo("team/ok")
        api.upload_file(path_or_fileobj=b"x\n", path_in_repo="a.txt", repo_id="team/ok")
        for repo in ("other/one", "viewers/repo"):
            with pytest.raises(HfHubHTTPError) as err:
                api.create_repo(repo)
            assert err.value.response.status_code == 403
        hub.token_role = "read"  # a read token: the repo it could write before is now read-only
        with pytest.raises(HfHubHTTPError) as err:
            api.upload_file(path_or_fileobj=b"y\n", path_in_repo="b.txt", repo_id="team/ok")
        assert err.value.response.status_code == 403
        assert api.list_repo_files("team/ok") == [".gitattributes", "a.txt"]  # reads still work
