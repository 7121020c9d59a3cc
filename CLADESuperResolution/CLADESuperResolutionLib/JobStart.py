"""Starting a tab's job: one error box when it cannot start, and the button stays usable."""

from __future__ import annotations

import logging

import slicer


def startJob(makeJob, failureTitle):
    """Make and start a job; None (after one error box) when either step fails.

    The caller's button is reset because nothing is assigned until the job runs (Slicer's
    tryWithErrorDisplay re-raises, so code after it would never run on a failure).
    """
    try:
        with slicer.util.WaitCursor():
            job = makeJob()
            job.start()
    except Exception as error:
        logging.exception("CLADE: %s", failureTitle)
        slicer.util.errorDisplay(f"{failureTitle}\n\n{error}")
        return None
    return job
