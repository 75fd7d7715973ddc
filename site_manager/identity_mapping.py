"""Which local POSIX account a submitting identity runs as, on a multi-user endpoint (pure rules).

Modelled after Globus Compute's identity mapping (Globus Connect Server's expression rules and
external mapping command). The admin lists rules; the first that gives an account wins::

    identity_mapping:
      - {source: "{username}", match: "alice", output: "alice_hpc", literal: true}     # exact
      - {source: "{username}", match: "(.*)@uni\\.edu", output: "{0}"}                 # regex
      - {mapping_file: /etc/fnserve/identity-map}     # lines "IDENTITY ACCOUNT" ('#' comments)
      - {command: [/usr/local/sbin/fnserve-map-id]}   # identity as JSON on stdin -> account on stdout

``source`` is formatted with the identity's fields (``username``, ``user_id``); ``match`` must
match all of it (``re.fullmatch``; ``ignore_case`` optional); ``output`` is formatted with the
match's groups (``{0}`` the first). No rule giving an account means the identity is refused
(``identity_not_mapped``); an account that is root or not a valid POSIX name is refused too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnserve.errors import BadRequest, Forbidden

# POSIX portable user names (useradd's default rule), and never root.
_ACCOUNT = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\$?")
_FIELDS = ("username", "user_id")


class MappingConfigError(BadRequest):
    code = "invalid_identity_mapping"


class IdentityNotMapped(Forbidden):
    code = "identity_not_mapped"


@dataclass(frozen=True)
class ExpressionRule:
    match: str
    output: str
    source: str = "{username}"
    literal: bool = False
    ignore_case: bool = False

    def apply(self, identity: dict[str, str]) -> str | None:
        value = self.source.format(**identity)
        if self.literal:
            same = value.lower() == self.match.lower() if self.ignore_case else value == self.match
            return self.output if same else None
        found = re.fullmatch(self.match, value, re.IGNORECASE if self.ignore_case else 0)
        return self.output.format(*found.groups(), **found.groupdict()) if found else None


@dataclass(frozen=True)
class FileRule:
    mapping_file: str

    def apply(self, identity: dict[str, str], read: Callable[[str], str]) -> str | None:
        for line in read(self.mapping_file).splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) == 2 and words[0] in (identity["username"], identity["user_id"]):
                return words[1]
        return None


@dataclass(frozen=True)
class CommandRule:
    command: tuple[str, ...]


Rule = ExpressionRule | FileRule | CommandRule


def parse_rules(data: Any) -> list[Rule]:
    """The rules of a config's ``identity_mapping`` list, checked (``invalid_identity_mapping``)."""
    if not isinstance(data, list) or not data:
        raise MappingConfigError("multi_user.identity_mapping must be a non-empty list of rules (see docs/site-admin.md)")
    rules: list[Rule] = []
    for i, item in enumerate(data):
        where = f"multi_user.identity_mapping[{i}]"
        if not isinstance(item, dict):
            raise MappingConfigError(f"{where} must be a mapping")
        try:
            if "mapping_file" in item and set(item) == {"mapping_file"}:
                rules.append(FileRule(str(item["mapping_file"])))
            elif "command" in item and set(item) == {"command"}:
                cmd = item["command"]
                if not isinstance(cmd, list) or not cmd or not all(isinstance(w, str) for w in cmd):
                    raise MappingConfigError(f"{where}.command must be a list of words (argv)")
                rules.append(CommandRule(tuple(cmd)))
            else:
                rule = ExpressionRule(**item)
                if not rule.literal:
                    re.compile(rule.match)
                rule.source.format(**dict.fromkeys(_FIELDS, ""))
                rules.append(rule)
        except (TypeError, re.error, KeyError, IndexError) as exc:
            raise MappingConfigError(f"{where}: {exc} (a rule is {{source, match, output[, literal, ignore_case]}}, "
                                     "{mapping_file} or {command})") from exc
    return rules


def check_account(name: str, uid_of: Callable[[str], int | None]) -> None:
    """An account a rule gave may be used: a valid name that exists and is not root."""
    uid = uid_of(name) if _ACCOUNT.fullmatch(name) else None
    if uid is None or uid == 0:
        raise IdentityNotMapped(f"the identity maps to account {name!r}, which does not exist here or may not run tasks; "
                                "ask the endpoint's admin to fix the identity mapping")


def map_identity(identity: dict[str, str], rules: Sequence[Rule], *, read: Callable[[str], str] = lambda p: Path(p).read_text(),
                 run: Callable[[Sequence[str], str], str] | None = None,
                 uid_of: Callable[[str], int | None]) -> str:
    """The local account ``identity`` (``username``, ``user_id``) runs as; the first rule wins.

    ``read`` reads a mapping file, ``run`` runs a command with stdin and gives its stdout,
    ``uid_of`` looks an account up (None: no such account): the I/O comes in from outside.

    >>> map_identity({"username": "bob@uni.edu", "user_id": "7"},
    ...              [ExpressionRule(match="(.*)@uni\\\\.edu", output="{0}")], uid_of=lambda n: 1000)
    'bob'
    """
    ident = {k: str(identity.get(k, "")) for k in _FIELDS}
    for rule in rules:
        if isinstance(rule, ExpressionRule):
            account = rule.apply(ident)
        elif isinstance(rule, FileRule):
            account = rule.apply(ident, read)
        else:
            if run is None:
                continue
            account = run(rule.command, json.dumps(ident)).strip() or None
        if account:
            check_account(account, uid_of)
            return account
    raise IdentityNotMapped(f"identity {ident['username']!r} maps to no local account on this multi-user endpoint; "
                            "ask the endpoint's admin to add it to the identity mapping")
