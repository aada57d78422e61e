"""Malformed atomic files: one ``UserInputError`` naming the file and line, before RecBole reads them.

Each class of problem is one parametrised test on ``validate_atomic_files``
(a tiny data set written into tmp_path: the first rows of the tiny fixture,
one line changed), and one case per class runs through the command line:
exit status 2, the ``error:`` line last on stderr, no file left behind.
"""

import sys

import pytest

from conftest import FIXTURES, ROOT, TINY_YAML
from recbole_lpo.data.atomic import validate_atomic_files
from recbole_lpo.errors import UserInputError

sys.path.insert(0, str(ROOT))
import run_recbole_lpo  # noqa: E402

HEADER = "user_id:token\titem_id:token\ttimestamp:float"
ROWS = (FIXTURES / "tiny" / "tiny.inter").read_text().splitlines()[1:13]  # lines 2-13: u1's 12 interactions
USER = ("user_id:token\tage:float", ["u1\t23", "u2\t31"])
ITEM = ("item_id:token\tprice:float\ttitle:token_seq", ["i001\t9.5\tred shoe", "i002\t3\tblue hat",
                                                       "i003\t\tgreen scarf"])
ITEMEMB = ("iid:token\titem_emb:float_seq", ["i001\t0.1 0.2", "i002\t-0.3 0.4"])
INTER_COLUMNS = ["user_id", "item_id", "timestamp"]
LOAD_USER = {"load_col": {"inter": INTER_COLUMNS, "user": ["user_id", "age"]}}
LOAD_ITEM = {"load_col": {"inter": INTER_COLUMNS, "item": ["item_id", "price", "title"]}}
LOAD_ITEMEMB = {"load_col": {"inter": INTER_COLUMNS, "itememb": ["iid", "item_emb"]},
                "additional_feat_suffix": ["itememb"]}
BOM = b"\xef\xbb\xbf"


def lines(header, rows, changes=None):
    """The file's text; ``changes``: ``{line number: new line}`` (the header is line 1)."""
    out = [header, *rows]
    for number, line in (changes or {}).items():
        out[number - 1] = line
    return "\n".join(out) + "\n"


def inter(changes=None, header=HEADER, rows=ROWS):
    return lines(header, rows, changes)


def without_item(row):
    user, _, time = row.split("\t")
    return f"{user}\t{time}"


class Settings(dict):
    """A config as ``validate_atomic_files`` reads it: an unset key is None, as in RecBole's ``Config``."""

    def __missing__(self, key):
        return None


def settings(folder, **overrides):
    return Settings({"data_path": str(folder), "dataset": "mine", "field_separator": "\t", "seq_separator": " ",
                     "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
                     "load_col": {"inter": INTER_COLUMNS}}, **overrides)


def write(folder, files):
    """``folder/mine.<suffix>`` for each ``{suffix: text or bytes}``."""
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, content in files.items():
        (folder / f"mine.{suffix}").write_bytes(content if isinstance(content, bytes) else content.encode())
    return folder


def assert_rejected(tmp_path, files, config, suffix, line, needle):
    folder = write(tmp_path / "mine", files)
    with pytest.raises(UserInputError) as error:
        validate_atomic_files(settings(folder, **config))
    message = str(error.value)
    assert message.startswith(f"{folder / f'mine.{suffix}'}, line {line}: "), message
    assert needle in message and "\n" not in message, message


