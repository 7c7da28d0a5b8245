"""`ssm-lab` under torchrun with rank 1 arriving late at the evaluation (test helper, run by test_distributed.py).

Rank 1 sleeps before its clean predictions, the last step before the resume state is read, so rank 0 has saved
its first finished batches by the time rank 1 gets there: the schedule a loaded machine produces by chance."""
import os
import sys
import time

import ssm_lab.evaluate as evaluate_module
from ssm_lab.cli import main

if os.environ.get("RANK") == "1":
    on_time = evaluate_module.predict

    def late_predict(*args, **kwargs):
        time.sleep(float(os.environ.get("LATE_RANK_SECONDS", "3")))
        return on_time(*args, **kwargs)

    evaluate_module.predict = late_predict

sys.exit(main(sys.argv[1:]))
