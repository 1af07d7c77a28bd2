"""Your own recordings: a folder in datasets' audiofolder layout (metadata.csv / .jsonl with `file_name`),
with other column names for the question, category and answer."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers.tasks import GENERIC_INSTRUCTION
from tutorial_kit.own_data import (
    Columns,
    find_metadata,
    held_out_rows,
    hold_out_test_split,
    load_own_dataset,
)

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["Which animal do you hear?", "How many times does it beep?", "Is the speaker happy?"]


def write_clips(folder: Path, count: int, seconds: float = 0.6, rate: int = 22050) -> list[str]:
    """`count` short noise clips (WAV at 22.05 kHz, resampled later), named as a user might."""
    rng = np.random.default_rng(0)
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        name = f"clips/take {i:02d}.wav"  # a space, as real file names have
        sf.write(folder / name, (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32), rate)
        names.append(name)
    return names


def write_csv(folder: Path, rows: list[dict]) -> Path:
    import csv

    path = folder / "metadata.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture()
def clip_folder(tmp_path):
    names = write_clips(tmp_path, 6)
    write_csv(tmp_path, [{"file_name": n, "prompt": PROMPTS[i % 3], "label": ["dog", "3", "yes"][i % 3]}
                         for i, n in enumerate(names)])
    return tmp_path


def test_csv_with_other_column_names_becomes_the_recipes_columns(clip_folder):
    dataset = load_own_dataset(clip_folder, Columns(question="prompt", answer="label"))
    assert sorted(dataset.column_names) == ["audio", "id", "official_answer", "question"]
    assert dataset["id"][:2] == ["clips/take 00.wav", "clips/take 01.wav"]
    assert dataset["question"][:3] == PROMPTS and dataset["official_answer"][:3] == ["dog", "3", "yes"]
    from helpers.audio import load_audio

    audio = load_audio(dataset[0]["audio"], index=dataset[0]["id"])  # decoded at 22.05 kHz, resampled
    assert audio.dtype == np.float32 and len(audio) == round(0.6 * 16000)


def test_jsonl_with_a_category_column_and_numbers_as_answers(tmp_path):
    names = write_clips(tmp_path, 3)
    lines = [{"file_name": names[0], "kind": "navigate", "truth": "Yes"},
             {"file_name": names[1], "kind": "object_counting", "truth": 7},
             {"file_name": names[2], "kind": "", "truth": 7.0}]
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    # audiofolder reads a JSONL column as one type (pyarrow: "changed from string to number"): said per row.
    with pytest.raises(ValueError, match=r"2 rows of metadata.jsonl cannot be used for training:\n  metadata.jsonl "
                                         r"line 2: 'truth' is a number where metadata.jsonl line 1 has text; "
                                         r".* write \"7\" instead of 7\."):
        load_own_dataset(tmp_path, Columns(category="kind", answer="truth"))
    lines[0]["truth"] = 3
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    dataset = load_own_dataset(tmp_path, Columns(category="kind", answer="truth"))
    assert dataset["category"] == ["navigate", "object_counting", None]  # empty: the generic instruction
    assert dataset["official_answer"] == ["3", "7", "7"]


def test_without_question_or_category_every_clip_gets_the_generic_instruction(clip_folder):
    dataset = load_own_dataset(clip_folder, Columns(answer="label"))
    assert set(dataset["question"]) == {GENERIC_INSTRUCTION}


def test_column_names_are_guessed_only_from_the_usual_ones(clip_folder, tmp_path):
    guessed = load_own_dataset(clip_folder, Columns(question="prompt"))  # 'label' is a usual name for the answer
    assert guessed["official_answer"][0] == "dog" and guessed["id"][0] == "clips/take 00.wav"
    names = write_clips(tmp_path / "unusual", 1)
    (tmp_path / "unusual" / "metadata.jsonl").write_text(json.dumps({"file_name": names[0], "truth": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"which column holds the answers\? .*--answer-column \(columns: 'file_name', "
                                         r"'truth'\)"):
        load_own_dataset(tmp_path / "unusual")


def test_the_audio_files_column_is_file_name_as_audiofolder_reads_it(tmp_path):
    names = write_clips(tmp_path, 1)
    write_csv(tmp_path, [{"file": names[0], "label": "dog"}])
    with pytest.raises(ValueError, match=r"metadata.csv names the audio files in column 'file'; datasets' audiofolder, "
                                         r"which finds and reads them, needs that column called 'file_name'"):
        load_own_dataset(tmp_path)
    with pytest.raises(ValueError, match=r"column 'wav'.*called 'file_name'"):
        write_csv(tmp_path, [{"wav": names[0], "label": "dog"}])
        load_own_dataset(tmp_path, Columns(audio="wav"))
    write_csv(tmp_path, [{"clip": names[0], "label": "dog"}])
    with pytest.raises(ValueError, match=r"has no column 'file_name' with each row's audio file \(columns: 'clip', "
                                         r"'label'\)"):
        load_own_dataset(tmp_path)
    write_csv(tmp_path, [{"file_name": names[0], "label": "dog"}])
    with pytest.raises(ValueError, match=r"leave out --audio-column clip"):
        load_own_dataset(tmp_path, Columns(audio="clip"))
    assert load_own_dataset(tmp_path, Columns(audio="file_name"))["id"] == names


def test_the_clips_are_read_by_audiofolder(clip_folder):
    from datasets import Audio

    dataset = load_own_dataset(clip_folder, Columns(question="prompt"))
    assert isinstance(dataset.features["audio"], Audio)
    assert "audiofolder" in dataset.cache_files[0]["filename"]  # audiofolder's own cache, not a copy of ours
    paths = dataset.cast_column("audio", Audio(decode=False))["audio"]
    assert [p["path"] for p in paths] == [str(clip_folder / n) for n in dataset["id"]]


def test_a_missing_column_is_named_with_the_columns_there_are(clip_folder):
    with pytest.raises(ValueError, match=r"metadata.csv has no column 'answer' for the answers \(--answer-column\); "
                                         r"its columns are: 'file_name', 'prompt', 'label'"):
        load_own_dataset(clip_folder, Columns(answer="answer"))
    with pytest.raises(ValueError, match="no column 'question' for the questions"):
        load_own_dataset(clip_folder, Columns(answer="label", question="question"))


def test_bad_rows_are_listed_together_with_their_line_and_problem(tmp_path):
    names = write_clips(tmp_path, 3)
    write_csv(tmp_path, [
        {"file_name": names[0], "prompt": "Which animal?", "label": "dog"},
        {"file_name": "clips/missing.wav", "prompt": "Which animal?", "label": "cat"},  # line 3
        {"file_name": names[1], "prompt": "Which animal?", "label": "  "},  # line 4
        {"file_name": names[2], "prompt": "", "label": "cow"},  # line 5
        {"file_name": "", "prompt": "Which animal?", "label": "cow"},  # line 6
        {"file_name": str(tmp_path / names[0]), "prompt": "Which animal?", "label": "cow"},  # line 7
        {"file_name": "../elsewhere.wav", "prompt": "Which animal?", "label": "cow"},  # line 8
    ])
    with pytest.raises(ValueError) as caught:
        load_own_dataset(tmp_path, Columns(question="prompt", answer="label"))
    message = str(caught.value)
    assert message.startswith("6 rows of metadata.csv cannot be used for training:")
    assert "metadata.csv line 3: audio file 'clips/missing.wav' does not exist" in message
    assert "metadata.csv line 4: empty answer in column 'label'" in message
    assert "metadata.csv line 5: empty question in column 'prompt'" in message
    assert "metadata.csv line 6: no audio file in column 'file_name'" in message
    assert f"metadata.csv line 7: audio file '{tmp_path / names[0]}' is not inside the folder" in message
    assert "metadata.csv line 8: audio file '../elsewhere.wav' is not inside the folder" in message
    assert "line 2" not in message


def test_broken_metadata_files_say_where(tmp_path):
    write_clips(tmp_path, 1)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "clips/take 00.wav", "answer": "a"}\n{"file_name": "x", answer}\n')
    with pytest.raises(ValueError, match=r"metadata.jsonl line 2: not valid JSON"):
        load_own_dataset(tmp_path, Columns())
    (tmp_path / "metadata.jsonl").unlink()
    (tmp_path / "metadata.csv").write_text("file_name,answer\nclips/take 00.wav,a,b\n")
    with pytest.raises(ValueError, match=r"metadata.csv line 2: 3 values for 2 columns \(file_name, answer\)"):
        load_own_dataset(tmp_path, Columns())


def test_which_metadata_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no metadata file"):
        find_metadata(tmp_path)
    (tmp_path / "train.csv").write_text("a\n1\n")
    with pytest.raises(FileNotFoundError, match=r"only train.csv: datasets' audiofolder reads the metadata under those "
                                                r"two names, so rename the file"):
        find_metadata(tmp_path)
    (tmp_path / "metadata.csv").write_text("a\n1\n")
    assert find_metadata(tmp_path).name == "metadata.csv"
    (tmp_path / "metadata.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="both metadata.csv and metadata.jsonl: keep one"):
        find_metadata(tmp_path)


def test_an_explicit_metadata_file(tmp_path):
    names = write_clips(tmp_path / "audio", 2)
    (tmp_path / "audio" / "metadata.jsonl").write_text("".join(
        json.dumps({"file_name": n, "answer": str(i)}) + "\n" for i, n in enumerate(names)))
    dataset = load_own_dataset(tmp_path / "elsewhere", metadata=tmp_path / "audio" / "metadata.jsonl")
    assert dataset["official_answer"] == ["0", "1"] and dataset["id"] == names
    (tmp_path / "audio" / "metadata.jsonl").rename(tmp_path / "audio" / "labels.jsonl")
    with pytest.raises(ValueError, match="reads metadata.csv or metadata.jsonl; rename it"):
        load_own_dataset(tmp_path / "audio", metadata=tmp_path / "audio" / "labels.jsonl")


def test_a_dataset_that_datasets_reads_with_other_column_names(tmp_path, clip_folder):
    from datasets import Audio, Dataset

    files = sorted((clip_folder / "clips").iterdir())
    table = Dataset.from_dict({"clip": [str(f) for f in files], "ask": PROMPTS * 2, "says": ["a", "b", "c"] * 2})
    (tmp_path / "hub" / "data").mkdir(parents=True)
    table.cast_column("clip", Audio()).to_parquet(str(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet"))
    dataset = load_own_dataset(tmp_path / "hub", Columns(audio="clip", question="ask", answer="says"))
    assert dataset["question"] == PROMPTS * 2 and dataset["official_answer"] == ["a", "b", "c"] * 2
    assert dataset["id"][0] == "row 0"
    from helpers.audio import load_audio

    assert len(load_audio(dataset[5]["audio"])) == round(0.6 * 16000)
    with pytest.raises(ValueError, match="no column 'answer'"):
        load_own_dataset(tmp_path / "hub", Columns(audio="clip", answer="answer"))


def test_the_test_split_is_reproducible_and_sized_as_asked():
    assert held_out_rows(100) == held_out_rows(100) and len(held_out_rows(100)) == 10
    assert held_out_rows(100) != held_out_rows(100, seed=1)
    assert len(held_out_rows(7)) == 1  # at least one row
    assert len(held_out_rows(50, 20)) == 20 and held_out_rows(50, 0) == []
    assert held_out_rows(40, 0.25) == sorted(held_out_rows(40, 0.25))
    with pytest.raises(ValueError, match="would leave none for training"):
        held_out_rows(5, 5)
    with pytest.raises(ValueError, match="a fraction between 0 and 1"):
        held_out_rows(5, 2.5)


def test_hold_out_test_split_keeps_dataset_order(clip_folder):
    dataset = load_own_dataset(clip_folder, Columns(question="prompt", answer="label"))
    splits = hold_out_test_split(dataset, 2)
    assert len(splits["train"]) == 4 and len(splits["test"]) == 2
    assert sorted(list(splits["train"]["id"]) + list(splits["test"]["id"])) == sorted(dataset["id"])
    assert list(splits["test"]["id"]) == sorted(splits["test"]["id"])


def test_own_rows_reach_the_model_with_their_question(clip_folder, processor):
    """The question is what the model reads after the audio; rows without one get the generic instruction."""
    from helpers.collator import VoxtralAudioCollator

    dataset = load_own_dataset(clip_folder, Columns(question="prompt", answer="label"))
    collator = VoxtralAudioCollator(processor)
    batch = collator.prompts([dataset[0], dataset[1]])
    texts = [processor.tokenizer.decode(ids) for ids in batch["input_ids"]]
    assert PROMPTS[0] in texts[0] and PROMPTS[1] in texts[1]
    generic = load_own_dataset(clip_folder, Columns(answer="label"))
    assert GENERIC_INSTRUCTION in processor.tokenizer.decode(collator.prompts([generic[0]])["input_ids"][0])
    training = collator([dataset[0]])
    answer = training["labels"][0][training["labels"][0] != -100].tolist()
    assert processor.tokenizer.decode(answer[:-1]) == "dog"


def speak_dataset(folder: Path) -> None:
    """Eight spoken clips (espeak-ng) with columns unlike Big Bench Audio's, in a JSONL file."""
    from tutorial_kit.tiny.synthetic import speak

    (folder / "recordings").mkdir(parents=True)
    colours = ["red", "green", "blue", "yellow"]
    lines = []
    for i in range(8):
        colour = colours[i % 4]
        sf.write(folder / "recordings" / f"{i}.wav", speak(f"My favourite colour is {colour}.", speed=190), 16000)
        lines.append({"file_name": f"recordings/{i}.wav", "instruction": "Which colour does the speaker name?",
                      "reply": colour})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_own_spoken_data_trains_through_the_command(tmp_path):
    speak_dataset(tmp_path / "colours")
    command = [sys.executable, "-m", "tutorial_kit.train", "--profile", "tiny", "--dataset", str(tmp_path / "colours"),
               "--question-column", "instruction", "--answer-column", "reply",
               "--test-size", "2", "--max-steps", "2", "--output-dir", str(tmp_path / "run")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "6 training rows, 2 test rows (test size 2 drawn with seed 42)" in done.stdout
    assert f"dataset: {tmp_path / 'colours'} (your own)" in done.stdout and "per category" not in done.stdout
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    summary = json.loads((tmp_path / "run" / "training_run.json").read_text())
    assert summary["steps"] == 2 and summary["test_rows"] == 2
    assert summary["test_ids"] == [f"recordings/{i}.wav" for i in held_out_rows(8, 2)]


def test_bad_own_data_stops_the_command_with_the_row_and_problem(tmp_path, clip_folder):
    (clip_folder / "clips" / "take 03.wav").unlink()
    command = [sys.executable, "-m", "tutorial_kit.train", "--profile", "tiny", "--dataset", str(clip_folder),
               "--question-column", "prompt", "--answer-column", "label",
               "--output-dir", str(tmp_path / "run")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "metadata.csv line 5: audio file 'clips/take 03.wav' does not exist" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "adapter").exists()


def test_a_question_builds_the_prompt_a_category_instruction_builds(processor):
    """The question path and the category path make the same conversation around their text."""
    from helpers.collator import VoxtralAudioCollator
    from helpers.tasks import INSTRUCTIONS

    collator = VoxtralAudioCollator(processor)
    assert collator.prompt_ids(None, 1, INSTRUCTIONS["navigate"]) == collator.prompt_ids("navigate", 1)
    assert collator.prompt_ids(None, 2, " Which animal? ") == collator.prompt_ids(None, 2, "Which animal?")
    assert collator.prompt_ids("navigate", 1, "Which animal?") != collator.prompt_ids("navigate", 1)  # the question wins


def test_a_dataset_without_big_bench_audios_columns_says_how_to_name_them(clip_folder):
    from dataclasses import replace

    from helpers.data import load_dataset_for_profile
    from helpers.profiles import get_profile

    lines = [json.dumps({"file_name": f"clips/take {i:02d}.wav", "prompt": "Which?", "label": "a"}) for i in range(6)]
    (clip_folder / "metadata.csv").unlink()
    (clip_folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")  # the layout datasets reads by itself
    with pytest.raises(ValueError, match=r"has no 'category', 'official_answer' column \(its columns: 'audio', "
                                         r"'prompt', 'label'\).*--audio-column"):
        load_dataset_for_profile(replace(get_profile("full"), dataset_id=str(clip_folder)))


def test_own_rows_and_their_features_live_on_disk_and_are_found_again(clip_folder, processor):
    """Features of a large dataset must not fill the memory (1.5 MB a row), and a rerun reuses them."""
    from helpers.collator import precompute_features

    columns = Columns(question="prompt", answer="label")
    dataset = load_own_dataset(clip_folder, columns)
    assert dataset.cache_files
    features = precompute_features(dataset, processor)
    assert features.cache_files and features.cache_files != dataset.cache_files
    again = precompute_features(load_own_dataset(clip_folder, columns), processor)
    assert again.cache_files == features.cache_files  # the same content: the same cache
    write_csv(clip_folder, [{"file_name": "clips/take 00.wav", "prompt": "Other?", "label": "cat"}])
    assert load_own_dataset(clip_folder, columns).cache_files != dataset.cache_files