# (files, config, file named, line named, needle): one list per class of problem
ENCODING = [
    ({"inter": inter({5: "u1\ti\xe9\t1001003"}).encode("latin-1")}, {}, "inter", 5,
     "byte 0xE9 (byte 5 of the line, offset"),
    ({"inter": inter().encode() + b"u1\ti\xff\t1001099\n"}, {}, "inter", 14, "byte 0xFF (byte 5 of the line"),
    ({"inter": b"user_id:token\titem\x80_id:token\ttimestamp:float\n" + "\n".join(ROWS).encode()}, {}, "inter",
     1, "byte 0x80 (byte 19 of the line"),
    ({"inter": inter(), "item": lines(*ITEM, {3: "i002\t3\tbleu fonc\xe9"}).encode("cp1252")}, LOAD_ITEM, "item", 3,
     "is not valid utf-8"),
]
BYTE_ORDER_MARK = [
    ({"inter": BOM + inter().encode()}, {}, "inter", 1, "byte order mark (BOM, bytes EF BB BF)"),
    ({"inter": inter(), "user": BOM + lines(*USER).encode()}, LOAD_USER, "user", 1, "('\\ufeffuser_id')"),
]
HEADER_ONLY = [
    ({"inter": HEADER + "\n"}, {}, "inter", 1, "no data rows"),
    ({"inter": HEADER}, {}, "inter", 1, "no data rows"),
    ({"inter": HEADER + "\n\n  \n"}, {}, "inter", 1, "no data rows"),  # blank lines are no rows
    ({"inter": inter(), "item": ITEM[0] + "\n"}, LOAD_ITEM, "item", 1, "no data rows"),
]
MISSING_COLUMN = [
    ({"inter": inter(header="user_id:token\ttimestamp:float", rows=[without_item(r) for r in ROWS])}, {}, "inter", 1,
     "no column 'item_id' (ITEM_ID_FIELD); its columns: user_id, timestamp"),
    ({"inter": inter(header="uid:token\titem_id:token\ttimestamp:float")}, {}, "inter", 1,
     "no column 'user_id' (USER_ID_FIELD)"),
    ({"inter": inter()}, {"load_col": {"inter": INTER_COLUMNS + ["rating"]}}, "inter", 1,
     "load_col names column 'rating' but the header has no such column"),
    ({"inter": inter(), "user": lines("uid:token\tage:float", USER[1])},
     {"load_col": {"inter": INTER_COLUMNS, "user": "*"}}, "user", 1, "no column 'user_id' (USER_ID_FIELD)"),
]
WRONG_TYPE = [
    ({"inter": inter(header="user_id:token\titem_id:float\ttimestamp:float")}, {}, "inter", 1,
     "column 'item_id' (ITEM_ID_FIELD) is typed float, RecBole needs token"),
    ({"inter": inter(header="user_id:token_seq\titem_id:token\ttimestamp:float")}, {}, "inter", 1,
     "column 'user_id' (USER_ID_FIELD) is typed token_seq, RecBole needs token"),
    ({"inter": inter(header="user_id:token\titem_id:token\ttimestamp:token")}, {}, "inter", 1,
     "column 'timestamp' (TIME_FIELD) is typed token, RecBole needs float"),
    ({"inter": inter(header="user_id:token\titem_id:token\ttimestamp:float_seq")}, {}, "inter", 1,
     "is typed float_seq, RecBole needs float"),
    ({"inter": inter(), "item": lines("item_id:float\tprice:float\ttitle:token_seq", ITEM[1][:2])}, LOAD_ITEM,
     "item", 1, "column 'item_id' (ITEM_ID_FIELD) is typed float"),
]
EMPTY_VALUE = [
    ({"inter": inter({4: "u1\ti002\t"})}, {}, "inter", 4, "empty value in column 'timestamp' (TIME_FIELD)"),
    ({"inter": inter({6: "u1\t\t1001004"})}, {}, "inter", 6, "empty value in column 'item_id' (ITEM_ID_FIELD)"),
    ({"inter": inter({3: "NA\ti025\t1001001"})}, {}, "inter", 3,
     "value 'NA', which pandas reads as missing, in column 'user_id' (USER_ID_FIELD); RecBole would drop the row"),
    ({"inter": inter({7: "u1\tnull\t1001005"})}, {}, "inter", 7, "value 'null', which pandas reads as missing"),
    ({"inter": inter({8: "u1\ti030\tnan"})}, {}, "inter", 8, "would fill it with the column mean"),
    ({"inter": inter({9: "u1\ti027\tNAN"})}, {}, "inter", 9, "value 'NAN' in column 'timestamp' (TIME_FIELD) is not"),
    ({"inter": inter(), "user": lines(*USER, {3: "\t31"})}, LOAD_USER, "user", 3,
     "empty value in column 'user_id' (USER_ID_FIELD)"),
]
SHORT_ROW = [
    ({"inter": inter({4: "u1\ti002"})}, {}, "inter", 4, "a short row: 2 fields where the header has 3"),
    ({"inter": inter({13: "u1"})}, {}, "inter", 13, "a short row: 1 field where the header has 3"),
    ({"inter": inter(), "item": lines(*ITEM, {3: "i002\t3"})}, LOAD_ITEM, "item", 3, "a short row: 2 fields"),
    # the missing field is in a column RecBole does not load: the row is still cut short
    ({"inter": inter({5: "u1\ti003\t1001003"}, header=HEADER + "\tnote:token",
                     rows=[r + "\tok" for r in ROWS])}, {}, "inter", 5, "a short row: 3 fields where the header has 4"),
]
LONG_ROW = [
    ({"inter": inter({4: "u1\ti002\t1001002\t5"})}, {}, "inter", 4, "a long row: 4 fields where the header has 3"),
    ({"inter": inter({2: ROWS[0] + "\t"})}, {}, "inter", 2, "a long row: 4 fields"),  # a trailing tab
    ({"inter": inter(), "user": lines(*USER, {2: "u1\t23\t1"})}, LOAD_USER, "user", 2, "a long row: 3 fields"),
]
UNPARSABLE_FIELD = [
    ({"inter": inter({3: "u1\t" + "x" * 200_000 + "\t1001001"})}, {}, "inter", 3,
     "field 2 (column 'item_id') has 200,000 characters, more than the 131,072 of pandas' CSV reader"),
    ({"inter": inter({5: 'u1\t"i003\t1001003'})}, {}, "inter", 5,
     "field 2 (column 'item_id') starts with a double quote but is not one quoted value"),
    ({"inter": inter({5: 'u1\t"i003"x\t1001003'})}, {}, "inter", 5, "starts with a double quote"),
    ({"inter": inter({6: 'u1\ti037\t1001004\t"oops'}, header=HEADER + "\tnote:token",
                     rows=[r + "\tok" for r in ROWS])}, {}, "inter", 6, "field 4 (column 'note') starts with"),
]
NON_NUMERIC = [
    ({"inter": inter({2: "u1\ti041\tyesterday"})}, {}, "inter", 2,
     "column 'timestamp' (float) has non-numeric value 'yesterday'"),
    ({"inter": inter({4: "u1\ti002\t  "})}, {}, "inter", 4, "non-numeric value '  '"),
    ({"inter": inter(), "item": lines(*ITEM, {4: "i003\tcheap\tgreen scarf"})}, LOAD_ITEM, "item", 4,
     "column 'price' (float) has non-numeric value 'cheap'"),
    ({"inter": inter(), "itememb": lines(*ITEMEMB, {3: "i002\t-0.3 abc"})}, LOAD_ITEMEMB, "itememb", 3,
     "column 'item_emb' (float_seq) has non-numeric value 'abc'"),
]


