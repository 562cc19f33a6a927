"""Machine faults and odd text at the I/O layer (issue 18): a read-only or full disk while a stage writes its outputs,
and lone surrogates in input or output text, each end in one UserError naming the path (and record) and the cause;
the partial output is removed and the earlier one kept.

A real read-only data/ runs through the CLI in tests/reliability/test_bad_inputs.py (world-data-read-only); a full
disk cannot be made portably, so its errors are raised here as the OS and the Rust libraries raise them."""

import errno
import json
import os
from pathlib import Path

import pytest

from alignpipe.config import UserError
from alignpipe.utils import io
from alignpipe.utils.io import (
    DataError,
    OutputError,
    atomic_dir,
    atomic_file,
    read_json,
    read_jsonl,
    read_records,
    write_json,
    write_jsonl,
)

NO_SPACE = OSError(errno.ENOSPC, "No space left on device")
RUST_NO_SPACE = Exception('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
                          'left on device" })')
SURROGATE = ("holds a lone surrogate, an unpaired \\ud800-\\udfff escape that is no Unicode character and cannot be "
             "written as UTF-8: remove it, or pair it into one character")


def _earlier(tmp_path: Path) -> Path:
    out = tmp_path / "data" / "world"
    out.mkdir(parents=True)
    (out / "kb.json").write_text("{}\n")
    return out


def _left(tmp_path: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "data").rglob("*"))


def test_an_output_error_is_a_user_error_and_an_os_error():
    assert issubclass(OutputError, UserError) and issubclass(OutputError, OSError)


def test_read_only_directory_fails_in_one_line_naming_the_output(tmp_path, monkeypatch):
    out = _earlier(tmp_path)
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.name.endswith(".partial"):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(OutputError) as caught, atomic_dir(out):
        pytest.fail("the block must not run")
    partial = out.parent / ".world.partial"
    assert str(caught.value) == (f"cannot write {out} ({partial}): Read-only file system [EROFS]; make it writable, "
                                 "then rerun (earlier outputs are left as they were)")
    assert caught.value.errno == errno.EROFS
    assert _left(tmp_path) == ["data/world", "data/world/kb.json"]


@pytest.mark.parametrize("fault", [NO_SPACE, RUST_NO_SPACE], ids=["oserror", "safetensors"])
def test_full_disk_inside_the_block_removes_the_partial_output_and_keeps_the_earlier_one(tmp_path, fault):
    out = _earlier(tmp_path)
    with pytest.raises(OutputError) as caught, atomic_dir(out) as tmp:
        (tmp / "model.safetensors").write_bytes(b"x" * 10)
        raise fault
    assert str(caught.value) == (f"cannot write {out}: No space left on device [ENOSPC]; free disk space, then rerun "
                                 "(earlier outputs are left as they were)")
    assert _left(tmp_path) == ["data/world", "data/world/kb.json"]
    assert (out / "kb.json").read_text() == "{}\n"


def test_full_disk_while_writing_a_file(tmp_path, monkeypatch):
    path = tmp_path / "data" / "gen.jsonl"
    path.parent.mkdir()
    path.write_text('{"old": 1}\n')
    real_open = open

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(io, "open", lambda *a, **k: Full(real_open(*a, **k)), raising=False)
    with pytest.raises(OutputError, match=r"^cannot write \S+/data/gen\.jsonl: No space left on device \[ENOSPC\]; "
                                          r"free disk space, then rerun"):
        write_jsonl(path, [{"a": 1}])
    assert _left(tmp_path) == ["data/gen.jsonl"] and path.read_text() == '{"old": 1}\n'


def test_permission_error_reading_an_input_inside_the_block_stays_itself(tmp_path):
    """Only the output's own paths count as a write fault; an unreadable input is the block's own error."""
    out = tmp_path / "data" / "x"
    with pytest.raises(PermissionError) as caught, atomic_dir(out):
        raise PermissionError(errno.EACCES, "Permission denied", "/elsewhere/input.jsonl")
    assert not isinstance(caught.value, OutputError)
    assert _left(tmp_path) == []


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(KeyError), atomic_file(tmp_path / "x.json") as fh:
        fh.write("{")
        raise KeyError("bug")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------------------
# lone surrogates


