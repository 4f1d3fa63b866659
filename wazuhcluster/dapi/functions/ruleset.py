"""Rule, decoder and CDB-list file functions of the framework (``wazuh.rule``,
``wazuh.decoder``, ``wazuh.cdb_list``): list, read, upload (with ``overwrite``), delete.

Files are only ever touched inside the home: user rules/decoders in the directories the
``<ruleset>`` section of ``etc/ossec.conf`` declares (``etc/rules``/``etc/decoders`` by
default; the stock ``ruleset/`` directories are read-only), CDB lists under ``etc/lists``.
File names are single path components (no ``/``, ``..``, NUL); every resolved path is checked
to stay inside its directory. Uploads replace files atomically (temporary file in the same
directory, fsync, rename), so the master's integrity sync carries them to the workers. All
file work runs off the reactor.
"""

from __future__ import annotations

import contextlib
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs

from wazuhcluster.agents.merged import atomic_write
from wazuhcluster.dapi.context import DapiContext
from wazuhcluster.dapi.functions.common import home, require_master
from wazuhcluster.dapi.query import DATABASE_LIMIT, process_array
from wazuhcluster.dapi.results import AffectedItemsWazuhResult, WazuhError

FILES_FIELDS = ["filename", "relative_dirname", "status"]
LIST_FIELDS = ["items", "filename", "relative_dirname"]
PATH_LIST_FIELDS = ["filename", "relative_dirname"]
#: Largest file accepted for upload (the API's own body limit is far smaller).
MAX_UPLOAD = 10 * 1024 * 1024

_CDB_LINE = re.compile(r'(?:^"([\w\-:]+?)"|^[^:"\s]+):(?:"([\w\-:]*?)"$|[^:"]*$)')


@attrs.frozen
class _Kind:
    """What differs between rules and decoders."""

    noun: str  # "rule" | "decoder"
    default_dir: str  # stock, read-only
    user_dir: str
    dir_tag: str
    include_tag: str
    exclude_tag: str
    not_found: int
    read_error: int
    parse_error: int
    no_dir_tag: int
    default_forbidden: int
    dir_missing: int


RULES = _Kind("rule", "ruleset/rules", "etc/rules", "rule_dir", "rule_include", "rule_exclude",
              1415, 1414, 1413, 1209, 1210, 1211)
DECODERS = _Kind("decoder", "ruleset/decoders", "etc/decoders", "decoder_dir", "decoder_include",
                 "decoder_exclude", 1503, 1502, 1501, 1505, 1506, 1507)


def _ruleset_conf(home_dir: str) -> dict[str, list[str]]:
    """The ``<ruleset>`` entries of ``etc/ossec.conf`` (tag -> texts); defaults when absent."""
    conf: dict[str, list[str]] = {}
    try:
        with open(os.path.join(home_dir, "etc", "ossec.conf"), encoding="utf-8",
                  errors="replace") as f:
            text = f.read()
        root = ET.fromstring(f"<root>{re.sub(r'<[?]xml[^>]*>', '', text)}</root>")
        for ruleset in root.iter("ruleset"):
            for child in ruleset:
                if child.text and child.text.strip():
                    conf.setdefault(child.tag, []).append(child.text.strip().rstrip("/"))
    except (OSError, ET.ParseError):
        pass
    if not conf:
        conf = {"decoder_dir": [DECODERS.default_dir, DECODERS.user_dir],
                "rule_dir": [RULES.default_dir, RULES.user_dir],
                "list": ["etc/lists/audit-keys"]}
    return conf


def _inside(base: str, *parts: str) -> str | None:
    """``base/parts`` if it stays inside ``base`` (symlinks resolved), else None."""
    real_base = os.path.realpath(base)
    target = os.path.realpath(os.path.join(base, *parts))
    if target != real_base and not target.startswith(real_base + os.sep):
        return None
    return target


def _valid_name(name: Any) -> bool:
    return (isinstance(name, str) and 0 < len(name) <= 255 and name not in (".", "..")
            and "/" not in name and "\\" not in name and "\0" not in name)