@pytest.mark.parametrize("files,config,suffix,line,needle", ENCODING)
def test_undecodable_byte(files, config, suffix, line, needle, tmp_path):
    assert_rejected(tmp_path, files, config, suffix, line, needle)


@pytest.mark.parametrize("files,config,suffix,line,needle", BYTE_ORDER_MARK)
def test_byte_order_mark(files, config, suffix, line, needle, tmp_path):
    assert_rejected(tmp_path, files, config, suffix, line, needle)


@pytest.mark.parametrize("files,config,suffix,line,needle", HEADER_ONLY)
def test_header_without_rows(files, config, suffix, line, needle, tmp_path):
    assert_rejected(tmp_path, files, config, suffix, line, needle)


@pytest.mark.parametrize("files,config,suffix,line,needle", MISSING_COLUMN)
def test_missing_required_column(files, config, suffix, line, needle, tmp_path):
    assert_rejected(tmp_path, files, config, suffix, line, needle)


@pytest.mark.parametrize("files,config,suffix,line,needle", WRONG_TYPE)
def test_id_or_time_column_of_wrong_type(files, config, suffix, line, needle, tmp_path):
    assert_rejected(tmp_path, files, config, suffix, line, needle)


@pytest.mark.parametrize("files,config,suffix,line,needle", EMPTY_VALUE)
def test_missing_value_in_required_column(files, config, suffix, line, needle, tmp_path):
    assert_rejected(tmp_path, files, config, suffix, line, needle)


