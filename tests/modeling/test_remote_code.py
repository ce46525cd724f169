"""A saved folder loads with `trust_remote_code=True` in a fresh process where lsgtrain cannot be imported."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from lsgtrain.modeling.modeling_lsg_pegasus import (
    LSGPegasusForConditionalGeneration,
    LSGPegasusForSequenceClassification,
)

FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    sys.modules["lsgtrain"] = None  # any `import lsgtrain` now fails: only the folder's own code can load
    import torch
    from transformers import (AutoConfig, AutoModel, AutoModelForSeq2SeqLM,
                              AutoModelForSequenceClassification)
    folder, kind, inputs_file, out_file = sys.argv[1:]
    inputs = torch.load(inputs_file)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    assert type(config).__name__ == "LSGPegasusConfig", type(config)
    results = {}
    with torch.no_grad():
        if kind == "seq2seq":
            model = AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True).eval()
            assert "lsgtrain" not in type(model).__module__, type(model).__module__
            results["logits"] = model(**inputs).logits
            results["generated"] = model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                                  max_new_tokens=5, num_beams=2)
            bare = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
            results["bare"] = bare(**inputs).last_hidden_state
        else:
            model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
            results["logits"] = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    torch.save(results, out_file)
    """
)


def _run_fresh(folder, kind, inputs, tmp_path):
    torch.save(inputs, tmp_path / "inputs.pt")
    script = tmp_path / "load.py"
    script.write_text(FRESH_PROCESS)
    result = subprocess.run(
        [sys.executable, str(script), str(folder), kind, str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf")},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(tmp_path / "out.pt")


@pytest.fixture
def inputs():
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(2, 128, (2, 45), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 30:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask, "decoder_input_ids": input_ids[:, :4]}


def test_seq2seq_reloads_identically_without_lsgtrain(tiny_config, tmp_path, inputs):
    torch.manual_seed(0)
    model = LSGPegasusForConditionalGeneration(tiny_config(sparsity_type="pooling")).eval()
    model.save_pretrained(tmp_path / "model")
    auto_map = json.loads((tmp_path / "model" / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForSeq2SeqLM", "AutoModelForSequenceClassification"}
    results = _run_fresh(tmp_path / "model", "seq2seq", inputs, tmp_path)
    with torch.no_grad():
        assert torch.equal(results["logits"], model(**inputs).logits)
        generated = model.generate(
            inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=5, num_beams=2
        )
        assert torch.equal(results["generated"], generated)
        assert torch.equal(results["bare"], model.model(**inputs).last_hidden_state)


def test_classifier_reloads_identically_without_lsgtrain(tiny_config, tmp_path, inputs):
    torch.manual_seed(0)
    model = LSGPegasusForSequenceClassification(tiny_config(num_labels=3, classifier_pooling="mean")).eval()
    model.save_pretrained(tmp_path / "model")
    results = _run_fresh(tmp_path / "model", "classification", inputs, tmp_path)
    with torch.no_grad():
        expected = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    assert torch.equal(results["logits"], expected)
