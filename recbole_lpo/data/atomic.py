"""Check RecBole atomic files before RecBole loads them.

RecBole 1.2.1 (``Dataset._load_feat``) splits an atomic file's first line on
``field_separator`` into ``name:type`` columns and reads the rest with
``pandas.read_csv(engine="python")``. What pandas cannot parse ends in a
traceback deep inside the loader, and much of the rest is read wrong without
a word: a short row or an empty timestamp becomes the column mean (and moves
the interaction in its user's sequence), an empty or ``NA``-like id drops the
row, an extra field shifts or vanishes, a byte order mark sticks to the first
column name. ``validate_atomic_files`` reads every file RecBole will load
once, before RecBole, and turns the first problem into one ``UserInputError``
"``<file>, line <n>: ...``" (1-based, the header is line 1):

- the bytes decode in ``encoding`` (UTF-8 unless the config says otherwise)
  and do not start with a UTF-8 byte order mark;
- the header: ``name:type`` columns of known types, no name twice, every
  column ``load_col`` names, ``USER_ID_FIELD`` / ``ITEM_ID_FIELD`` present
  and typed ``token``, a loaded ``TIME_FIELD`` typed ``float``;
- at least one data row; as many fields on every row as in the header (blank
  lines are skipped, as pandas skips them); no field pandas' CSV reader
  refuses (a stray double quote, more than ``csv.field_size_limit()``
  characters);
- loaded columns: a value on every row of the id and time columns (pandas
  reads ``''``, ``NA``, ``null``, ``None``, ... as missing) and numbers in
  float columns (an empty or ``NA`` value in any other float column is
  RecBole's missing value, filled with the column mean).

Columns RecBole does not load are checked for row shape only, files it does
not load (a suffix missing from a ``load_col`` dict) not at all.
"""

import codecs
import csv
import itertools
import math
import os
import re

import numpy as np
import pandas as pd

from recbole_lpo.errors import UserInputError

try:
    from pandas._libs.parsers import STR_NA_VALUES as _PANDAS_NA
except ImportError:  # pandas' documented default ``na_values``
    _PANDAS_NA = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                  "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
SUFFIXES = ("inter", "user", "item")
NA_VALUES = frozenset(_PANDAS_NA)  # what read_csv reads as a missing value
# the columns RecBole gives a role, the type it needs, and the files that hold them
ROLE_TYPES = {"USER_ID_FIELD": "token", "ITEM_ID_FIELD": "token", "TIME_FIELD": "float"}
ROLES_OF = {"inter": ("USER_ID_FIELD", "ITEM_ID_FIELD", "TIME_FIELD"), "user": ("USER_ID_FIELD",),
            "item": ("ITEM_ID_FIELD",)}
_QUOTED = re.compile(r'"(?:[^"]|"")*"')  # a field pandas' CSV reader takes as one quoted value


