"""HAT: the SubTransformer space, its network builder and the LatencyPredictor drop-in.

HAT (mit-han-lab/hardware-aware-transformers) is a fairseq fork that cannot be installed here, so the
drop-in is tested against HAT's documented call pattern (fairseq/evolution.py) on a stand-in module;
configs below are HAT's own examples (latency_predictor.py, evolution.py's test(), a SubTransformer yml).
"""
from __future__ import annotations

import copy
import importlib.util
import json
import types

import numpy as np
import pytest
import torch
from help_plugin.integrations.hat import HAT_FEATURE_NORM, LatencyPredictor, install
from torch.utils.flop_counter import FlopCounterMode

from help_plugin import HELPEstimator
from help_plugin.measure import TorchEagerDevice
from help_plugin.predictors.baselines import (
    FLOPsEstimator,
    HATMLPEstimator,
    hat_features,
)
from help_plugin.spaces import get_space
from help_plugin.spaces.hat import HATTransformer

# latency_predictor.py's example config (5-layer decoder, lists of layer_num entries)
HAT_EXAMPLE = {
    "encoder": {"encoder_embed_dim": 512, "encoder_layer_num": 6,
                "encoder_ffn_embed_dim": [3072, 3072, 3072, 3072, 3072, 3072],
                "encoder_self_attention_heads": [8, 8, 8, 8, 8, 4]},
    "decoder": {"decoder_embed_dim": 512, "decoder_layer_num": 5,
                "decoder_ffn_embed_dim": [2048, 3072, 3072, 3072, 1024],
                "decoder_self_attention_heads": [4, 8, 8, 4, 4],
                "decoder_ende_attention_heads": [4, 8, 8, 4, 4],
                "decoder_arbitrary_ende_attn": [-1, 1, 1, 1, 1]}}
# configs/wmt14.en-de/subtransformer/HAT_wmt14ende_xeon@137.9ms_bleu@25.8.yml
HAT_YML = {"encoder-embed-dim-subtransformer": 512, "decoder-embed-dim-subtransformer": 512,
           "encoder-ffn-embed-dim-all-subtransformer": [3072] * 6, "decoder-ffn-embed-dim-all-subtransformer": [3072],
           "encoder-layer-num-subtransformer": 6, "decoder-layer-num-subtransformer": 1,
           "encoder-self-attention-heads-all-subtransformer": [4, 8, 8, 8, 8, 8],
           "decoder-self-attention-heads-all-subtransformer": [8],
           "decoder-ende-attention-heads-all-subtransformer": [8],
           "decoder-arbitrary-ende-attn-all-subtransformer": [1]}


pytestmark = pytest.mark.usefixtures("one_thread")


def gene2config_form(config: dict) -> dict:
    """The config as HAT's Converter.gene2config returns it: 6-entry lists, junk beyond layer_num."""
    out = copy.deepcopy(config)
    for part in ("encoder", "decoder"):
        for key, v in out[part].items():
            if isinstance(v, list):
                filler = {"decoder_arbitrary_ende_attn": 2}.get(key, v[0] if key.endswith("heads") else 1024)
                out[part][key] = v + [filler] * (6 - len(v))
    return out


# ---------------------------------------------------------------------------- the space
def test_space_layout_matches_hat_space0_gene():
    sp = get_space("hat")
    assert isinstance(sp, HATTransformer) and sp.arch_length == 40  # HAT's gene length for space0
    assert sp.choices[:2] == (2, 1) and sp.choices[14:16] == (2, 6) and set(sp.choices[34:]) == {3}


def test_all_config_forms_parse_to_one_canonical_arch():
    sp = get_space("hat")
    idx = sp.parse(HAT_EXAMPLE)
    assert np.array_equal(sp.parse(gene2config_form(HAT_EXAMPLE)), idx)
    assert np.array_equal(sp.parse(sp.canonical(HAT_EXAMPLE)), idx)  # the JSON string
    assert sp.format(idx) == HAT_EXAMPLE
    yml = sp.format(sp.parse(HAT_YML))
    assert yml["decoder"] == {"decoder_embed_dim": 512, "decoder_layer_num": 1, "decoder_ffn_embed_dim": [3072],
                              "decoder_self_attention_heads": [8], "decoder_ende_attention_heads": [8],
                              "decoder_arbitrary_ende_attn": [1]}
    assert yml["encoder"]["encoder_self_attention_heads"] == [4, 8, 8, 8, 8, 8]


