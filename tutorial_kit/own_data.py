"""Train on your own recordings: a folder of audio files and a CSV or JSONL file that describes them.

    my_clips/
      metadata.csv          file_name,prompt,label
      clips/0001.wav        clips/0001.wav,Which animal do you hear?,dog
      clips/0002.mp3        ...

    python -m tutorial_kit.train --dataset my_clips --question-column prompt --answer-column label

This is the layout of `datasets`' `audiofolder` builder, which finds and reads the clips: the
metadata file is `metadata.csv` or `metadata.jsonl`, and its `file_name` column gives each clip's
path relative to the metadata file's folder. The same folder can be pushed to the Hub as a dataset.

Each row becomes a training example in the recipe's columns:

* `audio`: the clip (any format ffmpeg decodes),
* `official_answer`: what the model should answer,
* the instruction the model reads after the audio: `question`, a free text question or instruction
  for that clip (`--question-column`), or `category` (`--category-column`), one of Big Bench
  Audio's four categories, which has its own instruction (any other value gets the generic one).
  With neither, every clip gets the generic instruction (`helpers.tasks.GENERIC_INSTRUCTION`),
* `id`: the audio file's name as the metadata writes it, so that errors name the file.

A Hub dataset id (or a folder of Parquet files that `datasets.load_dataset` reads) with other
column names works too; its audio column (`--audio-column`) must then be an `Audio` column.

Every row is checked before any training starts; problems are reported together, each with its
line in the metadata file (or its row number) and what is wrong.

The held-out test split (`hold_out_test_split`) is drawn with a seeded shuffle (seed 42, whatever
the training seed): the same metadata file always gives the same test rows.
"""
from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

from helpers.profiles import SEED
from helpers.tasks import GENERIC_INSTRUCTION, answer_text

METADATA_NAMES = ("metadata.csv", "metadata.jsonl")  # the names audiofolder reads
METADATA_SUFFIXES = (".csv", ".jsonl")
FILE_COLUMN = "file_name"  # how audiofolder links a metadata row to its clip
SPLIT_SEED = SEED
DEFAULT_TEST_FRACTION = 0.1
# When a column option is left out, the first of these that the metadata has is used.
AUDIO_COLUMN_GUESSES = ("audio", "file_name", "file", "path")
ANSWER_COLUMN_GUESSES = ("official_answer", "answer", "label")
PROBLEMS_SHOWN = 10


@dataclass(frozen=True)
class Columns:
    """Which column holds what. `None` for audio or answer: guessed from common names
    (`AUDIO_COLUMN_GUESSES`, `ANSWER_COLUMN_GUESSES`). At most one of question and category."""

    audio: str | None = None
    answer: str | None = None
    question: str | None = None
    category: str | None = None

    def __post_init__(self):
        if self.question and self.category:
            raise ValueError(f"Give a question column ({self.question!r}) or a category column ({self.category!r}), "
                             "not both: each clip gets one instruction.")


def find_metadata(folder) -> Path:
    """The folder's `metadata.csv` or `metadata.jsonl`, the names `datasets`' audiofolder reads."""
    folder = Path(folder)
    found = [folder / name for name in METADATA_NAMES if (folder / name).is_file()]
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"'{folder}' has both metadata.csv and metadata.jsonl: keep one of them.")
    others = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in METADATA_SUFFIXES)
    if others:
        raise FileNotFoundError(f"'{folder}' has no metadata.csv or metadata.jsonl, only {', '.join(others)}: datasets' "
                                "audiofolder reads the metadata under those two names, so rename the file.")
    raise FileNotFoundError(f"'{folder}' has no metadata file: put a metadata.csv or metadata.jsonl in it, with one "
                            f"row per audio file (its path in a column {FILE_COLUMN!r}, the answer, and a question or "
                            "a category).")


