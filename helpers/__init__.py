"""Helpers for the Voxtral LoRA tutorial on Big Bench Audio.

profiles (tiny/full) · tiny + synthetic (offline assets) · data (loading, split, audio checks) ·
prompts · collator · model · evaluate · plots · widgets · published (the guide's way, for comparison)
"""
