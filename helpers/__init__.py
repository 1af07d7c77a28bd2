"""The code the Voxtral LoRA tutorial teaches, tested: each notebook builds a piece in its cells, checks it against
the module here, and uses the module from then on.

profiles  one object for what differs between the real GPU run (`full`) and the offline CPU one (`tiny`)
audio     audio in as Voxtral needs it: 16 kHz mono float32, 30-s chunks (notebook 01)
tasks     the four Big Bench Audio tasks and the one prompt builder (notebooks 01-02)
data      the dataset and its stratified split (notebook 01)
collator  rows to training batches: the prompt, the answer and the label mask (notebook 02)
lora      where LoRA goes and what it trains (notebook 03)
hardware  dtype, 4-bit and the training plan from the GPU (notebooks 00, 03)
loading   the model, the processor and an adapter for a profile
training  TrainingArguments, the answer-only loss, make_trainer (notebook 03)
frozen_tower  the frozen audio tower run once per row, its output reused by every epoch (notebook 03)
evaluate  normalising replies, scoring, intervals, baselines (notebook 04)
published the published guide's way, to compare with (notebooks 02-03)
rows      how an error names a row

The machinery around the lessons (the Colab set-up, the preflight, resuming training, plots, widgets, the
microphone app, the training command, exercise checks, the tiny profile's builders) is in `tutorial_kit`.
"""