def read_metadata(path) -> tuple[list[str], list[tuple[str, dict]]]:
    """(column names, [(where, row)]) from a CSV (header line first) or JSONL (one object a line) file.

    `where` is how errors name the row: "metadata.csv line 4". Blank lines are skipped.
    """
    path = Path(path)
    rows: list[tuple[str, dict]] = []
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: spreadsheets often add a BOM
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            if not columns:
                raise ValueError(f"'{path}' is empty: its first line must name the columns, e.g. file,question,answer.")
            reader.fieldnames = columns
            for row in reader:
                if None in row:  # more values than header columns
                    raise ValueError(f"{path.name} line {reader.line_num}: {len(columns) + len(row[None])} values for "
                                     f"{len(columns)} columns ({', '.join(columns)}). Quote values that contain commas.")
                if any((value or "").strip() for value in row.values()):
                    rows.append((f"{path.name} line {reader.line_num}", row))
        return columns, rows
    columns: list[str] = []
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path.name} line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: not valid JSON ({error.msg} at column {error.colno}); each line must be "
                                 'one object, e.g. {"file": "clips/1.wav", "answer": "yes"}.') from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}.")
            columns += [c for c in row if c not in columns]
            rows.append((where, row))
    if not rows:
        raise ValueError(f"'{path}' has no rows.")
    _check_one_type_per_column(rows, path.name)
    return columns, rows


