"""Measuring detectors: datasets in IMDL-BenCo layout (:mod:`.datasets`), the field's metrics
(:mod:`.metrics`) and the runs behind ``imlf eval`` (:mod:`.evaluate`)."""