def validate_atomic_file(path, separator="\t", seq_separator=" ", columns=None, roles=None, required=(),
                         encoding="utf-8", unloaded=()):
    """Validate one atomic file as RecBole will read it; the first problem is a ``UserInputError``.

    ``columns``: the names RecBole loads (None: all), ``unloaded``: the names
    it leaves out (``unload_col``). ``roles``: ``{name: (config key, type)}``
    of the id and time columns; a loaded one must be typed ``type`` and have a
    value on every row. ``required``: names of ``roles`` the file must have and load.
    """
    roles = roles or {}
    text = _read_text(path, encoding)
    lines = text.split("\n")
    if lines[-1] == "" and len(lines) > 1:
        lines.pop()
    header = _parse_header(path, lines[0], separator)
    names = [name for name, _ in header]

    def loaded(name):
        return (columns is None or name in columns) and name not in unloaded

    for name in required:
        key, ftype = roles[name]
        if name not in names:
            raise UserInputError(
                f"{path}, line 1: no column '{name}' ({key}); its columns: {', '.join(names)}. "
                f"Add a '{name}:{ftype}' column or name yours with --{key}=<column>")
        if not loaded(name):
            raise UserInputError(f"{path}: load_col/unload_col leave out column '{name}' ({key}), which RecBole needs")
    absent = sorted(set(columns or ()) - set(names))
    if absent:
        raise UserInputError(
            f"{path}, line 1: load_col names column '{absent[0]}' but the header has no such column "
            f"(its columns: {', '.join(names)})")
    for name, ftype in header:
        if name in roles and loaded(name) and ftype != roles[name][1]:
            key, need = roles[name]
            raise UserInputError(
                f"{path}, line 1: column '{name}' ({key}) is typed {ftype}, RecBole needs {need}: "
                f"write '{name}:{need}' in the header")

    if len(separator) == 1:  # a multi-character separator makes pandas split lines by regex: no quoting
        _check_csv_fields(path, lines, separator, names, quotes='"' in text)
    line_of = _check_row_shape(path, lines, separator, len(header))
    checked = [(position, name, ftype) for position, (name, ftype) in enumerate(header)
               if loaded(name) and (name in roles or ftype.startswith("float"))]
    if not checked:
        return
    if line_of is None:  # row-major: row r, column p at r * width + p
        body = text[len(lines[0]) + 1:]
        fields = body.rstrip("\n").replace("\n", separator).split(separator)
    else:
        fields = separator.join(lines[i] for i in line_of).split(separator)
    for position, name, ftype in checked:
        values = fields[position::len(header)]
        where = (lambda row: row + 2) if line_of is None else (lambda row: line_of[row] + 1)
        role = roles.get(name)
        if role is not None:
            _check_present(path, name, role[0], values, where)
        if ftype == "float":
            _check_floats(path, name, values, where, role and role[0])
        elif ftype == "float_seq":
            _check_float_seqs(path, name, values, seq_separator, where)


def validate_atomic_files(config):
    """Validate the data set's atomic files that RecBole will load for ``config``.

    ``.inter``, ``.user``, ``.item`` and every ``additional_feat_suffix``, with
    ``load_col``/``unload_col`` applied as RecBole applies them. Feature files
    whose id column is an alias of the item id (e.g. an ``.itememb`` of
    pretrained vectors) must name only items of the ``.inter`` file: RecBole
    would add any other token to the item vocabulary, and so to the ranking
    and the head/tail split.
    """
    data_path, dataset = config["data_path"], config["dataset"]
    separator, encoding = config["field_separator"], config["encoding"] or "utf-8"
    extra = list(config["additional_feat_suffix"] or [])
    for suffix in SUFFIXES + tuple(extra):
        path = os.path.join(data_path, f"{dataset}.{suffix}")
        if not os.path.isfile(path):
            if suffix in extra:
                raise UserInputError(f"additional_feat_suffix names '{suffix}' but {path} does not exist")
            continue
        columns, unloaded = loaded_columns(config, suffix)
        if columns == set():
            continue  # RecBole does not read the file
        keys = [key for key in ROLES_OF.get(suffix, ()) if config[key]]
        roles = {config[key]: (key, ROLE_TYPES[key]) for key in keys}
        required = [config[key] for key in keys if key != "TIME_FIELD"]
        validate_atomic_file(path, separator, config["seq_separator"], columns, roles, required, encoding, unloaded)
    item_aliases = set(config["alias_of_item_id"] or [])
    for suffix in extra:
        path = os.path.join(data_path, f"{dataset}.{suffix}")
        if loaded_columns(config, suffix)[0] == set():
            continue
        aliased = [c for c in _header_names(path, separator, encoding) if c in item_aliases]
        if aliased:
            _check_tokens_subset(path, aliased[0], os.path.join(data_path, f"{dataset}.inter"),
                                 config["ITEM_ID_FIELD"], separator)


def loaded_columns(config, suffix):
    """``(columns, unloaded)`` RecBole loads from ``<dataset>.<suffix>`` (``Dataset._get_load_and_unload_col``):
    ``columns`` None for all, an empty set when the file is not read at all."""
    load_col, unload_col = config["load_col"], config["unload_col"]
    if load_col is None or load_col.get(suffix) == "*":
        columns = None
    else:
        columns = set(load_col.get(suffix) or ())
    unloaded = set(unload_col[suffix]) if unload_col and suffix in unload_col else set()
    return columns, unloaded


