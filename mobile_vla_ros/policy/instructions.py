"""Instruction text handling shared by training, evaluation and the drive runtime."""

from __future__ import annotations

import re

from mobile_vla_ros.errors import InstructionError

# The lab's two instructions (DESIGN.md section 2).
LAB_INSTRUCTIONS = {
    "left": "Navigate around obstacles and reach the front of the beverage bottle on the left",
    "right": "Navigate around obstacles and reach the front of the beverage bottle on the right",
}

# The one instruction length limit: the instruction topic, recording and training data loading all
# apply it, so an instruction a robot can be given is one a policy can be trained on. Its UTF-8 text
# must also fit the episode file's fixed S256 field (DESIGN.md), which non-ASCII text reaches first.
MAX_INSTRUCTION_CHARS = 200
MAX_INSTRUCTION_BYTES = 256

_SIDE_WORDS = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def normalize_instruction(text: str | None) -> str:
    """The one spelling of an instruction: runs of whitespace become one space, ends trimmed."""
    return " ".join((text or "").split())


def instruction_side(text: str) -> str | None:
    """'left' or 'right' when the instruction names exactly one side, else None."""
    sides = {match.lower() for match in _SIDE_WORDS.findall(text)}
    return sides.pop() if len(sides) == 1 else None


def mirror_instruction(text: str) -> str:
    """Swap the words left and right (keeping case), for mirror augmentation."""

    def swap(match: re.Match) -> str:
        word = match.group(0)
        other = "right" if word.lower() == "left" else "left"
        return other.capitalize() if word[0].isupper() else other

    return _SIDE_WORDS.sub(swap, text)


def instruction_length_problem(text: str, max_chars: int = MAX_INSTRUCTION_CHARS) -> str | None:
    """How `text` breaks the instruction length limit ("instruction too long: 220 characters, the
    limit is 200"), or None."""
    if len(text) > max_chars:
        return f"instruction too long: {len(text)} characters, the limit is {max_chars}"
    size = len(text.encode("utf-8"))
    if size > MAX_INSTRUCTION_BYTES:
        return (
            f"instruction too long: {size} bytes in UTF-8, the limit is {MAX_INSTRUCTION_BYTES} "
            "(the episode file's field)"
        )
    return None


def expand_instruction(
    text: str,
    trained: tuple[str, ...] | list[str] = (),
    presets: dict | None = None,
    max_chars: int = MAX_INSTRUCTION_CHARS,
) -> str:
    """Turn operator input into the instruction the policy sees.

    A preset name (from YAML) wins; then 'left'/'right' pick the trained instruction naming that
    side (or the lab's wording when no trained one does); anything else is used as written.
    """
    cleaned = normalize_instruction(text)
    if not cleaned:
        raise InstructionError("empty instruction")
    key = cleaned.lower()
    if presets and key in presets:
        return expand_instruction(presets[key], trained, None, max_chars)
    if key in ("left", "right"):
        matches = [candidate for candidate in trained if instruction_side(candidate) == key]
        return matches[0] if matches else LAB_INSTRUCTIONS[key]
    problem = instruction_length_problem(cleaned, max_chars)
    if problem:
        raise InstructionError(problem)
    return cleaned