def _json_kind(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true/false"
    return {int: "a number", float: "a number", str: "text", list: "a list", dict: "an object"}.get(type(value))


def _check_one_type_per_column(rows: list[tuple[str, dict]], source: str) -> None:
    """audiofolder reads a JSONL column as one type: text in one row and a number in another stops it."""
    first: dict[str, tuple[str, str]] = {}
    problems = []
    for where, row in rows:
        for column, value in row.items():
            kind = _json_kind(value)
            if kind is None:
                continue
            seen = first.setdefault(column, (kind, where))
            if seen[0] != kind:
                problems.append(f"{where}: {column!r} is {kind} where {seen[1]} has {seen[0]}; datasets' audiofolder "
                                f"reads a column as one type, so write {json.dumps(str(value))} instead of "
                                f"{json.dumps(value)}.")
    if problems:
        raise ValueError(_describe(problems, source))


def _pick(given: str | None, guesses: tuple[str, ...], columns: list[str], what: str, option: str, source: str) -> str:
    if given:
        if given not in columns:
            raise ValueError(f"{source} has no column {given!r} for {what} ({option}); its columns are: "
                             f"{', '.join(map(repr, columns))}.")
        return given
    found = next((c for c in guesses if c in columns), None)
    if found is None:
        raise ValueError(f"{source}: which column holds {what}? None is called {' or '.join(map(repr, guesses))}; "
                         f"name it with {option} (columns: {', '.join(map(repr, columns))}).")
    return found


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def _describe(problems: list[str], source: str) -> str:
    shown = "\n  ".join(problems[:PROBLEMS_SHOWN])
    more = f"\n  ... and {len(problems) - PROBLEMS_SHOWN} more" if len(problems) > PROBLEMS_SHOWN else ""
    return f"{len(problems)} row{'s' if len(problems) > 1 else ''} of {source} cannot be used for training:\n  {shown}{more}"


def _file_column(given: str | None, columns: list[str], source: str) -> str:
    """A folder's clips are named in `file_name`, as audiofolder reads them; another name gets what to rename."""
    if FILE_COLUMN in columns and given in (None, FILE_COLUMN):
        return FILE_COLUMN
    named = given if given in columns else next((c for c in AUDIO_COLUMN_GUESSES if c in columns), None)
    if named and FILE_COLUMN not in columns:
        raise ValueError(f"{source} names the audio files in column {named!r}; datasets' audiofolder, which finds and "
                         f"reads them, needs that column called {FILE_COLUMN!r}: rename it in {source}.")
    if given and FILE_COLUMN in columns:
        raise ValueError(f"{source} has a {FILE_COLUMN!r} column, which names the audio files: leave out "
                         f"--audio-column {given} (it is for Hub datasets).")
    raise ValueError(f"{source} has no column {FILE_COLUMN!r} with each row's audio file (columns: "
                     f"{', '.join(map(repr, columns))}).")


def _checked_rows(records: list[tuple[str, dict]], columns: list[str], chosen: Columns, source: str,
                  folder: Path | None) -> dict[str, list]:
    """The recipe's columns from the user's, every row checked; one ValueError lists the bad rows."""
    if folder is not None:
        audio = _file_column(chosen.audio, columns, source)
    else:
        audio = _pick(chosen.audio, AUDIO_COLUMN_GUESSES, columns, "the audio", "--audio-column", source)
    answer = _pick(chosen.answer, ANSWER_COLUMN_GUESSES, columns, "the answers", "--answer-column", source)
    question = chosen.question and _pick(chosen.question, (), columns, "the questions", "--question-column", source)
    category = chosen.category and _pick(chosen.category, (), columns, "the categories", "--category-column", source)
    table: dict[str, list] = {"id": [], "audio": [], "official_answer": [], "question" if not category else "category": []}
    problems = []
    for where, row in records:
        value = row.get(audio)
        if folder is not None:  # a path in a metadata file, relative to the file's folder
            name = _text(value)
            if not name:
                problems.append(f"{where}: no audio file in column {audio!r}.")
                continue
            file = (folder / name).resolve()
            if Path(name).is_absolute() or not file.is_relative_to(folder.resolve()):
                problems.append(f"{where}: audio file {name!r} is not inside the folder; {FILE_COLUMN} is a path "
                                f"relative to {source}'s folder.")
                continue
            if not file.is_file():
                problems.append(f"{where}: audio file {name!r} does not exist (looked for '{file}').")
                continue
            value, row_name = str(file), name
        else:
            if value is None:
                problems.append(f"{where}: no audio in column {audio!r}.")
                continue
            row_name = row.get("id", where)
        try:
            answer_value = answer_text(row.get(answer))
        except ValueError:
            problems.append(f"{where}: {'empty' if row.get(answer) is not None else 'no'} answer in column {answer!r}; "
                            "a training row needs an answer.")
            continue
        if question:
            instruction = _text(row.get(question))
            if not instruction:
                problems.append(f"{where}: empty question in column {question!r}.")
                continue
            table["question"].append(instruction)
        elif category:
            table["category"].append(_text(row.get(category)) or None)  # none: the generic instruction
        else:
            table["question"].append(GENERIC_INSTRUCTION)
        table["id"].append(str(row_name))
        table["audio"].append(value)
        table["official_answer"].append(answer_value)
    if problems:
        raise ValueError(_describe(problems, source))
    if not table["id"]:
        raise ValueError(f"{source} has no rows to train on.")
    return table


def load_own_dataset(source, columns: Columns = Columns(), metadata=None):
    """Your dataset in the recipe's columns (`id`, `audio`, `official_answer`, and `question` or `category`).

    `source` is a folder in audiofolder's layout (audio files and a `metadata.csv` or
    `metadata.jsonl` with a `file_name` column; `metadata` is that file's path, if you prefer to
    give it), or a Hub dataset id / a folder `datasets.load_dataset` reads (its `train` split).
    Audio is decoded at the file's own rate and resampled to 16 kHz later, by `load_audio`.
    Every row is checked first: a `ValueError` lists the rows with a missing file, a missing
    answer or an empty question, each with its line in the metadata file.
    """
    from datasets import Audio, load_dataset

    folder = Path(source).expanduser()
    if metadata is not None or (folder.is_dir() and _has_metadata(folder)):
        path = Path(metadata).expanduser() if metadata is not None else find_metadata(folder)
        if not path.is_file():
            raise FileNotFoundError(f"Metadata file '{path}' does not exist.")
        if path.name not in METADATA_NAMES:
            raise ValueError(f"Metadata file '{path}': datasets' audiofolder reads metadata.csv or metadata.jsonl; "
                             "rename it to one of those.")
        names, records = read_metadata(path)  # our reader: each row's line, for the errors
        table = _checked_rows(records, names, columns, path.name, path.parent)
        return _through_audiofolder(path.parent, table)
    try:
        dataset = load_dataset(str(source), split="train")
    except Exception as error:  # noqa: BLE001 - re-raised with what to check
        raise RuntimeError(f"Could not load the dataset {str(source)!r} ({type(error).__name__}: "
                           f"{str(error).splitlines()[0][:200] if str(error) else ''}). A folder needs a metadata.csv "
                           "or metadata.jsonl beside its audio files; a Hub id needs the network (and a login for a "
                           "private dataset).") from None
    audio = _pick(columns.audio, AUDIO_COLUMN_GUESSES, dataset.column_names, "the audio", "--audio-column", str(source))
    if not isinstance(dataset.features[audio], Audio):
        raise ValueError(f"Column {audio!r} of {str(source)!r} is not an audio column ({dataset.features[audio]}).")
    text_columns = [c for c in dataset.column_names if c != audio]
    records = [(f"row {i}", row) for i, row in enumerate(dataset.select_columns(text_columns))]
    for (_, row), clip in zip(records, dataset.cast_column(audio, Audio(decode=False))[audio]):
        row[audio] = clip
    return _on_disk(_checked_rows(records, dataset.column_names,
                               Columns(audio, columns.answer, columns.question, columns.category), str(source), None))


def _through_audiofolder(folder: Path, table: dict[str, list]):
    """The checked rows with their clips as `datasets`' audiofolder finds and reads them (an `Audio`
    column, in its cache on disk), in the recipe's columns."""
    from datasets import Audio, load_dataset

    found = load_dataset("audiofolder", data_dir=str(folder), split="train")
    clips = found.cast_column("audio", Audio(decode=False))["audio"]
    rows = [i for i, clip in enumerate(clips) if clip is not None]
    if [str(Path(clips[i]["path"]).resolve()) for i in rows] != [str(Path(p).resolve()) for p in table["audio"]]:
        raise RuntimeError(f"datasets' audiofolder read other files from '{folder}' than its metadata names: "
                           "is there a second metadata file in a subfolder?")
    dataset = found.select(rows).select_columns(["audio"])
    for name, values in table.items():
        if name != "audio":
            dataset = dataset.add_column(name, values)
    return dataset.select_columns(list(table))


def _rows(table: dict[str, list]):
    for values in zip(*table.values()):
        yield dict(zip(table, values))


def _on_disk(table: dict[str, list]):
    """The rows as a dataset in `datasets`' cache on disk, named by their content: the features
    computed from it are cached beside it (not held in memory, 1.5 MB a row), and a rerun on the
    same metadata finds them."""
    from datasets import Audio, Dataset, Features, Value

    features = Features({name: Audio() if name == "audio" else Value("string") for name in table})
    return Dataset.from_generator(_rows, features=features, gen_kwargs={"table": table})


def _has_metadata(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in METADATA_SUFFIXES for p in folder.iterdir())


def test_size_from(value: float) -> float | int:
    """A test size as `held_out_rows` takes it: a fraction below 1 stays a float, a whole number of rows becomes an
    int; a `ValueError` that says what is expected otherwise."""
    if value == 0 or (value >= 1 and float(value).is_integer()):
        return int(value)
    if 0 < value < 1:
        return float(value)
    raise ValueError(f"test size {value!r}: give a fraction between 0 and 1 (0.1 = 10% of the rows), a number of rows "
                     "(20), or 0 for no test split.")


def held_out_rows(num_rows: int, test_size: float | int = DEFAULT_TEST_FRACTION, seed: int = SPLIT_SEED) -> list[int]:
    """Which rows are held out for testing: `test_size` rows (a count) or that fraction of them
    (at least one), drawn with a seeded shuffle, in dataset order. 0 holds out nothing."""
    test_size = test_size_from(test_size)
    if test_size == 0:
        return []
    count = max(1, round(test_size * num_rows)) if isinstance(test_size, float) else test_size
    if count >= num_rows:
        raise ValueError(f"A test split of {count} of {num_rows} rows would leave none for training: use a smaller "
                         "test size, or 0 for no test split.")
    return sorted(random.Random(seed).sample(range(num_rows), count))


def hold_out_test_split(dataset, test_size: float | int = DEFAULT_TEST_FRACTION, seed: int = SPLIT_SEED):
    """A `DatasetDict` with `train` and `test` (see `held_out_rows`); `test` is empty with `test_size=0`."""
    from datasets import DatasetDict

    test = held_out_rows(len(dataset), test_size, seed)
    held = set(test)
    return DatasetDict(train=dataset.select([i for i in range(len(dataset)) if i not in held]), test=dataset.select(test))
