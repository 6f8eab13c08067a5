"""Grouping strokes into digits: drop specks and border marks, join strokes that share columns, keep
the row of the tallest digit, and refuse what cannot be a row of handwritten digits."""

from __future__ import annotations

from dataclasses import dataclass

from inference.digits.components import Component

MAX_DIGITS = 8  # more marks than this in a row is not a number we read


@dataclass
class Group:
    """One digit: the components that share columns."""

    members: list[Component]

    @property
    def top(self) -> int:
        return min(c.top for c in self.members)

    @property
    def bottom(self) -> int:
        return max(c.bottom for c in self.members)

    @property
    def left(self) -> int:
        return min(c.left for c in self.members)

    @property
    def right(self) -> int:
        return max(c.right for c in self.members)

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def area(self) -> int:
        return sum(c.area for c in self.members)


def drop_border_and_specks(components: list[Component], height: int, width: int) -> list[Component]:
    """Keep the strokes: not touching the frame (paper edges, table, fingers), not tiny specks."""
    inside = [c for c in components if c.top > 0 and c.left > 0 and c.bottom < height and c.right < width]
    if not inside:
        return []
    minimum = max(6, int(0.00015 * height * width))
    largest = max(c.area for c in inside)
    tallest = max(c.height for c in inside)
    return [
        c for c in inside if c.area >= minimum and (c.area >= 0.06 * largest or c.height >= 0.25 * tallest)
    ]


def group_by_columns(components: list[Component]) -> list[Group]:
    """Strokes whose column ranges overlap (by half the narrower one) belong to the same digit."""
    groups: list[Group] = []
    for component in sorted(components, key=lambda c: (c.left + c.right) / 2):
        merged = False
        for group in groups:
            overlap = min(group.right, component.right) - max(group.left, component.left)
            if overlap >= 0.5 * min(group.width, component.width):
                group.members.append(component)
                merged = True
                break
        if not merged:
            groups.append(Group([component]))
    # merging can make two groups overlap in turn; repeat until stable
    changed = True
    while changed:
        changed = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                a, b = groups[i], groups[j]
                overlap = min(a.right, b.right) - max(a.left, b.left)
                if overlap >= 0.5 * min(a.width, b.width):
                    a.members.extend(b.members)
                    del groups[j]
                    changed = True
                    break
            if changed:
                break
    return sorted(groups, key=lambda g: g.left)


def digit_row(groups: list[Group]) -> list[Group]:
    """The digits in the row of the tallest mark, left to right.

    Marks of similar height beside the tallest one are digits. Small marks close to a digit are pieces
    of it (the bar of a 5 that the pen lifted off); others are dropped. Two digits that nearly touch
    and together are no wider than one digit are one digit broken in two.
    """
    if not groups:
        return []
    tallest = max(groups, key=lambda g: g.height)
    unit = tallest.height
    middle = (tallest.top + tallest.bottom) / 2
    in_row = [g for g in groups if abs((g.top + g.bottom) / 2 - middle) <= 0.6 * unit]
    digits = [g for g in in_row if g.height >= 0.45 * unit]
    for piece in (g for g in in_row if g.height < 0.45 * unit):
        nearest = min(digits, key=lambda g: _gap(piece, g))
        if _gap(piece, nearest) <= 0.25 * unit and nearest.top - 0.25 * unit <= piece.top <= nearest.bottom:
            nearest.members.extend(piece.members)
    digits.sort(key=lambda g: g.left)
    joined = digits[:1]
    for group in digits[1:]:
        previous = joined[-1]
        span = max(previous.right, group.right) - min(previous.left, group.left)
        if _gap(previous, group) <= 0.04 * unit and span <= 0.8 * unit:
            previous.members.extend(group.members)
        else:
            joined.append(group)
    return joined


def _gap(a: Group, b: Group) -> int:
    """Horizontal distance between two groups (0 when their columns overlap)."""
    return max(0, max(a.left, b.left) - min(a.right, b.right))


def implausible(groups: list[Group], components: list[Component], height: int, width: int) -> str | None:
    """Why these marks are not a row of handwritten digits, or None when they may well be."""
    if not groups:
        return "no marks that could be a digit"
    if len(groups) > MAX_DIGITS:
        return f"{len(groups)} separate marks in a row: not a number"
    if len(components) > 6 * len(groups) + 6:
        return "too many scattered marks to be digits on paper"
    tallest = max(g.height for g in groups)
    if tallest < 0.06 * min(height, width):
        return "the marks are too small to be a digit"
    for group in groups:
        aspect = group.width / group.height
        fill = group.area / (group.width * group.height)
        if aspect > 2.2:
            return "a mark is much wider than a digit"
        if aspect > 0.45 and fill > 0.72:
            return "a mark is a filled blob, not pen strokes"
    return None
