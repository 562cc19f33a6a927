"""align stage: one DPO variant (full, all-layer LoRA, LoRA on one third of the layers, BMC, ALLO).

    python -m flows.align --variant global     # what `dvc repro align@global` runs; writes data/align/global/

Runs `alignpipe.stages.align.run` once. With `align.accelerate_config` set, training runs under `accelerate launch`
(multi-GPU DDP / FSDP / ZeRO-3). Checkpoints go to .cache/alignpipe/align/<config hash>/; an interrupted run
resumes there.
"""

from flows._common import main


def _args(parser):
    parser.add_argument("--variant", required=True, help="a key of align.variants in params.yaml")


if __name__ == "__main__":
    main("align", _args)
