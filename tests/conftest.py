"""Shared fixtures: the tiny profile's splits, processor and model, built once per session."""
import os
import warnings

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", message=".*torchcodec.*")


@pytest.fixture(scope="session")
def profile():
    from helpers.profiles import get_profile
    from helpers.tiny import ensure_assets

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
