"""`attngan demo`: the shipped model, then one trained from scratch, then the shipped scenes model,
ending in report.html.

Part 1 renders the SynthBirds set the default bundled model was trained on and evaluates that
model with the evaluation DAMSM and oracle shipped beside it; part 2 trains the `tiny` preset from
scratch on the same data for a fixed amount of work (DAMSM epochs, AttnGAN kimg) and evaluates it
the same way; part 3 shows the shipped SynthScenes model on the paper's MS-COCO sentences, each
judged by the SynthScenes judge, and scores it for seen and novel compositions on a small
SynthScenes test set (nothing is trained). No step looks at the clock, so a busy machine takes
longer but reports the same numbers. The data sets, every trained piece and every evaluation are
cached in the output folder; a later run with the same settings reuses them and says so (delete
the folder for a fresh run).

settings.py holds what the demo shows and how much work it does, pieces.py the cached steps (data,
training, evaluation), prompts.py the prompts' figures, scenes.py the scenes part and app.py
`run_demo`, which ties them into the report. This module imports none of them, so `attngan --help`
reads the settings without torch.
"""