@pytest.mark.parametrize("files,config,suffix,line,needle", SHORT_ROW)
def test_short_row(files, config, suffix, line, needle, tmp_path):
    assert_rejected(tmp_path, files, config, suffix, line, needle)


@pytest.mark.parametrize("files,config,suffix,line,needle", LONG_ROW)
def test_long_row(files, config, suffix, line, needle, tmp_path):
    assert_rejected(tmp_path, files, config, suffix, line, needle)


@pytest.mark.parametrize("files,config,suffix,line,needle", UNPARSABLE_FIELD)
def test_field_pandas_cannot_parse(files, config, suffix, line, needle, tmp_path):
    assert_rejected(tmp_path, files, config, suffix, line, needle)


@pytest.mark.parametrize("files,config,suffix,line,needle", NON_NUMERIC)
def test_non_numeric_float(files, config, suffix, line, needle, tmp_path):
    assert_rejected(tmp_path, files, config, suffix, line, needle)


def test_required_column_left_out_by_load_col(tmp_path):
    folder = write(tmp_path / "mine", {"inter": inter(), "user": lines(*USER)})
    with pytest.raises(UserInputError, match="mine.user: load_col/unload_col leave out column 'user_id'"):
        validate_atomic_files(settings(folder, load_col={"inter": INTER_COLUMNS, "user": ["age"]}))


def test_shipped_fixtures_pass(workdir, tiny_config):
    """The tiny fixture, alone and with the R2Rec fixture's float_seq feature file."""
    import shutil

    import yaml

    from recbole_lpo.config import Config

    assert validate_atomic_files(Config("SASRec", "tiny", [TINY_YAML], tiny_config())) is None
    shutil.copytree(FIXTURES / "tiny", workdir / "tiny")
    shutil.copy(FIXTURES / "r2rec" / "tiny.itememb", workdir / "tiny")
    itememb = yaml.safe_load((FIXTURES / "r2rec" / "itememb.yaml").read_text())
    config = Config("SASRec", "tiny", [TINY_YAML], tiny_config(data_path=str(workdir), **itememb))
    assert config["additional_feat_suffix"] == ["itememb"]
    assert validate_atomic_files(config) is None


def test_what_recbole_reads_right_passes_and_reads_as_expected(workdir):
    """CRLF and CR line ends, blank lines, a closed quoted value, an empty value in a loaded float column
    other than the time, junk in a column RecBole does not load and in a file it does not load (no 'item'
    in load_col): accepted, and RecBole reads every row."""
    from recbole.data import create_dataset

    from recbole_lpo.config import Config

    rows = [f"{r}\t{i % 5}\tx" for i, r in enumerate(ROWS)]
    rows[2] = 'u1\t"i002"\t1001002\t\t"quoted note"'
    rows[4] = "u1\ti037\t1001004\t4\tNA"
    text = "\r\n".join([HEADER + "\trating:float\tnote:float", *rows[:6], "", "  ", *rows[6:]]) + "\r\n"
    write(workdir / "mine", {"inter": text.replace("\r\n", "\r", 3), "item": BOM + b"item_id:float\n\xff\n"})
    config_dict = {"data_path": str(workdir), "load_col": {"inter": INTER_COLUMNS + ["rating"]}}
    config = Config("SASRec", "mine", [TINY_YAML], config_dict)
    assert validate_atomic_files(config) is None
    dataset = create_dataset(config)
    assert len(dataset.inter_feat) == len(ROWS)
    assert '"i002"' not in dataset.field2id_token["item_id"] and "i002" in dataset.field2id_token["item_id"]
    assert not dataset.inter_feat["rating"].isna().any()  # the empty rating: RecBole's mean


