"""Shared fixtures: the tiny profile's splits, processor and model, built once per session."""
import os
import warnings

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", message=".*torchcodec.*")


@pytest.fixture(scope="session")
def profile():
    from helpers.profiles import ensure_assets, get_profile

    profile = get_profile("tiny")
    ensure_assets(profile)  # tests read its model and dataset folders directly
    return profile


@pytest.fixture(scope="session")
def splits(profile):
    from helpers.data import load_splits

    return load_splits(profile)


@pytest.fixture(scope="session")
def model_and_processor(profile):
    from helpers.loading import load_model_and_processor

    return load_model_and_processor(profile)


@pytest.fixture(scope="session")
def processor(model_and_processor):
    return model_and_processor[1]


@pytest.fixture()
def fresh_model(profile):
    from helpers.loading import load_model_and_processor

    return load_model_and_processor(profile)[0]


# -- short training runs shared by tests/kit/test_resume.py, test_checkpoints.py, test_loading.py and
# tests/scenarios/test_killed_runs.py (helpers in tests/training_runs.py) --------------------------------

@pytest.fixture(scope="module")
def one_thread():
    """One thread: on a shared 2-core machine a second one spins more than it computes (4x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def featurized(splits, processor):
    from helpers.collator import precompute_features

    return precompute_features(splits["train"].select(range(12)), processor)


@pytest.fixture(scope="session")
def finished(profile, featurized, tmp_path_factory):
    """A short run through `train` from an empty folder: 4 steps, checkpoints 3 and 4 kept."""
    from training_runs import lora_weights, tiny_trainer

    from tutorial_kit.resume import train

    output_dir = tmp_path_factory.mktemp("finished") / "out"
    trainer, recorder = tiny_trainer(profile, featurized.select(range(8)), output_dir)
    result = train(trainer)
    assert recorder.begins == [0] and recorder.steps == [1, 2, 3, 4]  # no checkpoint: from the start
    assert sorted(p.name for p in output_dir.iterdir()) == ["checkpoint-3", "checkpoint-4", "trainer_state.json"]
    return output_dir, lora_weights(trainer), result