def _list_files(home_dir: str, kind: _Kind) -> list[dict[str, str]]:
    """Every rule/decoder file the configuration declares, with its status."""
    conf = _ruleset_conf(home_dir)
    excluded = {os.path.basename(e) for e in conf.get(kind.exclude_tag, [])}
    items: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for rel_dir in conf.get(kind.dir_tag, []):
        directory = _inside(home_dir, rel_dir)
        if directory is None or not os.path.isdir(directory):
            continue
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            if entry.is_file() and entry.name.endswith(".xml"):
                key = (rel_dir, entry.name)
                if key not in seen:
                    seen.add(key)
                    items.append({"filename": entry.name, "relative_dirname": rel_dir,
                                  "status": "disabled" if entry.name in excluded else "enabled"})
    for included in conf.get(kind.include_tag, []):
        rel_dir, name = os.path.dirname(included), os.path.basename(included)
        path = _inside(home_dir, included)
        if path is not None and os.path.isfile(path) and (rel_dir, name) not in seen:
            seen.add((rel_dir, name))
            items.append({"filename": name, "relative_dirname": rel_dir, "status": "enabled"})
    return items


def _xml_to_dict(element: ET.Element) -> Any:
    """An element as xmltodict renders it: ``@attr`` keys, ``#text``, repeated tags as lists."""
    out: dict[str, Any] = {f"@{k}": v for k, v in element.attrib.items()}
    for child in element:
        value = _xml_to_dict(child)
        if child.tag in out:
            if not isinstance(out[child.tag], list):
                out[child.tag] = [out[child.tag]]
            out[child.tag].append(value)
        else:
            out[child.tag] = value
    text = (element.text or "").strip()
    if text:
        if not out:
            return text
        out["#text"] = text
    return out or None


_BARE_AMP = re.compile(r"&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)")


def _parse_xml(content: str) -> ET.Element:
    return ET.fromstring(f"<root>{_BARE_AMP.sub('&amp;', content)}</root>")


# --- rules and decoders --------------------------------------------------------------------


def _files_result(kind: _Kind) -> AffectedItemsWazuhResult:
    return AffectedItemsWazuhResult(none_msg=f"No {kind.noun} files were returned",
                                    some_msg=f"Some {kind.noun} files were not returned",
                                    all_msg=f"All {kind.noun} files were returned")


async def _get_files(ctx: DapiContext, kind: _Kind, status: str | None = None,
                     relative_dirname: str | None = None, filename: Any = None,
                     offset: Any = 0, limit: Any = DATABASE_LIMIT, sort_by: Any = None,
                     sort_ascending: bool = True, search_text: str | None = None,
                     complementary_search: bool = False, search_in_fields: Any = None,
                     q: str | None = None, select: Any = None, distinct: bool = False,
                     **_: Any) -> AffectedItemsWazuhResult:
    result = _files_result(kind)
    if status not in (None, "all", "enabled", "disabled"):
        raise WazuhError(1202)
    files = await ctx.run(_list_files, home(ctx), kind)
    names = [filename] if isinstance(filename, str) else filename
    files = [f for f in files
             if (status in (None, "all") or f["status"] == status)
             and (not relative_dirname or f["relative_dirname"] == relative_dirname.rstrip("/"))
             and (not names or f["filename"] in names)]
    data = process_array(files, search_text=search_text, search_in_fields=search_in_fields,
                         complementary_search=complementary_search, sort_by=sort_by,
                         sort_ascending=sort_ascending, offset=offset, limit=limit, q=q,
                         select=select, allowed_select_fields=FILES_FIELDS, distinct=distinct,
                         required_fields=["filename"])
    result.affected_items = data["items"]
    result.total_affected_items = data["totalItems"]
    return result


def _find(home_dir: str, kind: _Kind, filename: str, relative_dirname: str | None) -> str | None:
    """Relative path of a declared file named ``filename`` (shortest directory first)."""
    rel = (relative_dirname or "").rstrip("/")
    matches = [f for f in _list_files(home_dir, kind) if f["filename"] == filename
               and (not rel or f["relative_dirname"].startswith(rel))]
    if not matches:
        return None
    best = min(matches, key=lambda f: len(f["relative_dirname"]))
    return os.path.join(best["relative_dirname"], filename)


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