# one case per class through the command line: (name, files, extra YAML, needle, file named)
CLI_CASES = [
    ("encoding", {"inter": inter({5: "u1\ti\xe9\t1001003"}).encode("latin-1")}, "", "line 5: byte 0xE9", "inter"),
    ("bom", {"inter": BOM + inter().encode()}, "", "line 1: the file starts with a UTF-8 byte order mark", "inter"),
    ("header only", {"inter": HEADER + "\n"}, "", "line 1: the header is the only line", "inter"),
    # the default protocol (no properties/dataset/mine.yaml) names a missing .inter column first
    ("missing column", {"inter": inter(header="user_id:token\ttimestamp:float", rows=[without_item(r) for r in ROWS])},
     "", "has no column 'item_id' (ITEM_ID_FIELD)", "inter"),
    ("missing column .user", {"inter": inter(), "user": lines("uid:token\tage:float", USER[1])},
     "load_col: {inter: [user_id, item_id, timestamp], user: '*'}\n", "line 1: no column 'user_id'", "user"),
    ("wrong type", {"inter": inter(header="user_id:token\titem_id:float\ttimestamp:float")}, "",
     "line 1: column 'item_id' (ITEM_ID_FIELD) is typed float", "inter"),
    ("empty value", {"inter": inter({4: "u1\ti002\t"})}, "", "line 4: empty value in column 'timestamp'", "inter"),
    ("short row", {"inter": inter({4: "u1\ti002"})}, "", "line 4: a short row", "inter"),
    ("long row", {"inter": inter({4: "u1\ti002\t1001002\t5"})}, "", "line 4: a long row", "inter"),
    ("long field", {"inter": inter({3: "u1\t" + "x" * 200_000 + "\t1001001"})}, "", "line 3: field 2", "inter"),
    ("quote", {"inter": inter({5: 'u1\t"i003\t1001003'})}, "", "line 5: field 2 (column 'item_id') starts with",
     "inter"),
    ("non-numeric", {"inter": inter(), "item": lines(*ITEM, {4: "i003\tcheap\tgreen scarf"})},
     "load_col: {inter: [user_id, item_id, timestamp], item: [item_id, price]}\n",
     "line 4: column 'price' (float) has non-numeric value 'cheap'", "item"),
]


def _run_cli(workdir, monkeypatch, capsys, files, yaml_text):
    write(workdir / "mine", files)
    config_files = TINY_YAML
    if yaml_text:
        (workdir / "mine.yaml").write_text(yaml_text)
        config_files += f" {workdir / 'mine.yaml'}"
    argv = ["run_recbole_lpo.py", "--model=SASRec", "--dataset=mine", f"--data_path={workdir}",
            f"--config_files={config_files}", f"--checkpoint_dir={workdir / 'saved'}",
            f"--result_dir={workdir / 'results'}"]
    monkeypatch.setattr(sys, "argv", argv)  # RecBole's Config reads sys.argv itself
    before = {p for p in workdir.rglob("*") if p.is_file()}
    code = run_recbole_lpo.main(argv[1:])
    return code, capsys.readouterr().err, before


@pytest.mark.parametrize("name,files,yaml_text,needle,suffix", CLI_CASES, ids=[case[0] for case in CLI_CASES])
def test_command_line_stops_with_one_error_line(name, files, yaml_text, needle, suffix, workdir, monkeypatch, capsys):
    code, err, before = _run_cli(workdir, monkeypatch, capsys, files, yaml_text)
    last = err.rstrip("\n").splitlines()[-1]
    assert code == 2, err
    assert last.startswith(f"error: {workdir / 'mine' / f'mine.{suffix}'}") and needle in last, err
    assert sum(line.startswith("error:") for line in err.splitlines()) == 1 and "Traceback" not in err
    assert {p for p in workdir.rglob("*") if p.is_file()} == before, "bad input left files behind"
    assert not any((workdir / folder).exists() for folder in ("saved", "results", "log_tensorboard"))


def test_command_line_leaves_no_log_folder(workdir, monkeypatch, capsys):
    code, _, _ = _run_cli(workdir, monkeypatch, capsys, {"inter": HEADER + "\n"}, "")
    assert code == 2
    assert not (workdir / "log").exists()
