"""The panels' words for the core's messages (_widgets/_words.py, Qt-free): code names become
the form's labels, known messages are reworded, anything else passes through unchanged."""

from napari_b2u._widgets._words import kept_words, panel_words


def test_settings_become_the_panels_labels():
    said = panel_words("use larger images, val_fraction=0, or a shallower network; "
                       "train with floor='none'; patch_size 64 does not fit; context=0")
    assert said == ("use larger images, Validation fraction: 0, or a shallower network; "
                    "train with Classical floor: none; Patch 64 does not fit; "
                    "Stack context: 0")


def test_unknown_messages_pass_through_unchanged():
    for text in ("comparing with a Gaussian filter… 2/3", "step 12: validation 0.0031",
                 "a_b = c [1, 2]"):
        assert panel_words(text) == text


def test_the_kept_weights_in_words_and_unknown_choices_left_to_the_caller(tiny_model):
    assert kept_words(tiny_model)[0].startswith("kept the network's")
    odd = type(tiny_model)(tiny_model.method_name, tiny_model.method_params,
                           tiny_model.model_config, tiny_model.state_dict,
                           tiny_model.normalization, {**tiny_model.info, "chosen": "something new"})
    assert kept_words(odd) is None
