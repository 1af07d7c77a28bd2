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


def _check_in_the_package(source: str):
    """A check compiled as if its code lived in the exercises package, as every real check does."""
    import os

    import tutorial_kit.exercises as package

    namespace = {}
    exec(compile(source, os.path.join(os.path.dirname(package.__file__), "a_check.py"), "exec"), namespace)
    return friendly(namespace["check"])


def test_what_a_function_returned_that_the_check_cannot_use_is_described():
    """The function ran fine; what it returned is of another type or dtype: say so, not "you gave a function"."""
    check = _check_in_the_package("def check(answer):\n    return float(answer(1))\n")
    said = check(lambda x: torch.tensor([0.1, 0.2], dtype=torch.float64)).message
    assert "your code raised" not in said and "You gave a function" not in said
    assert "could not use what your function returned" in said, said
    assert "Tensor of shape (2,)" in said and "torch.float64" in said, said
    assert "type, shape and dtype" in said
    said = check(lambda x: "half").message  # the error the check hit is quoted
    assert "could not use what your function returned (ValueError: could not convert string to float" in said, said


def test_a_function_the_check_never_called_is_not_said_to_have_returned_anything():
    check = _check_in_the_package("def check(answer):\n    return float('x')\n")
    said = check(lambda: 0.5).message
    assert "could not read your answer" in said and "returned" not in said, said