async def _get_file(ctx: DapiContext, kind: _Kind, filename: Any = None, raw: bool = False,
                    relative_dirname: str | None = None, **_: Any) -> Any:
    result = AffectedItemsWazuhResult(none_msg=f"No {kind.noun} was returned",
                                      all_msg=f"Selected {kind.noun} was returned")
    name = filename[0] if isinstance(filename, list) and filename else filename
    home_dir = home(ctx)
    rel = await ctx.run(_find, home_dir, kind, name, relative_dirname) if _valid_name(name) \
        else None
    if rel is None:
        result.add_failed_item(str(name), WazuhError(kind.not_found, extra_message=str(name)))
        return result
    path = _inside(home_dir, rel)
    try:
        if path is None:
            raise OSError("outside the home")
        content = await ctx.run(_read_text, path)
    except (OSError, UnicodeDecodeError):
        result.add_failed_item(name, WazuhError(kind.read_error, extra_message=name))
        return result
    if raw:
        return content
    try:
        parsed = _xml_to_dict(_parse_xml(content))
    except ET.ParseError as exc:
        result.add_failed_item(name, WazuhError(kind.parse_error, extra_message=f"{name}: {exc}"))
        return result
    result.affected_items.append(parsed if parsed is not None else {})
    result.total_affected_items = 1
    return result


def _user_dir(home_dir: str, kind: _Kind, relative_dirname: str | None) -> str:
    """The validated relative directory for an upload/delete (1209/1210/1211-style errors)."""
    rel = (relative_dirname or kind.user_dir).rstrip("/")
    conf = _ruleset_conf(home_dir)
    if rel not in conf.get(kind.dir_tag, []) or _inside(home_dir, rel) is None:
        raise WazuhError(kind.no_dir_tag)
    default = os.path.realpath(os.path.join(home_dir, kind.default_dir))
    target = os.path.realpath(os.path.join(home_dir, rel))
    if target == default or target.startswith(default + os.sep):
        raise WazuhError(kind.default_forbidden)
    if not os.path.isdir(target):
        raise WazuhError(kind.dir_missing)
    return rel


def _write_file(home_dir: str, rel_dir: str, filename: str, content: str,
                overwrite: bool) -> str:
    """Write a file atomically into ``rel_dir`` (1905 if it exists without ``overwrite``)."""
    base = os.path.join(home_dir, rel_dir)
    path = _inside(base, filename)
    if path is None or os.path.dirname(path) != os.path.realpath(base):
        raise WazuhError(1801)
    if os.path.exists(path) and not overwrite:
        raise WazuhError(1905)
    atomic_write(path, content.encode("utf-8"), 0o660)
    return os.path.join(rel_dir, filename)


def _delete_file(home_dir: str, rel_dir: str, filename: str, extra: Sequence[str] = ()) -> str:
    base = os.path.join(home_dir, rel_dir)
    path = _inside(base, filename)
    if path is None:
        raise WazuhError(1801)
    if not os.path.isfile(path):
        raise WazuhError(1906)
    try:
        os.unlink(path)
    except OSError as exc:
        raise WazuhError(1907) from exc
    for suffix in extra:
        with contextlib.suppress(OSError):
            os.unlink(path + suffix)
    return os.path.relpath(path, os.path.realpath(home_dir))


def _check_content(content: Any, xml: bool) -> str:
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8")
        except UnicodeDecodeError:
            raise WazuhError(1911) from None
    if not isinstance(content, str) or not content:
        raise WazuhError(1112)
    if len(content) > MAX_UPLOAD:
        raise WazuhError(1112, extra_message="file too large")
    if xml:
        try:
            _parse_xml(content)
        except ET.ParseError as exc:
            raise WazuhError(1113, extra_message=str(exc)) from None
    return content


async def _upload(ctx: DapiContext, kind: _Kind, filename: Any = None, content: Any = None,
                  relative_dirname: str | None = None, overwrite: bool = False,
                  **_: Any) -> AffectedItemsWazuhResult:
    require_master(ctx)
    result = AffectedItemsWazuhResult(all_msg=f"{kind.noun.capitalize()} was successfully uploaded",
                                      none_msg=f"Could not upload {kind.noun}")
    home_dir = home(ctx)
    rel_dir = (relative_dirname or kind.user_dir).rstrip("/")
    item_id = os.path.join(rel_dir, str(filename))
    try:
        if not _valid_name(filename):
            raise WazuhError(1801)
        rel_dir = await ctx.run(_user_dir, home_dir, kind, relative_dirname)
        text = _check_content(content, xml=True)
        written = await ctx.run(_write_file, home_dir, rel_dir, filename, text, bool(overwrite))
        result.affected_items.append(written)
    except WazuhError as exc:
        result.add_failed_item(item_id, exc)
    result.total_affected_items = len(result.affected_items)
    return result


