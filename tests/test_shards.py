"""The input and output of `minie5 embed --ray`, without a cluster: shards, ids, bad rows, OUTDIR.

Every function here runs in the test process; the Ray jobs that call them on
a cluster are in tests/test_distributed.py. Rows read through shards must be
the very texts files.TextFile reads for `minie5 embed -i FILE`.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pytest.importorskip("ray")
import pyarrow.parquet as pq  # noqa: E402

from minie5.distributed import shards as sh  # noqa: E402
from minie5.errors import InputError  # noqa: E402
from minie5.io.files import TextFile  # noqa: E402


def text_spec(**kw):
    return sh.ReadSpec(format="text", field="text", id_field=None, **kw)


def jsonl_spec(id_field=None, keep=()):
    return sh.ReadSpec(format="jsonl", field="text", id_field=id_field, keep=tuple(keep))


def scan_and_locate(files, spec, shard_bytes=sh.SHARD_BYTES):
    """What the job does before it embeds: shards, scans (here, not on Ray), then their place in the input."""
    shards = sh.plan_shards(files, spec, shard_bytes=shard_bytes)
    scans = [sh.scan_shard(shard, spec) for shard in shards]
    return sh.locate(shards, scans, spec), scans


def read_all(shards, spec, keep_schema=None):
    return pa.concat_tables([sh.read_shard(shard, spec, keep_schema) for shard in shards])


# ---------------------------------------------------------------- files
def test_list_inputs_file_directory_glob(tmp_path):
    for name in ("b.txt", "a.txt", "_SUCCESS", ".hidden.txt", "sub/c.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x\n")
    assert sh.list_inputs(str(tmp_path / "a.txt")) == [str(tmp_path / "a.txt")]
    assert sh.list_inputs(str(tmp_path)) == [str(tmp_path / n) for n in ("a.txt", "b.txt", "sub/c.txt")]
    assert sh.list_inputs(str(tmp_path / "*.txt")) == [str(tmp_path / n) for n in ("a.txt", "b.txt")]
    with pytest.raises(InputError, match="matches no file"):
        sh.list_inputs(str(tmp_path / "*.jsonl"))
    with pytest.raises(InputError, match="no such file or directory"):
        sh.list_inputs(str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="different formats: .*a.txt is text, .*d.jsonl is jsonl"):
        (tmp_path / "d.jsonl").write_text("{}\n")
        sh.input_format([str(tmp_path / "a.txt"), str(tmp_path / "d.jsonl")], None)


# ---------------------------------------------------------------- text and JSON Lines
def test_text_shards_read_what_textfile_reads_with_row_numbers_as_ids(tmp_path):
    """Lines split over many small shards: BOM, CRLF, blank lines, no final line end, two files in turn."""
    first = tmp_path / "a.txt"
    first.write_bytes(b"\xef\xbb\xbfone\r\n\n" + "".join(f"line {i} é\n" for i in range(200)).encode() + b"last")
    second = tmp_path / "b.txt"
    second.write_bytes(b"\xef\xbb\xbfsecond file keeps this BOM? no, a BOM starts only a file\nx\n")
    shards, scans = scan_and_locate([str(first), str(second)], text_spec(), shard_bytes=100)
    assert len(shards) > 10 and sum(s.rows for s in shards) == 205
    table = read_all(shards, text_spec())
    expected = []
    for path in (first, second):
        source = TextFile(str(path))
        source.scan()
        expected += list(source.texts())
    assert table.column("text").to_pylist() == expected
    assert table.column("id").to_pylist() == list(range(205))
    assert (shards[-1].path, shards[-1].first_line, shards[-1].first_row) == (str(second), 1, 203)  # per file


def test_bad_lines_name_their_file_and_line_in_any_shard(tmp_path):
    path = tmp_path / "docs.jsonl"
    lines = [json.dumps({"text": f"t{i}", "id": i}) for i in range(50)]
    lines[37] = '{"text": "unterminated'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"docs.jsonl: line 38: not valid JSON"):
        scan_and_locate([str(path)], jsonl_spec(), shard_bytes=64)
    path.write_bytes(b"fine\nbad \xff byte\n")
    with pytest.raises(InputError, match=r"line 2: not valid UTF-8: byte 0xff"):
        scan_and_locate([str(path)], text_spec())
    shards, scans = scan_and_locate([str(path)], text_spec(errors="replace"))
    assert scans[0].replaced == [1] and read_all(shards, text_spec(errors="replace"))["text"][1].as_py() == "bad \ufffd byte"


@pytest.mark.parametrize("record, message", [
    ({"body": "x"}, r"line 3: no 'text' field \(fields: 'body'\)"),
    ({"text": None}, r"line 3: field 'text' is a JSON null, expected a string"),
    ({"text": 7}, r"line 3: field 'text' is a JSON number, expected a string"),
])
def test_missing_null_or_non_string_text(tmp_path, record, message):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"text": "a"}, {"text": "b"}, record]) + "\n")
    with pytest.raises(InputError, match=message):
        scan_and_locate([str(path)], jsonl_spec())


@pytest.mark.parametrize("records, message", [
    ([{"text": "a", "doc": 1}, {"text": "b"}], r"line 2: no 'doc' field .*choose the id with --id-field"),
    ([{"text": "a", "doc": 1.5}], r"line 1: field 'doc' is a JSON number; an id must be a string or an integer"),
    ([{"text": "a", "doc": None}], r"line 1: field 'doc' is a JSON null"),
    ([{"text": "a", "doc": 1}, {"text": "b", "doc": "2"}], r"line 2: field 'doc' is a string here and an integer"),
])
def test_bad_ids(tmp_path, records, message):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    with pytest.raises(InputError, match=message):
        scan_and_locate([str(path)], jsonl_spec(id_field="doc"))


def test_duplicate_ids_name_both_rows(tmp_path):
    from minie5.distributed.ray_command import collect_ids

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("\n".join(json.dumps({"text": "t", "doc": f"d{i}"}) for i in range(5)) + "\n")
    b.write_text("\n".join(json.dumps({"text": "t", "doc": d}) for d in ("x", "d3", "y")) + "\n")
    spec = jsonl_spec(id_field="doc")
    shards, scans = scan_and_locate([str(a), str(b)], spec)
    with pytest.raises(InputError, match=r"the id 'd3' appears more than once: .*a.jsonl line 4 and .*b.jsonl line 2"):
        collect_ids(shards, scans, spec)


def test_id_field_and_kept_columns_of_json_lines(tmp_path):
    from minie5.distributed.ray_command import collect_ids, keep_columns_schema

    path = tmp_path / "docs.jsonl"
    records = [{"text": f"t{i}", "doc": f"d{i}", "n": i, "title": None if i % 2 else f"T{i}"} for i in range(30)]
    records[5]["n"] = 2.5  # an integer field with one float: float64 throughout
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    spec = jsonl_spec(id_field="doc", keep=("n", "title"))
    shards, scans = scan_and_locate([str(path)], spec, shard_bytes=200)
    ids = collect_ids(shards, scans, spec)
    schema = keep_columns_schema([str(path)], shards, scans, spec)
    table = read_all(shards, spec, schema)
    assert ids.ids.to_pylist() == table.column("id").to_pylist() == [r["doc"] for r in records]
    assert table.column("n").type == pa.float64() and table.column("n").to_pylist()[5] == 2.5
    assert table.column("title").to_pylist() == [r["title"] for r in records]
    other = tmp_path / "more.jsonl"
    other.write_text(json.dumps({"text": "t", "doc": "e", "n": "seven"}) + "\n")
    with pytest.raises(InputError, match=r"--keep-columns n: double in .*docs.jsonl but string in .*more.jsonl"):
        shards, scans = scan_and_locate([str(path), str(other)], spec)
        keep_columns_schema([str(path), str(other)], shards, scans, spec)
    records[7]["n"] = "seven"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    with pytest.raises(InputError, match=r"line 8: field 'n' is a JSON string here and a JSON number in earlier rows"):
        scan_and_locate([str(path)], spec)
    with pytest.raises(InputError, match="no row of the input has a 'missing' field"):
        spec = jsonl_spec(keep=("missing",))
        shards, scans = scan_and_locate([str(path)], spec)
        keep_columns_schema([str(path)], shards, scans, spec)


def test_read_shard_leaves_out_the_rows_already_done(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("".join(f"t{i}\n" for i in range(10)))
    shards, _ = scan_and_locate([str(path)], text_spec())
    skip = np.zeros(10, dtype=bool)
    skip[[0, 3, 9]] = True
    table = sh.read_shard(shards[0], text_spec(), None, skip)
    assert table.column("id").to_pylist() == [1, 2, 4, 5, 6, 7, 8]
    assert table.column("text").to_pylist() == [f"t{i}" for i in (1, 2, 4, 5, 6, 7, 8)]


def test_column_names_that_clash():
    for spec, message in [(text_spec(keep=("a",)), "need JSON Lines or Parquet"),
                          (sh.ReadSpec("jsonl", "id", None), "'id' is an output column"),
                          (jsonl_spec(keep=("embedding",)), "--keep-columns embedding"),
                          (jsonl_spec(id_field="doc", keep=("doc",)), "--keep-columns doc"),
                          (sh.ReadSpec("jsonl", "text", "text"), "--id-field text: that is the text field")]:
        with pytest.raises(InputError, match=message):
            sh.check_columns(spec)


# ---------------------------------------------------------------- Parquet
def write_parquet(path, table, row_group_size=None):
    pq.write_table(table, path, row_group_size=row_group_size)
    return str(path)


def test_parquet_row_groups_are_shards_with_row_numbers(tmp_path):
    a = write_parquet(tmp_path / "a.parquet", pa.table({"text": [f"a{i}" for i in range(25)],
                                                        "n": pa.array(range(25), pa.int32())}), row_group_size=10)
    b = write_parquet(tmp_path / "b.parquet", pa.table({"text": ["b0", "b1"], "n": pa.array([7, 8], pa.int64())}))
    spec = sh.ReadSpec("parquet", "text", None, ("n",))
    shards, _ = scan_and_locate([a, b], spec)
    assert [s.rows for s in shards] == [10, 10, 5, 2] and [s.first_line for s in shards] == [0, 10, 20, 0]
    table = read_all(shards, spec, sh.keep_schema_of([a, b], spec))
    assert table.column("id").to_pylist() == list(range(27))
    assert table.column("text").to_pylist() == [f"a{i}" for i in range(25)] + ["b0", "b1"]
    assert table.column("n").type == pa.int64()


def test_bad_parquet_inputs_name_the_file_and_row(tmp_path):
    good = {"text": ["a", "b", "c"], "doc": ["x", "y", "z"]}
    spec = sh.ReadSpec("parquet", "text", "doc")
    path = write_parquet(tmp_path / "no_text.parquet", pa.table({"body": ["a"], "doc": ["x"]}))
    with pytest.raises(InputError, match=r"no_text.parquet: no column 'text' \(columns: 'body', 'doc'\); choose one "
                                         r"with --field"):
        scan_and_locate([path], spec)
    path = write_parquet(tmp_path / "no_id.parquet", pa.table({"text": ["a"]}))
    with pytest.raises(InputError, match=r"no_id.parquet: no column 'doc' .*--id-field"):
        scan_and_locate([path], spec)
    path = write_parquet(tmp_path / "ints.parquet", pa.table({"text": [1, 2], "doc": ["x", "y"]}))
    with pytest.raises(InputError, match=r"ints.parquet: column 'text' holds int64, expected strings"):
        scan_and_locate([path], spec)
    path = write_parquet(tmp_path / "null.parquet", pa.table({**good, "text": ["a", None, "c"]}))
    with pytest.raises(InputError, match=r"null.parquet: row index 1: the text in column 'text' is null"):
        scan_and_locate([path], spec)
    path = write_parquet(tmp_path / "float_id.parquet", pa.table({"text": ["a"], "doc": [1.5]}))
    with pytest.raises(InputError, match=r"float_id.parquet: column 'doc' holds double; ids must be integers or"):
        scan_and_locate([path], spec)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not a Parquet file")
    with pytest.raises(InputError, match=r"broken.parquet: not a readable Parquet file"):
        scan_and_locate([str(broken)], spec)


def test_parquet_scan_reads_the_text_only_where_the_metadata_has_no_null_count(tmp_path, monkeypatch):
    """The scan's null check on the text comes from the row groups' statistics when the file has them."""
    read = []
    original = pq.ParquetFile.read_row_groups
    monkeypatch.setattr(pq.ParquetFile, "read_row_groups",
                        lambda self, groups, columns=None, **kw: read.append(columns) or original(self, groups, columns,
                                                                                                  **kw))
    table = pa.table({"text": [f"t{i}" for i in range(30)], "doc": [f"d{i}" for i in range(30)]})
    with_stats = write_parquet(tmp_path / "stats.parquet", table, row_group_size=10)
    shards, scans = scan_and_locate([with_stats], sh.ReadSpec("parquet", "text", "doc"))
    assert read == [["doc"]] * 3 and [s.rows for s in scans] == [10, 10, 10]
    assert pa.chunked_array([s.ids for s in scans]).to_pylist() == table.column("doc").to_pylist()
    read.clear()
    scan_and_locate([with_stats], sh.ReadSpec("parquet", "text", None))
    assert read == []  # without --id-field, the metadata alone gives the rows and the nulls
    no_stats = str(tmp_path / "no_stats.parquet")
    pq.write_table(pa.table({"text": ["a", "b", None]}), no_stats, write_statistics=False)
    with pytest.raises(InputError, match=r"no_stats.parquet: row index 2: the text in column 'text' is null"):
        scan_and_locate([no_stats], sh.ReadSpec("parquet", "text", None))
    assert read == [["text"]]


# ---------------------------------------------------------------- OUTDIR
def output_file(directory, name, ids, dim=3):
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(len(ids) * dim, dtype=np.float32)), dim)
    pq.write_table(pa.table({"id": ids, "embedding": vectors}), directory / name)


def test_outdir_must_be_empty_or_the_same_job(tmp_path):
    from minie5.distributed.ray_command import MANIFEST, OutputDir

    job = {"minie5_job": 1, "model": "m", "inputs": [{"path": "/in.txt", "bytes": 3}]}
    outdir = OutputDir(str(tmp_path / "out"))
    outdir.check(job, resume=False)  # new: fine
    outdir.check(job, resume=True)  # nothing to resume: fine
    outdir.start(job)
    with pytest.raises(InputError, match=r"holds the output of a minie5 job .*add --resume"):
        outdir.check(job, resume=False)
    outdir.check(job, resume=True)
    with pytest.raises(InputError, match=r"holds the output of another job \(--model: 'm' then, 'other' now\)"):
        outdir.check({**job, "model": "other"}, resume=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "part-0.parquet").write_text("someone else's")
    with pytest.raises(InputError, match=r"not empty \(part-0.parquet\)"):
        OutputDir(str(other)).check(job, resume=False)
    with pytest.raises(InputError, match=rf"holds files that no minie5 job wrote \(no {MANIFEST}"):
        OutputDir(str(other)).check(job, resume=True)


def test_unfinished_files_are_moved_aside_and_duplicates_removed(tmp_path):
    from minie5.distributed.ray_command import PARTIAL_DIR, OutputDir, remove_duplicates, written_rows

    output_file(tmp_path, "a.parquet", [0, 1, 2])
    output_file(tmp_path, "b.parquet", [2, 3, 3, 4])  # 2 is in a.parquet too, 3 twice here
    (tmp_path / "c.parquet").write_bytes((tmp_path / "a.parquet").read_bytes()[:-20])  # a killed writer's file
    outdir = OutputDir(str(tmp_path))
    found, unexpected = written_rows(outdir.written_ids()[0], None, rows=6)
    assert sorted(np.concatenate(found)) == [0, 1, 2, 2, 3, 3, 4] and unexpected == []
    assert (tmp_path / PARTIAL_DIR / "c.parquet").exists() and not (tmp_path / "c.parquet").exists()
    assert remove_duplicates(outdir, None, rows=6) == 2
    assert pq.read_table(tmp_path / "b.parquet").column("id").to_pylist() == [3, 4]
    assert pq.read_table(tmp_path / "b.parquet").column("embedding").to_pylist()[0] == [3.0, 4.0, 5.0]  # row 1 kept
    found, _ = written_rows(outdir.written_ids()[0], None, rows=6)
    assert sorted(np.concatenate(found)) == [0, 1, 2, 3, 4]
    output_file(tmp_path, "d.parquet", [17])
    assert written_rows(outdir.written_ids()[0], None, rows=6)[1] == [17]  # not an id of this input


def test_string_ids_map_to_their_rows(tmp_path):
    from minie5.distributed.id_index import IdIndex
    from minie5.distributed.ray_command import OutputDir, written_rows

    output_file(tmp_path, "a.parquet", ["y", "zz", "x"])
    ids = pa.array(["x", "y", "z"])
    found, unexpected = written_rows(OutputDir(str(tmp_path)).written_ids()[0], IdIndex(ids), rows=3)
    assert sorted(np.concatenate(found)) == [0, 1] and unexpected == ["zz"]


def test_summary_counts_missing_and_repeated_ids(tmp_path, capsys):
    from minie5.distributed.ray_command import OutputDir, summarize

    output_file(tmp_path, "a.parquet", [0, 1, 1])
    code = summarize(OutputDir(str(tmp_path)), None, rows=4, before=0, actors=[], seconds=1.0, removed=0,
                     quiet=True)
    err = capsys.readouterr().err
    assert code == 2 and "2 ids missing (2, 3)" in err and "1 ids written more than once (1)" in err


@pytest.mark.parametrize("ids", ["string", "int"])
def test_id_bookkeeping_hashes_the_input_ids_once_whatever_the_number_of_files(tmp_path, monkeypatch, ids):
    """Linear bookkeeping, counted: the input's ids are hashed once per command (IdIndex, at the id checks),
    and every pass looks the ids of OUTDIR's files up in that index, for 2 files as for 40: no hash set per
    pass or per file (pc.index_in is never called), and a file written in input order costs one hashed id
    (its first), not one per row."""
    from minie5.distributed import id_index, ray_command
    from minie5.distributed.ray_command import OutputDir, done_rows, remove_duplicates, summarize, written_rows

    builds = []
    hash_keys = id_index.hash_keys
    monkeypatch.setattr(id_index, "hash_keys", lambda *a: builds.append(1) or hash_keys(*a))
    monkeypatch.setattr(ray_command.pc, "index_in", lambda *a, **kw: pytest.fail("a hash set built in a pass"))
    rows = 4000
    ids = pa.array([f"doc-{i}" for i in range(rows)] if ids == "string" else list(range(10**9, 10**9 + rows)))
    input_ids = id_index.IdIndex(ids)
    assert builds == [1] and len(input_ids.repeated()) == 0
    for files in (2, 40):
        outdir = OutputDir(str(tmp_path / f"out{files}"))
        outdir.path.mkdir()
        for number, part in enumerate(np.array_split(np.arange(rows), files)):
            output_file(outdir.path, f"part-{number:03d}.parquet", ids.take(pa.array(part)))
        output_file(outdir.path, "part-999.parquet", ids.take(pa.array([5])))  # one row written twice
        input_ids.hashed = 0
        found, unexpected = written_rows(outdir.written_ids()[0], input_ids, rows)
        assert sum(map(len, found)) == rows + 1 and unexpected == []
        assert input_ids.hashed == files + 1  # each file's first id; the rest follow in input order
        assert remove_duplicates(outdir, input_ids, rows) == 1 and input_ids.hashed == 2 * (files + 1)
        assert summarize(outdir, input_ids, rows, before=0, actors=[], seconds=1.0, removed=1, quiet=True) == 0
        # the same OutputDir remembers what its passes found: unchanged files are not looked up again, and
        # the file that remove_duplicates rewrote (now empty) was read again by the summary
        assert input_ids.hashed == 2 * (files + 1)
        assert done_rows(outdir, input_ids, rows, quiet=True).all() and input_ids.hashed == 2 * (files + 1)
        output_file(outdir.path, "part-999.parquet", ids.take(pa.array([7, 8])))  # changed: read again
        assert done_rows(outdir, input_ids, rows, quiet=True).all() and input_ids.hashed == 2 * (files + 1) + 1
        assert remove_duplicates(outdir, input_ids, rows) == 2 and input_ids.hashed == 2 * (files + 1) + 1
    assert builds == [1]


def test_stages_count_the_collectors_time_in_the_stage_that_paid_it():
    import gc

    from minie5.distributed.ray_command import STAGES, Stages
    stages = Stages()
    callbacks = list(gc.callbacks)
    with stages.timing("scan"):
        cycles = []
        for _ in range(20_000):  # objects in reference cycles: a full collection has work to do
            node = {}
            node["self"] = node
            cycles.append(node)
        del cycles, node
        gc.collect()
    with stages.timing("summary"):
        pass
    assert gc.callbacks == callbacks  # the callback is there only while a stage is timed
    assert 0 < stages.gc_seconds["scan"] <= stages.seconds["scan"]
    assert stages.gc_seconds["summary"] == 0.0
    assert all(f"{stage} " in stages.line() for stage in STAGES) and "gc " in stages.line()
