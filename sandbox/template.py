"""Reading template.yaml the way CloudFormation does: short-form tags and intrinsic functions.

Only what the project's template uses is resolved (Ref, GetAtt, Sub, Join, Select, Split, If,
Equals, Not, And, Or, FindInMap, and the rule functions EachMemberEquals, EachMemberIn and
Contains); anything else raises ``TemplateError`` naming the resource, so a new intrinsic fails
loudly instead of deploying a wrong value. ``Resolver.check_rules`` refuses parameters the
template's ``Rules`` refuse, as CloudFormation does before it creates anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


class TemplateError(Exception):
    """template.yaml uses something the sandbox cannot deploy; the message names it."""


# libyaml's loader where PyYAML was built with it (its wheels are): the pure-Python one took 1.4 s of
# CPU for template.yaml, at every sandbox's start.
class _CfnLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    pass


def _construct(tag: str) -> Callable[[yaml.Loader, yaml.Node], dict]:
    key = "Ref" if tag in ("Ref", "Condition") else f"Fn::{tag}"
    if tag == "Condition":
        key = "Condition"

    def build(loader: yaml.Loader, node: yaml.Node) -> dict:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if tag == "GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {key: value}

    return build


for _tag in [
    "Ref",
    "Condition",
    "GetAtt",
    "Sub",
    "Join",
    "Select",
    "Split",
    "If",
    "Equals",
    "Not",
    "And",
    "Or",
    "FindInMap",
    "Base64",
    "GetAZs",
    "ImportValue",
    "Cidr",
    "Length",
    "ToJsonString",
]:
    _CfnLoader.add_constructor(f"!{_tag}", _construct(_tag))


def load_template(path: str | Path) -> dict[str, Any]:
    text = Path(path).read_text()
    data = yaml.load(text, Loader=_CfnLoader)
    if not isinstance(data, dict) or "Resources" not in data:
        raise TemplateError(f"{path}: not a CloudFormation/SAM template (no Resources)")
    return data


PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.:]+)\}")
_ESCAPED = re.compile(r"\$\{!([^}]*)\}")


class Resolver:
    """Resolves intrinsic functions against parameters, pseudo parameters and deployed resources.

    ``refs[logical_id]`` is what ``Ref`` returns; ``attrs[logical_id][name]`` what ``GetAtt``
    returns. The deployer fills both as it creates resources in dependency order.
    """

    NO_VALUE = object()

    def __init__(self, template: dict[str, Any], pseudo: dict[str, str], parameters: dict[str, Any]):
        self.template = template
        self.pseudo = pseudo
        self.parameters = parameters
        self.refs: dict[str, Any] = {}
        self.attrs: dict[str, dict[str, Any]] = {}
        self._conditions: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            expr = self.template.get("Conditions", {}).get(name)
            if expr is None:
                raise TemplateError(f"condition {name} is not defined")
            self._conditions[name] = bool(self.resolve(expr, where=f"Conditions.{name}"))
        return self._conditions[name]

    def _ref(self, name: str, where: str) -> Any:
        if name in self.pseudo:
            return self.pseudo[name]
        if name == "AWS::NoValue":
            return self.NO_VALUE
        if name in self.parameters:
            return self.parameters[name]
        if name in self.refs:
            return self.refs[name]
        raise TemplateError(f"{where}: Ref {name} names nothing deployed (yet)")

    def _getatt(self, logical: str, attr: str, where: str) -> Any:
        try:
            return self.attrs[logical][attr]
        except KeyError:
            raise TemplateError(f"{where}: GetAtt {logical}.{attr} is not available in the sandbox") from None

    def _sub(self, value: Any, where: str) -> str:
        if isinstance(value, list):
            text, variables = value[0], {k: self.resolve(v, where) for k, v in value[1].items()}
        else:
            text, variables = value, {}

        def repl(match: re.Match) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                logical, attr = name.split(".", 1)
                return str(self._getatt(logical, attr, where))
            return str(self._ref(name, where))

        # ${!Literal} is CloudFormation's escape for a literal ${Literal}.
        return _ESCAPED.sub(r"${\1}", PLACEHOLDER.sub(repl, text))

    def resolve(self, value: Any, where: str = "template") -> Any:
        if isinstance(value, list):
            out = [self.resolve(v, where) for v in value]
            return [v for v in out if v is not self.NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self._ref(arg, where)
            if key == "Fn::GetAtt":
                logical, attr = arg if isinstance(arg, list) else arg.split(".", 1)
                return self._getatt(logical, attr, where)
            if key == "Fn::Sub":
                return self._sub(arg, where)
            if key == "Fn::Join":
                sep, items = arg
                return sep.join(str(v) for v in self.resolve(items, where))
            if key == "Fn::Select":
                index, items = arg
                return self.resolve(items, where)[int(self.resolve(index, where))]
            if key == "Fn::Split":
                sep, text = arg
                return str(self.resolve(text, where)).split(sep)
            if key == "Fn::If":
                cond, yes, no = arg
                return self.resolve(yes if self.condition(cond) else no, where)
            if key == "Fn::Equals":
                a, b = (self.resolve(v, where) for v in arg)
                return str(a) == str(b)
            if key == "Fn::Not":
                return not self.resolve(arg[0], where)
            if key == "Fn::And":
                return all(self.resolve(v, where) for v in arg)
            if key == "Fn::Or":
                return any(self.resolve(v, where) for v in arg)
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::FindInMap":
                m, k1, k2 = (self.resolve(v, where) for v in arg)
                return self.template["Mappings"][m][k1][k2]
            if key == "Fn::ToJsonString":
                return json.dumps(self.resolve(arg, where))
            # Rule functions (only valid in Rules): a list's members against a value or a list.
            if key == "Fn::EachMemberEquals":
                members, value = (self.resolve(v, where) for v in arg)
                return all(str(m) == str(value) for m in members)
            if key == "Fn::EachMemberIn":
                members, allowed = (self.resolve(v, where) for v in arg)
                return all(str(m) in {str(a) for a in allowed} for m in members)
            if key == "Fn::Contains":
                allowed, value = (self.resolve(v, where) for v in arg)
                return str(value) in {str(a) for a in allowed}
            if key.startswith("Fn::"):
                raise TemplateError(f"{where}: {key} is not supported by the sandbox")
        out = {k: self.resolve(v, where) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not self.NO_VALUE}

    def check_rules(self) -> None:
        """The template's Rules: each assertion of a rule whose RuleCondition holds (or that has
        none) must hold, else CloudFormation refuses the stack with the AssertDescription."""
        for name, rule in (self.template.get("Rules") or {}).items():
            where = f"Rules.{name}"
            if "RuleCondition" in rule and not self.resolve(rule["RuleCondition"], where):
                continue
            for assertion in rule.get("Assertions") or []:
                if not self.resolve(assertion["Assert"], where):
                    raise TemplateError(
                        f"{where}: {assertion.get('AssertDescription') or 'an assertion failed'}"
                    )


def references(value: Any) -> set[str]:
    """Logical ids a value refers to (Ref, GetAtt, ${X} / ${X.Attr} in Sub)."""
    found: set[str] = set()
    if isinstance(value, list):
        for v in value:
            found |= references(v)
    elif isinstance(value, dict):
        for key, arg in value.items():
            if key == "Ref" and isinstance(arg, str):
                found.add(arg.split(".", 1)[0])  # SAM's <function>.Alias / .Version name the function
            elif key == "Fn::GetAtt":
                found.add(arg[0] if isinstance(arg, list) else arg.split(".", 1)[0])
            elif key == "Fn::Sub":
                text = arg[0] if isinstance(arg, list) else arg
                for name in PLACEHOLDER.findall(text):
                    found.add(name.split(".", 1)[0])
                if isinstance(arg, list):
                    found |= references(arg[1])
            else:
                found |= references(arg)
    return found


def substitute_definition(text: str, substitutions: dict[str, Any], where: str) -> str:
    """Fill ``${Name}`` placeholders in an ASL file; every one must have a substitution."""
    missing = sorted({m for m in PLACEHOLDER.findall(text) if m not in substitutions})
    if missing:
        raise TemplateError(f"{where}: no DefinitionSubstitutions for {', '.join(missing)}")
    return PLACEHOLDER.sub(lambda m: str(substitutions[m.group(1)]), text)