def test_sample_is_canonical_reproducible_and_roundtrips():
    sp = get_space("hat")
    a = sp.sample(200, seed=1)
    assert np.array_equal(a, sp.sample(200, seed=1)) and np.array_equal(a[:50], sp.sample(50, seed=1))
    assert np.array_equal(sp.canonical_indices(a), a)
    for row in a[:40]:
        assert np.array_equal(sp.parse(sp.format(row)), row)
    n_dec = np.asarray(sp.to_indices([sp.format(r) for r in a])[:, 15]) + 1
    assert set(n_dec) == set(range(1, 7))
    # inactive decoder positions do not change the encoding or the costs
    noisy = a.copy()
    noisy[:, 16:] = np.random.default_rng(0).integers(0, np.asarray(sp.choices[16:]), size=noisy[:, 16:].shape)
    np.testing.assert_array_equal(sp.encode(sp.canonical_indices(noisy)), sp.encode(noisy))
    np.testing.assert_allclose(sp.cost_features(noisy), sp.cost_features(sp.canonical_indices(noisy)))


def test_hat_gene_roundtrip():
    sp = get_space("hat")
    gene = sp.to_gene(HAT_EXAMPLE)  # Converter.config2gene: inactive layer 6 repeats layer 1's values
    assert gene[:3] == [512, 6, 3072] and gene[14:16] == [512, 5]
    assert gene[16:22] == [2048, 3072, 3072, 3072, 1024, 2048] and gene[34:] == [-1, 1, 1, 1, 1, -1]
    for row in sp.sample(30, seed=5):
        assert np.array_equal(sp.from_gene(sp.to_gene(row)), row)
    with pytest.raises(ValueError, match=r"gene\[14\] = 768 is not one of \(512, 640\)"):
        sp.from_gene(gene[:14] + [768] + gene[15:])


@pytest.mark.parametrize("mutate, message", [
    # evolution.py's test() config uses values outside space0
    (lambda c: c["encoder"]["encoder_ffn_embed_dim"].__setitem__(1, 1025),
     r"encoder_ffn_embed_dim\[1\] = 1025 is not one of \(1024, 2048, 3072\)"),
    (lambda c: c["decoder"].__setitem__("decoder_layer_num", 7), r"decoder_layer_num = 7 is not one of"),
    (lambda c: c["decoder"]["decoder_arbitrary_ende_attn"].__setitem__(0, 0),
     r"decoder_arbitrary_ende_attn\[0\] = 0 is not one of \(-1, 1, 2\)"),
    (lambda c: c["decoder"]["decoder_self_attention_heads"].__setitem__(2, True),
     r"decoder_self_attention_heads\[2\] = True"),
    (lambda c: c["decoder"].__setitem__("decoder_ffn_embed_dim", [3072, 3072]), r"decoder_ffn_embed_dim must be a list"),
    (lambda c: c["encoder"].pop("encoder_embed_dim"), r"missing \['encoder_embed_dim'\]"),
    (lambda c: c["decoder"].__setitem__("decoder_ende_attn", [1]), r"unknown keys \['decoder_ende_attn'\]"),
    (lambda c: c.__setitem__("extra", {}), r"exactly the keys 'encoder' and 'decoder'"),
])
def test_bad_configs_name_the_bad_value(mutate, message):
    config = copy.deepcopy(HAT_EXAMPLE)
    mutate(config)
    with pytest.raises(ValueError, match=message):
        get_space("hat").parse(config)


def test_bad_inputs_and_settings():
    sp = get_space("hat")
    with pytest.raises(TypeError, match="config dict"):
        sp.parse([640, 6])
    with pytest.raises(ValueError, match="canonical JSON"):
        sp.parse("not json")
    with pytest.raises(ValueError, match="unknown SubTransformer yml key"):
        sp.parse({**HAT_YML, "encoder-embed-dim": 640})
    with pytest.raises(ValueError, match="unknown decoding 'beam'"):
        HATTransformer(decoding="beam")
    with pytest.raises(ValueError, match="src_len must be a positive int, got 0"):
        HATTransformer(src_len=0)


