"""The simulated world around the camera: media, sensors, scenarios, virtual time, fleets, the
evidence receiver, the fake bench microcontroller, and the command line.

Nothing imports ``sim`` except tests and scripts.
"""

import os

# numpy's OpenBLAS starts one busy-waiting thread per core at import; our arrays are small, and
# on a 2-core machine those threads took 7 % of the CPU of an upload (perf, scripts/bench_upload).
# Set before numpy is imported (the `bwc-sim` command imports `sim` first); a user's value wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
