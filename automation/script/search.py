"""Find scripts in registered repositories by tags, alias or uid, through an on-disk index.

The index (`<cache root>/.index/scripts.pickle`) holds, per script folder, the stat of its meta file (size,
mtime, ctime, inode), its alias, uid, tags and `sort`, and its parsed meta as a pickle that is opened only for
the scripts a run uses. Each command lists the `script/` folders and stats one meta file per script (about
1 ms for 300 scripts); a meta whose stat changed, or a new folder, is parsed again; the rest comes from the
index. So with MLCommons' 286 scripts registered beside ours, a cached run reads no YAML at all.

Selection when several scripts match (CM's rules): keep those that have every requested variation; a tag
equal to an alias decides; a dependency prefers scripts of its caller's repository (our detect-os for our
scripts, MLCommons' for theirs); prefer scripts with a cache entry for the request; order by `sort`, then
the repository's place in repos.json, then path; take the first under `--quiet`, else stop listing them
(we never prompt).
"""
from __future__ import annotations

import os
import pickle
import sys
import tempfile
from collections.abc import Callable, Iterable

from .errors import ScriptError
from .meta import META_FILES, ScriptMeta, load_script, split_tags

SCRIPT_AUTOMATION_UID = "5b4e0237da074764"
INDEX_FORMAT = 2
_ENGINE_DIR = os.path.dirname(os.path.abspath(__file__))


def written_for_cm_engine(repo: str) -> bool:
    """A repository that ships its own `script` automation (MLCommons' collection) was written for CM's engine:
    its metas are loaded leniently and its hooks get CM's automation API. Ours, and plain script repositories,
    are validated strictly."""
    own = os.path.join(repo, "automation", "script")
    if not os.path.isfile(os.path.join(own, "module.py")):
        return False
    try:
        if os.path.samefile(own, _ENGINE_DIR):
            return False
    except OSError:
        pass
    return not os.path.isfile(os.path.join(own, "engine.py"))  # another checkout of this engine is ours too


