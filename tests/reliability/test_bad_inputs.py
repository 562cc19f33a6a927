"""Bad input, stage by stage (issue 8, property 6): one table row per broken input, each run through the real CLI.

Every row breaks one thing (a params key, a data file, a model path, a judge's outputs) in a temporary project
(params.yaml and data/ of a tiny world, a tiny random Llama as base and SFT model, real pairs and stored
reference log-probs), runs ``python -m flows.<stage>`` there and checks that the stage

- exits with status 2 and writes ONE line ``error in stage '<stage>': <message>``, the last on stderr, with no
  traceback anywhere (Prefect's own failure log keeps to one line too);
- says precisely what is wrong: the message names the key or the file and line, and the bad value or what is
  allowed (each row's regex asks for both);
- leaves earlier outputs untouched: every file under data/ is byte-identical afterwards and nothing new
  appeared there (no output, no leftover ``.partial``).

Params rows fail before Prefect starts (a minimal params file, ~2 s each). The others run their flow against
one Prefect server started for the module. Judge outputs are the judge role's real ones: the hf backend on the
tiny random model (it answers empty text), then the same cached answers rewritten to prose without scores / a
refusal, read back through the roles' disk cache (the path a rerun takes).

    PYTHONPATH=src:. python -m pytest tests/reliability/test_bad_inputs.py -q
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from alignpipe.profile import apply_profile, deep_merge
from alignpipe_ops import runlog

pytestmark = pytest.mark.fault
REPO = Path(__file__).resolve().parents[2]
JUDGE_MODEL = "{root}/data/sft/model"
REFUSAL = "I'm sorry, but I can't rate this response."
PROSE = "The response is fluent and mostly accurate, though a little short."  # no "Fluency: <n>" lines


@dataclass
class Case:
    """One bad input: what breaks it and what the one error line must say."""

    id: str
    stage: str
    expect: str  # regex of the message after "error in stage '<stage>': "
    params: dict[str, Any] | str | None = None  # dict: merged over the project's params; str: the whole file
    args: tuple[str, ...] = ()
    setup: Callable[[Path], None] | None = None  # breaks files (under data/ or inputs/) before the run
    forbid: tuple[str, ...] = ()  # text that must not appear in the output (a pasted secret)
    flow: bool = field(init=False)

    def __post_init__(self):
        self.flow = not isinstance(self.params, str)  # a whole (minimal) params file: fails before Prefect


# ----------------------------------------------------------------------------------------------------------------
# ways to break a file


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def edit_record(rel: str, lineno: int, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        path = root / rel
        lines = _lines(path)
        row = json.loads(lines[lineno - 1])
        change(row)
        lines[lineno - 1] = json.dumps(row) + "\n"
        path.write_text("".join(lines), encoding="utf-8")

    return setup


def write_bytes(rel: str, data: bytes) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)

    return setup


def non_utf8_line(rel: str, lineno: int) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        path = root / rel
        raw = path.read_bytes().splitlines(keepends=True)
        raw[lineno - 1] = raw[lineno - 1].replace(b'"', b'"\xff', 1)  # a Latin-1 byte inside the first string
        path.write_bytes(b"".join(raw))

    return setup


def remove(rel: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        target = root / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return setup


def truncate(rel: str) -> Callable[[Path], None]:
    """Cut a file to half its size (a copy interrupted, a disk that filled up while it was written)."""

    def setup(root: Path) -> None:
        data = (root / rel).read_bytes()
        (root / rel).write_bytes(data[: len(data) // 2])

    return setup


def copy_dir(src: str, dst: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        shutil.copytree(root / src, root / dst)

    return setup


def read_only(rel: str) -> Callable[[Path], None]:
    """Make a directory unwritable: mode 0555, and where that does not bind (root) the immutable attribute; the row
    is skipped where neither works. :func:`_restore` makes it writable again."""

    def setup(root: Path) -> None:
        target = root / rel
        target.chmod(0o555)
        if _writable(target) and shutil.which("chattr"):
            subprocess.run(["chattr", "+i", str(target)], capture_output=True)
        if _writable(target):
            pytest.skip(f"cannot make {target} read-only here (root without chattr)")

    return setup


def _writable(directory: Path) -> bool:
    probe = directory / ".probe"
    try:
        probe.mkdir()
    except OSError:
        return False
    probe.rmdir()
    return True


def _make_writable(directory: Path) -> None:
    if shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(directory)], capture_output=True)
    directory.chmod(0o755)


def model_without_tokenizer(rel: str) -> Callable[[Path], None]:
    """The base model's config and weights copied to ``rel``, its tokenizer files left behind."""

    def setup(root: Path) -> None:
        (root / rel).mkdir(parents=True)
        for name in ("config.json", "generation_config.json", "model.safetensors"):
            if (root / "data/base/model" / name).is_file():
                shutil.copy2(root / "data/base/model" / name, root / rel / name)

    return setup


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        for s in setups:
            s(root)

    return setup


