"""One module per DVC stage, named as the stage: ``stages/<stage>.py`` holds that stage's whole orchestration.

Each module's ``run(params, ...)`` is the one entry point: ``flows/<stage>.py`` calls it once under Prefect, the tests
call it directly. Stages import methods and domain packages, never each other's private steps.
"""
