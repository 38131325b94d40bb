"""Data shipped with the aligner package: the house-style SFT set and the preference (DPO) set."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
HOUSE_STYLE_TRAIN = DATA_DIR / "house_style" / "train.jsonl"
HOUSE_STYLE_EVAL = DATA_DIR / "house_style" / "eval.jsonl"
PREFERENCE_TRAIN = DATA_DIR / "preference" / "train.jsonl"
PREFERENCE_EVAL = DATA_DIR / "preference" / "eval.jsonl"
