"""Find scripts in registered repositories by tags, alias or uid."""
from __future__ import annotations

import os
from collections.abc import Iterable

from .errors import ScriptError
from .meta import ScriptMeta, load_script, split_tags

SCRIPT_AUTOMATION_UID = "5b4e0237da074764"


class ScriptIndex:
    """All scripts under `<repo>/script/*/` of the given repositories, loaded once per process."""

    def __init__(self, repo_paths: Iterable[str]) -> None:
        self.repo_paths = [p for p in repo_paths if p]
        self._scripts: list[ScriptMeta] | None = None

    @property
    def scripts(self) -> list[ScriptMeta]:
        if self._scripts is None:
            self._scripts = []
            for repo in self.repo_paths:
                folder = os.path.join(repo, "script")
                if not os.path.isdir(folder):
                    continue
                for name in sorted(os.listdir(folder)):
                    script = load_script(os.path.join(folder, name))
                    if script is not None and self._is_script(script):
                        self._scripts.append(script)
        return self._scripts

    @staticmethod
    def _is_script(script: ScriptMeta) -> bool:
        uid = script.meta.get("automation_uid")
        alias = script.meta.get("automation_alias")
        return (uid in (None, SCRIPT_AUTOMATION_UID)) and (alias in (None, "script"))

    def find_by_tags(self, tags: list[str]) -> list[ScriptMeta]:
        wanted = set(tags)
        return [s for s in self.scripts if wanted.issubset(s.tags)]

    def find_by_artifact(self, artifact: str) -> list[ScriptMeta]:
        name = artifact.split(":")[-1]  # "repo:alias" is accepted; the repo part only narrows in CM
        return [s for s in self.scripts if name in (s.alias, s.uid) or f"{s.alias},{s.uid}" == name]

    def find_one(self, tags: list[str], artifact: str = "") -> ScriptMeta:
        """Exactly one script or a ScriptError that lists what to do."""
        if artifact:
            found = self.find_by_artifact(artifact)
            if tags:
                found = [s for s in found if set(tags).issubset(s.tags)]
            what = f"alias '{artifact}'" + (f" with tags '{','.join(tags)}'" if tags else "")
        else:
            if not tags:
                raise ScriptError("no script given: pass --tags=<tag1>,<tag2> or a script alias")
            found = self.find_by_tags(tags)
            what = f"tags '{','.join(tags)}'"
        if not found:
            raise ScriptError(
                f"no script matches {what} (searched {len(self.scripts)} scripts in: "
                f"{', '.join(self.repo_paths) or 'no registered repository'}); "
                "check the tags with `cm find script --tags=...` or register the repository with `cm-register-repo`"
            )
        if len(found) > 1:
            exact = [s for s in found if s.alias in tags]  # a tag equal to an alias resolves the tie
            if len(exact) == 1:
                return exact[0]
            choices = "; ".join(f"{s.alias} (tags: {','.join(s.tags)})" for s in found)
            raise ScriptError(
                f"{len(found)} scripts match {what}: {choices}. "
                "Add a tag that picks one, or name the script by alias: cm run script <alias>"
            )
        return found[0]


def parse_tags(tags: str | list[str] | None) -> tuple[list[str], list[str]]:
    """Split CLI tags into (plain tags, variation names without the leading '_')."""
    plain, variations = [], []
    for tag in split_tags(tags):
        if tag.startswith("_"):
            variations.append(tag[1:])
        else:
            plain.append(tag)
    return plain, variations
