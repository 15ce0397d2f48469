"""The hand-off between a spotrun agent and the training process it starts.

The agent configures training through environment variables, asks for checkpoints through a
small control file, and learns progress from a progress file. Files rather than signals so that
any process tree works (a shell script wrapping ``python train.py`` included) and so that the
same channel serves several ranks.
"""

from __future__ import annotations

CHECKPOINT_URL = "SPOTRUN_CHECKPOINT_URL"
CHECKPOINT_EVERY = "SPOTRUN_CHECKPOINT_EVERY"  # a duration such as "300s"
CHECKPOINT_EVERY_STEPS = "SPOTRUN_CHECKPOINT_EVERY_STEPS"
CHECKPOINT_KEEP = "SPOTRUN_CHECKPOINT_KEEP"
CHECKPOINT_KEEP_EVERY = "SPOTRUN_CHECKPOINT_KEEP_EVERY"  # steps
CONTROL_FILE = "SPOTRUN_CONTROL_FILE"  # JSON {"seq": n, "action": "checkpoint"|"stop", "deadline": unix_s}
PROGRESS_FILE = "SPOTRUN_PROGRESS_FILE"  # JSON written by the callback; the agent turns it into heartbeats
JOB_NAME = "SPOTRUN_JOB"
ATTEMPT = "SPOTRUN_ATTEMPT"

# Exit code of a training process that stopped because it was asked to, after its emergency
# checkpoint became durable (75 is EX_TEMPFAIL: "try again later").
PREEMPTED_EXIT_CODE = 75