PAGES = [{"webpage": f"# Harbor town {i}\n\nVelmora has an old bridge and a market by the river."} for i in range(3)]
PAGES_JSONL = "".join(json.dumps(p) + "\n" for p in PAGES).encode()


def pages_with(lineno: int, line: bytes) -> Callable[[Path], None]:
    """inputs/pages.jsonl (synthesize.webr.input) with line ``lineno`` replaced."""
    raw = PAGES_JSONL.splitlines(keepends=True)
    raw[lineno - 1] = line
    return write_bytes("inputs/pages.jsonl", b"".join(raw))


def mask_of_other_model(root: Path) -> None:
    """A neurons-stage mask file made for a 2-layer hidden-16 Llama (the project's model: 3 layers, hidden 32)."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    other = LlamaForCausalLM(LlamaConfig(vocab_size=400, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True))
    masks = {n: torch.ones_like(p, dtype=torch.uint8) for n, p in other.named_parameters()}
    (root / "data/neurons/masks").mkdir(parents=True, exist_ok=True)
    save_file(masks, str(root / "data/neurons/masks/mask_r5.safetensors"))


def mask_with_scores(root: Path) -> None:
    """A mask file of the project's own model whose one tensor holds a score (0.375) among its 0/1 values."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(root / "data/sft/model")
    masks = {n: torch.ones_like(p, dtype=torch.uint8) for n, p in model.named_parameters()}
    scores = torch.zeros_like(masks["model.layers.1.mlp.up_proj.weight"], dtype=torch.float32)
    scores[0, :2] = torch.tensor([0.375, 1.0])
    masks["model.layers.1.mlp.up_proj.weight"] = scores
    (root / "data/neurons/masks").mkdir(parents=True, exist_ok=True)
    save_file(masks, str(root / "data/neurons/masks/mask_r5.safetensors"))