def test_a_lone_surrogate_in_a_jsonl_input_names_the_file_line_and_field(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text('{"id": "a", "instruction": "fine \\ud83d\\ude00"}\n'  # a pair: one character, fine
                    '{"id": "b", "prompt": [{"role": "user", "content": "ab\\ud800c"}]}\n')
    with pytest.raises(DataError) as caught:
        read_jsonl(path)
    assert str(caught.value) == f"{path} line 2: field 'prompt.0.content' ('\\ud800' at character 2) {SURROGATE}"
    path.write_text('{"id": "a", "instruction": "fine \\ud83d\\ude00"}\n')
    assert read_jsonl(path) == [{"id": "a", "instruction": "fine \U0001F600"}]


def test_a_lone_surrogate_in_a_json_input_names_the_file_and_record(tmp_path):
    path = tmp_path / "content_constraints.json"
    path.write_text(json.dumps([{"instruction": "ok"}, {"instruction": "x\udc00"}]))
    message = f"{path}: field '1.instruction' ('\\udc00' at character 1) {SURROGATE}"
    for read in (read_json, read_records):
        with pytest.raises(DataError) as caught:
            read(path)
        assert str(caught.value) == message


def test_a_lone_surrogate_written_to_jsonl_names_the_file_and_record_and_writes_nothing(tmp_path):
    path = tmp_path / "generations.jsonl"
    rows = [{"id": "r1", "response": "ok"}, {"id": "r2", "response": "cut \ud83d"}]
    with pytest.raises(DataError) as caught:
        write_jsonl(path, rows)
    assert str(caught.value) == (f"{path} record 2 (id 'r2'): field 'response' ('\\ud83d' at character 4) "
                                 f"{SURROGATE}")
    assert not os.listdir(tmp_path)
    with pytest.raises(DataError, match=r"metrics\.json: field 'note' \('\\ud800' at character 0\) holds a lone"):
        write_json(tmp_path / "metrics.json", {"note": "\ud800"})
    assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------------------------------------------
# a JSON array where JSON Lines is expected


def test_a_json_array_given_for_jsonl_says_so(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps([{"id": "a"}, {"id": "b"}], indent=2))  # pretty-printed: line 1 is "["
    with pytest.raises(DataError) as caught:
        read_jsonl(path)
    assert str(caught.value) == (f"{path} line 1: not valid JSON (Expecting value, column 1): the file holds a JSON "
                                 "array, but JSON Lines is expected (one JSON object per line)")
    path.write_text("\n" + json.dumps([{"id": "a"}, {"id": "b"}]) + "\n")  # on one line: it parses, as a list
    with pytest.raises(DataError) as caught:
        read_jsonl(path)
    assert str(caught.value) == (f"{path} line 2: expected a JSON object, got list: the file holds a JSON array, but "
                                 "JSON Lines is expected (one JSON object per line)")
    path.write_text('{"id": "a"}\n[1]\n')  # a later line that is a list is no array file
    with pytest.raises(DataError) as caught:
        read_jsonl(path)
    assert str(caught.value) == f"{path} line 2: expected a JSON object, got list"


@pytest.mark.parametrize(("err", "expect"), [
    (OSError(errno.ENOSPC, "No space left on device", ".cache/alignpipe/align/ab12/checkpoint-16/optimizer.pt"),
     "cannot write .cache/alignpipe/align/ab12/checkpoint-16/optimizer.pt: No space left on device [ENOSPC]; free "
     "disk space, then rerun (earlier outputs are left as they were; training resumes from its last checkpoint)"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/llm/ab/x.json"),
     "cannot write /mnt/ro/llm/ab/x.json: Read-only file system [EROFS]; make it writable, then rerun"),
    (OSError(errno.EACCES, "Permission denied", "/work/.cache"),
     "cannot write /work/.cache: no permission [EACCES]; make it accessible, then rerun"),
    (RUST_NO_SPACE, "cannot write a file of the stage (its outputs, checkpoints or caches): No space left on device "
                    "[ENOSPC]; free disk space"),
    (RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file data/3: file "
                  "write failed"), "cannot write a tensor file (torch.save: writing data/3 failed, most often a full "
                                   "disk); free disk space, then rerun"),
], ids=["enospc", "erofs", "eacces", "rust-enospc", "torch-save"])
def test_a_write_fault_met_mid_run_is_one_line(err, expect):
    fault = io.machine_fault(err)
    assert isinstance(fault, OutputError) and isinstance(fault, UserError)
    assert str(fault).startswith(expect), str(fault)


@pytest.mark.parametrize("err", [OSError(errno.ENOENT, "No such file", "x"), ValueError("bad"),
                                 RuntimeError("CUDA out of memory")], ids=["enoent", "value", "other"])
def test_other_errors_are_not_machine_faults(err):
    assert io.machine_fault(err) is None
