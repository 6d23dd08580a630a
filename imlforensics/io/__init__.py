"""Input and output: reading images (:mod:`.image`), JPEG tables (:mod:`.jpegtables`), turning
command-line arguments into files (:mod:`.inputs`) and writing results atomically (:mod:`.outputs`)."""
