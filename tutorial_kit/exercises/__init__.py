"""Self-checks for the exercises at the end of each notebook.

Each notebook has a module here (`tutorial_kit.exercises.explore`, `.collator`, `.lora`, `.evaluation`,
`.pipeline`) with one `check_...` function per exercise. A check answers in words: "Correct"
with a line on why it matters, or "Not yet" with a hint. It never shows a traceback: an answer
that is still `...`, of the wrong type, or a function of yours that raises, all get a hint.

    from tutorial_kit.exercises import collator as exercises
    exercises.check_label_mask(my_labels)          # -> Correct: ... / Not yet: ...

The solutions are in `notebooks/solutions/`: open them when you are stuck, or to compare.
"""
from __future__ import annotations

import functools
import os
import sysconfig
import traceback
import types
from dataclasses import dataclass


@dataclass(frozen=True)
class Feedback:
    """What a check says. Shown as its message in a notebook; true when the answer is correct."""

    correct: bool
    message: str

    def __bool__(self) -> bool:
        return self.correct

    def __repr__(self) -> str:
        return self.message

    def _repr_markdown_(self) -> str:
        mark = "✅" if self.correct else "💡"
        return f"{mark} {self.message}"


def correct(why: str = "") -> Feedback:
    return Feedback(True, "Correct" + (f": {why}" if why else "."))


def not_yet(hint: str) -> Feedback:
    return Feedback(False, f"Not yet: {hint}")


def unanswered(answer) -> bool:
    """An answer the learner has not filled in yet: `...` (the placeholder) or None."""
    return answer is Ellipsis or answer is None


PLACEHOLDER_HINT = "replace the `...` with your answer, run that cell, then run this check again."
def is_number(value) -> bool:
    """A real number, and not True/False (which Python counts as 1 and 0)."""
    import numbers

    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def plain_number(value):
    """A one-element tensor or array (`tensor(375.)`, `np.float32(0.5)`) as the Python number it holds;
    anything else unchanged. Checks call it first, so a number computed with torch or numpy counts."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


ROUNDED_HINT = ("right method, rounded too far: keep more digits. Give the unrounded value and round only "
                "when you print it.")


def rounded_too_far(given: float, expected: float, min_decimals: int = 2, max_decimals: int = 5) -> bool:
    """`given` is `expected` rounded to a few decimals (from `min_decimals` to `max_decimals`), too few to pass."""
    import math

    given = float(given)
    return given != 0 and any(
        math.isclose(given, round(given, d), rel_tol=1e-12, abs_tol=1e-15)
        and abs(given - expected) <= 0.5 * 10**-d * (1 + 1e-9)
        for d in range(min_decimals, max_decimals + 1))


def friendly(check):
    """Turn any exception raised while checking (usually inside the learner's own function)
    into a hint naming the error, instead of a traceback."""

    @functools.wraps(check)
    def checked(*args, **kwargs) -> Feedback:
        if args and all(unanswered(a) for a in args):
            return not_yet(PLACEHOLDER_HINT)
        returned = []  # what the learner's function returned, its last call last
        if args and isinstance(args[0], (types.FunctionType, types.MethodType)):
            args = (_recording(args[0], returned), *args[1:])
        try:
            return check(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - any error in the learner's code becomes a hint
            frames = traceback.extract_tb(error.__traceback__)
            if frames[-1].filename.startswith(_HERE) and returned:
                # Raised by the check itself, using a value of an unexpected type, shape or dtype.
                return not_yet(f"the check could not use what your function returned ({type(error).__name__}: "
                               f"{error}). It returned {_describe(returned[-1])}; the exercise text says what to "
                               "return: its type, shape and dtype.")
            if frames[-1].filename.startswith(_HERE):
                # Raised by the check itself, reading an answer of an unexpected shape or type.
                return not_yet(f"the check could not read your answer ({type(error).__name__}: {error}). "
                               f"You gave {_describe(args[0]) if args else 'nothing'}; the exercise text says what "
                               "to return.")
            # The learner's own line: the innermost frame that is neither a check nor a library.
            theirs = [frame for frame in frames if not frame.filename.startswith((_HERE, *_LIBRARIES))]
            where = theirs[-1] if theirs else frames[-1]
            return not_yet(f"your code raised {type(error).__name__}: {error} (in {where.name}, line {where.lineno}). "
                           "Fix that first; the exercise text says what the function receives and returns.")

    return checked


_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_LIBRARIES = tuple({os.path.join(path, "") for path in (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
                                                         sysconfig.get_paths()["platlib"])})


def _recording(function, returned: list):
    """`function`, keeping what each call returns, so that a hint can say what the check was given."""

    @functools.wraps(function)
    def recorded(*args, **kwargs):
        value = function(*args, **kwargs)
        returned.append(value)
        return value

    return recorded


def _describe(answer) -> str:
    shape, dtype = getattr(answer, "shape", None), getattr(answer, "dtype", None)
    return (f"a {type(answer).__name__}" + (f" of shape {tuple(shape)}" if shape is not None else "")
            + (f" and dtype {dtype}" if shape is not None and dtype is not None else ""))
