"""Prefect flows, one per pipeline stage: `python -m flows.<stage>` runs `alignpipe.stages.<stage>.run()` once.

Each `flows/<stage>.py` is thin (its docstring, the stage's CLI args, `main("<stage>", _args)`); `flows._common`
holds the one wrapper, `flows.server` runs a command (`dvc repro`) with a Prefect server.
"""

import time

# When the process reached the project's code: `python -m flows.<stage>` imports this package before anything else
# of ours. The start of the stage timings (flows._common); nothing else happens on import.
STARTED = time.time()