async def _delete(ctx: DapiContext, kind: _Kind, filename: Any = None,
                  relative_dirname: str | None = None, **_: Any) -> AffectedItemsWazuhResult:
    require_master(ctx)
    noun = f"{kind.noun.capitalize()} file" if kind is DECODERS else kind.noun.capitalize()
    result = AffectedItemsWazuhResult(all_msg=f"{noun} was successfully deleted",
                                      none_msg=f"Could not delete {noun.lower()}")
    name = filename[0] if isinstance(filename, list) and filename else filename
    home_dir = home(ctx)
    rel_dir = (relative_dirname or kind.user_dir).rstrip("/")
    item_id = os.path.join(rel_dir, str(name))
    try:
        if not _valid_name(name):
            raise WazuhError(1801)
        rel_dir = await ctx.run(_user_dir, home_dir, kind, relative_dirname)
        result.affected_items.append(await ctx.run(_delete_file, home_dir, rel_dir, name))
    except WazuhError as exc:
        result.add_failed_item(item_id, exc)
    result.total_affected_items = len(result.affected_items)
    return result


async def get_rules_files(ctx: DapiContext, **kw: Any) -> AffectedItemsWazuhResult:
    """Rule files declared by the configuration, with status (enabled/disabled)."""
    return await _get_files(ctx, RULES, **kw)


async def get_rule_file(ctx: DapiContext, **kw: Any) -> Any:
    """One rule file: its content (``raw``) or its XML as a dict (1415 not found)."""
    return await _get_file(ctx, RULES, **kw)


async def upload_rule_file(ctx: DapiContext, **kw: Any) -> AffectedItemsWazuhResult:
    """Write a user rule file (1905 if it exists and ``overwrite`` is false)."""
    return await _upload(ctx, RULES, **kw)


async def delete_rule_file(ctx: DapiContext, **kw: Any) -> AffectedItemsWazuhResult:
    """Delete a user rule file (1906 if missing)."""
    return await _delete(ctx, RULES, **kw)


async def get_decoders_files(ctx: DapiContext, **kw: Any) -> AffectedItemsWazuhResult:
    """Decoder files declared by the configuration, with status."""
    return await _get_files(ctx, DECODERS, **kw)


async def get_decoder_file(ctx: DapiContext, **kw: Any) -> Any:
    """One decoder file: raw content or XML as a dict (1503 not found)."""
    return await _get_file(ctx, DECODERS, **kw)


async def upload_decoder_file(ctx: DapiContext, **kw: Any) -> AffectedItemsWazuhResult:
    """Write a user decoder file (1905 if it exists and ``overwrite`` is false)."""
    return await _upload(ctx, DECODERS, **kw)


async def delete_decoder_file(ctx: DapiContext, **kw: Any) -> AffectedItemsWazuhResult:
    """Delete a user decoder file (1906 if missing)."""
    return await _delete(ctx, DECODERS, **kw)


# --- CDB lists -----------------------------------------------------------------------------

_LISTS_DIR = "etc/lists"


def _list_paths(home_dir: str) -> list[dict[str, str]]:
    """Every list file under ``etc/lists`` (compiled ``.cdb``, editor and hidden files
    skipped), as ``{"relative_dirname", "filename"}``."""
    base = os.path.join(home_dir, _LISTS_DIR)
    out: list[dict[str, str]] = []
    for directory, dirs, files in os.walk(base):
        dirs.sort()
        for name in sorted(files):
            if ".cdb" in name or "~" in name or name.startswith(".") or name.endswith(".swp"):
                continue
            rel = os.path.relpath(directory, home_dir)
            out.append({"relative_dirname": rel, "filename": name})
    return out