def header_types(path, separator="\t", encoding="utf-8"):
    """``{column: type}`` of an atomic file's ``name:type`` header; None if the file is missing or the
    header malformed (``validate_atomic_file`` names the problem). An undecodable byte or a byte order
    mark on the header line is a ``UserInputError``."""
    if not os.path.isfile(path):
        return None
    fields = [field.partition(":") for field in _first_line(path, encoding).split(separator)]
    if not all(name and sep and ftype in FIELD_TYPES for name, sep, ftype in fields):
        return None
    return {name: ftype for name, _, ftype in fields}


def _first_line(path, encoding):
    with open(path, "rb") as f:
        raw = f.readline()
    _check_bom(path, raw, encoding)
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as error:
        raise _decode_error(path, raw, error, encoding) from None
    return re.split("\r\n|\r|\n", text, maxsplit=1)[0]


def _header_names(path, separator, encoding="utf-8"):
    return [field.partition(":")[0] for field in _first_line(path, encoding).split(separator)]


def _check_bom(path, data, encoding):
    if data.startswith(codecs.BOM_UTF8) and codecs.lookup(encoding).name == "utf-8":
        first = data[3:].split(b"\n", 1)[0].decode(encoding, "replace").partition(":")[0]
        raise UserInputError(
            f"{path}, line 1: the file starts with a UTF-8 byte order mark (BOM, bytes EF BB BF); RecBole "
            f"would read the first column name with the BOM glued on ('\\ufeff{first}'): save the file as "
            "UTF-8 without BOM")


def _decode_error(path, data, error, encoding):
    start = error.start
    line = data.count(b"\n", 0, start) + 1
    column = start - (data.rfind(b"\n", 0, start) + 1) + 1
    return UserInputError(
        f"{path}, line {line}: byte 0x{data[start]:02X} (byte {column} of the line, offset {start} of the file) "
        f"is not valid {encoding}; RecBole reads atomic files as {encoding}: convert the file")


def _read_text(path, encoding):
    """The file's text, decoded, with \\n ending every line (RecBole's readers also end one at \\r\\n, \\r)."""
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise UserInputError(f"{path}, line 1: empty file (expected a 'name:type' header line)")
    _check_bom(path, data, encoding)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        raise _decode_error(path, data, error, encoding) from None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _parse_header(path, line, separator):
    """``[(name, type)]`` of the header line, as RecBole splits it."""
    header = []
    for position, field in enumerate(line.split(separator)):
        name, sep, ftype = field.partition(":")
        if not sep or not name:
            raise UserInputError(
                f"{path}, line 1: header column {position + 1} '{field}' is not 'name:type' "
                f"(type one of {', '.join(FIELD_TYPES)})")
        if ftype not in FIELD_TYPES:
            raise UserInputError(
                f"{path}, line 1: column '{name}' has unknown type '{ftype}' (valid: {', '.join(FIELD_TYPES)})")
        if any(name == seen for seen, _ in header):
            raise UserInputError(f"{path}, line 1: column '{name}' appears twice in the header")
        header.append((name, ftype))
    return header


def _check_csv_fields(path, lines, separator, names, quotes=True):
    """No field that pandas' CSV reader (one-character separators) refuses or reads across lines."""
    limit = csv.field_size_limit()
    if max(map(len, lines)) > limit:  # no field is longer than its line
        for index, line in enumerate(lines):
            for position, field in enumerate(line.split(separator) if len(line) > limit else ()):
                if len(field) > limit:
                    raise UserInputError(
                        f"{path}, line {index + 1}: field {position + 1} ({_column(names, position)}) has "
                        f"{len(field):,} characters, more than the {limit:,} of pandas' CSV reader, which RecBole "
                        "reads with: shorten it or leave the column out of the file")
    for index, line in enumerate(lines if quotes else ()):
        if '"' not in line:
            continue
        for position, field in enumerate(line.split(separator)):
            if field.startswith('"') and not _QUOTED.fullmatch(field):
                raise UserInputError(
                    f"{path}, line {index + 1}: field {position + 1} ({_column(names, position)}) starts with a "
                    "double quote but is not one quoted value (\"...\" with inner quotes doubled); pandas' CSV "
                    "reader, which RecBole reads with, would fail or join it with the fields after it: remove "
                    "the quote")


def _column(names, position):
    return f"column '{names[position]}'" if position < len(names) else "beyond the header's columns"


