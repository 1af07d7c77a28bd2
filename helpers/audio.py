"""Audio in, the way Voxtral needs it: mono float32 at 16 kHz, in 30-s chunks.

Every audio input a user can bring (a `datasets` row, a file path, an array with its rate)
goes through `load_audio`, which returns mono float32 at 16 kHz or raises a `ValueError` that
names the sample and the problem.

Built in notebook 01 (waveform, log-mel features, 30-s chunks).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from helpers.rows import sample_name

SAMPLING_RATE = 16000
CHUNK_SECONDS = 30
MIN_SECONDS = 0.1
# Voxtral handles about 40 minutes of audio for understanding tasks (model card); beyond that
# the audio tokens alone overflow the 32k-token context (375 tokens per 30 s).
MAX_SECONDS = 40 * 60


def _decode_file(source, where: str) -> tuple[np.ndarray, int]:
    from torchcodec.decoders import AudioDecoder

    if isinstance(source, (str, Path)) and not Path(source).exists():
        raise ValueError(f"{where}: audio file {str(source)!r} does not exist.")
    try:
        samples = AudioDecoder(source if not isinstance(source, Path) else str(source)).get_all_samples()
    except Exception as error:  # noqa: BLE001 - decoder errors vary by codec
        name = source if isinstance(source, (str, Path)) else "the given bytes"
        raise ValueError(f"{where}: could not decode audio from {str(name)!r}: {error}") from error
    return samples.data.numpy(), int(samples.sample_rate)


def _unpack(audio, sampling_rate, where: str) -> tuple[np.ndarray, int]:
    """Accept the shapes audio arrives in and return (array, rate) before any conversion."""
    if audio is None:
        raise ValueError(f"{where}: no audio (the value is None).")
    if isinstance(audio, (str, Path)):
        return _decode_file(audio, where)
    if isinstance(audio, (bytes, bytearray)):
        return _decode_file(bytes(audio), where)
    if hasattr(audio, "get_all_samples"):  # datasets 5 returns a torchcodec AudioDecoder
        samples = audio.get_all_samples()
        return samples.data.numpy(), int(samples.sample_rate)
    if isinstance(audio, dict):
        if audio.get("array") is not None:
            if audio.get("sampling_rate") is None:
                raise ValueError(f"{where}: audio dict has an 'array' but no 'sampling_rate'.")
            return np.asarray(audio["array"]), int(audio["sampling_rate"])
        if audio.get("bytes"):
            return _decode_file(audio["bytes"], where)
        if audio.get("path"):
            return _decode_file(audio["path"], where)
        raise ValueError(f"{where}: audio dict needs 'array' and 'sampling_rate', 'bytes' or 'path'; got keys {sorted(audio)}.")
    if hasattr(audio, "numpy") or isinstance(audio, (np.ndarray, list, tuple)):
        if sampling_rate is None:
            raise ValueError(f"{where}: a raw audio array needs its sampling_rate.")
        array = audio.numpy() if hasattr(audio, "numpy") else np.asarray(audio)
        return array, int(sampling_rate)
    raise ValueError(f"{where}: unsupported audio type {type(audio).__name__}.")


def load_audio(audio, sampling_rate: int | None = None, index=None, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Return mono float32 audio at 16 kHz from any supported input, or raise a clear `ValueError`.

    Accepts a `datasets` audio value (decoder or dict with `array`/`sampling_rate`), a file path
    (wav, mp3, flac, ...), raw bytes, or an array/tensor with `sampling_rate`. Integer PCM is
    scaled to [-1, 1], stereo is averaged to mono, other rates are resampled. `index` names the
    sample in error messages.
    """
    where = "audio" if index is None else sample_name(index=index)
    array, rate = _unpack(audio, sampling_rate, where)
    if rate <= 0:
        raise ValueError(f"{where}: invalid sampling rate {rate}.")
    array = np.asarray(array)
    if array.dtype.kind in "iu":
        info = np.iinfo(array.dtype)
        array = (array.astype(np.float64) - (info.max + 1 if array.dtype.kind == "u" else 0)) / (info.max + 1)
    elif array.dtype.kind != "f":
        raise ValueError(f"{where}: audio samples have dtype {array.dtype}; expected float or integer PCM.")
    if array.ndim == 2:  # channels are the short axis, whichever side they are on
        array = array.mean(axis=0 if array.shape[0] <= array.shape[1] else 1)
    elif array.ndim != 1:
        raise ValueError(f"{where}: audio has shape {array.shape}; expected (samples,) or (channels, samples).")
    if array.size == 0:
        raise ValueError(f"{where}: audio is empty (0 samples).")
    if not np.all(np.isfinite(array)):
        bad = int(np.sum(~np.isfinite(array)))
        raise ValueError(f"{where}: audio contains {bad} NaN or infinite samples.")
    seconds = array.size / rate
    if seconds < MIN_SECONDS:
        raise ValueError(f"{where}: audio is {seconds * 1000:.0f} ms long; at least {MIN_SECONDS} s is needed.")
    if seconds > max_seconds:
        raise ValueError(
            f"{where}: audio is {seconds / 60:.1f} minutes long; Voxtral accepts at most "
            f"{max_seconds / 60:.0f} minutes. Cut it into shorter pieces."
        )
    if rate != SAMPLING_RATE:
        from scipy.signal import resample_poly

        divisor = np.gcd(SAMPLING_RATE, rate)
        array = resample_poly(array, SAMPLING_RATE // divisor, rate // divisor)
    return np.ascontiguousarray(array, dtype=np.float32)


def num_chunks(num_samples: int) -> int:
    """How many 30-s chunks (3000 mel frames, 375 audio tokens each) Voxtral makes of the audio."""
    return max(1, -(-num_samples // (SAMPLING_RATE * CHUNK_SECONDS)))


def wav_bytes(audio: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> bytes:
    """16-bit WAV bytes, for players and for the published recipe's base64 route."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, audio, sampling_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