def test_costs_grow_with_the_architecture():
    sp = get_space("hat")
    small = sp.parse(HAT_YML)
    big = small.copy()
    big[15] = 5  # 6 decoder layers instead of 1
    c_small, c_big = sp.cost_features(np.stack([small, big]))
    assert (c_big > c_small).all()
    longer = HATTransformer(src_len=60).cost_features(small[None])[0]
    assert longer[0] > c_small[0] and longer[1] == c_small[1]  # more MACs, same parameters


# ---------------------------------------------------------------------------- the network
def _tiny(decoding="incremental") -> HATTransformer:
    """Real widths and depths, short sequences and a small vocabulary (fast to build and run)."""
    return HATTransformer(src_len=5, tgt_len=3, vocab_size=64, decoding=decoding)


@pytest.mark.parametrize("decoding", ["incremental", "parallel"])
def test_network_params_and_macs_equal_the_analytic_costs(decoding):
    sp = _tiny(decoding)
    archs = np.concatenate([sp.sample(2, seed=4), sp.to_indices([HAT_EXAMPLE, HAT_YML])])
    for row in archs:
        net = sp.build_network(row).eval()
        src, prev = sp.example_input(row, batch_size=2)
        assert src.shape == (2, 5) and prev.shape == (2, 3) and src.dtype == torch.long
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            logits = net(src, prev)
        assert logits.shape == (2, 3, 64)
        macs, params = sp.cost_features(row[None])[0, :2]
        assert sum(p.numel() for p in net.parameters()) == params
        assert counter.get_total_flops() / 2 / 2 == macs  # FLOPs = 2 MACs, batch 2