def _check_row_shape(path, lines, separator, width):
    """Every data line has ``width`` fields; at least one data line.

    Returns None when no line is blank, else the indices (in ``lines``) of
    the data rows: pandas skips a line that is blank or white space only.
    """
    counts = np.fromiter(map(str.count, lines, itertools.repeat(separator)), dtype=np.int64, count=len(lines))
    blank = []
    for index in np.flatnonzero(counts != width - 1).tolist():
        if counts[index] == 0 and not lines[index].strip():
            blank.append(index)
            continue
        found = int(counts[index]) + 1
        kind = ("a short row", "pandas would read the missing values as empty") if found < width else (
            "a long row", "pandas would shift or drop the extra values")
        raise UserInputError(
            f"{path}, line {index + 1}: {kind[0]}: {found} field{'s' * (found != 1)} where the header has "
            f"{width} (separator {separator!r}); {kind[1]}")
    if len(lines) - 1 - len(blank) == 0:
        raise UserInputError(f"{path}, line 1: the header is the only line: the file has no data rows")
    if not blank:
        return None
    skip = set(blank)
    return [index for index in range(1, len(lines)) if index not in skip]


def _check_present(path, name, key, values, where):
    """A value on every row: pandas reads '' and its NA strings as missing."""
    if NA_VALUES.isdisjoint(values):
        return
    row = next(row for row, value in enumerate(values) if value in NA_VALUES)
    value = values[row]
    shown = "empty value" if value == "" else f"value '{value}', which pandas reads as missing,"
    effect = ("RecBole would fill it with the column mean and move the interaction in its user's sequence"
              if key == "TIME_FIELD" else "RecBole would drop the row")
    raise UserInputError(f"{path}, line {where(row)}: {shown} in column '{name}' ({key}); {effect}")


def _check_floats(path, name, values, where, key=None):
    """Every value a number, or missing ('' or an NA string: RecBole fills in the column mean); a role
    column (``key``, e.g. TIME_FIELD) has no missing value (``_check_present`` names '' and the NA strings)."""
    try:
        numbers = np.array(values, dtype=np.float64)  # float() of each value, as pandas converts them
    except ValueError:
        numbers = None
    if numbers is not None and not (key and np.isnan(numbers).any()):
        return
    for row, value in enumerate(values):
        if value in NA_VALUES:
            continue
        try:
            number = float(value)
        except ValueError:
            raise UserInputError(
                f"{path}, line {where(row)}: column '{name}' (float) has non-numeric value '{value}'") from None
        if key and math.isnan(number):
            raise UserInputError(
                f"{path}, line {where(row)}: value '{value}' in column '{name}' ({key}) is not a number")


def _check_float_seqs(path, name, values, seq_separator, where):
    """Every piece a number, as RecBole maps ``float`` over the non-empty pieces (NaN refused)."""
    present = [value for value in values if value not in NA_VALUES]  # missing: an empty sequence
    pieces = [piece for piece in seq_separator.join(present).split(seq_separator) if piece]
    try:
        if not np.isnan(np.array(pieces, dtype=np.float64)).any():
            return
    except ValueError:
        pass
    for row, value in enumerate(values):
        if value in NA_VALUES:
            continue
        for piece in filter(None, value.split(seq_separator)):
            try:
                bad = math.isnan(float(piece))
            except ValueError:
                bad = True
            if bad:
                raise UserInputError(
                    f"{path}, line {where(row)}: column '{name}' (float_seq) has non-numeric value '{piece}'")


def _check_tokens_subset(path, column, inter_path, item_field, separator):
    """Every token in ``path``'s ``column`` is an item of the .inter file."""
    def tokens(file, name):
        header = _header_names(file, separator)
        frame = pd.read_csv(file, sep=separator, header=0, dtype=str, usecols=[header.index(name)],
                            keep_default_na=False)
        return set(frame.iloc[:, 0])

    unknown = tokens(path, column) - tokens(inter_path, item_field)
    if unknown:
        example = ", ".join(sorted(unknown)[:3])
        raise UserInputError(
            f"{path}: {len(unknown)} items in column '{column}' are not in {inter_path} (e.g. {example}); "
            "they would join the ranking: drop them from the feature file")
