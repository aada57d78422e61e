"""Check RecBole atomic files before RecBole loads them.

RecBole reports a bad header type or a non-numeric float deep inside pandas
or its own loader; here each problem becomes one ``UserInputError`` naming
the file, column and line.
"""

import os

import pandas as pd

from recbole_lpo.errors import UserInputError

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
SUFFIXES = ("inter", "user", "item")


def validate_atomic_file(path, separator="\t", seq_separator=" ", columns=None):
    """Validate one atomic file: ``name:type`` headers, numeric float columns.

    ``columns``: names to check the values of (default: all).
    """
    with open(path, "r", encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n")
    if not header:
        raise UserInputError(f"{path}: empty file (expected a 'name:type' header line)")
    float_columns = []
    for position, field in enumerate(header.split(separator)):
        name, sep, ftype = field.partition(":")
        if not sep or not name:
            raise UserInputError(
                f"{path}: header column {position + 1} '{field}' is not 'name:type' "
                f"(type one of {', '.join(FIELD_TYPES)})")
        if ftype not in FIELD_TYPES:
            raise UserInputError(
                f"{path}: column '{name}' has unknown type '{ftype}' (valid: {', '.join(FIELD_TYPES)})")
        if ftype.startswith("float") and (columns is None or name in columns):
            float_columns.append((position, name, ftype))
    if not float_columns:
        return
    frame = pd.read_csv(path, sep=separator, header=0, dtype=str, engine="python" if len(separator) > 1 else "c",
                        usecols=[p for p, _, _ in float_columns], keep_default_na=False)
    for (_, name, ftype), column in zip(float_columns, frame.columns):
        values = frame[column]
        if ftype == "float_seq":
            values = values.str.split(seq_separator).explode()
        values = values[values.str.strip() != ""]
        bad = pd.to_numeric(values, errors="coerce").isna()
        if bad.any():
            row = int(bad.idxmax())
            raise UserInputError(
                f"{path}: column '{name}' ({ftype}) has non-numeric value "
                f"'{values[bad].iloc[0]}' on line {row + 2}")


def validate_atomic_files(config):
    """Validate the data set's atomic files named by ``config``.

    Feature files whose id column is an alias of the item id (e.g. an
    ``.itememb`` of pretrained vectors) must name only items of the ``.inter``
    file: RecBole would add any other token to the item vocabulary, and so to
    the ranking and the head/tail split.
    """
    data_path, dataset = config["data_path"], config["dataset"]
    load_col = config["load_col"] or {}
    extra = list(config["additional_feat_suffix"] or [])
    for suffix in SUFFIXES + tuple(extra):
        path = os.path.join(data_path, f"{dataset}.{suffix}")
        if os.path.isfile(path):
            columns = load_col.get(suffix) if isinstance(load_col, dict) else None
            validate_atomic_file(path, config["field_separator"], config["seq_separator"], columns)
        elif suffix in extra:
            raise UserInputError(f"additional_feat_suffix names '{suffix}' but {path} does not exist")
    item_aliases = set(config["alias_of_item_id"] or [])
    for suffix in extra:
        path = os.path.join(data_path, f"{dataset}.{suffix}")
        aliased = [c for c in _header_names(path, config["field_separator"]) if c in item_aliases]
        if aliased:
            _check_tokens_subset(path, aliased[0], os.path.join(data_path, f"{dataset}.inter"),
                                 config["ITEM_ID_FIELD"], config["field_separator"])


def header_types(path, separator="\t"):
    """``{column: type}`` of an atomic file's ``name:type`` header; None if the file is missing or the
    header malformed (``validate_atomic_file`` names the problem)."""
    if not os.path.isfile(path):
        return None
    with open(path, "r", encoding="utf-8") as f:
        fields = [field.partition(":") for field in f.readline().rstrip("\r\n").split(separator)]
    if not all(name and sep and ftype in FIELD_TYPES for name, sep, ftype in fields):
        return None
    return {name: ftype for name, _, ftype in fields}


def _header_names(path, separator):
    with open(path, "r", encoding="utf-8") as f:
        return [field.partition(":")[0] for field in f.readline().rstrip("\r\n").split(separator)]


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