def parse_cdb(content: str, shown_path: str) -> dict[str, str]:
    """``key:value`` lines (either part may be double-quoted) -> dict (1800 on bad lines)."""
    result: dict[str, str] = {}
    for line in content.strip().splitlines():
        if "TEMPLATE" in line:
            continue
        match = _CDB_LINE.match(line)
        if match is None:
            raise WazuhError(1800, extra_message={"path": shown_path})
        if '"' in line:
            m = re.match(r'^(?:"([^"]*)"|([^:]*)):(?:"([^"]*)"|(.*))$', line)
            if m is None:
                raise WazuhError(1800, extra_message={"path": shown_path})
            key = m.group(1) if m.group(1) is not None else m.group(2)
            value = m.group(3) if m.group(3) is not None else m.group(4)
        else:
            key, _, value = line.partition(":")
        result[key] = value
    return result


def validate_cdb(content: Any) -> str:
    text = _check_content(content, xml=False)
    for line in text.splitlines():
        if not _CDB_LINE.match(line):
            raise WazuhError(1800)
    return text


def _find_list(home_dir: str, filename: str) -> str:
    """Relative path of list ``filename`` anywhere under ``etc/lists`` (default: top level)."""
    for item in _list_paths(home_dir):
        if item["filename"] == filename:
            return os.path.join(item["relative_dirname"], filename)
    return os.path.join(_LISTS_DIR, filename)


def _read_list(home_dir: str, rel: str, raw: bool) -> Any:
    path = _inside(os.path.join(home_dir, _LISTS_DIR), os.path.relpath(rel, _LISTS_DIR))
    if path is None:
        raise WazuhError(1801)
    try:
        text = _read_text(path)
    except FileNotFoundError:
        raise WazuhError(1802) from None
    except IsADirectoryError:
        raise WazuhError(1804, extra_message=f"{path} is a directory") from None
    except (OSError, UnicodeDecodeError):
        raise WazuhError(1803) from None
    return text if raw else parse_cdb(text, rel)


async def get_lists(ctx: DapiContext, filename: Any = None, offset: Any = 0,
                    limit: Any = DATABASE_LIMIT, select: Any = None, sort_by: Any = None,
                    sort_ascending: bool = True, search_text: str | None = None,
                    complementary_search: bool = False, search_in_fields: Any = None,
                    relative_dirname: str | None = None, q: str | None = None,
                    distinct: bool = False, **_: Any) -> AffectedItemsWazuhResult:
    """CDB lists with their ``key``/``value`` items."""
    result = AffectedItemsWazuhResult(all_msg="All specified lists were returned",
                                      some_msg="Some lists were not returned",
                                      none_msg="No list was returned")
    home_dir = home(ctx)
    names = [filename] if isinstance(filename, str) else filename

    def gather() -> list[dict[str, Any]]:
        lists = []
        for item in _list_paths(home_dir):
            if names and item["filename"] not in names:
                continue
            if relative_dirname and item["relative_dirname"] != relative_dirname.rstrip("/"):
                continue
            rel = os.path.join(item["relative_dirname"], item["filename"])
            content = _read_list(home_dir, rel, False)
            lists.append({"items": [{"key": k, "value": v} for k, v in content.items()],
                          "relative_dirname": item["relative_dirname"],
                          "filename": item["filename"]})
        return lists

    lists = await ctx.run(gather)
    data = process_array(lists, search_text=search_text, search_in_fields=search_in_fields,
                         complementary_search=complementary_search, sort_by=sort_by,
                         sort_ascending=sort_ascending, offset=offset, limit=limit, select=select,
                         allowed_select_fields=LIST_FIELDS, required_fields=PATH_LIST_FIELDS,
                         q=q, distinct=distinct)
    result.affected_items = data["items"]
    result.total_affected_items = data["totalItems"]
    return result


async def get_path_lists(ctx: DapiContext, filename: Any = None, offset: Any = 0,
                         limit: Any = DATABASE_LIMIT, sort_by: Any = None,
                         sort_ascending: bool = True, search_text: str | None = None,
                         complementary_search: bool = False, search_in_fields: Any = None,
                         relative_dirname: str | None = None, **_: Any) -> AffectedItemsWazuhResult:
    """Paths of the CDB lists."""
    result = AffectedItemsWazuhResult(all_msg="All specified paths were returned",
                                      some_msg="Some paths were not returned",
                                      none_msg="No path was returned")
    names = [filename] if isinstance(filename, str) else filename
    paths = [p for p in await ctx.run(_list_paths, home(ctx))
             if (not names or p["filename"] in names)
             and (not relative_dirname or p["relative_dirname"] == relative_dirname.rstrip("/"))]
    data = process_array(paths, search_text=search_text, search_in_fields=search_in_fields,
                         complementary_search=complementary_search, sort_by=sort_by,
                         sort_ascending=sort_ascending, offset=offset, limit=limit)
    result.affected_items = data["items"]
    result.total_affected_items = data["totalItems"]
    return result


