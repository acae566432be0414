"""GET /transformers: what a spec's `model` may name here, as the job submission check sees it."""

from __future__ import annotations

import shutil

from tests.service.fixtures import ADMIN_KEY, FASTTEXT_TRAIN, ApiSession


def test_the_listing_names_each_usable_model_with_its_shape_and_each_broken_one_with_why(
    api: ApiSession,
) -> None:
    from service.settings import get_settings
    from tests.engine.test_embeddings_transformer import build_tiny_bert

    root = get_settings().transformers_root
    build_tiny_bert(root / "tiny-bert")  # 2 layers of width 16
    (root / "pickled").mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(root / "tiny-bert" / name, root / "pickled")
    (root / "notes").mkdir()  # no config.json: not a model, not listed
    owner = api.new_owner()

    r = api.client.get("/transformers", headers=owner.headers)
    assert r.status_code == 200, r.text
    listed = {item["name"]: item for item in r.json()["items"]}
    assert list(listed) == ["minilm", "all-minilm-l6-v2", "pickled", "tiny-bert"]
    assert listed["minilm"] == {
        "name": "minilm",
        "source": "installed",
        "hidden_states": 7,
        "hidden_size": 384,
        "problem": None,
    }
    assert listed["tiny-bert"]["source"] == "transformers_dir"
    assert (listed["tiny-bert"]["hidden_states"], listed["tiny-bert"]["hidden_size"]) == (3, 16)
    assert listed["pickled"]["hidden_states"] is None
    assert "folder 'pickled' has no model.safetensors" in listed["pickled"]["problem"]
    assert str(root) not in r.text  # names only: the server's paths stay private

    # what the listing calls usable, a job may name; what it calls broken is refused the same way
    corpus_id = api.corpus(owner, train=FASTTEXT_TRAIN, format="fasttext")
    for name, status in (("tiny-bert", 202), ("pickled", 422)):
        spec = {
            "task": "text_classification",
            "corpus": {"ids": [corpus_id]},
            "embeddings": [{"type": "transformer_document", "model": name, "layers": "-3"}],
        }
        r = api.client.post("/jobs", json=spec, headers=owner.headers)
        assert r.status_code == status, r.text

    assert api.client.get("/transformers").status_code == 401
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert api.client.get("/transformers", headers=admin).status_code == 200
