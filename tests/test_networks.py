"""Networks: parameter counts and state-dict layouts against the original, shapes for every preset,
attention masking, batch independence, text-encoder packing, CA noise, encoder options."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from attngan.config import PRESETS, preset
from attngan.errors import AttnGANError
from attngan.networks import (
    CondAugment,
    Discriminator,
    Generator,
    ImageEncoder,
    TextEncoder,
    WordAttention,
    build_discriminators,
    build_generator,
    build_image_encoder,
    build_text_encoder,
    init_weights,
)

# Key names and shapes of every published original checkpoint, vendored with the tests.
REFERENCE = Path(__file__).parent / "data" / "original-checkpoints.json"


@pytest.fixture(scope="module")
def original():
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def inception_encoder():
    return ImageEncoder(nef=256, backbone="inception")


def n_params(m: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad or not trainable_only)


def shape_list(m: nn.Module) -> list[list[int]]:
    return [list(v.shape) for v in m.state_dict().values()]


# --- Parameter counts and original layouts --------------------------------------------------

G_CASES = {
    # name: (constructor args, original section, parameter count of the original G_NET in code/model.py)
    "bird": (dict(gf_dim=32, z_dim=100, condition_dim=100, nef=256, r_num=2, branch_num=3), "bird", 7_084_592),
    "coco": (dict(gf_dim=48, z_dim=100, condition_dim=100, nef=256, r_num=3, branch_num=3), "coco", 13_811_456),
    "dcgan": (dict(gf_dim=32, z_dim=100, condition_dim=100, nef=256, r_num=0, branch_num=3, dcgan=True),
              "bird_attnDCGAN2", 6_638_960),
}


@pytest.mark.parametrize("name", list(G_CASES))
def test_generator_params_and_original_layout(name, original):
    kwargs, section, count = G_CASES[name]
    g = Generator(**kwargs)
    assert n_params(g) == count
    # Same tensor shapes in the same order (BN buffers included) => a 1:1 key mapping exists.
    assert shape_list(g) == list(original[section]["netG"].values())


D_CASES = [  # (section, key, image size, ndf, uncond, parameter count)
    ("bird", "netD0", 64, 64, True, 6_313_730),
    ("bird", "netD1", 128, 64, True, 19_424_002),
    ("bird", "netD2", 256, 64, True, 71_858_946),
    ("coco", "netD0", 64, 96, True, 13_304_450),
    ("coco", "netD1", 128, 96, True, 42_800_258),
    ("coco", "netD2", 256, 96, True, 160_774_274),
    ("bird_attnDCGAN2", "netD0", 256, 64, False, 71_850_753),
]


@pytest.mark.parametrize("section,key,size,ndf,uncond,count", D_CASES)
def test_discriminator_params_and_original_layout(original, section, key, size, ndf, uncond, count):
    d = Discriminator(size, ndf, 256, uncond=uncond)
    assert n_params(d) == count == original["meta"][section][key]["n_parameters"]
    assert shape_list(d) == list(original[section][key].values())


def test_text_encoder_params_and_layout(original):
    for section, n_words, count in (("bird", 5450, 2_075_320), ("coco", 27297, 8_629_420)):
        enc = TextEncoder(n_words)
        assert n_params(enc) == count
        assert shape_list(enc) == list(original[section]["text_encoder"].values())


def test_image_encoder_params_and_layout(original, inception_encoder):
    enc = inception_encoder
    assert n_params(enc) == 22_506_720
    assert n_params(enc, trainable_only=True) == 721_152
    assert sum(p.numel() for p in enc.projection_parameters()) == 721_152
    assert not any(p.requires_grad for p in enc.trunk.parameters())
    assert shape_list(enc) == list(original["bird"]["image_encoder"].values())


# --- Every preset builds and runs -----------------------------------------------------------


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_shapes(name):
    torch.manual_seed(0)
    cfg = preset(name)
    nef, batch, t = cfg.text.embedding_dim, 2, 6
    g = build_generator(cfg, nef, init=name == "tiny").eval()
    ds = build_discriminators(cfg, init=name == "tiny").eval()
    text = build_text_encoder(cfg, n_words=40).eval()
    captions = torch.randint(1, 40, (batch, t))
    captions[1, 4:] = 0
    lens = torch.tensor([t, 4])
    words, sent = text(captions, lens)
    assert words.shape == (batch, nef, t) and sent.shape == (batch, nef)
    with torch.no_grad():
        images, attention, mu, logvar = g(torch.randn(batch, cfg.gan.z_dim), sent, words, captions == 0)
        sizes = [cfg.data.base_size * 2**i for i in range(cfg.data.branch_num)]
        expected = sizes[-1:] if cfg.gan.dcgan else sizes
        assert [tuple(x.shape) for x in images] == [(batch, 3, s, s) for s in expected]
        assert [tuple(a.shape) for a in attention] == [(batch, t, s, s) for s in sizes[:-1]]
        assert mu.shape == logvar.shape == (batch, cfg.gan.condition_dim)
        assert all(float(x.abs().max()) <= 1 for x in images)
        assert len(ds) == (1 if cfg.gan.dcgan else cfg.data.branch_num)
        for d, x in zip(ds, images[-len(ds):]):
            code = d(x)
            assert code.shape == (batch, 8 * cfg.gan.df_dim, 4, 4)
            uncond, cond = d.logits(code, sent)
            assert cond.shape == (batch,) and ((cond > 0) & (cond < 1)).all()
            assert (uncond is None) == cfg.gan.dcgan
    if cfg.damsm.backbone == "small":  # the inception one is checked once, below
        enc = build_image_encoder(cfg)
        regions, code = enc(images[-1])
        grid = cfg.damsm.image_size // 8
        assert regions.shape == (batch, nef, grid, grid) and code.shape == (batch, nef)


def test_inception_encoder_forward(inception_encoder):
    enc = inception_encoder.eval()
    with torch.no_grad():
        regions, code = enc(torch.rand(1, 3, 256, 256) * 2 - 1)
    assert regions.shape == (1, 256, 17, 17) and enc.region_size == 17
    assert code.shape == (1, 256)


# --- Generator attention and batch independence ---------------------------------------------


def test_word_attention_sums_to_one_and_ignores_padding():
    torch.manual_seed(0)
    attn = WordAttention(ngf=8, nef=16)
    h, words = torch.randn(3, 8, 5, 5), torch.randn(3, 16, 7)
    lens = torch.tensor([7, 4, 1])
    mask = torch.arange(7)[None, :] >= lens[:, None]
    words = words.masked_fill(mask[:, None, :], 0.0)  # padding features are 0, as from the RNN
    context, beta = attn(h, words, mask)
    assert context.shape == (3, 8, 5, 5) and beta.shape == (3, 7, 5, 5)
    assert torch.allclose(beta.sum(1), torch.ones(3, 5, 5), atol=1e-6)
    for b, n in enumerate(lens.tolist()):
        assert (beta[b, n:] == 0).all()  # exactly zero on padding, for every sample
    assert torch.allclose(beta[2, 0], torch.ones(5, 5))  # a one-word caption attends only to it


def test_generator_output_independent_of_batch_composition():
    torch.manual_seed(0)
    g = init_weights(Generator(8, 8, 6, 16, r_num=1, branch_num=3, base_size=16)).eval()
    lens = torch.tensor([3, 7, 2, 5])
    t = int(lens.max())
    words = torch.randn(4, 16, t)
    mask = torch.arange(t)[None, :] >= lens[:, None]
    words = words.masked_fill(mask[:, None, :], 0.0)
    sent, z, noise = torch.randn(4, 16), torch.randn(4, 8), torch.randn(4, 6)
    with torch.no_grad():
        batched, batched_attn, _, _ = g(z, sent, words, mask, ca_noise=noise)
        n = int(lens[0])  # caption 0 alone, trimmed to its own length: no padding at all
        alone, alone_attn, _, _ = g(z[:1], sent[:1], words[:1, :, :n], mask[:1, :n], ca_noise=noise[:1])
    for x, y in zip(batched, alone):
        assert torch.allclose(x[:1], y, atol=1e-5)
    for a, b in zip(batched_attn, alone_attn):
        assert torch.allclose(a[:1, :n], b, atol=1e-5) and (a[0, n:] == 0).all()


def test_generator_rejects_empty_caption_and_bad_shapes():
    g = Generator(8, 8, 6, 16, r_num=0, branch_num=2, base_size=16).eval()
    words, sent, z = torch.randn(2, 16, 3), torch.randn(2, 16), torch.randn(2, 8)
    mask = torch.tensor([[False, False, True], [True, True, True]])
    with pytest.raises(AttnGANError, match="no words"):
        g(z, sent, words, mask)
    with pytest.raises(AttnGANError, match="Generator z"):
        g(torch.randn(2, 9), sent, words, None)
    with pytest.raises(AttnGANError, match="Generator mask"):
        g(z, sent, words, mask[:, :2])


def test_ca_noise_redrawn_in_eval_unless_given():
    torch.manual_seed(0)
    ca = CondAugment(nef=16, ncf=4).eval()
    sent = torch.randn(3, 16)
    c1, mu, logvar = ca(sent)
    c2, _, _ = ca(sent)
    assert not torch.allclose(c1, c2)  # fresh eps every call, eval included (as the original)
    noise = torch.randn(3, 4)
    c3, _, _ = ca(sent, noise)
    c4, _, _ = ca(sent, noise)
    assert torch.equal(c3, c4)
    assert torch.allclose(c3, noise * torch.exp(0.5 * logvar) + mu)
    # mu is the first half of the GLU output, logvar the second.
    h = ca.fc(sent)
    glu = h[:, :8] * torch.sigmoid(h[:, 8:])
    assert torch.allclose(mu, glu[:, :4]) and torch.allclose(logvar, glu[:, 4:])


def test_generator_redraws_noise_in_eval():
    torch.manual_seed(0)
    g = Generator(8, 8, 6, 16, r_num=0, branch_num=1, base_size=8).eval()
    args = (torch.randn(2, 8), torch.randn(2, 16), torch.randn(2, 16, 3), None)
    with torch.no_grad():
        a, b = g(*args)[0][0], g(*args)[0][0]
        noise = torch.randn(2, 6)
        c, d = g(*args, ca_noise=noise)[0][0], g(*args, ca_noise=noise)[0][0]
    assert not torch.allclose(a, b) and torch.equal(c, d)


def test_init_weights_matches_original_scheme():
    torch.manual_seed(0)
    g = init_weights(Generator(8, 8, 6, 16, r_num=1, branch_num=2, base_size=16))
    w = g.stage1.res[0].conv1.weight.flatten(1)  # 16 x 144: orthogonal rows
    assert torch.allclose(w @ w.T, torch.eye(w.size(0)), atol=1e-5)
    assert (g.ca.fc.bias == 0).all()
    bn = g.stage0.bn
    w = bn.weight.detach()
    assert (bn.bias == 0).all() and abs(float(w.mean()) - 1) < 0.01 and float(w.std()) < 0.05


def test_discriminator_sizes_and_small_generalisation():
    d32 = Discriminator(32, 4, 8)
    assert d32(torch.randn(2, 3, 32, 32)).shape == (2, 32, 4, 4)
    d512 = Discriminator(512, 1, 8)
    assert d512(torch.randn(2, 3, 512, 512)).shape == (2, 8, 4, 4)
    with pytest.raises(AttnGANError, match="4 \\* 2\\^k"):
        Discriminator(48, 4, 8)
    with pytest.raises(AttnGANError, match="D64 images"):
        Discriminator(64, 4, 8)(torch.randn(2, 3, 32, 32))
    uncond, cond = Discriminator(64, 4, 8, uncond=False).eval().logits(torch.randn(2, 32, 4, 4))
    assert uncond is None and cond is None  # no sentence given -> no conditional output


# --- Text encoder ---------------------------------------------------------------------------


def _captions(lens: list[int], width: int, n_words: int = 30) -> torch.Tensor:
    caps = torch.randint(1, n_words, (len(lens), width))
    for i, n in enumerate(lens):
        caps[i, n:] = 0
    return caps


@pytest.mark.parametrize("rnn_type", ["LSTM", "GRU"])
def test_text_encoder_unsorted_equals_sorted_and_single(rnn_type):
    torch.manual_seed(0)
    enc = TextEncoder(30, word_dim=12, nef=16, rnn_type=rnn_type).eval()
    lens = torch.tensor([7, 5, 5, 2])
    caps = _captions(lens.tolist(), width=9)  # wider than the longest caption, like WORDS_NUM
    words, sent = enc(caps, lens)
    assert words.shape == (4, 16, 7) and sent.shape == (4, 16)
    perm = torch.tensor([2, 0, 3, 1])
    words_p, sent_p = enc(caps[perm], lens[perm])
    assert torch.allclose(words_p, words[perm], atol=1e-6) and torch.allclose(sent_p, sent[perm], atol=1e-6)
    for i, n in enumerate(lens.tolist()):
        assert (words[i, :, n:] == 0).all()  # padding positions are exact zeros
        w1, s1 = enc(caps[i : i + 1, :n], lens[i : i + 1])
        assert torch.allclose(w1[0], words[i, :, :n], atol=1e-6) and torch.allclose(s1[0], sent[i], atol=1e-6)
        # sentence = [forward state at the last word | backward state at the first word]
        assert torch.allclose(sent[i, :8], words[i, :8, n - 1]) and torch.allclose(sent[i, 8:], words[i, 8:, 0])


@pytest.mark.parametrize("rnn_type", ["LSTM", "GRU"])
@pytest.mark.parametrize("sentence", ["last", "mean"])
def test_text_encoder_cpu_path_equals_packed_rnn_with_gradients(rnn_type, sentence):
    # On the CPU the encoder runs each direction over the padded batch instead of packing (faster);
    # it must give what the packed bi-RNN gives: outputs, final states and every gradient.
    torch.manual_seed(0)
    enc = TextEncoder(30, word_dim=12, nef=16, rnn_type=rnn_type, dropout=0.0, sentence=sentence).train()
    lens = torch.tensor([5, 9, 1, 7, 7, 3])
    caps = _captions(lens.tolist(), width=11)
    words, sent = enc(caps, lens)
    (words.square().sum() + sent.sum()).backward()
    grads = {n: p.grad.clone() for n, p in enc.named_parameters()}
    enc.zero_grad()
    out, h_n = enc._rnn_packed(enc.embedding(caps), lens)  # the CUDA path: a packed sequence
    ref_words = out.transpose(1, 2)
    ref_sent = ref_words.sum(2) / lens[:, None] if sentence == "mean" else torch.cat([h_n[0], h_n[1]], 1)
    (ref_words.square().sum() + ref_sent.sum()).backward()
    torch.testing.assert_close(words, ref_words, atol=1e-6, rtol=0)
    torch.testing.assert_close(sent, ref_sent, atol=1e-6, rtol=0)
    for n, p in enc.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, atol=1e-5, rtol=0, msg=n)
    assert sorted(enc.state_dict()) == sorted(n for n, _ in enc.named_parameters())  # no extra weights
    # The helper draws no random numbers: a seeded encoder is what embedding + bi-RNN alone give.
    torch.manual_seed(3)
    TextEncoder(30, word_dim=12, nef=16, rnn_type=rnn_type)
    after = torch.rand(4)
    torch.manual_seed(3)
    torch.nn.Embedding(30, 12)
    (torch.nn.LSTM if rnn_type == "LSTM" else torch.nn.GRU)(12, 8, batch_first=True, bidirectional=True)
    torch.nn.init.uniform_(torch.empty(30, 12), -0.1, 0.1)
    assert torch.equal(after, torch.rand(4))


def test_text_encoder_mean_sentence_is_the_mean_of_its_own_words():
    torch.manual_seed(0)
    enc = TextEncoder(30, word_dim=12, nef=16, sentence="mean").eval()
    last = TextEncoder(30, word_dim=12, nef=16).eval()
    last.load_state_dict(enc.state_dict())  # same parameters: the option adds none
    lens = torch.tensor([6, 3, 1])
    caps = _captions(lens.tolist(), width=8)
    words, sent = enc(caps, lens)
    for i, n in enumerate(lens.tolist()):
        assert torch.allclose(sent[i], words[i, :, :n].mean(1), atol=1e-6)
        # padding width and batch-mates do not change a caption's sentence feature
        assert torch.allclose(enc(caps[i:i + 1, :n], lens[i:i + 1])[1][0], sent[i], atol=1e-6)
    words_l, sent_l = last(caps, lens)
    assert torch.allclose(words_l, words) and not torch.allclose(sent_l, sent)
    with pytest.raises(AttnGANError, match="sentence pooling"):
        TextEncoder(30, nef=16, sentence="max")


def test_text_encoder_dropout_only_in_train_and_errors():
    torch.manual_seed(0)
    enc = TextEncoder(30, word_dim=12, nef=16, dropout=0.5)
    caps, lens = _captions([4, 3], 4), torch.tensor([4, 3])
    enc.train()
    assert not torch.allclose(enc(caps, lens)[1], enc(caps, lens)[1])
    enc.eval()
    assert torch.equal(enc(caps, lens)[1], enc(caps, lens)[1])
    with pytest.raises(AttnGANError, match="at least one word"):
        enc(caps, torch.tensor([4, 0]))
    with pytest.raises(AttnGANError, match="out of range"):
        enc(caps + 100, lens)
    with pytest.raises(AttnGANError, match="even"):
        TextEncoder(30, nef=15)


# --- Image encoder --------------------------------------------------------------------------


def test_small_image_encoder_trains_and_grids():
    torch.manual_seed(0)
    enc = ImageEncoder(nef=32, backbone="small", image_size=64, small_width=8)
    assert sum(p.numel() for p in enc.projection_parameters()) == n_params(enc, trainable_only=True) == n_params(enc)
    regions, code = enc(torch.randn(2, 3, 64, 64))
    assert regions.shape == (2, 32, 8, 8) and code.shape == (2, 32) and enc.region_size == 8
    (regions.mean() + code.mean()).backward()
    assert all(p.grad is not None for p in enc.parameters())
    big = ImageEncoder(nef=32, backbone="small", image_size=128, small_width=8)
    assert big(torch.randn(1, 3, 64, 64))[0].shape == (1, 32, 16, 16)  # resized to 128 first
    # BatchNorm: in eval mode an image's features do not depend on the rest of the batch.
    enc.eval()
    x = torch.randn(3, 3, 64, 64)
    assert torch.allclose(enc(x)[0][:1], enc(x[:1])[0], atol=1e-5)


def test_inception_trunk_bn_mode_is_an_explicit_choice(inception_encoder):
    enc = inception_encoder
    enc.train()  # faithful: the original's frozen trunk still ran in train mode (batch statistics)
    assert enc.trunk.Mixed_6e.branch1x1.bn.training
    enc.trunk_bn_eval = True
    enc.train()
    assert not enc.trunk.Mixed_6e.branch1x1.bn.training and enc.global_proj.training
    enc.trunk_bn_eval = False
    enc.eval()


def test_load_inception_weights(tmp_path, inception_encoder):
    from torchvision.models import inception_v3

    enc = inception_encoder
    with pytest.raises(AttnGANError, match="not found"):
        enc.load_inception_weights(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(3)}, bad)
    with pytest.raises(AttnGANError, match="not a torchvision Inception-v3"):
        enc.load_inception_weights(bad)
    # A torchvision-layout file with AuxLogits and fc (which the trunk ignores).
    torch.manual_seed(1)
    state = inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict()
    assert any(k.startswith("AuxLogits.") for k in state) and "fc.weight" in state
    good = tmp_path / "inception_v3_google-test.pth"
    torch.save(state, good)
    enc.load_inception_weights(good)
    key = "Mixed_7c.branch_pool.conv.weight"
    assert torch.equal(enc.trunk.state_dict()[key], state[key])
    with pytest.raises(AttnGANError, match="backbone='inception'"):
        ImageEncoder(nef=8, backbone="small", image_size=64, small_width=8).load_inception_weights(good)


def test_image_encoder_align_corners_option():
    torch.manual_seed(0)
    a = ImageEncoder(nef=8, backbone="small", image_size=64, small_width=8).eval()
    b = ImageEncoder(nef=8, backbone="small", image_size=64, small_width=8, align_corners=True).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        assert not torch.allclose(a(x)[0], b(x)[0])  # the resize differs...
        y = torch.randn(1, 3, 64, 64)
        assert torch.equal(a(y)[0], b(y)[0])  # ...and is skipped at the encoder's own size


def test_small_trunk_avgmax_pool_keeps_mean_and_max_halves():
    from attngan.errors import AttnGANError
    from attngan.networks.damsm import SmallTrunk

    torch.manual_seed(0)
    avg, both = SmallTrunk(8, "avg").eval(), SmallTrunk(8, "avgmax").eval()
    both.load_state_dict(avg.state_dict())  # same convolutions, only the pooling differs
    x = torch.randn(2, 3, 64, 64)
    (ra, ga), (rb, gb) = avg(x), both(x)
    assert both.global_channels == 2 * avg.global_channels == gb.shape[1] == 128
    torch.testing.assert_close(ra, rb)
    torch.testing.assert_close(gb[:, :64], ga)          # first half: the mean, as `avg`
    top = both.down3(rb)
    torch.testing.assert_close(gb[:, 64:], top.amax((2, 3)))
    enc = ImageEncoder(nef=16, backbone="small", image_size=64, small_width=8, small_pool="avgmax")
    assert enc(x)[1].shape == (2, 16)
    with pytest.raises(AttnGANError, match="avg or avgmax"):
        SmallTrunk(8, "median")