def _meta_stat(folder: str) -> tuple | None:
    for name in META_FILES:
        try:
            st = os.stat(os.path.join(folder, name))
        except OSError:
            continue
        return (name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    return None


def _is_script(summary: dict) -> bool:
    uid, alias = summary.get("automation_uid"), summary.get("automation_alias")
    return (uid in (None, SCRIPT_AUTOMATION_UID)) and (alias in (None, "script"))


class ScriptIndex:
    """All scripts under `<repo>/script/*/` of the given repositories, loaded once per process."""

    def __init__(self, repo_paths: Iterable[str], index_dir: str | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
        self.repo_paths = [p for p in repo_paths if p]
        self.index_dir = index_dir
        self.warn = warn or (lambda text: print(text, file=sys.stderr, flush=True))
        self._scripts: list[ScriptMeta] | None = None

    @property
    def index_file(self) -> str | None:
        return os.path.join(self.index_dir, "scripts.pickle") if self.index_dir else None

    def _load_index(self) -> dict:
        try:
            with open(self.index_file, "rb") as f:
                data = pickle.load(f)
            return data if data.get("format") == INDEX_FORMAT else {}
        except (OSError, TypeError, ValueError, EOFError, pickle.UnpicklingError, AttributeError):
            return {}

    def _save_index(self, rows: dict) -> None:
        try:
            os.makedirs(self.index_dir, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".scripts-", dir=self.index_dir)
            with os.fdopen(fd, "wb") as f:
                pickle.dump({"format": INDEX_FORMAT, "rows": rows}, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, self.index_file)  # concurrent writers: the last complete one wins
        except OSError:
            pass  # an index we cannot write costs speed, never correctness

    @staticmethod
    def _row(folder: str, stat: tuple, strict: bool) -> tuple:
        """(stat, strict, summary, tags, warnings, error, pickled meta) for one script folder."""
        try:
            script = load_script(folder, strict=strict)
        except ScriptError as e:
            if strict:
                return (stat, strict, {}, [], [], e.message, b"")
            return (stat, strict, {}, [], [f"warning: {e.message} (script skipped)"], "", b"")
        return (stat, strict, script.summary, script.tags, script.warnings, "",
                pickle.dumps(script.meta, protocol=pickle.HIGHEST_PROTOCOL))

    @property
    def scripts(self) -> list[ScriptMeta]:
        if self._scripts is not None:
            return self._scripts
        old = self._load_index().get("rows", {}) if self.index_dir else {}
        rows: dict[str, tuple] = {}
        changed = False
        scripts: list[ScriptMeta] = []
        errors: list[str] = []
        for repo in self.repo_paths:
            folder = os.path.join(repo, "script")
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                continue
            strict = not written_for_cm_engine(repo)
            for name in names:
                path = os.path.join(folder, name)
                stat = _meta_stat(path)
                if stat is None:
                    continue
                row = old.get(path)
                if row is None or row[0] != stat or row[1] != strict:
                    row = self._row(path, stat, strict)
                    changed = True
                    for line in row[4]:
                        self.warn(line)  # once, when the meta is (re)indexed
                rows[path] = row
                _stat, row_strict, summary, tags, warnings, error, blob = row
                if error:
                    errors.append(error)
                    continue
                if blob and _is_script(summary):
                    scripts.append(ScriptMeta(path, None, os.path.join(path, stat[0]), tags, row_strict, warnings,
                                              blob=blob, summary=summary))
        if self.index_dir and (changed or set(rows) != set(old)):
            self._save_index(rows)
        if errors:
            raise ScriptError(errors[0])
        self._scripts = scripts
        return scripts

    def find_by_tags(self, tags: list[str]) -> list[ScriptMeta]:
        wanted = set(tags)
        return [s for s in self.scripts if wanted.issubset(s.tags)]

    def find_by_artifact(self, artifact: str) -> list[ScriptMeta]:
        """`alias`, `uid`, `alias,uid`, or any of them after `<repo alias>:` (that repository only)."""
        repo, _, name = artifact.rpartition(":")
        found = [s for s in self.scripts if name in (s.alias, s.uid) or f"{s.alias},{s.uid}" == name]
        if repo:
            folders = {p for p in self.repo_paths if repo in (_repo_alias(p), os.path.basename(p))}
            found = [s for s in found if os.path.dirname(os.path.dirname(s.path)) in folders]
        return found

    def find_one(self, tags: list[str], artifact: str = "", variations: list[str] | None = None,
                 quiet: bool = False, has_cache: Callable[[ScriptMeta], bool] | None = None,
                 prefer_repo: str = "") -> ScriptMeta:
        """Exactly one script (CM's selection rules, see the module doc) or a ScriptError that says what to do."""
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
        if len(found) > 1 and variations:
            with_variations = [s for s in found if all(has_variation(s.meta, v) for v in variations)]
            found = with_variations or found  # none has them all: the chosen one reports the unknown variation
        if len(found) > 1:
            exact = [s for s in found if s.alias in tags]  # a tag equal to an alias resolves the tie
            if len(exact) == 1:
                return exact[0]
        if len(found) > 1 and prefer_repo:  # a dependency resolves in its caller's collection first
            own = [s for s in found if os.path.dirname(os.path.dirname(s.path)) == prefer_repo]
            found = own or found
        if len(found) > 1 and has_cache is not None:
            cached = [s for s in found if has_cache(s)]
            found = cached or found
        order = {repo: n for n, repo in enumerate(self.repo_paths)}
        found = sorted(found, key=lambda s: (s.sort, order.get(os.path.dirname(os.path.dirname(s.path)), 0), s.path))
        if len(found) > 1 and not quiet:
            choices = "; ".join(f"{s.alias} (tags: {','.join(s.tags)})" for s in found)
            raise ScriptError(
                f"{len(found)} scripts match {what}: {choices}. "
                "Add a tag that picks one, name the script by alias (cm run script <alias>), "
                "or add --quiet to take the first by `sort` and path"
            )
        return found[0]


def _repo_alias(repo: str) -> str:
    """The alias in a repository's cmr.yaml (read only when a request names a repository)."""
    import yaml

    try:
        with open(os.path.join(repo, "cmr.yaml"), encoding="utf-8") as f:
            return str((yaml.safe_load(f) or {}).get("alias", ""))
    except (OSError, yaml.YAMLError):
        return ""


def has_variation(meta: dict, name: str) -> bool:
    """Whether a script defines variation `name` (directly, as a dynamic `prefix.#`, or by alias)."""
    variations = meta.get("variations") or {}
    if name in variations:
        return True
    prefix, dot, value = name.partition(".")
    return bool(dot and value and f"{prefix}.#" in variations)


def parse_tags(tags: str | list[str] | None) -> tuple[list[str], list[str]]:
    """Split CLI tags into (plain tags, variation names without the leading '_')."""
    plain, variations = [], []
    for tag in split_tags(tags):
        if tag.startswith("_"):
            variations.append(tag[1:])
        else:
            plain.append(tag)
    return plain, variations
