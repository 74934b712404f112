"""A QuestionnaireResponse checked against its Questionnaire, when the Questionnaire is known.

The Questionnaire is looked up by ``QuestionnaireResponse.questionnaire``: a contained one (``#id``), one given
as support, or one in the same Bundle. Then, as the reference validator does: every linkId exists, in the same
place and order; items and answers repeat only when the item repeats; required items are answered when enabled
(an error once the response is completed or amended, a warning before); answers have the item's type, are among
its answerOptions or in its answerValueSet when that can be decided offline, and keep its limits (minValue,
maxValue, maxLength, minLength, regex, maxDecimalPlaces, units, mime types, sizes, reference types, min and max
occurrences); display items and groups take no answers; enableWhen is evaluated on the response's answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from conformance.answer import MAX_OCCURS, MIN_OCCURS, AnswerCheck, decimal_of, extension_value, instant
from conformance.definitions import TypeDef, as_list
from conformance.engine import Run

_NO_ANSWERS = frozenset({"group", "display", "question"})


def record(run: Run, node: dict[str, Any], path: str) -> None:
    """Remember a Questionnaire or QuestionnaireResponse met in the walk."""
    kind = node.get("resourceType")
    if isinstance(kind, str):
        run.found.setdefault(kind, []).append((node, path))


def register(types: dict[str, TypeDef]) -> None:
    """Record Questionnaires and responses as the walk meets them."""
    types["Questionnaire"].invariants.append(record)
    types["QuestionnaireResponse"].invariants.append(record)


def finish(run: Run, resource: object) -> None:
    """Check every QuestionnaireResponse met in the walk against its Questionnaire, when it is known."""
    for node, path in run.found.get("QuestionnaireResponse", ()):
        reference = node.get("questionnaire")
        if type(reference) is not str or not reference:
            continue
        questionnaire = _find(run, node, reference)
        if questionnaire is None:
            if reference.startswith("#"):
                run.error("not-found", f"{path}.questionnaire", "The contained Questionnaire is not found")
            else:
                run.warning(
                    "not-found",
                    path,
                    "The questionnaire could not be resolved, so the answers are not checked against it",
                )
            continue
        _Check(run, questionnaire, node).items(questionnaire.get("item"), node, path)


def _find(run: Run, node: dict[str, Any], reference: str) -> dict[str, Any] | None:
    if reference.startswith("#"):
        for item in as_list(node.get("contained")):
            if type(item) is dict and item.get("resourceType") == "Questionnaire" and item.get("id") == reference[1:]:
                return item
        return None
    base = reference.split("|", 1)[0]
    for candidate, _path in run.found.get("Questionnaire", ()):
        if candidate.get("url") in (reference, base):
            return candidate
    if run.support is not None:
        return run.support.questionnaire(reference)
    return None


class _Check:
    def __init__(self, run: Run, questionnaire: dict[str, Any], response: dict[str, Any]) -> None:
        self.run = run
        self.questionnaire = questionnaire
        self.response = response
        self.completed = response.get("status") in ("completed", "amended")
        contained = questionnaire.get("contained") or as_list(response.get("contained"))
        self.answers = AnswerCheck(run, run.support, contained if type(contained) is list else ())

    # -- items ----------------------------------------------------------------------------------------------

    def items(self, q_items: object, node: dict[str, Any], path: str) -> None:
        q_list = [q for q in q_items if type(q) is dict] if type(q_items) is list else []
        positions = {q["linkId"]: index for index, q in enumerate(q_list) if type(q.get("linkId")) is str}
        found: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        last = -1
        raw = node.get("item")
        for counter, item in enumerate(raw if type(raw) is list else ()):
            if type(item) is not dict:
                continue
            link_id = item.get("linkId")
            if type(link_id) is not str or not link_id:
                continue
            here = f"{path}.item[{counter}]"
            index = positions.get(link_id)
            if index is None:
                elsewhere = _find_item(self.questionnaire.get("item"), link_id)
                if elsewhere is not None:
                    self.run.error("structure", here, f"The item with linkId '{_shown(link_id)}' is in the wrong place")
                    self.item(elsewhere, item, here)
                else:
                    self.run.error("not-found", path, f"LinkId '{_shown(link_id)}' not found in questionnaire")
                continue
            if index < last:
                self.run.error("structure", here, "The items are not in the Questionnaire's order")
            last = index
            found.setdefault(link_id, []).append((counter, item))
        for q_item in q_list:
            link_id = q_item.get("linkId")
            matches = found.get(link_id) if type(link_id) is str else None
            enabled = self.enabled(q_item)
            if matches:
                if not enabled:
                    for counter, item in matches:
                        if "answer" in item or "item" in item:
                            self.run.error("invalid", f"{path}.item[{counter}]", "The item is answered but not enabled")
                if len(matches) > 1 and q_item.get("repeats") is not True:
                    self.run.error(
                        "invalid",
                        f"{path}.item[{matches[1][0]}]",
                        "Only one response item with this linkId allowed",
                    )
                for counter, item in matches:
                    self.item(q_item, item, f"{path}.item[{counter}]")
            elif enabled and q_item.get("required") is True:
                self._missing(path, f"No response found for required item '{_shown(str(link_id))}'")

    def _missing(self, path: str, text: str) -> None:
        if self.completed:
            self.run.error("required", path, text)
        else:
            self.run.warning("required", path, text)

    def item(self, q_item: dict[str, Any], item: dict[str, Any], path: str) -> None:
        kind = q_item.get("type")
        if type(kind) is not str:
            kind = None  # the walk of the Questionnaire reports it
        text = item.get("text")
        if type(text) is str and type(q_item.get("text")) is str and text != q_item["text"]:
            self.run.warning("invalid", f"{path}.text", "The item's text differs from the Questionnaire's")
        raw = item.get("answer")
        answers = [a for a in raw if type(a) is dict] if type(raw) is list else []
        link_id = str(q_item.get("linkId"))
        if not answers and q_item.get("required") is True and kind not in _NO_ANSWERS and self.enabled(q_item):
            self._missing(path, f"No response answer found for required item '{_shown(link_id)}'")
        if len(answers) > 1 and q_item.get("repeats") is not True:
            self.run.error("invalid", path, "Only one response answer item with this linkId allowed")
        occurs = extension_value(q_item, MAX_OCCURS)
        if occurs is not None and type(occurs[1]) is int and len(answers) > occurs[1]:
            self.run.error("invalid", path, f"The maximum number of answers is {occurs[1]} but this has {len(answers)}")
        occurs = extension_value(q_item, MIN_OCCURS)
        if occurs is not None and type(occurs[1]) is int and len(answers) < occurs[1]:
            self.run.error("invalid", path, f"The minimum number of answers is {occurs[1]} but this has {len(answers)}")
        for index, answer in enumerate(answers):
            here = f"{path}.answer[{index}]"
            if kind in _NO_ANSWERS:
                self.run.error("structure", path, f"Items of type '{kind}' cannot have answers")
            else:
                self.answers.check(q_item, answer, here, len(answers))
            if kind != "group":
                self.items(q_item.get("item"), answer, here)
        nested = item.get("item")
        if kind == "group":
            if q_item.get("required") is True and not nested:
                self.run.error("invariant", path, "No sub-items found for required group")
            self.items(q_item.get("item"), item, path)
        elif nested:
            self.run.error("structure", path, f"Items of type '{kind}' cannot have child items; put them in answers")

    # -- answers --------------------------------------------------------------------------------------------

    # -- enableWhen -----------------------------------------------------------------------------------------

    def enabled(self, q_item: dict[str, Any]) -> bool:
        conditions = [c for c in as_list(q_item.get("enableWhen")) if type(c) is dict]
        if not conditions:
            return True
        results = [self._condition(c) for c in conditions]
        return any(results) if q_item.get("enableBehavior") == "any" else all(results)

    def _condition(self, condition: dict[str, Any]) -> bool:
        question = condition.get("question")
        operator = condition.get("operator")
        expected = next(((k[6:], v) for k, v in condition.items() if k.startswith("answer")), None)
        answers = list(self._answers(self.response.get("item"), question))
        if operator == "exists":
            return bool(answers) == (expected is not None and expected[1] is True)
        if expected is None or not answers:
            return False
        key, wanted = "value" + expected[0], expected[1]
        values = [a.get(key) for a in answers if key in a]
        if operator == "=":
            return any(_equal(v, wanted) for v in values)
        if operator == "!=":
            return not any(_equal(v, wanted) for v in values)
        return any(_ordered(v, wanted, str(operator)) for v in values)

    def _answers(self, items: object, link_id: object) -> Iterator[dict[str, Any]]:
        for item in items if type(items) is list else ():
            if type(item) is not dict:
                continue
            answers = item.get("answer")
            if item.get("linkId") == link_id:
                yield from (a for a in as_list(answers) if type(a) is dict)
            yield from self._answers(item.get("item"), link_id)
            for answer in answers if type(answers) is list else ():
                if type(answer) is dict:
                    yield from self._answers(answer.get("item"), link_id)


def _find_item(items: object, link_id: str) -> dict[str, Any] | None:
    for item in items if type(items) is list else ():
        if type(item) is not dict:
            continue
        if item.get("linkId") == link_id:
            return item
        found = _find_item(item.get("item"), link_id)
        if found is not None:
            return found
    return None


def _equal(value: object, wanted: object) -> bool:
    if type(value) is dict and type(wanted) is dict:
        if "code" in wanted or "system" in wanted:
            return value.get("system") == wanted.get("system") and value.get("code") == wanted.get("code")
        return bool(value.get("value") == wanted.get("value") and value.get("code") == wanted.get("code"))
    return value == wanted


def _ordered(value: object, wanted: object, operator: str) -> bool:
    left: Any
    right: Any
    if type(value) is dict and type(wanted) is dict:
        left, right = decimal_of(value.get("value")), decimal_of(wanted.get("value"))
    elif type(value) is str and type(wanted) is str:
        left, right = instant(value) or value, instant(wanted) or wanted
    else:
        left, right = decimal_of(value), decimal_of(wanted)
    if left is None or right is None or type(left) is not type(right):
        return False
    if operator == ">":
        return bool(left > right)
    if operator == "<":
        return bool(left < right)
    if operator == ">=":
        return bool(left >= right)
    if operator == "<=":
        return bool(left <= right)
    return False


def _shown(link_id: str) -> str:
    return link_id[:64]
