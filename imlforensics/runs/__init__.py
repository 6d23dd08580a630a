"""Running a detector over files: one file's analysis and outputs (:mod:`.detect`, behind
``imlf detect``) and whole-directory runs with workers, a resumable ledger and shards
(:mod:`.batch`, behind ``imlf ensemble``)."""