async def get_list_file(ctx: DapiContext, filename: Any = None, raw: bool | None = None,
                        **_: Any) -> Any:
    """One CDB list: raw text (``raw``) or ``{key: value}`` (1802 not found, 1800 bad)."""
    result = AffectedItemsWazuhResult(all_msg="CDB list was returned",
                                      none_msg="No list was returned")
    name = filename[0] if isinstance(filename, list) and filename else filename
    home_dir = home(ctx)
    try:
        if not _valid_name(name):
            raise WazuhError(1801)
        rel = await ctx.run(_find_list, home_dir, name)
        content = await ctx.run(_read_list, home_dir, rel, bool(raw))
    except WazuhError as exc:
        result.add_failed_item(str(name), exc)
        return result
    if raw:
        return content
    result.affected_items.append(content)
    result.total_affected_items = 1
    return result


async def upload_list_file(ctx: DapiContext, filename: Any = None, content: Any = None,
                           overwrite: bool = False, **_: Any) -> AffectedItemsWazuhResult:
    """Write ``etc/lists/<filename>`` (1905 exists without ``overwrite``, 1805 a list of that
    name exists in a subdirectory, 1800 bad format)."""
    require_master(ctx)
    result = AffectedItemsWazuhResult(all_msg="CDB list file uploaded successfully",
                                      none_msg="Could not upload CDB list file")
    home_dir = home(ctx)
    item_id = os.path.join(_LISTS_DIR, str(filename))
    try:
        if not _valid_name(filename):
            raise WazuhError(1801)
        text = validate_cdb(content)

        def write() -> str:
            target = os.path.join(_LISTS_DIR, filename)
            exists = os.path.exists(os.path.join(home_dir, target))
            if exists and not overwrite:
                raise WazuhError(1905)
            if _find_list(home_dir, filename) != target:
                raise WazuhError(1805)
            return _write_file(home_dir, _LISTS_DIR, filename, text, True)

        result.affected_items.append(await ctx.run(write))
    except WazuhError as exc:
        result.add_failed_item(item_id, exc)
    result.total_affected_items = len(result.affected_items)
    return result


async def delete_list_file(ctx: DapiContext, filename: Any = None,
                           **_: Any) -> AffectedItemsWazuhResult:
    """Delete ``etc/lists/<filename>`` and its compiled ``.cdb`` (1906 if missing)."""
    require_master(ctx)
    result = AffectedItemsWazuhResult(all_msg="CDB list file was successfully deleted",
                                      none_msg="Could not delete CDB list file")
    name = filename[0] if isinstance(filename, list) and filename else filename
    item_id = os.path.join(_LISTS_DIR, str(name))
    try:
        if not _valid_name(name):
            raise WazuhError(1801)
        result.affected_items.append(
            await ctx.run(_delete_file, home(ctx), _LISTS_DIR, name, (".cdb",)))
    except WazuhError as exc:
        result.add_failed_item(item_id, exc)
    result.total_affected_items = len(result.affected_items)
    return result


FUNCTIONS: dict[str, Callable[..., Awaitable[Any]]] = {
    "wazuh.rule.get_rules_files": get_rules_files,
    "wazuh.rule.get_rule_file": get_rule_file,
    "wazuh.rule.upload_rule_file": upload_rule_file,
    "wazuh.rule.delete_rule_file": delete_rule_file,
    "wazuh.decoder.get_decoders_files": get_decoders_files,
    "wazuh.decoder.get_decoder_file": get_decoder_file,
    "wazuh.decoder.upload_decoder_file": upload_decoder_file,
    "wazuh.decoder.delete_decoder_file": delete_decoder_file,
    "wazuh.cdb_list.get_lists": get_lists,
    "wazuh.cdb_list.get_path_lists": get_path_lists,
    "wazuh.cdb_list.get_list_file": get_list_file,
    "wazuh.cdb_list.upload_list_file": upload_list_file,
    "wazuh.cdb_list.delete_list_file": delete_list_file,
}