def test_incremental_decoding_equals_teacher_forcing_and_layers_follow_the_config():
    sp = _tiny()
    net = sp.build_network(HAT_EXAMPLE).eval()
    x = sp.example_input(None, batch_size=2)
    with torch.inference_mode():
        incremental = net(*x)
        parallel = sp.build_network(HAT_EXAMPLE, decoding="parallel")
        parallel.load_state_dict(net.state_dict())
        torch.testing.assert_close(parallel.eval()(*x), incremental, rtol=1e-4, atol=1e-4)
        assert len(net.encoder) == 6 and len(net.decoder) == 5
        assert [layer.fc1.out_features for layer in net.decoder] == [2048, 3072, 3072, 3072, 1024]
        assert [layer.self_attn.heads for layer in net.decoder] == [4, 8, 8, 4, 4]
        states = net.encode(x[0])
        k, _ = net.decoder[1].memory(states)  # arbitrary attention 1: the last two encoder layers
        assert k.shape == (2, 8, 2 * 5, 512 // 8)
        assert net.embed.shape == (64, 512)


def test_measured_on_this_cpu_through_the_harness():
    device = TorchEagerDevice(_tiny(), threads=1, batch_size=1, runs=1, passes=2, warmup=1)
    m = device.measure(_tiny().sample(3, seed=0))
    assert m.latency_ms.shape == (3,) and (m.latency_ms > 0).all()


# ---------------------------------------------------------------------------- HAT's features and MLP
def test_hat_features_follow_hats_definition():
    f = hat_features([HAT_EXAMPLE, gene2config_form(HAT_EXAMPLE)])
    expected = [512, 6, 3072, 44 / 6, 512, 5, np.mean([2048, 3072, 3072, 3072, 1024]), 28 / 5, 28 / 5,
                np.mean([1, 2, 2, 2, 2])]
    np.testing.assert_allclose(f, [expected, expected])


def test_hat_mlp_baseline_learns_and_checks_input():
    sp = get_space("hat")
    archs = sp.sample(200, seed=2)
    ms = 1e-7 * sp.cost_features(archs)[:, 2]  # a smooth synthetic device
    est = HATMLPEstimator(train_steps=400, lr=1e-3).fit(archs[:150], ms[:150])
    pred = est.predict(archs[150:])
    assert pred.shape == (50,) and np.corrcoef(pred, ms[150:])[0, 1] > 0.8
    with pytest.raises(ValueError, match="feature_norm must be 10 positive numbers"):
        HATMLPEstimator(feature_norm=[1.0] * 9).fit(archs[:2], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"latencies_ms\[1\] = -1.0"):
        HATMLPEstimator().fit(archs[:2], [1.0, -1.0])


# ---------------------------------------------------------------------------- the drop-in
def _adapted_help(path):
    """The shipped HAT model adapted to a synthetic device, saved to ``path``."""
    est = HELPEstimator.pretrained("hat")
    sp = est.space
    refs = est.reference_indices
    shots = sp.sample(10, seed=7)
    device = lambda idx: 1e-6 * sp.cost_features(idx)[:, 2] + 5.0
    est.adapt(device(refs), shots, device(shots))
    est.save(path)
    return est


def test_drop_in_follows_hats_evolution_call_pattern(tmp_path):
    est = _adapted_help(tmp_path / "xeon.safetensors")
    # a stand-in for fairseq.evolution: Evolution looks LatencyPredictor up in its module
    evolution = types.ModuleType("fake_fairseq_evolution")
    evolution.LatencyPredictor = object
    previous = install(module=evolution)
    assert previous is object and evolution.LatencyPredictor is LatencyPredictor
    predictor = evolution.LatencyPredictor(feature_norm=list(HAT_FEATURE_NORM), lat_norm=300,
                                           ckpt_path=str(tmp_path / "xeon.safetensors"))
    predictor.load_ckpt()
    configs = [gene2config_form(HAT_EXAMPLE), HAT_EXAMPLE, get_space("hat").format(get_space("hat").parse(HAT_YML))]
    lat = [predictor.predict_lat(c) for c in configs]
    assert all(isinstance(v, float) and v > 0 for v in lat) and lat[0] == lat[1]
    # what HAT's evolution compares with its latency constraint: the 95 % selection-aware bound by default
    np.testing.assert_allclose(lat, est.predict_upper(configs, 0.95, selection=True))
    np.testing.assert_allclose(predictor.predict_lats(configs), lat)
    assert (np.asarray(lat) > est.predict(configs)).all()
    install(module=evolution, confidence=None)  # HELP's rule: the mean prediction
    mean = evolution.LatencyPredictor(ckpt_path=str(tmp_path / "xeon.safetensors"))
    mean.load_ckpt()
    np.testing.assert_allclose(mean.predict_lats(configs), est.predict(configs))


def test_drop_in_accepts_any_latency_estimator():
    sp = get_space("hat")
    archs = sp.sample(30, seed=3)
    flops = FLOPsEstimator("hat").fit(archs, 1e-8 * sp.cost_features(archs)[:, 0] + 2.0)
    evolution = types.ModuleType("fake_fairseq_evolution")
    evolution.LatencyPredictor = object
    install(estimator=flops, module=evolution)
    predictor = evolution.LatencyPredictor(feature_norm=HAT_FEATURE_NORM, lat_norm=200, ckpt_path="ignored.pt")
    predictor.load_ckpt()  # bound estimator: the ckpt path is not read
    assert predictor.predict_lat(HAT_EXAMPLE) == pytest.approx(flops.predict_upper([HAT_EXAMPLE], selection=True)[0])
    assert LatencyPredictor(estimator=flops, confidence=None).predict_lat(HAT_EXAMPLE) == pytest.approx(
        flops.predict([HAT_EXAMPLE])[0])
    assert LatencyPredictor(estimator=flops).predict_lat(json.loads(sp.canonical(HAT_EXAMPLE))) > 0


def test_drop_in_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="HAT's own MLP checkpoint"):
        LatencyPredictor([1] * 10, 300, str(tmp_path / "wmt14ende_cpu_xeon.pt")).load_ckpt()
    with pytest.raises(RuntimeError, match="call load_ckpt"):
        LatencyPredictor(HAT_FEATURE_NORM, 300, "x.safetensors").predict_lat(HAT_EXAMPLE)
    with pytest.raises(ValueError, match="not adapted"):
        LatencyPredictor(estimator=HELPEstimator.pretrained("hat"))
    with pytest.raises(ValueError, match="'nasbench201' space"):
        LatencyPredictor(estimator=FLOPsEstimator("nasbench201").fit(
            ["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|"],
            [1.0, 2.0]))
    bad = copy.deepcopy(HAT_EXAMPLE)
    bad["decoder"]["decoder_embed_dim"] = 768
    archs = get_space("hat").sample(5, seed=0)
    predictor = LatencyPredictor(estimator=FLOPsEstimator("hat").fit(archs, np.arange(1.0, 6.0)))
    with pytest.raises(ValueError, match="decoder_embed_dim = 768 is not one of"):
        predictor.predict_lat(bad)
    if importlib.util.find_spec("fairseq") is None:
        with pytest.raises(ImportError, match="fairseq is not importable"):
            install()
