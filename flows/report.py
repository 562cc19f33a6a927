"""report stage: the FollowBench Table 2 layout (+ judge columns) and plots for the evaluated models.

    python -m flows.report       # what `dvc repro report` runs; writes data/report/
"""

from flows._common import load_stage_params, main, stage_flow, stage_task

from alignpipe.stages import report as report


@stage_task
def write_report(params) -> dict:
    return report.run(params)


@stage_flow("report")
def report_flow(params: str = "params.yaml") -> dict:
    """Gather every evaluated model's metrics into tables and plots."""
    return write_report(load_stage_params(params))


if __name__ == "__main__":
    main("report", report_flow)
