"""Binding scores and attention localisation on constructed inputs (no oracle, no data)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attngan.metrics.binding import (attention_localisation, attention_mass_in_masks, binding_scores,
                                     colour_attention, colour_word_positions, part_noun_positions)

PARTS = ("wing", "belly", "crown", "bill")


def test_binding_scores_per_attribute_all_correct_and_swaps():
    requested = [
        {"wing": "blue", "belly": "red"},          # right
        {"wing": "blue", "belly": "red"},          # swapped
        {"crown": "black", "tail": "white"},       # tail is not an oracle part: ignored
        {"size": "small"},                         # no oracle part at all: not counted
    ]
    predicted = {
        "wing": ["blue", "red", "grey", "grey"],
        "belly": ["red", "blue", "grey", "grey"],
        "crown": ["grey", "grey", "black", "grey"],
        "bill": ["grey"] * 4,
    }
    s = binding_scores(requested, predicted, PARTS)
    assert s["per_attribute"]["wing"] == pytest.approx(0.5)
    assert s["per_attribute"]["belly"] == pytest.approx(0.5)
    assert s["per_attribute"]["crown"] == pytest.approx(1.0)
    assert math.isnan(s["per_attribute"]["bill"])
    assert s["mentioned"] == {"wing": 2, "belly": 2, "crown": 1, "bill": 0}
    assert s["images"] == 3
    assert s["all_correct"] == pytest.approx(2 / 3)
    assert s["swap_pairs"] == 2 and s["swap_rate"] == pytest.approx(0.5)


def test_same_colour_pairs_cannot_swap():
    s = binding_scores([{"wing": "red", "belly": "red"}], {p: ["red"] for p in PARTS}, PARTS)
    assert s["swap_pairs"] == 0 and math.isnan(s["swap_rate"]) and s["all_correct"] == 1.0


def test_attention_mass_in_masks_counts_partial_cover():
    att = torch.zeros(2, 2, 2)
    att[0, 0, 0] = 1.0                       # all mass in the top-left region
    att[1] = 0.25                            # uniform
    mask = torch.zeros(2, 4, 4)
    mask[:, :2, :2] = 1                      # the top-left quarter of the image
    mask[1, :2, 2] = 1                       # ... plus half of the top-right region for map 1
    share = attention_mass_in_masks(att, mask)
    assert share[0] == pytest.approx(1.0)
    assert share[1] == pytest.approx(0.25 * 1 + 0.25 * 0.5)


def test_attention_localisation_scores_the_given_words_against_their_parts_masks():
    att = torch.zeros(1, 3, 2, 2)
    att[0, 0, 0, 0] = 1.0                    # "belly": inside its mask
    att[0, 2, 1, 1] = 1.0                    # "wings": outside its mask
    att[0, 1] = 0.25                         # "red": not scored here
    tokens = [["belly", "red", "wings"]]
    masks = [{"belly": np.pad(np.ones((2, 2)), ((0, 2), (0, 2))), "wing": np.pad(np.ones((2, 2)), ((0, 2), (2, 0)))}]
    out = attention_localisation(att, [part_noun_positions(tokens[0])], masks)
    assert set(out) == {"belly", "wing"}
    assert out["belly"]["share"] == pytest.approx(1.0) and out["belly"]["n"] == 1
    assert out["wing"]["share"] == pytest.approx(0.0)
    assert out["belly"]["chance"] == pytest.approx(0.25)
    # The uniform map of "red", scored against the belly: the mask's area.
    out = attention_localisation(att, [[(1, "belly")]], masks)
    assert out["belly"]["share"] == pytest.approx(0.25) and out["belly"]["n"] == 1
    assert "object_chance" not in out["belly"]  # no object mask given


def test_localisation_chance_within_the_object_is_a_map_uniform_over_it():
    from attngan.metrics.binding import OBJECT

    # 4 x 4 image; the bird is the left half (8 pixels), its belly 2 of them: a map uniform over
    # the bird puts 2/8 on the belly, one uniform over the image 2/16.
    belly = np.zeros((4, 4))
    belly[2:, 0] = 1
    bird = np.zeros((4, 4))
    bird[:, :2] = 1
    att = torch.zeros(1, 1, 4, 4)
    att[0, 0, 2:, 0] = 0.5  # all of the word's attention on the belly
    out = attention_localisation(att, [[(0, "belly")]], [{"belly": belly, OBJECT: bird}])["belly"]
    assert out["share"] == pytest.approx(1.0)
    assert out["chance"] == pytest.approx(2 / 16) and out["object_chance"] == pytest.approx(2 / 8)
    # On a coarser attention grid (2 x 2) the masks are area-averaged: the bird covers the left
    # cells fully, the belly half of the lower-left cell; uniform over the bird -> 0.5 / 2.
    out = attention_localisation(torch.full((1, 1, 2, 2), 0.25), [[(0, "belly")]],
                                 [{"belly": belly, OBJECT: bird}])["belly"]
    assert out["object_chance"] == pytest.approx(0.25) and out["share"] == pytest.approx(0.125)


@pytest.mark.parametrize("caption, expected", [
    # Each colour bound to one part: its word is scored against that part.
    ("a bird with wings that are black and a white belly", {"black": "wing", "white": "belly"}),
    ("this bird has a red crown and a short yellow bill", {"red": "crown", "yellow": "bill"}),
    # One colour for two parts: its word cannot be assigned to one region.
    ("a bird with black wings and a black belly", {}),
    ("black wings and crown and a white belly", {"white": "belly"}),
    # A colour written twice (once for the whole bird) is ambiguous as well.
    ("a black bird with black wings", {}),
])
def test_colour_word_positions_follow_the_caption_grammar(caption, expected):
    tokens = caption.replace(",", "").split()
    got = {tokens[t]: part for t, part in colour_word_positions(tokens, caption)}
    assert got == expected


def test_colour_attention_measures_attention_on_the_regions_painted_the_words_colour():
    from attngan.data.synth_render import COLOUR_RGB

    # A 4 x 4 image: the left half black, the right half white, on a 2 x 2 attention grid.
    img = torch.empty(1, 3, 4, 4)
    for c, cols in (("black", slice(0, 2)), ("white", slice(2, 4))):
        img[0, :, :, cols] = torch.tensor(COLOUR_RGB[c], dtype=torch.float32)[:, None, None] / 127.5 - 1
    caption = "a bird with wings that are black and a white belly"
    tokens = [caption.split()]
    att = torch.zeros(1, len(tokens[0]), 2, 2)
    att[0, tokens[0].index("black"), :, 0] = 0.5       # all on the black half
    att[0, tokens[0].index("white")] = 0.25            # uniform
    out = colour_attention(img, [att, att], tokens, [caption])
    assert out["stage"].tolist() == [1, 1, 2, 2]       # two words per attentional stage
    assert out["share"].tolist() == pytest.approx([1.0, 0.5, 1.0, 0.5])
    assert out["chance"].tolist() == pytest.approx([0.5, 0.5, 0.5, 0.5])
