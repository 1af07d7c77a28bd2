"""helpers.audio: every kind of audio a user can bring, resampled, down-mixed and checked, with clear errors."""
import io
import subprocess

import numpy as np
import pytest
import soundfile as sf

from helpers.audio import SAMPLING_RATE, load_audio, num_chunks, wav_bytes


def tone(seconds=1.0, rate=SAMPLING_RATE, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ------------------------------------------------------------------- audio that works
@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_other_rates_are_resampled(rate):
    audio = load_audio({"array": tone(2.0, rate), "sampling_rate": rate})
    assert audio.dtype == np.float32 and abs(len(audio) - 2 * SAMPLING_RATE) <= 1
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * SAMPLING_RATE / len(audio) - 440) < 2  # pitch preserved


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_stereo_is_downmixed(layout):
    left, right = tone(1.0), np.zeros(SAMPLING_RATE, np.float32)
    stereo = np.stack([left, right]) if layout == "channels_first" else np.stack([left, right], axis=1)
    audio = load_audio({"array": stereo, "sampling_rate": SAMPLING_RATE})
    np.testing.assert_allclose(audio, left / 2, atol=1e-6)


def test_int16_and_float64_are_converted():
    pcm = (tone(1.0) * 32767).astype(np.int16)
    audio = load_audio(pcm, sampling_rate=SAMPLING_RATE)
    assert audio.dtype == np.float32 and np.max(np.abs(audio - tone(1.0))) < 1e-3
    assert load_audio(tone(1.0).astype(np.float64), sampling_rate=SAMPLING_RATE).dtype == np.float32


def test_silence_is_accepted():
    audio = load_audio(np.zeros(SAMPLING_RATE, np.float32), sampling_rate=SAMPLING_RATE)
    assert len(audio) == SAMPLING_RATE and not audio.any()


def test_torch_tensor_and_wav_file(tmp_path):
    import torch

    assert len(load_audio(torch.from_numpy(tone(1.0)), sampling_rate=SAMPLING_RATE)) == SAMPLING_RATE
    path = tmp_path / "clip.wav"
    sf.write(path, tone(1.0, 44100), 44100)
    assert abs(len(load_audio(str(path))) - SAMPLING_RATE) <= 1
    assert abs(len(load_audio(path.read_bytes())) - SAMPLING_RATE) <= 1
    assert abs(len(load_audio({"path": str(path), "bytes": None})) - SAMPLING_RATE) <= 1


def test_mp3_path(tmp_path):
    wav, mp3 = tmp_path / "clip.wav", tmp_path / "clip.mp3"
    sf.write(wav, tone(2.0, 44100), 44100)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), str(mp3)], check=True)
    audio = load_audio(str(mp3))
    assert abs(len(audio) / SAMPLING_RATE - 2.0) < 0.1  # mp3 adds encoder padding, never halves


def test_long_audio_is_kept_whole_and_chunked():
    long = np.tile(tone(1.0), 75)  # 75 s
    audio = load_audio(long, sampling_rate=SAMPLING_RATE)
    assert len(audio) == 75 * SAMPLING_RATE
    assert num_chunks(len(audio)) == 3 and num_chunks(30 * SAMPLING_RATE) == 1 and num_chunks(1) == 1


def test_wav_bytes_round_trip():
    audio, rate = sf.read(io.BytesIO(wav_bytes(tone(0.5))), dtype="float32")
    assert rate == SAMPLING_RATE and len(audio) == SAMPLING_RATE // 2


# ------------------------------------------------------------------- audio that must be refused
@pytest.mark.parametrize("audio, message", [
    ({"array": np.zeros(0, np.float32), "sampling_rate": 16000}, "sample 7: audio is empty"),
    ({"array": np.zeros(800, np.float32), "sampling_rate": 16000}, "sample 7: audio is 50 ms long"),
    ({"array": np.array([0.1, np.nan] * 8000, np.float32), "sampling_rate": 16000}, "sample 7: audio contains 8000 NaN"),
    ({"array": np.array([0.1, np.inf] * 8000, np.float32), "sampling_rate": 16000},
     "sample 7: audio contains 8000 NaN or infinite"),
    ({"array": np.zeros(16000, np.float32)}, "sample 7: audio dict has an 'array' but no 'sampling_rate'"),
    (np.zeros(16000, np.float32), "sample 7: a raw audio array needs its sampling_rate"),
    (None, "sample 7: no audio"),
    ("/nonexistent/clip.wav", "sample 7: audio file '/nonexistent/clip.wav' does not exist"),
    (b"this is not audio", "sample 7: could not decode audio"),
    ({"array": np.zeros((2, 2, 100), np.float32), "sampling_rate": 16000}, "sample 7: audio has shape"),
    ({"array": np.array(["a"] * 2000), "sampling_rate": 16000}, "sample 7: audio samples have dtype"),
    ({"foo": 1}, "sample 7: audio dict needs"),
    (12345, "sample 7: unsupported audio type int"),
])
def test_bad_audio_gives_a_clear_error(audio, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_audio(audio, index=7)


def test_corrupt_file(tmp_path):
    path = tmp_path / "broken.mp3"
    path.write_bytes(b"ID3" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="broken.mp3"):
        load_audio(str(path), index=3)


def test_longer_than_the_model_limit():
    with pytest.raises(ValueError, match="sample 1: audio is 41.0 minutes long; Voxtral accepts at most 40 minutes"):
        load_audio({"array": np.zeros(41 * 60 * 8000, np.int16), "sampling_rate": 8000}, index=1)


def hub_layout_mp3_dataset(folder, rows=2, rate=22050, seconds=13.4):
    """A sound-folder dataset like Big Bench Audio on the Hub: metadata.jsonl + 22.05 kHz MP3."""
    import json

    (folder / "data").mkdir(parents=True)
    t = np.arange(int(seconds * rate)) / rate
    with open(folder / "metadata.jsonl", "w") as meta:
        for i in range(rows):
            wav = folder / f"{i}.wav"
            sf.write(wav, (0.3 * np.sin(2 * np.pi * (220 + 40 * i) * t) * np.sin(3 * t)).astype(np.float32), rate)
            subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), "-ar", str(rate), "-ac", "1",
                            str(folder / "data" / f"question_{i}.mp3")], check=True)
            wav.unlink()
            meta.write(json.dumps({"category": "navigate", "official_answer": "Yes",
                                   "file_name": f"data/question_{i}.mp3", "id": i}) + "\n")
    return folder


def test_a_row_decodes_to_the_same_samples_every_time(tmp_path):
    """Big Bench Audio is 22.05 kHz MP3. Resampling inside the decoder (`Audio(sampling_rate=16000)`)
    gave a second read of the same row's decoder one sample more, shifted; decoding at the file's
    own rate and resampling in `load_audio` gives the same samples on every read."""
    from dataclasses import replace

    from helpers.data import load_dataset_for_profile
    from helpers.profiles import get_profile

    folder = hub_layout_mp3_dataset(tmp_path / "big_bench_audio")
    dataset = load_dataset_for_profile(replace(get_profile("full"), dataset_id=str(folder)))
    row = dataset[0]
    first, again, fresh = load_audio(row["audio"]), load_audio(row["audio"]), load_audio(dataset[0]["audio"])
    assert np.array_equal(first, again) and np.array_equal(first, fresh)
    assert abs(len(first) / SAMPLING_RATE - 13.4) < 0.1
    assert not np.array_equal(first, load_audio(dataset[1]["audio"]))