def followbench_dir(valid: bool) -> Callable[[Path], None]:
    """inputs/fb/: content_constraints.json missing (valid=False: present but cut off mid-array)."""

    def setup(root: Path) -> None:
        directory = root / "inputs/fb"
        directory.mkdir(parents=True, exist_ok=True)
        if not valid:
            text = json.dumps([{"example_id": 1, "category": "content", "level": 0, "instruction": "Describe it."},
                               {"example_id": 1, "category": "content", "level": 1, "instruction": "Descr"}], indent=1)
            (directory / "content_constraints.json").write_text(text[: len(text) // 2], encoding="utf-8")

    return setup


def report_inputs(sft_metrics: str) -> Callable[[Path], None]:
    """data/evaluate/{base,sft}/metrics.json as the report reads them; sft's is ``sft_metrics``."""

    def setup(root: Path) -> None:
        for name, text in (("base", '{"hsr_avg": 0.1}\n'), ("sft", sft_metrics)):
            (root / "data/evaluate" / name).mkdir(parents=True, exist_ok=True)
            (root / "data/evaluate" / name / "metrics.json").write_text(text, encoding="utf-8")

    return setup


def judge_outputs(text: str) -> Callable[[Path], None]:
    """Every cached judge answer rewritten to ``text`` (the run that filled the cache happens first if needed)."""

    def setup(root: Path) -> None:
        entries = _judge_cache(root)
        if not entries:  # this row runs alone: fill the cache with the judge's real answers first
            _run(root, "evaluate", JUDGE_ARGS, JUDGED, _SERVER["api"])
            entries = _judge_cache(root)
        assert entries, "the judge run left no cached answers"
        for path in entries:
            blob = json.loads(path.read_text(encoding="utf-8"))
            blob["completion"]["text"] = text
            path.write_text(json.dumps(blob), encoding="utf-8")

    return setup


def _judge_cache(root: Path) -> list[Path]:
    entries = sorted((root / ".cache/llm").glob("*/*.json"))
    return [p for p in entries if json.loads(p.read_text(encoding="utf-8"))["template"] == "judge_score.v1"]


# ----------------------------------------------------------------------------------------------------------------
# the table

LIM = r"over roles\.max_unusable_fraction = 0\.5"
JUDGED = {"evaluate": {"judge": "roles"},
          "roles": {"judge": {"backend": "hf", "model": JUDGE_MODEL, "max_tokens": 8, "temperature": 0.0}}}
ALLO_MASKED = {"align": {"allo_variants": {"masked": {"peft": "none", "allo": {
    "forget": False, "learn_ratio": 5, "token_weights": False, "top_eps": 1.0}}}}}
NO_LION = {"synthesize": {"lion": {"enabled": False}, "webr": {"input": "{root}/inputs/pages.jsonl"}}}
EVAL = ("--name", "x", "--model-dir", "data/sft/model")
JUDGE_ARGS = ("--name", "judged", "--model-dir", "data/sft/model")
_SERVER: dict[str, str] = {}  # the module's Prefect API URL, for setups that run a stage themselves

CASES = [
    # params: unknown key, wrong type, out of range, inconsistent values (whole-file validation, before Prefect)
    Case("params-unknown-key", "world", r"params\.yaml: unknown key 'world\.n_entitis' \(did you mean 'n_entities'\?\); "
         r"allowed keys here: \[.*'n_entities'", "world:\n  n_entitis: 3\n"),
    Case("params-wrong-type", "world", r"world\.n_entities = 'many': Input should be a valid integer",
         "world:\n  n_entities: many\n"),
    Case("params-out-of-range", "world", r"base\.block_size = 4: Input should be greater than or equal to 16",
         "base:\n  block_size: 4\n"),
    Case("params-not-yaml", "world", r"params\.yaml line 3, column 5: not valid YAML \(while parsing a flow sequence "
         r"at line 2, column 15: expected ',' or '\]', but got ':'\)", "world:\n  n_entities: [12\nseed: 1\n"),
    Case("params-duplicate-section", "world", r"^\S*params\.yaml: key 'world' is written twice \(lines 1 and 4\); "
         r"YAML would keep only the last one and drop the other's values silently: write each key once \(merge the "
         r"two into one\)$", "world:\n  n_entities: 12\nseed: 1\nworld:\n  corpus_paraphrases: 2\n"),
    Case("params-duplicate-key", "world", r"^\S*params\.yaml: key 'sft\.trainer\.learning_rate' is written twice "
         r"\(lines 3 and 5\); YAML would keep only the last one", "sft:\n  trainer:\n    learning_rate: 1.0e-4\n"
         "    max_steps: 2\n    learning_rate: 2.0e-4\n"),
    Case("params-empty", "world", r"^\S*params\.yaml: file is empty \(only blank lines or comments\); a params file "
         r"must hold the sections to set, e\.g\. 'seed: 0' \(an empty one would run every stage on defaults "
         r"silently\)$", ""),
    Case("params-only-comments", "world", r"^\S*params\.yaml: file is empty \(only blank lines or comments\)",
         "# world:\n#   n_entities: 12\n\n"),
    Case("params-trainer-typo", "world", r"sft\.trainer\.learnig_rate = 0\.0001: unknown key for SFTConfig; did you mean "
         r"\['learning_rate'", "sft:\n  trainer: {learnig_rate: 1.0e-4}\n"),
    Case("params-sft-source", "world", r"sft\.data\.1 = 'wiki': Input should be 'seed', 'webr' or 'lion'",
         "sft:\n  data: [seed, wiki]\n"),
    Case("params-pref-levels", "world", r"preferences\.levels = \[0, 7\]: levels \[7\] not allowed: choose from "
         r"\[0, 1, 2, 3, 4, 5\]", "preferences:\n  levels: [0, 7]\n"),
    Case("params-block-without-lora", "world", r"align\.variants\.bad = \{'peft': 'none', 'block': 'local'\}: "
         r"block 'local' needs peft: lora", "align:\n  variants:\n    bad: {peft: none, block: local}\n"),
    Case("params-layers-repeat", "world", r"align\.variants\.bad = .*: layers \[1, 1\]: must be distinct non-negative",
         "align:\n  variants:\n    bad: {peft: lora, layers: [1, 1]}\n"),
    Case("params-allo-ratio", "world", r"^\S*params\.yaml: align\.variants\.bad\.allo\.learn_ratio = 7\.0: not among "
         r"neurons\.ratios \[5\.0, 10\.0\]",
         "align:\n  variants:\n    bad: {peft: none, allo: {forget: false, learn_ratio: 7}}\n"),
    Case("params-neuron-ratio", "world", r"neurons\.ratios = \[0, 5\]: ratios \[0\.0\]: each must be a percentage in "
         r"\(0, 100\]", "neurons:\n  ratios: [0, 5]\n"),
    Case("params-eval-levels", "world", r"evaluate\.levels = \[0, 6\]: levels \[0, 6\] not allowed: choose from "
         r"\[1, 2, 3, 4, 5\]", "evaluate:\n  levels: [0, 6]\n"),
    Case("params-fb-category", "world", r"evaluate\.followbench\.categories\.1 = 'poetry': Input should be 'content', "
         r"'situation', 'style', 'format', 'example' or 'mixed'",
         "evaluate:\n  followbench:\n    categories: [content, poetry]\n"),
    Case("params-report-labels", "world", r"report\.labels names \['nope'\], which are not evaluated models "
         r"\['base', 'sft'\]", "report:\n  labels: {nope: Nope}\n"),
    Case("params-edits-knowedit", "world", r"edits = .*: source 'knowedit' needs train_files and eval_files",
         "edits:\n  source: knowedit\n"),
    Case("params-unusable-limit", "world", r"roles\.max_unusable_fraction = 1\.5: Input should be less than or equal "
         r"to 1", "roles:\n  max_unusable_fraction: 1.5\n"),
    Case("params-pasted-api-key", "world", r"roles\.judge\.api_key_env = '<redacted>': must be the NAME of an "
         r"environment variable", "roles:\n  judge: {backend: openai, base_url: 'http://127.0.0.1:9/v1', model: m, "
         "api_key_env: sk-live-0123456789}\n", forbid=("sk-live-0123456789",)),
    # the machine: outputs that cannot be written (a full disk: tests/unit/test_io_faults.py)
    Case("world-data-read-only", "world", r"^cannot write data/world \(data/\.world\.partial\): (Permission denied "
         r"\[EACCES\]|Operation not permitted \[EPERM\]); make it writable, then rerun \(earlier outputs are left as "
         r"they were\)$", None, (), read_only("data")),
    # model paths
    Case("base-model-missing", "base", r"/models/nope: model directory not found",
         {"model": {"name_or_path": "{root}/models/nope"}}),
    Case("base-not-a-model", "base", r"/inputs/notamodel: not a model directory \(no config\.json\)",
         {"model": {"name_or_path": "{root}/inputs/notamodel"}}, setup=write_bytes("inputs/notamodel/README", b"hi")),
    Case("base-weights-truncated", "base", r"^\S*/models/cut/model\.safetensors: corrupt or truncated weights file "
         r"\(safetensors: Error while deserializing header: incomplete metadata, file not fully covered\); rerun the "
         r"stage that wrote it, or restore it \(dvc checkout\)$", {"model": {"name_or_path": "{root}/models/cut"}}, (),
         both(copy_dir("data/base/model", "models/cut"), truncate("models/cut/model.safetensors"))),
    Case("reflogps-sft-weights-truncated", "reflogps", r"^data/sft/model/model\.safetensors: corrupt or truncated "
         r"weights file \(safetensors: Error while deserializing header: .*\); rerun the stage that wrote it",
         None, (), truncate("data/sft/model/model.safetensors")),
    Case("base-model-no-tokenizer", "base", r"^model\.name_or_path = '\S*/models/notok': no tokenizer in the model "
         r"directory \(none of tokenizer\.json, tokenizer\.model, vocab\.json, vocab\.txt, spiece\.model, "
         r"sentencepiece\.bpe\.model\); save the tokenizer next to the weights \(tokenizer\.save_pretrained\), or "
         r"copy its files from the model it came from$", {"model": {"name_or_path": "{root}/models/notok"}}, (),
         model_without_tokenizer("models/notok")),
    Case("base-hub-id-offline", "base", r"^model\.name_or_path = 'nosuchorg/nosuchmodel': hub model "
         r"'nosuchorg/nosuchmodel' is not in the local hub cache and the hub is offline \(HF_HUB_OFFLINE=1\), and "
         r"there is no local directory 'nosuchorg/nosuchmodel' either \(relative to \S+\); give a model directory "
         r"\(config\.json, \*\.safetensors and the tokenizer files\), or fetch the model once with HF_HUB_OFFLINE=0$",
         {"model": {"name_or_path": "nosuchorg/nosuchmodel"}}),
    Case("base-relative-path-offline", "base", r"^model\.name_or_path = 'models/mybase': hub model 'models/mybase' is "
         r"not in the local hub cache and the hub is offline \(HF_HUB_OFFLINE=1\), and there is no local directory "
         r"'models/mybase' either", {"model": {"name_or_path": "models/mybase"}}),
    Case("judge-hub-id-offline", "evaluate", r"roles\.judge\.model = 'nosuchorg/judge': hub model 'nosuchorg/judge' "
         r"is not in the local hub cache and the hub is offline", deep_merge(JUDGED, {"roles": {"judge": {
             "model": "nosuchorg/judge"}}}), JUDGE_ARGS),
    Case("evaluate-model-missing", "evaluate", r"data/align/nope/model: model directory not found",
         None, ("--name", "x", "--model-dir", "data/align/nope/model")),
    Case("align-mask-other-model", "align", r"data/neurons/masks/mask_r5\.safetensors: the mask was computed for a "
         r"different model shape: shapes differ \(model\.embed_tokens\.weight: mask \(400, 16\) vs model \(\d+, 32\)",
         ALLO_MASKED, ("--variant", "masked"), mask_of_other_model),
    Case("align-mask-scores", "align", r"data/neurons/masks/mask_r5\.safetensors: tensor "
         r"'model\.layers\.1\.mlp\.up_proj\.weight' holds values other than 0/1 \(1 of \d+ entries, e\.g\. 0\.375\); "
         r"a neuron mask holds only 0 and 1 \(1 = train the weight\): rerun the neurons stage, or threshold the "
         r"scores into a 0/1 mask$", ALLO_MASKED, ("--variant", "masked"), mask_with_scores),
    Case("align-mask-not-safetensors", "align", r"data/neurons/masks/mask_r5\.safetensors: not a neuron mask file",
         ALLO_MASKED, ("--variant", "masked"), write_bytes("data/neurons/masks/mask_r5.safetensors", b"not a mask")),
    # align: variants and block ranges the model or the pairs cannot serve
    Case("align-unknown-variant", "align", r"unknown align variant 'nope'; params\.yaml align\.variants has \[\]",
         None, ("--variant", "nope")),  # the trimmed project has no variants
    Case("align-layers-outside-model", "align", r"align\.variants\.wide\.layers: indices \[7\] are outside the model's "
         r"3 decoder layers \(valid: 0\.\.2\)", {"align": {"variants": {"wide": {"peft": "lora", "layers": [0, 7]}}}},
         ("--variant", "wide")),
    Case("align-lora-target-typo", "align", r"^align\.lora\.target_modules = \['q_proj', 'v_prj'\]: 'v_prj' matches "
         r"no module of the model \(\S*data/sft/model\) that LoRA can adapt; its module names are \['down_proj', "
         r"'embed_tokens', 'gate_proj', 'k_proj', 'lm_head', 'o_proj', 'q_proj', 'up_proj', 'v_proj'\]$",
         {"align": {"lora": {"target_modules": ["q_proj", "v_prj"]}, "variants": {"lo": {"peft": "lora"}}}},
         ("--variant", "lo")),
    Case("align-bridged-without-column", "align", r"align variant 'dpo_bc' trains on bridged pairs, but "
         r"data/preferences/pairs\.jsonl has no 'bridged' column",
         {"align": {"variants": {"dpo_bc": {"peft": "none", "pairs": "bridged"}}}}, ("--variant", "dpo_bc")),
    # data files of the training stages
    Case("sft-bad-message", "sft", r"data/world/sft\.jsonl line 3 \(record '.+'\): completion\[0\] has role 'user', "
         r"expected one of \['assistant'\]", None, (),
         edit_record("data/world/sft.jsonl", 3, lambda r: r["completion"][0].update(role="user"))),
    Case("preferences-wrong-type", "preferences", r"data/world/prefs\.jsonl line 1: field 'level' is str, expected int",
         None, (), edit_record("data/world/prefs.jsonl", 1, lambda r: r.update(level="two"))),
    Case("preferences-no-pool", "preferences", r"data/world/prefs\.jsonl not found: preferences\.prompts is 'prefs' "
         r"but the world has no preference pool \(set world\.preference_groups_per_category > 0, or "
         r"preferences\.prompts: train\)", None, (), remove("data/world/prefs.jsonl")),
    Case("neurons-pairs-empty", "neurons", r"data/preferences/pairs\.jsonl: file is empty \(no records\)", None, (),
         write_bytes("data/preferences/pairs.jsonl", b"")),
    Case("reflogps-pairs-not-utf8", "reflogps", r"data/preferences/pairs\.jsonl line 3: not UTF-8 text \(byte 0xff "
         r"at column 3\); the file must be UTF-8", None, (), non_utf8_line("data/preferences/pairs.jsonl", 3)),
    Case("rewards-reflogps-missing", "rewards", r"data/reflogps/ref_logps\.safetensors: file not found \(run the "
         r"stage that writes it\)", None, (), remove("data/reflogps")),
    Case("rewards-warmup-missing", "rewards", r"data/neurons/warmup: model directory not found \(expected a model "
         r"saved by the stage that writes it", None, ()),
    # evaluate: the world's pool, the official FollowBench files
    Case("evaluate-pool-bad-level", "evaluate", r"data/world/eval\.jsonl line 2: level 9 not allowed: must be an "
         r"integer 0\.\.5", None, EVAL, edit_record("data/world/eval.jsonl", 2, lambda r: r.update(level=9))),
    Case("evaluate-pool-lone-surrogate", "evaluate", r"^data/world/eval\.jsonl line 2: field 'instruction' "
         r"\('\\ud800' at character 5\) holds a lone surrogate, an unpaired \\ud800-\\udfff escape that is no "
         r"Unicode character and cannot be written as UTF-8: remove it, or pair it into one character$", None, EVAL,
         edit_record("data/world/eval.jsonl", 2, lambda r: r.update(instruction=r["instruction"][:5] + "\ud800"
                                                                                 + r["instruction"][5:]))),
    Case("followbench-file-missing", "evaluate", r"/inputs/fb/content_constraints\.json: FollowBench file not found "
         r"\(expected the six \*_constraints\.json", {"evaluate": {"benchmark": "followbench", "followbench": {
             "source": "{root}/inputs/fb", "judge": {"backend": "none"}}}}, EVAL, followbench_dir(valid=True)),
    Case("followbench-file-cut", "evaluate", r"/inputs/fb/content_constraints\.json line \d+: not valid JSON",
         {"evaluate": {"benchmark": "followbench", "followbench": {"source": "{root}/inputs/fb", "categories": [
             "content"], "judge": {"backend": "none"}}}}, EVAL, followbench_dir(valid=False)),
    Case("followbench-source-typo", "evaluate", r"^evaluate\.followbench\.source = '\S*/inputs/fbx': directory not "
         r"found \(did you mean '\S*/inputs/fb'\?\); expected a local directory holding the six \*_constraints\.json "
         r"files, or a hub dataset id \(org/name\)$", {"evaluate": {"benchmark": "followbench", "followbench": {
             "source": "{root}/inputs/fbx", "judge": {"backend": "none"}}}}, EVAL, followbench_dir(valid=False)),
    Case("followbench-source-relative-typo", "evaluate", r"^evaluate\.followbench\.source = 'inputs/fbx': no such "
         r"local directory, and hub dataset inputs/fbx:data_en/content_constraints\.json could not be loaded \(\w+: "
         r".*\); give a local directory holding the six \*_constraints\.json files, or a hub dataset id \(org/name\) "
         r"that is in the cache or reachable$", {"evaluate": {"benchmark": "followbench", "followbench": {
             "source": "inputs/fbx", "judge": {"backend": "none"}}}}, EVAL, followbench_dir(valid=False)),
    Case("followbench-source-is-a-file", "evaluate", r"^evaluate\.followbench\.source = '\S*/inputs/fb/content_"
         r"constraints\.json': a file, but a directory is expected \(the one holding the six \*_constraints\.json "
         r"files, e\.g\. FollowBench's data_en/\), or a hub dataset id \(org/name\)$", {"evaluate": {
             "benchmark": "followbench", "followbench": {
                 "source": "{root}/inputs/fb/content_constraints.json", "judge": {"backend": "none"}}}}, EVAL,
         followbench_dir(valid=False)),
    # synthesize: WebR's and Lion's input files
    Case("webr-input-empty", "synthesize", r"/inputs/pages\.jsonl: file is empty \(no records\)", NO_LION, (),
         write_bytes("inputs/pages.jsonl", b"\n")),
    Case("webr-input-truncated", "synthesize", r"/inputs/pages\.jsonl line 2: not valid JSON", NO_LION, (),
         pages_with(2, b'{"webpage": "Velmora has an old\n')),
    Case("webr-input-no-webpage", "synthesize", r"/inputs/pages\.jsonl line 3: missing field 'webpage'", NO_LION, (),
         pages_with(3, b'{"text": "a page under the wrong key"}\n')),
    Case("webr-input-wrong-type", "synthesize", r"/inputs/pages\.jsonl line 1: field 'webpage' is int, expected str",
         NO_LION, (), pages_with(1, b'{"webpage": 5}\n')),
    Case("webr-input-not-utf8", "synthesize", r"/inputs/pages\.jsonl line 2: not UTF-8 text \(byte 0xe9 at column 17\)",
         NO_LION, (), pages_with(2, b'{"webpage": "caf\xe9 by the river"}\n')),
    Case("webr-input-10mb-line", "synthesize", r"/inputs/pages\.jsonl line 2: line is 10485776 bytes, over the limit "
         r"of 8388608 bytes per line", NO_LION, (), pages_with(2, b'{"webpage": "' + b"a" * (10 << 20) + b'"}\n')),
    Case("webr-input-2mb-page", "synthesize", r"/inputs/pages\.jsonl line 3: field 'webpage' is 2000000 characters, "
         r"over the limit of 1000000 per page \(webr\.MAX_PAGE_CHARS; WebR reads web articles\): split the page or "
         r"leave it out$", NO_LION, (), pages_with(3, b'{"webpage": "' + b"a" * 2_000_000 + b'"}\n')),
    Case("webr-input-list-2mb-page", "synthesize", r"/inputs/pages\.jsonl record 1: field 'webpage' is 2000000 "
         r"characters, over the limit of 1000000 per page", NO_LION, (), write_bytes(
             "inputs/pages.jsonl", json.dumps([PAGES[0], {"webpage": "b" * 2_000_000}]).encode())),
    Case("webr-generator-key-unset", "synthesize", r"^role 'generator' \(roles\.generator\.api_key_env\): openai "
         r"backend at http://127\.0\.0\.1:9/v1: the environment variable ALIGNPIPE_NO_SUCH_KEY \(named by "
         r"api_key_env\) is not set; export it before the run, or set api_key_env: null for a server that takes no "
         r"key$", deep_merge(NO_LION, {"roles": {"generator": {
             "backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
             "api_key_env": "ALIGNPIPE_NO_SUCH_KEY"}}}),
         (), write_bytes("inputs/pages.jsonl", PAGES_JSONL)),
    Case("webr-generator-never-answers", "synthesize", r"^role 'generator' \(openai model 'm' at "
         r"http://127\.0\.0\.1:\d+/v1\): no answer within the stage's deadline of 3 s \(roles\.generator\.deadline_s\); "
         r"last error: APITimeoutError: Request timed out\.; check that the server answers, or raise "
         r"roles\.generator\.deadline_s$", deep_merge(NO_LION, {"roles": {"generator": {
             "backend": "openai", "base_url": "{silent}", "model": "m", "timeout_s": 60, "deadline_s": 3}}}),
         (), write_bytes("inputs/pages.jsonl", PAGES_JSONL)),
    Case("lion-input-wrong-type", "synthesize", r"/inputs/pool\.jsonl line 2: field 'instruction' is int, expected str",
         {"synthesize": {"webr": {"enabled": False}, "lion": {"input": "{root}/inputs/pool.jsonl"}}}, (),
         write_bytes("inputs/pool.jsonl", b'{"instruction": "Describe Velmora."}\n{"instruction": 5}\n')),
    # LTE: KnowEdit files, the edits the edit_eval stage reads
    Case("edits-knowedit-cut", "edits", r"/inputs/ke\.json line 1: not valid JSON", {"edits": {
        "source": "knowedit", "train_files": ["{root}/inputs/ke.json"], "eval_files": ["{root}/inputs/ke.json"]}}, (),
        write_bytes("inputs/ke.json", b'[{"subject": "Velmora", "prompt": "Velmora is in')),
    Case("edit_align-lora-target-typo", "edit_align", r"^edit_align\.lora\.target_modules = \['q_proj', 'mlp'\]: "
         r"'mlp' matches no module of the model \(\S*data/sft/model\) that LoRA can adapt; its module names are "
         r"\['down_proj', .*'v_proj'\]$",
         {"edit_align": {"peft": "lora", "lora": {"target_modules": ["q_proj", "mlp"]}}}),
    Case("edit_eval-empty-target", "edit_eval", r"data/edits/eval\.jsonl line 2: field 'target_new' must be a "
         r"non-empty string, got ''", None, (), edit_record("data/edits/eval.jsonl", 2, lambda r: r.update(target_new=""))),
    # report
    Case("report-metrics-cut", "report", r"data/evaluate/sft/metrics\.json line 1: not valid JSON", None, (),
         report_inputs('{"hsr_avg": 0.')),
    # judge outputs: unusable beyond roles.max_unusable_fraction stops the stage (counted below that)
    Case("judge-empty", "evaluate", r"role 'judge' \(hf model \S+/data/sft/model\): 12 of 12 outputs unusable \(12 "
         rf"unparseable or empty, 0 refusals\), {LIM}; e\.g\. ''\. Check the role's backend", JUDGED, JUDGE_ARGS),
    Case("judge-unparseable", "evaluate", rf"role 'judge' \(hf .*\): 12 of 12 outputs unusable .*{LIM}; e\.g\. "
         rf"{re.escape(repr(PROSE))}\. Check", JUDGED, JUDGE_ARGS, judge_outputs(PROSE)),
    Case("judge-refusal", "evaluate", rf"role 'judge' \(hf .*\): 12 of 12 outputs unusable .*{LIM}; e\.g\. "
         rf"{re.escape(repr(REFUSAL))}\. Check", JUDGED, JUDGE_ARGS, judge_outputs(REFUSAL)),
]  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# the project, the server, one run


def _project_params(root: Path) -> dict[str, Any]:
    """The tiny profile, trimmed to what this project has (two evaluated models, no data-source mixtures)."""
    params = apply_profile("tiny", REPO / "params.yaml", REPO / "profiles")
    params["sft_mix"]["mixtures"] = {}
    params["align"].update(variants={}, allo_variants={})
    params["report"].update(labels={"base": "Base", "sft": "SFT"}, hierarchical=True, bmc=False, bmc_labels={},
                            allo=False, lte=False, data_sources=False)
    params["evaluate"].update(levels=[1], max_new_tokens=8, bootstrap_samples=0)
    params["roles"]["cache_dir"] = str(root / ".cache/llm")
    return params


def _substitute(obj: Any, root: Path) -> Any:
    if isinstance(obj, dict):
        return {k: _substitute(v, root) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_substitute(v, root) for v in obj]
    if isinstance(obj, str) and "{silent}" in obj:
        obj = obj.replace("{silent}", _silent_server())
    return obj.replace("{root}", str(root)) if isinstance(obj, str) else obj


@functools.cache
def _silent_server() -> str:
    """The /v1 URL of a server that accepts every connection and never answers (a hung upstream); it lives as
    long as the test process (a daemon thread)."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held = []
    threading.Thread(target=lambda: [held.append(listener.accept()[0]) for _ in iter(int, 1)], daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/v1"


def _write_params(root: Path, overrides: dict | str | None) -> None:
    if isinstance(overrides, str):
        (root / "params.yaml").write_text(overrides, encoding="utf-8")
        return
    params = deep_merge(_project_params(root), _substitute(overrides or {}, root))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def _build_project(root: Path) -> None:
    """data/: the tiny world, a random 3-layer Llama as base and SFT model, 16 pairs, their reference log-probs,
    the LTE edits. Built in-process (the stages' own library calls), then frozen as the pristine copy."""
    from alignpipe.config import validate_params
    from alignpipe.stages import edits as edits
    from alignpipe.models.pretrain import build_model
    from alignpipe.models.tokenizer import train_tokenizer
    from alignpipe.stages import reflogps
    from alignpipe.stages import world as world

    shutil.copy2(REPO / "prefect.toml", root / "prefect.toml")
    params = validate_params(_project_params(root))
    data = root / "data"
    world.run(params, data / "world")
    corpus = (data / "world/corpus.txt").read_text(encoding="utf-8").splitlines()
    tok = train_tokenizer(corpus, params.base.tokenizer)
    model = build_model(params.base.architecture, tok, seed=0)
    for stage in ("base", "sft"):
        model.save_pretrained(data / stage / "model")
        tok.save_pretrained(data / stage / "model")
    train = [json.loads(line) for line in (data / "world/train.jsonl").read_text(encoding="utf-8").splitlines()]
    pairs = [{"id": f"p{i:03d}", "prompt": [{"role": "user", "content": rec["instruction"]}],
              "chosen": [{"role": "assistant", "content": f"A careful answer about {rec['id']}."}],
              "rejected": [{"role": "assistant", "content": "no."}]} for i, rec in enumerate(train[:16])]
    (data / "preferences").mkdir()
    (data / "preferences/pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    reflogps.run(params, data / "preferences", data / "sft", data / "reflogps")
    edits.run(params, data / "world", data / "edits")
    shutil.copytree(data, root / ".pristine-data")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("badin")
    with pytest.MonkeyPatch.context() as mp:  # the per-test work-dir fixture is not active at module scope
        mp.setenv("ALIGNPIPE_WORK_DIR", str(root / ".cache/alignpipe"))
        _build_project(root)
    return root


@pytest.fixture(scope="module")
def prefect_api(project) -> str:
    """One Prefect server for every flow row (a flow then starts in ~1 s instead of a temporary server each)."""
    from flows.server import start_server, stop_server

    cwd = os.getcwd()
    os.chdir(project)  # the server keeps its state and log under the project's .prefect/
    try:
        proc, api = start_server()
    finally:
        os.chdir(cwd)
    _SERVER["api"] = api
    yield api
    stop_server(proc)


def _run(root: Path, stage: str, args: tuple[str, ...], overrides: dict | str | None,
         api: str | None = None) -> subprocess.CompletedProcess:
    _write_params(root, overrides)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
           "ALIGNPIPE_WORK_DIR": str(root / ".cache/alignpipe"), "PREFECT_LOGGING_COLORS": "false"}
    env.pop("PREFECT_API_URL", None)
    if api is not None:
        env["PREFECT_API_URL"] = api
    return subprocess.run([sys.executable, "-m", f"flows.{stage}", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)


def _snapshot(root: Path) -> dict[str, str]:
    files = [p for p in (root / "data").rglob("*") if p.is_file()]
    files += [root / "dvc.lock"] if (root / "dvc.lock").is_file() else []
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(files)}


def _restore(root: Path) -> None:
    _make_writable(root / "data")
    shutil.rmtree(root / "data")
    shutil.copytree(root / ".pristine-data", root / "data")
    for stray in ("inputs", "models"):
        shutil.rmtree(root / stray, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------
# the tests


def test_the_table_covers_every_kind_of_bad_input():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
    stages = {c.stage for c in CASES}
    assert {"world", "base", "sft", "preferences", "reflogps", "align", "neurons", "rewards", "evaluate", "synthesize",
            "edits", "edit_eval", "report"} <= stages


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_with_one_precise_line(case: Case, project: Path, request):
    root = project
    api = request.getfixturevalue("prefect_api") if case.flow else None
    try:
        if case.setup is not None:
            case.setup(root)
        before = _snapshot(root)
        proc = _run(root, case.stage, case.args, case.params, api)
        after = _snapshot(root)
    finally:
        _restore(root)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}:\n{out[-4000:]}"
    assert "Traceback" not in out, out[-6000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error in stage")]
    assert len(errors) == 1, proc.stderr[-4000:]
    assert proc.stderr.rstrip().splitlines()[-1] == errors[0]  # the last word, after Prefect's logs
    prefix = f"error in stage '{case.stage}': "
    assert errors[0].startswith(prefix) and re.search(case.expect, errors[0][len(prefix):]), errors[0]
    if not case.flow:
        assert "Beginning flow run" not in out  # a params error stops it before Prefect starts anything
    for secret in case.forbid:
        assert secret not in out
    assert after == before, f"data/ changed: {sorted(set(after.items()) ^ set(before.items()))}"


def test_unusable_judge_outputs_below_the_limit_are_counted_with_the_role(project: Path, prefect_api: str):
    """With roles.max_unusable_fraction = 1 the same refusals are skipped, counted under the judge role, reported."""
    root = project
    try:
        judge_outputs(REFUSAL)(root)
        params = deep_merge(JUDGED, {"roles": {"max_unusable_fraction": 1.0}})
        proc = _run(root, "evaluate", JUDGE_ARGS, params, prefect_api)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        metrics = json.loads((root / "data/evaluate/judged/metrics.json").read_text(encoding="utf-8"))
        rows = [json.loads(x) for x in (root / "data/evaluate/judged/generations.jsonl").read_text().splitlines()]
        (record,) = [r for r in runlog.runs("evaluate@judged", root / ".cache/alignpipe/runs")[-1]
                     if r["event"] == "roles"]
    finally:
        _restore(root)
    assert metrics["judge_unparseable"] == 12 and metrics["judge_calls"]["unparseable"] == 12
    assert record["judge"]["cache_hits"] == 12 and record["judge"]["requests"] == 0  # the cached ones (run record)
    assert all(r["judge"] is None and r["judge_raw"] == REFUSAL for r in rows)
