"""What every exercise check shares: numbers in any form a learner computes them, and errors told apart."""
import numpy as np
import torch

from tutorial_kit.exercises import friendly, not_yet, plain_number


def test_a_one_element_tensor_or_array_is_a_number():
    assert plain_number(torch.tensor(375.0)) == 375.0 and type(plain_number(torch.tensor(375.0))) is float
    assert plain_number(torch.tensor(7)) == 7 and type(plain_number(torch.tensor(7))) is int
    assert type(plain_number(np.float32(0.5))) is float and plain_number(np.array(0.25)) == 0.25
    assert plain_number(torch.tensor(True)) is True  # stays a bool, which no check takes for a number
    rows = torch.tensor([0.1, 0.2])
    assert plain_number(rows) is rows  # one number per row is not one number: left for the check to name
    assert plain_number("0.5") == "0.5"


def test_an_error_inside_the_learners_code_is_named_as_theirs():
    def learners_function():
        return 1 / 0

    @friendly
    def check(answer):
        answer()
        return not_yet("unreachable")

    said = check(learners_function).message
    assert "your code raised ZeroDivisionError" in said and "learners_function" in said


def test_an_answer_the_check_cannot_read_is_not_blamed_on_the_learners_code():
    import os

    import tutorial_kit.exercises as package

    # A check's code lives in the exercises package: compile this one as if it did.
    namespace = {}
    exec(compile("def check(answer):\n    return float(answer)\n",
                 os.path.join(os.path.dirname(package.__file__), "a_check.py"), "exec"), namespace)
    said = friendly(namespace["check"])(torch.tensor([0.1, 0.2])).message
    assert "your code raised" not in said
    assert "could not read your answer" in said and "Tensor" in said
